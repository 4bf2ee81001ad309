"""Shared fixtures: real embeddings of the packaged Debian slice, and small random data."""

from pathlib import Path

import numpy as np
import pytest

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
