"""The `distill-vq` command: parsing, a train run's output folder, evaluate, search, push, input formats, errors."""

import json
import logging
import os
import re
import runpy
import shutil
import sys

import faiss
import numpy as np
import pandas as pd
import pytest
from huggingface_hub import HfApi, ModelCard
from local_hub import local_hub  # noqa: F401  (fixture)

from conftest import DATA, DEFAULT_DATA, fast_opq
from distill_vq import DistillVQModel
from distill_vq.cli import build_parser, main, training_arguments
from distill_vq.pipeline import auto_num_lists
from distill_vq.data import DataError, load_corpus
from distill_vq.faiss_bridge import summarised_kmeans_warnings
from distill_vq.output_folder import staged_folder

EMBEDDINGS = DATA / "default_data_embeddings"
PRECOMPUTED = ["--doc-embeddings", str(EMBEDDINGS / "docs.npy"), "--query-embeddings", str(EMBEDDINGS / "queries.npy")]
FAST = ["--max-steps", "5", "--num-lists", "16", "--num-subvectors", "8", "--disable-tqdm", "true"]
OUTPUT_FILES = {"config.json", "model.safetensors", "index.faiss", "doc_ids.json", "index_config.json",
                "results.json", "results.md", "recall.png", "README.md"}
BASELINE = "faiss OPQ8,IVF16,PQ8x8"


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    """A train run on the packaged data with its precomputed embeddings, with the default OPQ rotation (trained
    with fewer iterations: the tests read the folder, not the rotation's quality)."""
    output_dir = tmp_path_factory.mktemp("run") / "out"
    with fast_opq():
        assert main(["train", *PRECOMPUTED, *FAST, "--output-dir", str(output_dir)]) == 0
    return output_dir


def test_defaults_and_pass_through_training_flags(tmp_path):
    args, unknown = build_parser().parse_known_args(["train", "--warmup-steps", "7", "--pq-learning-rate", "1e-4"])
    assert (args.corpus, args.max_steps, args.batch_size, args.loss) == (None, None, 64, "listnet")
    training_args = training_arguments(args, unknown)
    assert (training_args.max_steps, training_args.warmup_steps, training_args.pq_learning_rate) == (300, 7, 1e-4)
    assert (training_args.save_strategy, training_args.save_steps, training_args.save_total_limit) == ("steps", 0.1, 2)
    assert training_args.num_teacher_candidates == 200
    with pytest.raises(ValueError, match="unrecognized arguments"):
        training_arguments(args, ["--no-such-flag", "1"])
    epochs, _ = build_parser().parse_known_args(["train", "--num-train-epochs", "2"])
    assert training_arguments(epochs, []).max_steps == -1
    assert [auto_num_lists(n) for n in (100, 5000, 1_000_000)] == [2, 128, 4096]


def test_train_writes_a_loadable_output_folder(trained_dir):
    assert OUTPUT_FILES | {"baseline.faiss"} <= {path.name for path in trained_dir.iterdir()}
    assert not list(trained_dir.parent.glob(".out.*"))  # the staging folder was renamed
    model = DistillVQModel.from_pretrained(trained_dir)
    assert model.config.encoder_name_or_path == "sentence-transformers/all-MiniLM-L6-v2"
    assert model.config.index_factory_string == "OPQ8,IVF16,PQ8x8"
    queries = np.load(EMBEDDINGS / "queries.npy")[:5].astype(np.float32)
    _, rows = faiss.read_index(str(trained_dir / "index.faiss")).search(queries, 10)
    assert (rows >= 0).all() and rows.max() < 5000
    results = json.loads((trained_dir / "results.json").read_text())
    assert [row["index"] for row in results["results"]] == ["exact", BASELINE, "distill-vq"]
    assert {"recall_vs_exact@10", "recall_vs_exact@100", "mrr@10", "ndcg@10", "recall@100", "qps"} <= set(
        results["results"][2])
    assert results["num_eval_queries"] == 377 and results["training_steps"] == 5
    card = (trained_dir / "README.md").read_text()
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in card and "- product-quantization" in card
    assert "| distill-vq" in card and "arXiv:2301.12005" in card


def test_search_finds_a_document_by_its_text(trained_dir, capsys):
    document = load_corpus(DEFAULT_DATA).filter(lambda row: row["_id"] == "d2139")[0]
    assert main(["search", str(trained_dir), document["text"], "-k", "10"]) == 0
    output = capsys.readouterr().out
    assert " d2139 " in output and "p7zip is the Unix command-line port" in output


def without_qps(row: dict) -> dict:
    return {name: value for name, value in row.items() if name != "qps"}


