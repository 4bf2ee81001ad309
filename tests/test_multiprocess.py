"""Data-parallel training on 2 CPU processes (gloo) under `accelerate launch` equals 1 process on the same global
batch: the command run twice, once launched on 2 processes and once in this process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from conftest import packaged_slice
from distill_vq.cli import main

ACCELERATE_CONFIG = Path(__file__).parents[1] / "examples" / "accelerate" / "cpu_2_processes.yaml"


def test_accelerate_launch_of_the_command_trains_like_one_process(tmp_path, tmp_path_factory):
    data = packaged_slice(tmp_path_factory.mktemp("data"))  # 1000 documents, 400 queries
    flags = ["train", *data, "--max-steps", "3", "--num-lists", "16", "--num-subvectors", "8", "--no-rotation",
             "--disable-tqdm", "true"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIG),
              "--main_process_port", "0", "-m", "distill_vq"]
    two = subprocess.Popen([*launch, *flags, "--batch-size", "16", "--output-dir", str(tmp_path / "two")], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # meanwhile the single process, on the same global batch of 32 queries
        assert main([*flags, "--batch-size", "32", "--output-dir", str(tmp_path / "one")]) == 0
    finally:
        stdout, stderr = two.communicate()
    assert two.returncode == 0, stderr[-3000:]

    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert (results["num_processes"], results["batch_size"], results["training_steps"]) == (2, 32, 3)
    assert stdout.count("distill-vq: wrote") == 1  # the main process alone evaluates and writes
    assert sorted(path.name for path in tmp_path.iterdir()) == ["one", "two"]
    two_processes = load_file(tmp_path / "two" / "model.safetensors")
    one_process = load_file(tmp_path / "one" / "model.safetensors")
    before_last_step = load_file(tmp_path / "two" / "checkpoints" / "checkpoint-2" / "model.safetensors")
    for name in ("ivf_centroids", "codebooks"):
        assert not torch.equal(two_processes[name], before_last_step[name]), name  # the last step did train
        # same candidates, gradients averaged over the 2 x 16 queries: the same update as one process on 32
        torch.testing.assert_close(two_processes[name], one_process[name], rtol=0, atol=1e-5)  # updates are ~1e-3
