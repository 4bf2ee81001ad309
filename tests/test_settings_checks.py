"""Settings that would run silently wrong, or fail only after the long work, are refused before any encoding or
training, in one line that names the fix."""

import json

import numpy as np
import pytest
from conftest import DATA

from distill_vq.cli import main
from distill_vq.trainer import DistillVQTrainingArguments

EMBEDDINGS = DATA / "default_data_embeddings"
PRECOMPUTED = ["--doc-embeddings", str(EMBEDDINGS / "docs.npy"), "--query-embeddings", str(EMBEDDINGS / "queries.npy")]
TRAIN = ["train", *PRECOMPUTED, "--max-steps", "2", "--num-lists", "16", "--num-subvectors", "8", "--no-rotation",
         "--disable-tqdm", "true"]


def never(*args, **kwargs):
    pytest.fail("the long work started: the check came too late")


@pytest.fixture
def no_long_work(monkeypatch):
    """Encoding and faiss's training fail the test if they start."""
    monkeypatch.setattr("distill_vq.pipeline.embed_task", never)
    monkeypatch.setattr("distill_vq.pipeline.DistillVQModel.from_embeddings", never)


def refused(flags, capsys) -> str:
    """Run the command; it must exit with 2 and end with one error line (after any progress bars), returned."""
    assert main(flags) == 2
    stderr = capsys.readouterr().err
    error = stderr.strip().splitlines()[-1]
    assert error.startswith("distill-vq: error: ") and "Traceback" not in stderr, stderr
    return error


def small_corpus(tmp_path, num_docs=300, queries=False) -> list[str]:
    """A jsonl corpus of the packaged data's first documents and their embeddings (plus queries, when asked)."""
    rows = [{"_id": f"d{i}", "text": f"document {i}"} for i in range(num_docs)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    np.save(tmp_path / "docs.npy", np.load(EMBEDDINGS / "docs.npy")[:num_docs])
    flags = ["--corpus", str(tmp_path / "corpus.jsonl"), "--doc-embeddings", str(tmp_path / "docs.npy")]
    if queries:
        rows = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(20)]
        (tmp_path / "queries.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
        np.save(tmp_path / "queries.npy", np.load(EMBEDDINGS / "queries.npy")[:20])
        flags += ["--queries", str(tmp_path / "queries.jsonl"), "--query-embeddings", str(tmp_path / "queries.npy")]
    return flags


@pytest.mark.parametrize("epochs", ["0", "-1"])
def test_epochs_that_train_nothing_are_refused(tmp_path, capsys, no_long_work, epochs):
    error = refused(["train", "--num-train-epochs", epochs, "--output-dir", str(tmp_path / "out")], capsys)
    assert f"num_train_epochs={epochs} with max_steps=-1 would train nothing" in error
    with pytest.raises(ValueError, match="would train nothing"):
        DistillVQTrainingArguments(output_dir=str(tmp_path), num_train_epochs=0, report_to=[])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, message", [
    (["--nprobe", "99", "--num-lists", "8"], "--nprobe 99 is more than the 8 IVF lists it would search"),
    (["--nprobe", "200"], "--nprobe 200 is more than the 128 IVF lists"),  # the lists chosen for 5000 documents
], ids=["given-lists", "automatic-lists"])
def test_nprobe_above_the_lists_is_refused(tmp_path, capsys, no_long_work, flags, message):
    error = refused(["train", *PRECOMPUTED, *flags, "--output-dir", str(tmp_path / "out")], capsys)
    assert message in error and "lower --nprobe or raise --num-lists" in error


def test_query_embeddings_without_queries_are_refused(tmp_path, capsys, no_long_work):
    np.save(tmp_path / "wrong.npy", np.zeros((3, 7), np.float32))
    flags = [*small_corpus(tmp_path), "--query-embeddings", str(tmp_path / "wrong.npy")]
    error = refused(["train", *flags, "--output-dir", str(tmp_path / "out")], capsys)
    assert "there are no queries (documents serve as pseudo-queries)" in error and "drop --query-embeddings" in error


def test_qrels_without_a_relevant_document_are_refused(tmp_path, capsys, no_long_work):
    (tmp_path / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td1\t0\nq1\td2\t-1\n")
    flags = [*small_corpus(tmp_path, queries=True), "--qrels", str(tmp_path / "test.tsv")]
    error = refused(["train", *flags, "--output-dir", str(tmp_path / "out")], capsys)
    assert "judge no document relevant (every score is <= 0)" in error


def test_a_label_term_without_training_labels_is_refused(tmp_path, capsys, no_long_work):
    flags = [*small_corpus(tmp_path, queries=True), "--label-loss-weight", "1"]  # queries of their own: no train qrels
    error = refused(["train", *flags, "--output-dir", str(tmp_path / "out")], capsys)
    assert "there are no qrels 'train'" in error and "drop --label-loss-weight" in error
    assert not (tmp_path / "out").exists()


def test_resume_without_a_checkpoint_is_refused(tmp_path, capsys, no_long_work):
    error = refused([*TRAIN, "--output-dir", str(tmp_path / "out"), "--resume-from-checkpoint", "last"], capsys)
    assert "no run into" in error and "left a checkpoint; drop the flag" in error
    error = refused([*TRAIN, "--output-dir", str(tmp_path / "out"), "--resume-from-checkpoint", str(tmp_path)],
                    capsys)
    assert "is not a checkpoint folder" in error


@pytest.fixture(scope="module")
def finished_run(packaged_run):
    """A run with TRAIN's flags (conftest.py's, shared: the refused resumes leave it as it is)."""
    assert (packaged_run / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()
    return packaged_run


@pytest.mark.parametrize("flags, difference", [
    (["--num-lists", "32"], "index_factory 'IVF16,PQ8x8' there, 'IVF32,PQ8x8' now"),
    (["--num-subvectors", "16"], "index_factory 'IVF16,PQ8x8' there, 'IVF16,PQ16x8' now"),
    ("small-corpus", "num_docs 5000 there, 300 now"),
    (["--metric", "cosine"], "metric 'inner_product' there, 'cosine' now"),
], ids=["other-lists", "other-subvectors", "other-corpus", "other-metric"])
def test_resume_refuses_a_checkpoint_of_other_data_or_settings(finished_run, tmp_path, capsys, monkeypatch, flags,
                                                                difference):
    monkeypatch.setattr("distill_vq.pipeline.DistillVQModel.from_embeddings", never)  # the data are read, no more
    flags = small_corpus(tmp_path, queries=True) if flags == "small-corpus" else flags
    before = sorted(path.name for path in finished_run.iterdir())
    error = refused([*TRAIN, *flags, "--output-dir", str(finished_run), "--resume-from-checkpoint", "last"], capsys)
    assert f"Cannot resume from {finished_run}/checkpoints/checkpoint-2" in error and difference in error
    assert "train from scratch without --resume-from-checkpoint" in error
    assert sorted(path.name for path in finished_run.iterdir()) == before