def test_evaluate_repeats_trains_comparison_with_the_kept_faiss_baseline(trained_dir, tmp_path, monkeypatch, capsys):
    assert "baseline.faiss" in json.loads((trained_dir / "index_config.json").read_text())["sha256"]
    monkeypatch.chdir(tmp_path)  # the results go to ./evaluation, not into the output folder
    assert main(["evaluate", str(trained_dir), *PRECOMPUTED]) == 0
    output = capsys.readouterr().out
    assert not (trained_dir / "evaluation").exists()
    evaluated = json.loads((tmp_path / "evaluation" / "results.json").read_text())
    trained = json.loads((trained_dir / "results.json").read_text())
    assert [row["index"] for row in evaluated["results"]] == ["exact", BASELINE, "distill-vq"]
    assert [without_qps(row) for row in evaluated["results"]] == [without_qps(row) for row in trained["results"]]
    assert evaluated["summary"] == trained["summary"] and evaluated["warnings"] == trained["warnings"]
    [printed] = [line.split("|")[:-2] for line in output.splitlines() if line.startswith(f"| {BASELINE}")]
    [written] = [line.split("|")[:-2] for line in (trained_dir / "results.md").read_text().splitlines()
                 if line.startswith(f"| {BASELINE}")]
    assert printed == written  # the same row as train's table, but for qps
    assert f"distill-vq: wrote evaluation — {trained['summary'][0].lower()}{trained['summary'][1:-1]}" in output
    assert main(["evaluate", str(trained_dir), *PRECOMPUTED]) == 0  # its own earlier results are replaced


def test_evaluate_never_overwrites_results_it_did_not_write(trained_dir, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.md").write_text("my notes")
    assert main(["evaluate", str(trained_dir), *PRECOMPUTED, "--results-dir", str(mine)]) == 2
    assert "holds results.md that `distill-vq evaluate` did not write" in capsys.readouterr().err
    assert (mine / "results.md").read_text() == "my notes" and [path.name for path in mine.iterdir()] == ["results.md"]


def test_evaluate_of_a_folder_without_the_baseline_says_why_in_one_line(trained_dir, tmp_path, capsys):
    old = tmp_path / "old"
    shutil.copytree(trained_dir, old)
    (old / "baseline.faiss").write_bytes(b"damaged")
    assert main(["evaluate", str(old), *PRECOMPUTED, "--results-dir", str(tmp_path / "r")]) == 2
    assert "baseline.faiss does not match the sha256 recorded" in capsys.readouterr().err
    (old / "baseline.faiss").unlink()  # a folder written before train kept the baseline
    assert main(["evaluate", str(old), *PRECOMPUTED, "--results-dir", str(tmp_path / "r")]) == 0
    results = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [row["index"] for row in results["results"]] == ["exact", "distill-vq"]
    trained = json.loads((trained_dir / "results.json").read_text())["results"][2]
    assert without_qps(results["results"][1]) == without_qps(trained)
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("distill-vq: warning:")]
    [warning] = warnings
    assert warning.startswith(f"distill-vq: warning: no {BASELINE} row: {old} has no baseline.faiss, the faiss "
                              "baseline that `distill-vq train` now keeps")


def test_evaluate_uses_the_recorded_split_unless_one_is_given(trained_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained_dir, copy)
    index_config = json.loads((copy / "index_config.json").read_text())
    (copy / "index_config.json").write_text(json.dumps({**index_config, "eval_split": "dev"}))
    for flags, num_queries in (([], 88), (["--eval-split", "test"], 377)):
        assert main(["evaluate", str(copy), *PRECOMPUTED, *flags, "--results-dir", str(tmp_path / "r")]) == 0
        assert json.loads((tmp_path / "r" / "results.json").read_text())["num_eval_queries"] == num_queries


def test_push_then_search_the_hub_repository(trained_dir, local_hub, capsys):
    assert main(["push", str(trained_dir), "me/debian-pq", "--include-index"]) == 0
    assert "pushed" in capsys.readouterr().out
    files = set(HfApi().list_repo_files("me/debian-pq"))
    assert OUTPUT_FILES <= files and not any(name.startswith("checkpoints") for name in files)
    card = ModelCard.load("me/debian-pq")
    assert 'DistillVQModel.from_pretrained("me/debian-pq")' in card.text and "| distill-vq" in card.text
    document = load_corpus(DEFAULT_DATA).filter(lambda row: row["_id"] == "d2139")[0]
    assert main(["search", "me/debian-pq", document["text"], "-k", "10"]) == 0
    assert " d2139 " in capsys.readouterr().out
    assert main(["search", "me/absent", "anything"]) == 2
    assert "is not a folder, and fetching it from the Hub failed" in capsys.readouterr().err


def write_table(path, rows: list[dict]) -> None:
    frame = pd.DataFrame(rows)
    {"jsonl": lambda: frame.to_json(path, orient="records", lines=True), "csv": lambda: frame.to_csv(path, index=False),
     "parquet": lambda: frame.to_parquet(path)}[path.suffix[1:]]()


