"""Shared fixtures: real embeddings of the packaged Debian slice, and small random data.

faiss and torch run one thread each, here and in the subprocesses tests start (OMP_NUM_THREADS): the machines that
run the suite are shared, and faiss's OpenMP threads collapse when another job holds a core (OPQ training on the
packaged slice: 22 s with one thread, 280 s with two under load).
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

faiss.omp_set_num_threads(1)
torch.set_num_threads(1)

DATA = Path(__file__).parent / "data"
DEFAULT_DATA = Path(__file__).parents[1] / "src" / "distill_vq" / "default_data"


@pytest.fixture(scope="session")
def debian_embeddings() -> tuple[np.ndarray, np.ndarray]:
    """all-MiniLM-L6-v2 embeddings of the packaged 5k-document slice: `(docs (5000, 384), queries (4890, 384))`."""
    folder = DATA / "default_data_embeddings"
    return (
        np.load(folder / "docs.npy").astype(np.float32),
        np.load(folder / "queries.npy").astype(np.float32),
    )


@pytest.fixture(scope="session")
def random_embeddings() -> tuple[np.ndarray, np.ndarray]:
    """Gaussian `(docs (2000, 32), queries (16, 32))`."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((2000, 32), dtype=np.float32), rng.standard_normal((16, 32), dtype=np.float32)
