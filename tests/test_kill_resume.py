"""A run killed with SIGKILL mid-training resumes with `--resume-from-checkpoint last` and ends bit-identical to an
uninterrupted run with the same seed; checkpoints are saved by default, and when the time budget is spent."""

import json
import logging
import multiprocessing
import signal
import time

import pytest
from conftest import packaged_slice
from safetensors.numpy import load_file

from distill_vq import pipeline  # noqa: F401 - imported before the fork, so the killed run starts at once
from distill_vq.cli import main
from distill_vq.output_folder import last_checkpoint

INDEX = ["--num-lists", "16", "--num-subvectors", "8", "--no-rotation", "--batch-size", "16", "--disable-tqdm", "true"]
MAX_STEPS = 10  # a checkpoint every step (every 10%)


@pytest.fixture(scope="module")
def train(tmp_path_factory) -> list[str]:
    """`train` flags for 1000 documents and 400 queries of the packaged slice (enough for IVF16,PQ8x8)."""
    return ["train", *packaged_slice(tmp_path_factory.mktemp("data")), *INDEX]


def wait_for(condition, process, seconds=300):
    """Poll `condition` until it holds; fail if `process` ends first or time runs out."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.is_alive(), "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_run_killed_mid_training_resumes_bit_identical(train, tmp_path, capsys, caplog):
    """The killed run is a process of its own, the command's `main` forked from this process (a fresh interpreter
    would spend seconds importing), SIGKILLed after its first checkpoint; the resumed run and the uninterrupted
    reference run in this process, one after the other."""
    output_dir = tmp_path / "out"
    command = [*train, "--max-steps", str(MAX_STEPS)]
    fork = multiprocessing.get_context("fork")
    killed = fork.Process(target=main, args=([*command, "--output-dir", str(output_dir)],))
    killed.start()
    wait_for((tmp_path / ".out.lock").exists, killed)
    assert main([*train, "--output-dir", str(output_dir)]) == 2  # a second run into the same folder
    assert f"another distill-vq run: its lock {tmp_path}/.out.lock is held by process {killed.pid}" in (
        capsys.readouterr().err)
    wait_for(lambda: last_checkpoint(output_dir) is not None, killed)  # a whole checkpoint: killed after it
    killed.kill()  # SIGKILL
    killed.join()
    assert killed.exitcode == -signal.SIGKILL
    assert not output_dir.exists() and (tmp_path / ".out.lock").exists()  # a stale lock and a staging folder left

    with caplog.at_level(logging.WARNING):
        assert main([*command, "--output-dir", str(output_dir), "--resume-from-checkpoint", "last"]) == 0
    assert f"Taking over {tmp_path}/.out.lock: process {killed.pid}" in caplog.text
    assert main([*command, "--output-dir", str(tmp_path / "reference")]) == 0

    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "reference"]  # the killed run's folder is gone
    results = json.loads((output_dir / "results.json").read_text())
    assert results["training_steps"] == MAX_STEPS
    weights = load_file(output_dir / "model.safetensors")
    expected = load_file(tmp_path / "reference" / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name in expected:
        assert (weights[name] == expected[name]).all(), name
    assert (output_dir / "index.faiss").read_bytes() == (tmp_path / "reference" / "index.faiss").read_bytes()
    assert {path.name for path in (output_dir / "checkpoints").glob("checkpoint-*")} == {
        f"checkpoint-{MAX_STEPS - 1}", f"checkpoint-{MAX_STEPS}"}


def test_the_time_budget_ends_with_a_checkpoint(train, tmp_path):
    output_dir = tmp_path / "out"
    flags = ["--max-steps", "2000", "--save-steps", "1000", "--max-train-seconds", "1"]
    assert main([*train, *flags, "--output-dir", str(output_dir)]) == 0
    steps = json.loads((output_dir / "results.json").read_text())["training_steps"]
    assert 0 < steps < 1000
    assert [path.name for path in (output_dir / "checkpoints").glob("checkpoint-*")] == [f"checkpoint-{steps}"]
