"""Shared fixtures: real embeddings of the packaged Debian slice, and small random data.

faiss and torch run one thread each, here and in the subprocesses tests start (OMP_NUM_THREADS): the machines that
run the suite are shared, and faiss's OpenMP threads collapse when another job holds a core (OPQ training on the
packaged slice: 22 s with one thread, 280 s with two under load).
"""

import gc
import json
import os
from contextlib import contextmanager

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
FAST_OPQ_ITERATIONS = 4  # faiss's default is 50: 21 s -> 3.5 s on the packaged slice, 4 s -> 1 s on random_embeddings


@contextmanager
def fast_opq():
    """faiss's OPQ rotations trained with FAST_OPQ_ITERATIONS iterations while in the block: still a rotation that
    faiss trains (orthonormal, far from the identity), for the tests that need an OPQ rotation but not a good one.
    Patches `faiss.index_factory`, which distill_vq builds every index with."""
    index_factory = faiss.index_factory

    def factory_with_fast_opq(*args, **kwargs):
        index = index_factory(*args, **kwargs)
        if isinstance(index, faiss.IndexPreTransform):
            for position in range(index.chain.size()):
                transform = faiss.downcast_VectorTransform(index.chain.at(position))
                if isinstance(transform, faiss.OPQMatrix):
                    transform.niter = FAST_OPQ_ITERATIONS
        return index

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(faiss, "index_factory", factory_with_fast_opq)
        yield


def pytest_collection_finish(session):
    """Exempt the objects of the imported libraries from garbage collection (`gc.freeze`): every `Trainer.train`
    runs a full `gc.collect()` (accelerate's `free_memory`), which otherwise walks the ~500k objects of torch,
    transformers and datasets each time (0.4 s a run)."""
    gc.collect()
    gc.freeze()


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


def packaged_slice(folder: Path, num_docs: int = 1000, num_queries: int = 400) -> list[str]:
    """`train` / `evaluate` data flags for the packaged slice's first `num_docs` documents and `num_queries` queries
    (placeholder texts, the real all-MiniLM-L6-v2 embeddings; no qrels: a seeded 10% of the queries is held out),
    written to `folder`. For command runs that test the run, not the data: a fraction of the packaged run's time."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, prefix, count in (("corpus", "d", num_docs), ("queries", "q", num_queries)):
        rows = [{"_id": f"{prefix}{i}", "text": f"{name} text {i}"} for i in range(count)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    embeddings = DATA / "default_data_embeddings"
    np.save(folder / "docs.npy", np.load(embeddings / "docs.npy")[:num_docs])
    np.save(folder / "queries.npy", np.load(embeddings / "queries.npy")[:num_queries])
    return ["--corpus", str(folder / "corpus.jsonl"), "--queries", str(folder / "queries.jsonl"),
            "--doc-embeddings", str(folder / "docs.npy"), "--query-embeddings", str(folder / "queries.npy")]


@pytest.fixture(scope="session")
def packaged_run(tmp_path_factory) -> Path:
    """One `train` run on the packaged data with its precomputed embeddings (IVF16,PQ8x8, no rotation, 2 steps, a
    checkpoint at each), shared by the modules that only read it or damage copies of it (test_damaged_output_files,
    test_settings_checks): the tests must leave it as it is."""
    from distill_vq.cli import main

    embeddings = DATA / "default_data_embeddings"
    output_dir = tmp_path_factory.mktemp("packaged-run") / "out"
    assert main(["train", "--doc-embeddings", str(embeddings / "docs.npy"), "--query-embeddings",
                 str(embeddings / "queries.npy"), "--max-steps", "2", "--num-lists", "16", "--num-subvectors", "8",
                 "--no-rotation", "--disable-tqdm", "true", "--output-dir", str(output_dir)]) == 0
    return output_dir
