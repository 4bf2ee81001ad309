"""Model cards built from training facts: the trainer's callback fills them, saving writes them (updating a
hand-written card), the metadata names the base model and the evaluation, the usage snippet runs."""

import ast
import re
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from huggingface_hub import ModelCard

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq import model_card as model_card_module
from distill_vq.encoding import DEFAULT_ENCODER_NAME, default_encoder_path
from distill_vq.model_card import CARD_DATA_FILE, TEMPLATE_PATH, DistillVQModelCardData
from distill_vq.trainer import DistillVQTrainer, DistillVQTrainingArguments

SMALL = {"num_lists": 16, "num_subvectors": 8, "bits_per_subvector": 4}
ROWS = [
    {"index": "exact", "bytes/vector": 1536, "recall_vs_exact@10": 1.0, "mrr@10": 0.61, "qps": 900},
    {"index": "faiss IVF16,PQ8x4", "bytes/vector": 4, "recall_vs_exact@10": 0.31, "mrr@10": 0.42, "qps": 9000},
    {"index": "distill-vq", "bytes/vector": 4, "recall_vs_exact@10": 0.37, "mrr@10": 0.47, "qps": 9100},
]


@pytest.fixture(scope="module")
def model(debian_embeddings):
    """faiss's initialisation on the packaged Debian embeddings, encoded by the packaged all-MiniLM-L6-v2."""
    return DistillVQModel.from_embeddings(debian_embeddings[0], DistillVQConfig(
        embedding_dim=384, encoder_name_or_path=DEFAULT_ENCODER_NAME, **SMALL))


@pytest.fixture(scope="module")
def trained(debian_embeddings, tmp_path_factory):
    """A model trained by `DistillVQTrainer` used directly (the Python path), and its trainer."""
    docs, queries = debian_embeddings
    model = DistillVQModel.from_embeddings(docs, DistillVQConfig(
        embedding_dim=384, encoder_name_or_path=DEFAULT_ENCODER_NAME, **SMALL))
    args = DistillVQTrainingArguments(
        output_dir=str(tmp_path_factory.mktemp("run")), per_device_train_batch_size=16, max_steps=4, logging_steps=2,
        loss="kl", num_teacher_candidates=20, pq_learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="no",
        disable_tqdm=True)
    trainer = DistillVQTrainer(model, args, Dataset.from_dict({"query_embedding": queries[:200]}), docs)
    trainer.train()
    return model, trainer


def card_of(folder) -> ModelCard:
    return ModelCard.load(Path(folder) / "README.md")


def test_trainer_used_directly_writes_a_card_with_the_training_facts(trained, tmp_path):
    model, trainer = trained
    model.model_card_data.model_id = "me/debian-kl"
    trainer.save_model(str(tmp_path / "trainer"))
    model.save_pretrained(tmp_path / "model")
    card = card_of(tmp_path / "trainer")
    assert card.text == card_of(tmp_path / "model").text
    text = card.text
    assert "4 steps of 16 queries, 200 training queries" in text
    assert "- `loss`: kl" in text and "- `max_steps`: 4" in text and "- `pq_learning_rate`: 0.001" in text
    assert "- `per_device_train_batch_size`: 16" in text
    assert "- `learning_rate`:" not in text and "output_dir" not in text  # a default value, a logging setting
    assert '"score_loss": "KLDivergenceLoss"' in text  # DistillVQLoss.get_config_dict()
    assert f"Ranking temperature: {trainer.loss.temperature:.4g}" in text
    assert "Learning rates: codebooks 0.001, ivf_centroids " in text
    log = text.split("### Training log")[1].split("##")[0]
    assert re.search(r"\| +Step +\| +Training Loss +\| +pq_kl +\| +ivf_kl +\|", log)
    assert [int(line.split("|")[2]) for line in log.strip().splitlines()[2:]] == [2, 4]
    assert "hinton2015distilling" in text and "xiao2022distillvq" in text  # the KL loss's and the method's
    assert {"generated_from_trainer", "loss:DistillVQLoss", "faiss"} <= set(card.data.tags)
    assert card.data.base_model == DEFAULT_ENCODER_NAME and card.data.library_name == "distill-vq"
    assert "## Evaluation" not in text and card.data.eval_results is None
    assert (tmp_path / "model" / CARD_DATA_FILE).is_file()


