"""Flags of the whole command: `--threads` (one thread count for torch and faiss, capped at the cores available),
`--version`, and a `--help` that loads no torch."""

import os
import subprocess
import sys

import faiss
import pytest
import torch

import distill_vq
from distill_vq.cli import (
    DISTILLATION_LOSSES, QUANTIZER_NAMES, available_cores, build_parser, main, set_threads, settings_from,
    training_arguments,
)
from distill_vq.losses import SCORE_LOSSES
from distill_vq.quantizers import QUANTIZERS


def test_threads_set_torch_and_faiss_and_are_capped_at_the_cores(monkeypatch, capsys):
    try:
        set_threads(available_cores() + 3)
        assert "more than the" in capsys.readouterr().err
        assert torch.get_num_threads() == faiss.omp_get_max_threads() == available_cores()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        set_threads(None)
        assert torch.get_num_threads() == faiss.omp_get_max_threads() == 1
    finally:
        set_threads(1)


def test_openmp_threads_sleep_at_barriers_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "")  # recorded, so that the test's changes are undone after it
    monkeypatch.delenv("OMP_WAIT_POLICY")
    set_threads(1)
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    set_threads(1)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"distill-vq {distill_vq.__version__}"


def test_help_and_version_load_neither_torch_nor_transformers():
    code = ("import sys; from distill_vq.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['--version']):\n"
            "    try: main(argv)\n"
            "    except SystemExit as exit_info: assert exit_info.code == 0\n"
            "heavy = sorted(name for name in ('torch', 'transformers', 'faiss', 'datasets') if name in sys.modules)\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--num-lists" in result.stdout and f"distill-vq {distill_vq.__version__}" in result.stdout


def test_the_choices_in_help_are_the_librarys():
    """The command spells the loss and quantizer names out (importing them would load torch for `--help`)."""
    assert set(DISTILLATION_LOSSES) == set(SCORE_LOSSES) - {"contrastive"}
    assert set(QUANTIZER_NAMES) == set(QUANTIZERS)


def test_device_cuda_without_cuda_is_one_line_before_any_work(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    output_dir = tmp_path / "out"
    assert main(["train", "--device", "cuda", "--output-dir", str(output_dir)]) == 2
    assert capsys.readouterr().err.strip() == (
        "distill-vq: error: --device cuda: torch sees no CUDA device (torch.cuda.is_available() is False); use "
        "--device cpu, or install a CUDA build of torch on a machine with a GPU.")
    assert not tmp_path.joinpath("out").exists() and list(tmp_path.iterdir()) == []  # nothing written, no lock
    arguments = build_parser().parse_args(["train", "--device", "cpu"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine told to stay on the CPU
    assert training_arguments(arguments, []).use_cpu
    assert settings_from(arguments).device == "cpu"
