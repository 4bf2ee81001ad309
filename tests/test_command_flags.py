"""Flags of the whole command: `--threads` (one thread count for torch and faiss, capped at the cores available)
and `--version`."""

import faiss
import pytest
import torch

import distill_vq
from distill_vq.cli import available_cores, main, set_threads


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


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"distill-vq {distill_vq.__version__}"
