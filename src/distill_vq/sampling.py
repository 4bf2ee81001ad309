"""What training is fed and at what scale: exact search, candidate mining (teacher top-K, random, positives), and the
scales derived from the data (the ranking temperature, the learning rates).

`exact_search` is the project's one exact search: it runs over the documents in blocks and merges the blocks' top-k
in a `faiss.ResultHeap` (as `faiss.contrib.exhaustive_search.knn_ground_truth`), so a memory-mapped array is read
from disk a block at a time (and shared through the page cache by every process) instead of being copied whole.
"""

from __future__ import annotations

import hashlib
import itertools
import logging

import faiss
import numpy as np
import torch

from .faiss_bridge import FAISS_METRICS
from .validation import check_embeddings

logger = logging.getLogger(__name__)

SEARCH_BLOCK_ROWS = 65536


def exact_search(
    query_embeddings: np.ndarray, doc_embeddings: np.ndarray, k: int, metric: str = "inner_product"
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top-`k` documents of each query: `(scores (Q, k) float32, ids (Q, k) int64)`, best first.

    Args:
        query_embeddings: `(Q, dim)`; doc_embeddings: `(N, dim)`, float16 or float32, in memory or memory-mapped
            (read `SEARCH_BLOCK_ROWS` rows at a time).
        k: results per query, 1 to `N`.
        metric: `"inner_product"` (scores: larger is better) or `"l2"` (squared distances: smaller is better), as
            faiss returns them.
    """
    if metric not in FAISS_METRICS:
        raise ValueError(f"Unknown metric '{metric}'; use one of {sorted(FAISS_METRICS)}.")
    num_docs = len(doc_embeddings)
    if not 1 <= k <= num_docs:
        raise ValueError(f"k={k} must be between 1 and the number of documents ({num_docs}); ask for fewer results.")
    dim = check_embeddings(doc_embeddings[:1], "doc_embeddings").shape[1]
    queries = check_embeddings(query_embeddings, "query_embeddings", dim)
    heap = faiss.ResultHeap(len(queries), k, keep_max=metric == "inner_product")
    for start in range(0, num_docs, SEARCH_BLOCK_ROWS):
        block = check_embeddings(doc_embeddings[start : start + SEARCH_BLOCK_ROWS], "doc_embeddings", dim)
        scores, rows = faiss.knn(queries, block, min(k, len(block)), metric=FAISS_METRICS[metric])
        heap.add_result(scores, rows + start)
    heap.finalize()
    return heap.D, heap.I


class ExactSearch:
    """Exact search with a faiss index's `search(queries, k)`, for the evaluation's `exact` row: `exact_search` over
    the documents in blocks, so that a memory-mapped corpus is never copied into memory (a faiss `IndexFlat` of 10M
    x 384 documents would hold 15 GB)."""

    def __init__(self, doc_embeddings: np.ndarray, metric: str = "inner_product"):
        self.doc_embeddings, self.metric = doc_embeddings, metric
        self.ntotal, self.d = doc_embeddings.shape

    def search(self, query_embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """`(Q, dim) -> (scores (Q, k), ids (Q, k))`, as `exact_search`."""
        return exact_search(query_embeddings, self.doc_embeddings, k, self.metric)


class CandidateMiner:
    """Adds a `candidate_ids` column (document rows) to batches of queries; use with `Dataset.map(batched=True)`
    or `IterableDataset.map(batched=True)` so that a stream is mined lazily.

    Args:
        doc_embeddings: `(num_docs, dim)` teacher document embeddings (array or memmap).
        num_teacher_candidates: the teacher's top-K per query (the paper's best: 200; at most `num_docs` are kept).
        num_random_candidates: uniformly random documents per query.
        embedding_column: the batch column holding the teacher query embeddings `(dim,)`.
        positives_column: optional column of labelled positive rows, always kept among the candidates.
    """

    def __init__(
        self,
        doc_embeddings,
        num_teacher_candidates: int = 200,
        num_random_candidates: int = 0,
        metric: str = "inner_product",
        embedding_column: str = "query_embedding",
        positives_column: str = "positive_ids",
        seed: int = 0,
    ):
        self.doc_embeddings = doc_embeddings
        self.num_teacher_candidates = num_teacher_candidates
        self.num_random_candidates = num_random_candidates
        self.metric = metric
        self.embedding_column = embedding_column
        self.positives_column = positives_column
        self.rng = np.random.default_rng(seed)

    def fingerprint(self, dataset_fingerprint: str) -> str:
        """The `datasets` fingerprint of a dataset mined by this miner (`Dataset.map(new_fingerprint=...)`): from the
        miner's settings and a strided sample of the documents, so that `datasets` need not hash the miner, which
        would pickle every document (a memory-mapped corpus copied into memory)."""
        docs = self.doc_embeddings
        sample = np.ascontiguousarray(docs[:: max(1, len(docs) // 64)])
        settings = (dataset_fingerprint, self.num_teacher_candidates, self.num_random_candidates, self.metric,
                    self.embedding_column, self.positives_column, docs.shape, str(docs.dtype),
                    self.rng.bit_generator.state)
        return hashlib.sha256(repr(settings).encode() + sample.tobytes()).hexdigest()[:16]

    def __call__(self, batch: dict) -> dict:
        queries = np.asarray(batch[self.embedding_column], dtype=np.float32)
        num_docs = len(self.doc_embeddings)
        columns = [np.empty((len(queries), 0), dtype=np.int64)]
        if self.num_teacher_candidates > 0:
            k = min(self.num_teacher_candidates, num_docs)
            columns.append(exact_search(queries, self.doc_embeddings, k, self.metric)[1])
        if self.num_random_candidates > 0:
            columns.append(self.rng.integers(0, num_docs, (len(queries), self.num_random_candidates)))
        candidates = np.concatenate(columns, axis=1)
        positives = batch.get(self.positives_column) or [[] for _ in queries]
        rows = [list(dict.fromkeys([*map(int, positive), *map(int, row)]))
                for positive, row in zip(positives, candidates)]
        return {**batch, "candidate_ids": rows}


def teacher_score_spread(dataset, doc_embeddings, metric: str = "inner_product", num_candidates: int | None = None,
                         num_queries: int = 256) -> float:
    """The default ranking temperature: the mean standard deviation of the teacher's scores over each query's
    first `num_candidates` candidates (all when `None`), on the first `num_queries` rows of a mined `dataset`
    (fixed rows, so that a resumed run derives the same value)."""
    spreads = []
    for row in itertools.islice(iter(dataset), num_queries):
        query = np.asarray(row["query_embedding"], dtype=np.float32)[None]
        docs = np.asarray(doc_embeddings[np.asarray(row["candidate_ids"][:num_candidates])], dtype=np.float32)
        spreads.append(faiss.pairwise_distances(query, docs, metric=FAISS_METRICS[metric]).std(ddof=1))
    spread = max(float(np.mean(spreads)), 1e-6)
    logger.info(f"Ranking temperature from the teacher's score spread: {spread:.4g}")
    return spread


def rms_learning_rate(weight: torch.Tensor, relative_learning_rate: float) -> float:
    """`relative_learning_rate x RMS(weight)`: a step that moves the weight by a fixed fraction of its own scale."""
    return relative_learning_rate * float(weight.detach().float().pow(2).mean().sqrt())


def learning_rates(model, pq_learning_rate: float | None = None, ivf_learning_rate: float | None = None,
                   pq_relative_learning_rate: float = 1e-2, ivf_relative_learning_rate: float = 6e-4,
                   query_encoder_learning_rate: float = 5e-6, query_adapter_learning_rate: float = 1e-4
                   ) -> dict[str, float]:
    """Learning rate of each weight group of a `DistillVQModel` (`codebooks`, `ivf_centroids`, `query_encoder`,
    `query_adapter`):
    the one given, or for the codebooks and the centroids a relative rate times the weight's RMS (the paper's
    absolute rates, 1e-4 and 1e-3, were set for embeddings whose scores span tens of units)."""
    if pq_learning_rate is None:
        pq_learning_rate = rms_learning_rate(model.codebooks, pq_relative_learning_rate)
    if ivf_learning_rate is None:
        ivf_learning_rate = rms_learning_rate(model.ivf_centroids, ivf_relative_learning_rate)
    return {"codebooks": pq_learning_rate, "ivf_centroids": ivf_learning_rate,
            "query_encoder": query_encoder_learning_rate, "query_adapter": query_adapter_learning_rate}


__all__ = [
    "CandidateMiner", "ExactSearch", "exact_search", "learning_rates", "rms_learning_rate", "teacher_score_spread",
]
