"""Data-parallel training on 2 CPU processes (gloo) equals 1 process on the same global batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors import safe_open

import multiprocess_training
from conftest import packaged_slice
from distill_vq import DistillVQConfig, DistillVQModel

SCRIPT = Path(__file__).parent / "multiprocess_training.py"


def read_rank(path: Path) -> tuple[dict, dict]:
    with safe_open(str(path), framework="pt") as checkpoint:
        return {name: checkpoint.get_tensor(name) for name in checkpoint.keys()}, checkpoint.metadata()


def test_two_processes_match_one_process(debian_embeddings, tmp_path):
    DistillVQModel.from_embeddings(debian_embeddings[0], DistillVQConfig(num_lists=32, num_subvectors=8)).save_pretrained(
        tmp_path / "init")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    two = subprocess.Popen([*torchrun, str(SCRIPT), str(tmp_path / "init"), str(tmp_path / "two"), "16"], env=env)
    try:  # meanwhile the single process: this one (the script's main, as `python SCRIPT ... 32` runs it)
        multiprocess_training.main(str(tmp_path / "init"), str(tmp_path / "one"), 32)
    finally:
        returncode = two.wait()
    assert returncode == 0

    rank0, metadata = read_rank(tmp_path / "two" / "rank0.safetensors")
    rank1, _ = read_rank(tmp_path / "two" / "rank1.safetensors")
    single, single_metadata = read_rank(tmp_path / "one" / "rank0.safetensors")
    assert metadata == {"wrapper": "DistributedDataParallel", "world_size": "2"}
    assert single_metadata["world_size"] == "1"
    initial = DistillVQModel.from_pretrained(tmp_path / "init").state_dict()
    for name in ("ivf_centroids", "codebooks"):
        assert torch.equal(rank0[name], rank1[name]), name  # DDP keeps the replicas identical
        assert not torch.equal(rank0[name], initial[name]), name  # and they did train
        # same global batch of 32 queries, same candidate union, gradients averaged: the same update
        torch.testing.assert_close(rank0[name], single[name], rtol=0, atol=1e-5)  # updates are ~1e-3


def test_accelerate_launch_of_the_command_writes_one_output_folder(tmp_path, tmp_path_factory):
    data = packaged_slice(tmp_path_factory.mktemp("data"))  # 1000 documents, 400 queries
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    config = Path(__file__).parents[1] / "examples" / "accelerate" / "cpu_2_processes.yaml"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "--main_process_port",
               "0", "-m", "distill_vq", "train", *data, "--max-steps", "3", "--batch-size", "16",
               "--num-lists", "16", "--num-subvectors", "8", "--no-rotation", "--disable-tqdm", "true", "--output-dir",
               str(tmp_path / "out")]
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert (results["num_processes"], results["batch_size"], results["training_steps"]) == (2, 32, 3)
    assert result.stdout.count("distill-vq: wrote") == 1  # the main process alone evaluates and writes
    assert sorted(path.name for path in tmp_path.iterdir()) == ["out"]
    DistillVQModel.from_pretrained(tmp_path / "out")