def test_bert_base_uncased_is_the_base_model_and_a_local_encoder_is_not(tmp_path):
    config = DistillVQConfig(embedding_dim=32, encoder_name_or_path="bert-base-uncased", **SMALL)
    model = DistillVQModel(config)
    model.model_card_data = DistillVQModelCardData()
    model.save_pretrained(tmp_path / "hub")
    readme = (tmp_path / "hub" / "README.md").read_text()
    assert "\nbase_model: bert-base-uncased\n" in readme.split("---")[1]
    assert '[`bert-base-uncased`](https://huggingface.co/bert-base-uncased)' in readme

    model.config.encoder_name_or_path = str(tmp_path)  # a folder that exists is a path, never a Hub id
    model.save_pretrained(tmp_path / "local")
    card = card_of(tmp_path / "local")
    assert card.data.base_model is None and f"`{tmp_path}`: 32-d" in card.text


def test_evaluation_results_give_the_model_index(model, tmp_path):
    model.model_card_data = DistillVQModelCardData(model_id="org/debian-pq4", license="apache-2.0")
    model.model_card_data.set_evaluation(ROWS, corpus_name="Debian packages", num_docs=5000, eval_name="test",
                                         num_eval_queries=489, summary="Recall@10 vs exact 0.310 -> 0.370.")
    model.save_pretrained(tmp_path)
    card = card_of(tmp_path)
    results = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert results == {"recall_vs_exact@10": 0.37, "mrr@10": 0.47}  # this model's row, without qps
    assert card.data.eval_results[0].dataset_name == "Debian packages" and card.data.model_name == "debian-pq4"
    assert card.data.license == "apache-2.0"
    assert "Recall@10 vs exact 0.310 -> 0.370." in card.text and "489 evaluation queries (test)" in card.text
    assert "| faiss IVF16,PQ8x4 |" in card.text and "Debian packages (5000 documents)" in card.text
    with pytest.raises(ValueError, match="none named 'distill-vq'; pass model_row="):
        DistillVQModelCardData().set_evaluation(ROWS[:2])


def test_a_card_with_only_a_config_renders():
    card_data = DistillVQModelCardData()
    card_data.set_index(DistillVQConfig(embedding_dim=32, **SMALL))
    card = card_data.to_model_card()
    assert "`IVF16,PQ8x4`, nprobe 8" in card.text and "**4 bytes per vector**" in card.text
    assert "## Training" not in card.text and "## Evaluation" not in card.text and "\n\n\n" not in card.text
    assert 'from_pretrained("your-namespace/your-quantizer")' in card.text


def snippet(folder) -> str:
    return re.search(r"```python\n(.*?)```", (Path(folder) / "README.md").read_text(), re.S).group(1)


