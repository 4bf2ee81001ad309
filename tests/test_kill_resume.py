"""A run killed with SIGKILL mid-training resumes with `--resume-from-checkpoint last` and ends bit-identical to an
uninterrupted run with the same seed; checkpoints are saved by default, and when the time budget is spent."""

import json
import os
import signal
import subprocess
import sys
import time

from conftest import DATA
from safetensors.numpy import load_file

from distill_vq.cli import main

EMBEDDINGS = DATA / "default_data_embeddings"
TRAIN = ["train", "--doc-embeddings", str(EMBEDDINGS / "docs.npy"), "--query-embeddings",
         str(EMBEDDINGS / "queries.npy"), "--num-lists", "16", "--num-subvectors", "8", "--no-rotation",
         "--batch-size", "16", "--disable-tqdm", "true"]
COMMAND = [sys.executable, "-m", "distill_vq", *TRAIN, "--max-steps", "30"]  # a checkpoint every 3 steps
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def wait_for(condition, process, seconds=300):
    """Poll `condition` until it holds; fail if `process` ends first or time runs out."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_run_killed_mid_training_resumes_bit_identical(tmp_path, capsys):
    output_dir = tmp_path / "out"
    reference = subprocess.Popen([*COMMAND, "--output-dir", str(tmp_path / "reference")], env=ENV,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed = subprocess.Popen([*COMMAND, "--output-dir", str(output_dir)], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_for((tmp_path / ".out.lock").exists, killed)
    assert main([*TRAIN, "--output-dir", str(output_dir)]) == 2  # a second run into the same folder
    assert f"another distill-vq run: its lock {tmp_path}/.out.lock is held by process {killed.pid}" in (
        capsys.readouterr().err)
    wait_for(lambda: any(tmp_path.glob(".out.staging-*/checkpoints/checkpoint-*/trainer_state.json")), killed)
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert not output_dir.exists() and (tmp_path / ".out.lock").exists()  # a stale lock and a staging folder left

    resumed = subprocess.run([*COMMAND, "--output-dir", str(output_dir), "--resume-from-checkpoint", "last"],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Taking over {tmp_path}/.out.lock: process {killed.pid}" in resumed.stderr
    _, errors = reference.communicate()
    assert reference.returncode == 0, errors[-3000:]

    assert sorted(path.name for path in tmp_path.iterdir()) == ["out", "reference"]  # the killed run's folder is gone
    results = json.loads((output_dir / "results.json").read_text())
    assert results["training_steps"] == 30
    weights = load_file(output_dir / "model.safetensors")
    expected = load_file(tmp_path / "reference" / "model.safetensors")
    assert weights.keys() == expected.keys()
    for name in expected:
        assert (weights[name] == expected[name]).all(), name
    assert (output_dir / "index.faiss").read_bytes() == (tmp_path / "reference" / "index.faiss").read_bytes()
    assert sorted(path.name for path in (output_dir / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-27", "checkpoint-30"]


def test_the_time_budget_ends_with_a_checkpoint(tmp_path):
    output_dir = tmp_path / "out"
    flags = ["--max-steps", "2000", "--save-steps", "1000", "--max-train-seconds", "1"]
    assert main([*TRAIN, *flags, "--output-dir", str(output_dir)]) == 0
    steps = json.loads((output_dir / "results.json").read_text())["training_steps"]
    assert 0 < steps < 1000
    assert [path.name for path in (output_dir / "checkpoints").glob("checkpoint-*")] == [f"checkpoint-{steps}"]
