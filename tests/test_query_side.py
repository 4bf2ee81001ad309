"""The query side: a query adapter folded into the exported index, a query encoder trained from the command (joint
mode and a cut student), and search / evaluate serving what was trained."""

import gzip
import json

import faiss
import numpy as np
import pytest
import torch
from datasets import Dataset
from huggingface_hub import HfApi
from local_hub import local_hub  # noqa: F401  (fixture)

from conftest import DATA, DEFAULT_DATA
from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.cli import main
from distill_vq.encoding import TextEncoder
from distill_vq.pipeline import distill
from distill_vq.query_encoding import ModelQueryEncoder, query_encoder_for, query_tokenizer
from distill_vq.retriever import Retriever
from distill_vq.trainer import DistillVQTrainingArguments

NUM_DOCS, NUM_QUERIES = 240, 60
TINY_INDEX = ["--no-rotation", "--num-lists", "4", "--num-subvectors", "8", "--bits-per-subvector", "4",
              "--max-steps", "2", "--save-strategy", "no", "--disable-tqdm", "true"]


def perturbed_adapter(model: DistillVQModel, seed: int = 0) -> DistillVQModel:
    model.attach_query_adapter()
    with torch.no_grad():
        model.query_adapter.add_(0.2 * torch.randn(model.query_adapter.shape, generator=torch.Generator().manual_seed(seed)))
    return model


@pytest.mark.parametrize("quantizer, use_rotation", [("pq", True), ("pq", False), ("rq", True)])
def test_the_exported_index_applies_the_query_adapter_exactly(random_embeddings, quantizer, use_rotation, tmp_path):
    docs, queries = random_embeddings
    config = DistillVQConfig(embedding_dim=32, num_lists=4, quantizer=quantizer, num_subvectors=4,
                             bits_per_subvector=8 if quantizer == "rq" else 4, use_rotation=use_rotation, nprobe=4)
    torch.manual_seed(0)
    model = DistillVQModel(config)  # any weights: the export must score exactly like the model
    with torch.no_grad():
        model.rotation.copy_(torch.linalg.qr(torch.randn(32, 32))[0])
    unadapted = model.to_faiss(docs).search(queries, 10)[1]
    model = perturbed_adapter(model)
    faiss.write_index(model.to_faiss(docs), str(tmp_path / "index.faiss"))
    scores, rows = faiss.read_index(str(tmp_path / "index.faiss")).search(queries, 10)
    expected = model(query_embeddings=torch.from_numpy(queries), doc_embeddings=torch.from_numpy(docs)).pq_scores
    np.testing.assert_allclose(scores, np.take_along_axis(expected.detach().numpy(), rows, 1), atol=1e-5)
    assert (rows != unadapted).any()  # the adapter does change the search