def test_usage_snippets_run_as_written(model, debian_embeddings, tmp_path, monkeypatch):
    """Each variant of the usage snippet defines what it uses and runs: the index's encoder embeds documents and
    queries; a trained query encoder embeds the queries; with no encoder recorded, the embeddings are files."""
    monkeypatch.chdir(tmp_path)
    model.model_card_data = DistillVQModelCardData()
    model.save_pretrained(tmp_path / "encoder")
    namespace = {}
    exec(snippet(tmp_path / "encoder"), namespace)
    assert namespace["rows"].shape == (1, 3) and namespace["rows"][0, 0] == 1  # gzip: compress or expand files

    student = DistillVQModel(DistillVQConfig(embedding_dim=384, encoder_name_or_path=DEFAULT_ENCODER_NAME, **SMALL))
    student.load_state_dict(model.state_dict(), strict=False)
    student.attach_query_encoder(default_encoder_path(), num_layers=1)
    student.model_card_data = DistillVQModelCardData()
    student.save_pretrained(tmp_path / "student")
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(default_encoder_path()).save_pretrained(tmp_path / "student")
    namespace = {}
    exec(snippet(tmp_path / "student"), namespace)
    assert namespace["query_embeddings"].shape == (1, 384) and namespace["rows"].shape == (1, 3)

    bare = DistillVQModel(DistillVQConfig(embedding_dim=384, **SMALL))
    bare.load_state_dict(model.state_dict())
    bare.model_card_data = DistillVQModelCardData()
    bare.save_pretrained(tmp_path / "bare")
    np.save("doc_embeddings.npy", debian_embeddings[0][:100])
    np.save("query_embeddings.npy", debian_embeddings[1][:5])
    namespace = {}
    exec(snippet(tmp_path / "bare"), namespace)
    assert namespace["rows"].shape == (5, 10)


def test_a_hand_written_card_is_updated_not_replaced(model, tmp_path):
    (tmp_path / "README.md").write_text("---\nlicense: mit\ntags:\n- mine\n---\n# Our quantizer\n\nKeep this.\n")
    model.model_card_data = DistillVQModelCardData()
    model.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)  # twice: the version line is added once
    card = card_of(tmp_path)
    assert card.text.startswith("# Our quantizer\n\nKeep this.\n") and "## Index" not in card.text
    assert card.text.count("- distill-vq ") == 1 and "### Framework versions\n\n- distill-vq " in card.text
    assert card.data.license == "mit" and card.data.library_name == "distill-vq"
    assert {"mine", "faiss"} <= set(card.data.tags) and card.data.base_model == DEFAULT_ENCODER_NAME

    (tmp_path / "README.md").unlink()
    model.save_pretrained(tmp_path)
    model.model_card_data.set_evaluation(ROWS)
    model.save_pretrained(tmp_path)  # a card distill-vq rendered is rendered again, with the new facts
    assert "## Evaluation" in card_of(tmp_path).text


def test_card_errors_are_logged_and_the_model_is_saved(model, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(model_card_module, "TEMPLATE_PATH", tmp_path / "missing.md")
    model.model_card_data = DistillVQModelCardData()
    model.save_pretrained(tmp_path / "out")
    assert (tmp_path / "out" / "model.safetensors").is_file() and not (tmp_path / "out" / "README.md").exists()
    assert "The model card in" in caplog.text and "missing.md" in caplog.text


def test_card_data_file_renders_the_same_card_again(trained, tmp_path):
    model, _ = trained
    model.model_card_data.model_id = None
    model.save_pretrained(tmp_path)  # the card loads the folder; the file keeps the facts, not the folder
    card_data = DistillVQModelCardData.from_json_file(tmp_path / CARD_DATA_FILE)
    assert card_data.model_id is None and card_data.training_logs == model.model_card_data.training_logs
    card_data.model_id = str(tmp_path)
    assert str(card_data.to_model_card()) == (tmp_path / "README.md").read_text()


def test_no_module_imports_matplotlib_or_jinja2_at_the_top():
    """They are imported where a plot is drawn or a card rendered; `test_hub.py`'s fresh process checks that
    importing the whole library loads neither (`import transformers` itself loads jinja2, for its chat templates)."""
    for path in Path(model_card_module.__file__).parent.glob("*.py"):
        top_level = [node for node in ast.parse(path.read_text()).body if isinstance(node, (ast.Import, ast.ImportFrom))]
        names = [alias.name for node in top_level for alias in node.names] + [
            node.module or "" for node in top_level if isinstance(node, ast.ImportFrom)]
        assert not [name for name in names if name.split(".")[0] in ("jinja2", "matplotlib")], path.name


def test_packaged_template_is_the_model_cards_file():
    assert TEMPLATE_PATH.resolve() == (TEMPLATE_PATH.parents[3] / "model_cards" / "distill_vq_template.md").resolve()
