"""Model cards: rendered from a run's facts with Hub metadata; a broken template or missing fact is a clear error."""

import pytest

from distill_vq.model_card import TEMPLATE_PATH, render_model_card


@pytest.fixture
def facts():
    """The facts a `distill-vq train` run writes to results.json, plus what only the card needs."""
    return {
        "corpus_name": "BeIR/scifact", "dataset_id": "BeIR/scifact", "num_docs": 5183, "num_eval_queries": 300,
        "eval_name": "test", "embedding_dim": 384, "metric": "inner_product", "results": [],
        "num_train_queries": 809, "base_model": "sentence-transformers/all-MiniLM-L6-v2",
        "index_factory": "OPQ16,IVF128,PQ16x8", "num_lists": 128, "num_subvectors": 16, "bits_per_subvector": 8,
        "bytes_per_vector": 16, "use_rotation": True, "nprobe": 16, "loss": "listnet", "num_teacher_candidates": 200,
        "training_steps": 300, "batch_size": 64, "training_seconds": 95.2, "model_name": "scifact-pq16",
        "model_id": "me/scifact-pq16", "results_table": "| index |\n| --- |\n| distill-vq |",
        "summary": "Recall@10 vs exact 0.584 -> 0.621.",
    }


def test_card_has_hub_metadata_facts_usage_and_citations(facts):
    card = render_model_card(facts)
    assert card.data.library_name == "distill-vq"
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert card.data.datasets == ["BeIR/scifact"]
    assert {"faiss", "product-quantization", "dense-retrieval", "distill-vq"} <= set(card.data.tags)
    text = card.text
    assert "**16 bytes per vector**" in text and "`OPQ16,IVF128,PQ16x8`" in text and "95.2 s" in text
    assert 'DistillVQModel.from_pretrained("me/scifact-pq16")' in text and "nprobe=16" in text
    assert "| distill-vq |" in text and "arXiv:2301.12005" in text and "2204.00185" in text


def test_local_encoder_is_not_hub_metadata(facts):
    card = render_model_card({**facts, "base_model": "/models/my-encoder", "dataset_id": None})
    assert card.data.base_model is None and card.data.datasets is None
    assert "`/models/my-encoder`" in card.text


def test_missing_facts_and_broken_templates_are_clear_errors(facts, tmp_path):
    with pytest.raises(ValueError, match=r"needs facts that were not given: \['nprobe'\]"):
        render_model_card({key: value for key, value in facts.items() if key != "nprobe"})
    broken = tmp_path / "broken.md"
    broken.write_text("---\n{{ card_data }}\n---\n{% if %}\n")
    with pytest.raises(ValueError, match="is invalid"):
        render_model_card(facts, broken)
    with pytest.raises(ValueError, match="is missing"):
        render_model_card(facts, tmp_path / "absent.md")


def test_packaged_template_is_the_model_cards_file():
    assert TEMPLATE_PATH.resolve() == (TEMPLATE_PATH.parents[3] / "model_cards" / "distill_vq_template.md").resolve()