def test_a_query_adapter_round_trips_and_excludes_a_query_encoder(random_embeddings, tmp_path):
    docs, _ = random_embeddings
    model = perturbed_adapter(DistillVQModel.from_embeddings(docs, DistillVQConfig(embedding_dim=32, num_lists=4,
                                                                                   num_subvectors=4)))
    model.save_pretrained(tmp_path)
    loaded = DistillVQModel.from_pretrained(tmp_path)
    assert loaded.config.query_adapter and torch.equal(loaded.query_adapter, model.query_adapter)
    with pytest.raises(ValueError, match="query adapter"):
        loaded.attach_query_encoder("all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="keep one of the two"):
        DistillVQConfig(embedding_dim=384, num_lists=4, query_adapter=True, query_encoder_config={"model_type": "bert"})


def test_training_moves_the_adapter_and_lowers_the_ranking_loss(debian_embeddings, tmp_path):
    """Trained against a frozen index (its weights at rate 0), only the adapter can lower the loss."""
    docs, queries = debian_embeddings
    config = DistillVQConfig(embedding_dim=384, num_lists=16, num_subvectors=8, bits_per_subvector=4)
    model = DistillVQModel.from_embeddings(docs, config).attach_query_adapter()
    args = DistillVQTrainingArguments(
        output_dir=str(tmp_path), max_steps=40, per_device_train_batch_size=64, pq_learning_rate=0.0,
        ivf_learning_rate=0.0, query_adapter_learning_rate=1e-3, num_teacher_candidates=50, logging_steps=10,
        save_strategy="no", report_to=[], use_cpu=True, seed=0, disable_tqdm=True,
    )
    codebooks = model.codebooks.detach().clone()
    trainer = distill(model, queries[:2560], docs, args)
    losses = [entry["pq_listnet"] for entry in trainer.state.log_history if "pq_listnet" in entry]
    assert losses[-1] < 0.97 * losses[0]
    assert torch.equal(model.codebooks, codebooks)
    assert not torch.allclose(model.query_adapter, torch.eye(384))


@pytest.fixture(scope="module")
def texts_dir(tmp_path_factory):
    """The first documents and queries of the packaged data, as files, with the documents' embeddings."""
    folder = tmp_path_factory.mktemp("texts")
    for name, count in (("corpus", NUM_DOCS), ("queries", NUM_QUERIES)):
        with gzip.open(DEFAULT_DATA / f"{name}.jsonl.gz", "rt") as source:
            rows = [next(source) for _ in range(count)]
        (folder / f"{name}.jsonl").write_text("".join(rows))
    np.save(folder / "docs.npy", np.load(DATA / "default_data_embeddings" / "docs.npy")[:NUM_DOCS])
    return folder


def data_flags(folder) -> list[str]:
    return ["--corpus", str(folder / "corpus.jsonl"), "--queries", str(folder / "queries.jsonl"),
            "--doc-embeddings", str(folder / "docs.npy")]


@pytest.fixture(scope="module")
def student_dir(texts_dir, tmp_path_factory):
    """`distill-vq train --student-layers 0,2`: a 2-layer query encoder trained against the index."""
    output_dir = tmp_path_factory.mktemp("student") / "out"
    assert main(["train", *data_flags(texts_dir), *TINY_INDEX, "--student-layers", "0,2",
                 "--output-dir", str(output_dir)]) == 0
    return output_dir


def test_the_command_trains_a_student_query_encoder_and_records_it(student_dir):
    model = DistillVQModel.from_pretrained(student_dir)
    assert model.query_encoder.config.num_hidden_layers == 2 and model.config.query_encoder_layers == [0, 2]
    assert model.config.query_encoder_name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    assert (student_dir / "tokenizer.json").is_file()
    results = json.loads((student_dir / "results.json").read_text())
    assert results["queries_by"] == "query encoder from sentence-transformers/all-MiniLM-L6-v2, layers 0,2"
    card = (student_dir / "README.md").read_text()
    assert "| queries embedded by | the model's own query encoder: a copy of `sentence-transformers/all-MiniLM-L6-v2`, " \
           "layers 0,2" in card
    assert "| documents embedded by | `sentence-transformers/all-MiniLM-L6-v2`" in card
    assert "query_encoder_for(" in card


def distill_vq_row(results: dict) -> dict:
    return next(row for row in results["results"] if row["index"] == "distill-vq")


def test_search_and_evaluate_embed_queries_with_the_trained_encoder(student_dir, texts_dir, tmp_path, capsys):
    encoder = query_encoder_for(student_dir)
    assert isinstance(encoder, ModelQueryEncoder)
    query = "command line tool to compress files"
    student_rows = faiss.read_index(str(student_dir / "index.faiss")).search(encoder.encode([query]), 5)[1][0]
    teacher_rows = faiss.read_index(str(student_dir / "index.faiss")).search(
        TextEncoder().encode([query], show_progress=False), 5)[1][0]
    assert (student_rows != teacher_rows).any()  # a 2-layer student embeds differently: serving tells them apart
    doc_ids = json.loads((student_dir / "doc_ids.json").read_text())
    assert main(["search", str(student_dir), query, "-k", "5"]) == 0
    shown = [line.split()[2] for line in capsys.readouterr().out.splitlines()[1:]]
    assert shown == [doc_ids[row] for row in student_rows if row >= 0]
    assert main(["evaluate", str(student_dir), "--doc-embeddings", str(texts_dir / "docs.npy"),
                 "--results-dir", str(tmp_path)]) == 0
    evaluated = distill_vq_row(json.loads((tmp_path / "results.json").read_text()))
    trained = distill_vq_row(json.loads((student_dir / "results.json").read_text()))
    assert evaluated["recall_vs_exact@10"] == pytest.approx(trained["recall_vs_exact@10"])


def test_the_command_trains_a_query_adapter_on_given_embeddings(texts_dir, tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "queries.npy", rng.standard_normal((NUM_QUERIES, 384), dtype=np.float32))
    flags = [*data_flags(texts_dir), "--query-embeddings", str(tmp_path / "queries.npy"), *TINY_INDEX]
    assert main(["train", *flags, "--query-adapter", "--output-dir", str(tmp_path / "out")]) == 0
    model = DistillVQModel.from_pretrained(tmp_path / "out")
    assert model.config.query_adapter and not torch.allclose(model.query_adapter, torch.eye(384))
    docs, queries = np.load(texts_dir / "docs.npy"), np.load(tmp_path / "queries.npy")[:8]
    scores, rows = faiss.read_index(str(tmp_path / "out" / "index.faiss")).search(queries, 5)
    expected = model(query_embeddings=torch.from_numpy(queries), doc_embeddings=torch.from_numpy(docs)).pq_scores
    np.testing.assert_allclose(scores, np.take_along_axis(expected.detach().numpy(), rows, 1), atol=1e-5)
    assert "query adapter" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.parametrize("flags, message", [
    (["--train-query-encoder", "--query-embeddings", "QUERIES"], "--query-embeddings comes from an encoder it cannot copy"),
    (["--student-layers", "0,9"], "layers [0, 9] are not possible: sentence-transformers/all-MiniLM-L6-v2 has 6 layers"),
    (["--student-layers", "1,1"], "give distinct numbers"),
    (["--train-query-encoder", "--query-adapter"], "keep one of the two"),
], ids=["embeddings-only", "layer-outside", "repeated-layer", "adapter-and-encoder"])
def test_query_side_mistakes_are_one_line_before_training(texts_dir, tmp_path, capsys, flags, message):
    np.save(tmp_path / "queries.npy", np.zeros((NUM_QUERIES, 384), np.float32))
    flags = [str(tmp_path / "queries.npy") if flag == "QUERIES" else flag for flag in flags]
    assert main(["train", *data_flags(texts_dir), *TINY_INDEX, *flags, "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("distill-vq: error: ") and message in error
    assert not (tmp_path / "out").exists()


def test_a_tokenizer_of_another_vocabulary_is_refused(student_dir):
    tokenizer = query_tokenizer("all-MiniLM-L6-v2")
    tokenizer.add_tokens(["distillvqtoken1", "distillvqtoken2"])
    with pytest.raises(ValueError, match="another model's tokenizer"):
        ModelQueryEncoder(DistillVQModel.from_pretrained(student_dir), tokenizer)


def test_a_query_encoder_without_its_tokenizer_is_refused(student_dir, tmp_path):
    for path in student_dir.iterdir():
        if path.name in ("config.json", "model.safetensors"):
            (tmp_path / path.name).write_bytes(path.read_bytes())
    with pytest.raises(ValueError, match="carries a query encoder but not its tokenizer"):
        query_encoder_for(tmp_path)


def test_a_stream_of_texts_trains_the_joint_query_encoder(debian_embeddings, tmp_path):
    """Joint mode in Python: a copy of the teacher as query encoder, trained with the index on a stream of texts."""
    docs, queries = debian_embeddings
    with gzip.open(DEFAULT_DATA / "queries.jsonl.gz", "rt") as source:
        texts = [json.loads(next(source))["text"] for _ in range(64)]
    model = DistillVQModel.from_embeddings(docs, DistillVQConfig(embedding_dim=384, num_lists=8, num_subvectors=8,
                                                                 bits_per_subvector=4))
    model.attach_query_encoder("all-MiniLM-L6-v2")
    before = {name: value.clone() for name, value in model.query_encoder.state_dict().items()}
    args = DistillVQTrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=32,
                                      query_encoder_learning_rate=1e-4, num_teacher_candidates=20, save_strategy="no",
                                      report_to=[], use_cpu=True, disable_tqdm=True)
    stream = Dataset.from_dict({"query_embedding": queries[:64], "query": texts}).to_iterable_dataset()
    distill(model, stream, docs, args, tokenizer=query_tokenizer("all-MiniLM-L6-v2"))
    after = model.query_encoder.state_dict()
    assert any(not torch.equal(before[name], after[name]) for name in before)
    assert model.query_encoder.pooler is None  # no weight without a gradient (distributed training refuses those)


def test_the_retriever_searches_text_with_the_folder_s_query_encoder(student_dir):
    retriever = Retriever.from_folder(student_dir)
    hits = retriever.search(["command line tool to compress files", "a font"], k=4)
    assert len(hits) == 2 and len(hits[0]) == 4 and hits[0][0]["score"] >= hits[0][-1]["score"]
    embeddings = query_encoder_for(student_dir).encode(["command line tool to compress files"])
    rows = faiss.read_index(str(student_dir / "index.faiss")).search(embeddings, 4)[1][0]
    assert [hit["corpus_id"] for hit in hits[0]] == rows.tolist()
    assert [hit["id"] for hit in hits[0]] == [retriever.doc_ids[row] for row in rows]


def test_a_pushed_student_is_searched_with_its_own_encoder(student_dir, local_hub, capsys):
    assert main(["push", str(student_dir), "me/student", "--include-index"]) == 0
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(HfApi().list_repo_files("me/student"))
    query = "command line tool to compress files"
    expected = [hit["id"] for hit in Retriever.from_folder(student_dir).search(query, k=5)[0]]
    capsys.readouterr()
    assert main(["search", "me/student", query, "-k", "5"]) == 0
    assert [line.split()[2] for line in capsys.readouterr().out.splitlines()[1:]] == expected