def tiny_data(tmp_path, suffix: str, num_docs: int = 64, num_queries: int = 40, dim: int = 16) -> list[str]:
    """Corpus and query files of random words with random embeddings; `train` flags for them and a tiny index."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "kernel", "archive", "font", "python"]
    write_table(tmp_path / f"corpus.{suffix}",
                [{"_id": f"d{i}", "title": "t", "text": " ".join(rng.choice(words, 5))} for i in range(num_docs)])
    write_table(tmp_path / f"queries.{suffix}",
                [{"_id": f"q{i}", "text": " ".join(rng.choice(words, 2))} for i in range(num_queries)])
    np.save(tmp_path / "docs.npy", rng.standard_normal((num_docs, dim), dtype=np.float32))
    np.save(tmp_path / "queries.npy", rng.standard_normal((num_queries, dim), dtype=np.float32))
    return ["--corpus", str(tmp_path / f"corpus.{suffix}"), "--queries", str(tmp_path / f"queries.{suffix}"),
            "--doc-embeddings", str(tmp_path / "docs.npy"), "--query-embeddings", str(tmp_path / "queries.npy"),
            "--num-subvectors", "4", "--bits-per-subvector", "4", "--max-steps", "2", "--disable-tqdm", "true"]


@pytest.mark.parametrize("suffix", ["jsonl", "csv", "parquet"])
def test_each_file_format_trains(tmp_path, suffix):
    flags = [*tiny_data(tmp_path, suffix), "--no-rotation"]
    if suffix == "jsonl":  # with qrels: the judged queries are the evaluation queries
        (tmp_path / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td3\t1\nq1\td5\t1\n")
        flags += ["--qrels", str(tmp_path / "test.tsv")]
    assert main(["train", *flags, "--output-dir", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["num_docs"] == 64 and results["index_factory"] == "IVF1,PQ4x4"
    assert results["num_eval_queries"] == (2 if suffix == "jsonl" else 4)
    assert ("mrr@10" in results["results"][2]) == (suffix == "jsonl")


@pytest.mark.parametrize("verbose", [False, True])
def test_faiss_warnings_are_summarised_in_one_line_and_library_bars_need_verbose(tmp_path, capfd, verbose):
    flags = [*tiny_data(tmp_path, "jsonl"), "--no-rotation", *(["--verbose"] if verbose else [])]
    assert main(["train", *flags, "--output-dir", str(tmp_path / "out")]) == 0
    out, err = capfd.readouterr()
    assert "WARNING clustering" not in out + err  # faiss writes 4 (one per sub-vector's k-means) to fd 2
    summaries = [line for line in out.splitlines() if "k-means warnings" in line]
    assert summaries == ["    faiss: 4 k-means warnings (too few points per centroid): 4 x 64 points to 16 centroids, "
                         "faiss advises at least 624"]
    assert re.search(r"^    faiss: trained IVF1,PQ4x4 on 64 documents in \d+\.\d s$", out, re.MULTILINE)
    assert ("Generating train split" in err) == verbose


def test_the_kmeans_summary_passes_other_stderr_lines_on(capfd, caplog):
    docs = np.random.default_rng(0).standard_normal((100, 8), dtype=np.float32)
    with caplog.at_level(logging.INFO, "distill_vq.faiss_bridge"), summarised_kmeans_warnings():
        faiss.Kmeans(8, 16, niter=2).train(docs)
        os.write(2, b"another line\n")
    assert capfd.readouterr().err == "another line\n"
    assert caplog.messages == ["faiss: 1 k-means warning (too few points per centroid): 1 x 100 points to 16 "
                               "centroids, faiss advises at least 624"]


def test_documents_are_pseudo_queries_when_every_query_is_judged(tmp_path):
    flags = [*tiny_data(tmp_path, "jsonl", num_queries=3), "--no-rotation"]
    (tmp_path / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td3\t1\nq1\td5\t1\nq2\td7\t1\n")
    assert main(["train", *flags, "--qrels", str(tmp_path / "test.tsv"), "--output-dir", str(tmp_path / "out")]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (results["num_train_queries"], results["num_eval_queries"]) == (64, 3)


def bad_file(rows):
    def make(tmp_path):
        write_table(tmp_path / "corpus.jsonl", rows)
        return ["--corpus", str(tmp_path / "corpus.jsonl")]
    return make


def default_data_with(docs=None, queries=None):
    def make(tmp_path):
        np.save(tmp_path / "docs.npy", docs if docs is not None else np.load(EMBEDDINGS / "docs.npy"))
        np.save(tmp_path / "queries.npy", queries if queries is not None else np.load(EMBEDDINGS / "queries.npy"))
        return ["--doc-embeddings", str(tmp_path / "docs.npy"), "--query-embeddings", str(tmp_path / "queries.npy")]
    return make


@pytest.mark.parametrize("make_flags, message", [
    (lambda tmp_path: ["--corpus", str(tmp_path / "missing")], "no such file or folder"),
    (lambda tmp_path: ["--corpus", str(tmp_path)], "has no corpus.jsonl"),
    (bad_file([{"_id": "d1", "body": "no text column"}]), "no 'text' column"),
    (bad_file([{"_id": "d1", "text": "a document"}, {"_id": "d2", "text": " "}]), "'d2' has empty text"),
    (bad_file([{"_id": "d1", "text": "one"}, {"_id": "d1", "text": "two"}]), "id 'd1' appears 2 times"),
    (default_data_with(docs=np.zeros((10, 384), np.float16)), "has shape (10, 384) but the corpus has 5000 rows"),
    (default_data_with(queries=np.zeros((4890, 8), np.float16)), "has dimension 8, not 384"),
    (lambda tmp_path: [*PRECOMPUTED, "--num-subvectors", "7"], "num_subvectors=7 does not divide"),
    (lambda tmp_path: tiny_data(tmp_path, "jsonl"), "64 documents are too few to train OPQ4,IVF1,PQ4x4"),
    (lambda tmp_path: ["--eval-split", "nope"], "no qrels split 'nope'"),
    (lambda tmp_path: ["--no-such-flag", "1"], "unrecognized arguments"),
], ids=["missing-path", "no-corpus-file", "no-text-column", "empty-text", "duplicate-ids", "embedding-rows",
        "embedding-dim", "invalid-config", "too-few-docs", "missing-split", "unknown-flag"])
def test_user_errors_print_one_line_and_leave_nothing(tmp_path, capsys, make_flags, message):
    flags = make_flags(tmp_path)
    output_dir = tmp_path / "out"
    assert main(["train", *flags, "--output-dir", str(output_dir)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("distill-vq: error: ") and message in error
    assert not output_dir.exists() and not list(tmp_path.glob(".out.*"))


def test_an_output_folder_is_replaced_whole_and_other_folders_are_refused(tmp_path):
    output_dir = tmp_path / "out"
    output_dir.mkdir()
    (output_dir / "index_config.json").write_text("{}")  # an earlier run
    with pytest.raises(RuntimeError), staged_folder(output_dir) as folder:
        (folder / "half-written").write_text("")
        raise RuntimeError("interrupted")
    assert [path.name for path in tmp_path.iterdir()] == ["out"] and (output_dir / "index_config.json").exists()
    with staged_folder(output_dir) as folder:
        (folder / "index_config.json").write_text("{}")
        (folder / "new").write_text("")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"] and (output_dir / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="not a distill-vq output folder"):
        staged_folder(tmp_path / "mine").__enter__()
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_a_failed_run_keeps_its_checkpoints_and_resumes(tmp_path, monkeypatch):
    output_dir = tmp_path / "out"
    flags = ["train", *tiny_data(tmp_path, "jsonl"), "--no-rotation", "--output-dir", str(output_dir),
             "--save-strategy", "steps", "--save-steps", "2"]

    def die(*args, **kwargs):
        raise RuntimeError("killed while writing")

    with monkeypatch.context() as patch:
        patch.setattr("distill_vq.pipeline.write_index_files", die)
        with pytest.raises(RuntimeError, match="killed"):
            main([*flags, "--max-steps", "4"])
    assert not output_dir.exists()
    [staging] = tmp_path.glob(".out.staging-*")  # the killed run's own staging folder
    checkpoints = sorted(path.name for path in (staging / "checkpoints").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    assert main([*flags, "--max-steps", "6", "--resume-from-checkpoint", "last"]) == 0
    assert json.loads((output_dir / "results.json").read_text())["training_steps"] == 6
    assert (output_dir / "checkpoints" / "checkpoint-6").is_dir() and not staging.exists()


def test_the_module_command_exits_with_status_2_and_no_traceback(tmp_path, monkeypatch, capsys):
    """`python -m distill_vq` run as the interpreter runs it (runpy), in this process: a fresh interpreter costs
    seconds of imports, and test_hub_faults.py runs `python -m distill_vq` in fresh processes (one line, status 2)."""
    monkeypatch.setattr(sys, "argv", ["distill_vq", "train", "--corpus", str(tmp_path / "missing.jsonl")])
    with pytest.raises(SystemExit) as exit_info:  # anything else would reach the interpreter: a traceback
        runpy.run_module("distill_vq", run_name="__main__", alter_sys=True)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.strip().startswith("distill-vq: error: ") and "Traceback" not in stderr
