"""`distill-vq train` flags a faiss or CSV user reaches for: `--index-factory`, the data column flags, `--metric`,
and the visible training flags (`--learning-rate`/`--lr`, `--max-train-seconds`, `--num-teacher-candidates`)."""

import dataclasses
import json

import faiss
import numpy as np
import pandas as pd
import pytest

from conftest import DATA
from distill_vq.cli import _document_texts, build_parser, main, settings_from, training_arguments
from distill_vq.data import load_corpus
from distill_vq.pipeline import build_config
from distill_vq.retriever import Retriever
from distill_vq.settings import TextColumns, TrainSettings


def parsed(*flags: str):
    return build_parser().parse_known_args(["train", *flags])


@pytest.mark.parametrize("factory, flags, canonical", [
    ("IVF16,PQ8", ["--num-lists", "16", "--num-subvectors", "8", "--no-rotation"], "IVF16,PQ8x8"),
    ("OPQ8,IVF32,PQ8x4", ["--num-lists", "32", "--num-subvectors", "8", "--bits-per-subvector", "4"],
     "OPQ8,IVF32,PQ8x4"),
    ("IVF64,RQ4x8", ["--num-lists", "64", "--quantizer", "rq", "--num-codebooks", "4", "--no-rotation"],
     "IVF64,RQ4x8_Nnone"),
])
def test_index_factory_builds_the_config_of_the_equivalent_flags(factory, flags, canonical):
    from_factory = settings_from(parsed("--index-factory", factory)[0])
    from_flags = settings_from(parsed(*flags)[0])
    assert dataclasses.replace(from_factory, index_factory=None) == from_flags
    configs = [build_config(settings, num_docs=5000, embedding_dim=32) for settings in (from_factory, from_flags)]
    assert configs[0].to_dict() == configs[1].to_dict()
    assert configs[0].index_factory_string == canonical
    # the library route: TrainSettings reads the string itself, and refuses settings that contradict it
    assert TrainSettings(index_factory=factory) == from_factory
    with pytest.raises(ValueError, match="--num-lists would set"):
        TrainSettings(index_factory=factory, num_lists=8)


@pytest.mark.parametrize("flags, message", [
    (["--index-factory", "HNSW32"], "'HNSW32' is not an index distill-vq trains; give \"[OPQ{m},]IVF{n},PQ{m}"),
    (["--index-factory", "IVF64,Flat"], "is not an index distill-vq trains"),
    (["--index-factory", "IVF64,LSQ8x8"], "is not an index distill-vq trains"),
    (["--index-factory", "IVF64,PQ8x4fs"], "is not an index distill-vq trains"),
    (["--index-factory", "IVF64,PQ8_Nnone"], "faiss cannot build it (could not parse code description PQ8_Nnone"),
    (["--index-factory", "OPQ8,IVF64,PQ16"], "the OPQ rotation for the 16 codes; write OPQ16 (got OPQ8)"),
    (["--index-factory", "IVF64,RQ8x4"], "quantizer='rq' needs 8-bit codebooks"),
    (["--index-factory", "IVF64,PQ8", "--num-subvectors", "16", "--no-rotation"],
     "sets the index that --num-subvectors, --no-rotation would set; drop them"),
    (["--index-factory", "IVF64,RQ8x8", "--metric", "l2"], "The RQ quantizer scores by inner product, not l2"),
    (["--lr", "1e-3", "--pq-learning-rate", "1e-4"], "--pq-learning-rate repeats it"),
    (["--lr_sched", "cosine"], "unrecognized arguments ['--lr_sched', 'cosine']"),
], ids=["hnsw", "flat", "lsq", "fast-scan", "faiss-refuses", "opq-mismatch", "rq-bits", "conflict", "rq-l2",
        "lr-twice", "no-abbreviations"])
def test_refused_flags_print_one_line_and_exit_2(tmp_path, capsys, flags, message):
    assert main(["train", *flags, "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("distill-vq: error: ") and message in error
    assert not (tmp_path / "out").exists()


def test_training_flags_are_visible_and_reach_the_training_arguments(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for flag in ("--learning-rate LR, --lr LR", "--max-train-seconds", "--num-teacher-candidates", "--index-factory",
                 "--metric {ip,l2,cosine}", "--text-column", "--id-column", "--title-column", "L2-normalised"):
        assert flag in help_text
    args, unknown = parsed("--lr", "1e-3", "--max-train-seconds", "30", "--num-teacher-candidates", "50")
    training_args = training_arguments(args, unknown)
    assert unknown == [] and training_args.pq_learning_rate == 1e-3
    assert (training_args.max_train_seconds, training_args.num_teacher_candidates) == (30, 50)
    args, unknown = parsed("--ivf-learning-rate", "2e-3")  # other distillation settings still pass through
    assert training_arguments(args, unknown).ivf_learning_rate == 2e-3


def write_renamed_data(folder, num_docs: int = 300, num_queries: int = 60, dim: int = 16) -> list[str]:
    """A CSV corpus with columns `pid,heading,passage` and a JSON-lines query file with `qid,query`, random
    embeddings, and the `train` flags naming those columns."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "kernel", "archive", "font", "python"]
    pd.DataFrame({"pid": [f"{i:04d}" for i in range(num_docs)], "heading": "h",
                  "passage": [" ".join(rng.choice(words, 5)) for _ in range(num_docs)]}).to_csv(
        folder / "collection.csv", index=False)
    pd.DataFrame({"qid": [f"q{i}" for i in range(num_queries)],
                  "query": [" ".join(rng.choice(words, 2)) for _ in range(num_queries)]}).to_json(
        folder / "queries.jsonl", orient="records", lines=True)
    # scaled rows: cosine ranks differently from the inner product
    lengths = rng.uniform(0.1, 3, (num_docs, 1)).astype(np.float32)
    np.save(folder / "docs.npy", rng.standard_normal((num_docs, dim), dtype=np.float32) * lengths)
    np.save(folder / "queries.npy", rng.standard_normal((num_queries, dim), dtype=np.float32))
    return ["--corpus", str(folder / "collection.csv"), "--queries", str(folder / "queries.jsonl"),
            "--doc-embeddings", str(folder / "docs.npy"), "--query-embeddings", str(folder / "queries.npy"),
            "--id-column", "pid", "--text-column", "passage", "--title-column", "heading",
            "--query-id-column", "qid", "--query-text-column", "query"]


def test_renamed_columns_with_index_factory_and_cosine_train_and_evaluate_again(tmp_path):
    output_dir = tmp_path / "out"
    embeddings = ["--doc-embeddings", str(tmp_path / "docs.npy"), "--query-embeddings", str(tmp_path / "queries.npy")]
    flags = [*write_renamed_data(tmp_path), "--index-factory", "IVF2,PQ4", "--metric", "cosine", "--max-steps", "2",
             "--num-teacher-candidates", "20", "--disable-tqdm", "true", "--output-dir", str(output_dir)]
    assert main(["train", *flags]) == 0
    results = json.loads((output_dir / "results.json").read_text())
    assert (results["index_factory"], results["requested_index_factory"]) == ("IVF2,PQ4x8", "IVF2,PQ4")
    assert [row["index"] for row in results["results"]] == ["exact", "faiss IVF2,PQ4", "distill-vq"]
    assert "over faiss IVF2,PQ4 at 4 bytes/vector" in results["summary"]
    assert (results["num_docs"], results["num_teacher_candidates"]) == (300, 20)

    index_config = json.loads((output_dir / "index_config.json").read_text())
    assert index_config["metric"] == "cosine"
    assert index_config["corpus_columns"] == {"id_column": "pid", "text_column": "passage", "title_column": "heading"}
    # evaluate reads the recorded columns and normalises as the training did: the same recall against exact search
    assert main(["evaluate", str(output_dir), *embeddings, "--results-dir", str(tmp_path / "evaluation")]) == 0
    again = json.loads((tmp_path / "evaluation" / "results.json").read_text())
    trained = {row["index"]: row for row in results["results"]}["distill-vq"]
    evaluated = {row["index"]: row for row in again["results"]}["distill-vq"]
    assert evaluated["recall_vs_exact@10"] == pytest.approx(trained["recall_vs_exact@10"])
    # `search` shows the texts of the recorded columns, title first
    columns = TextColumns.from_dict(index_config["corpus_columns"])
    doc_ids = json.loads((output_dir / "doc_ids.json").read_text())
    assert doc_ids[:2] == ["0000", "0001"]  # csv ids read from --id-column stay strings
    texts = _document_texts(index_config["corpus"], [0], doc_ids, columns)
    assert texts[0].startswith("h ") and texts[0] == load_corpus(tmp_path / "collection.csv", columns=columns)[0]["text"]


def test_l2_metric_trains_an_l2_index(tmp_path):
    flags = [*write_renamed_data(tmp_path), "--metric", "l2", "--num-lists", "2", "--num-subvectors", "4",
             "--no-rotation", "--max-steps", "2", "--disable-tqdm", "true", "--output-dir", str(tmp_path / "out")]
    assert main(["train", *flags]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["metric"] == "l2" and json.loads((tmp_path / "out" / "config.json").read_text())["metric"] == "l2"
    assert results["results"][0]["recall_vs_exact@10"] == 1.0


@pytest.mark.parametrize("flag, column", [("--text-column", "body"), ("--id-column", "doc"),
                                          ("--query-text-column", "question")])
def test_a_missing_named_column_lists_the_files_columns(tmp_path, capsys, flag, column):
    flags = write_renamed_data(tmp_path, num_docs=50, num_queries=5)
    flags[flags.index(flag) + 1] = column
    assert main(["train", *flags, "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the data loaders' progress bars
    assert error.startswith("distill-vq: error: ") and f"has no column '{column}'" in error
    expected = "['qid', 'query']" if flag.startswith("--query") else "['pid', 'heading', 'passage']"
    assert f"its columns are {expected}: pass one of them as {flag}" in error


def test_too_few_documents_for_the_index_factory_name_it(tmp_path, capsys):
    flags = [*write_renamed_data(tmp_path, num_docs=100, num_queries=5), "--index-factory", "IVF4,PQ4"]
    assert main(["train", *flags, "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "100 documents are too few to train IVF4,PQ4x8" in error and "a smaller --index-factory than IVF4,PQ4" in error


class FixedEncoder:
    """Embeds every text as the same given vector (the encoder's part is not what is tested)."""

    def __init__(self, vector):
        self.vector = np.asarray(vector, dtype=np.float32)

    def encode(self, texts, **kwargs):
        return np.tile(self.vector, (len(texts), 1))


@pytest.mark.parametrize("metric, expected", [("cosine", [0.8, 0.6]), ("ip", [4.0, 3.0])])
def test_search_scores_cosines_for_a_cosine_index(metric, expected):
    index = faiss.IndexFlatIP(2)
    index.add(np.array([[0.6, 0.8], [0.8, -0.6]], dtype=np.float32))  # unit rows, as a cosine run stores them
    retriever = Retriever(index, ["a", "b"], FixedEncoder([5.0, 0.0]), {"metric": metric})
    hits = retriever.search("any query", k=2)[0]
    assert [hit["id"] for hit in hits] == ["b", "a"]
    assert [hit["score"] for hit in hits] == pytest.approx(expected)


def test_the_label_term_trains_on_the_train_qrels(tmp_path):
    embeddings = DATA / "default_data_embeddings"  # the packaged data, whose qrels have a train split
    assert main(["train", "--doc-embeddings", str(embeddings / "docs.npy"), "--query-embeddings",
                 str(embeddings / "queries.npy"), "--max-steps", "2", "--logging-steps", "1", "--num-lists", "16",
                 "--num-subvectors", "8", "--no-rotation", "--disable-tqdm", "true", "--label-loss-weight", "1",
                 "--output-dir", str(tmp_path / "out")]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    header, _, *rows = card.split("### Training log")[1].strip().splitlines()[:4]
    column = [cell.strip() for cell in header.split("|")].index("labels_contrastive")
    assert all(float(row.split("|")[column]) > 0 for row in rows)  # every step had labelled queries
