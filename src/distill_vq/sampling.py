"""Candidate mining: the documents each training query is scored against (teacher top-K, random, positives).

Exact search runs over the document embeddings in chunks with `faiss.knn`, so a memory-mapped array is read
from disk (and shared through the page cache by every process) instead of being copied into each worker.
"""

import faiss
import numpy as np

from .faiss_bridge import FAISS_METRICS


def teacher_top_k(
    query_embeddings: np.ndarray, doc_embeddings: np.ndarray, k: int, metric: str = "inner_product",
    chunk_size: int = 262144,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-`k` documents of each query: `(scores (Q, k), doc_rows (Q, k))`, best first.

    Scores are inner products or squared L2 distances, as faiss returns them.
    """
    queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    k = min(k, len(doc_embeddings))
    heap = faiss.ResultHeap(len(queries), k, keep_max=metric == "inner_product")
    for start in range(0, len(doc_embeddings), chunk_size):
        chunk = np.ascontiguousarray(doc_embeddings[start : start + chunk_size], dtype=np.float32)
        scores, rows = faiss.knn(queries, chunk, min(k, len(chunk)), metric=FAISS_METRICS[metric])
        heap.add_result(scores, np.where(rows >= 0, rows + start, -1))
    heap.finalize()
    return heap.D, heap.I


class CandidateMiner:
    """Adds a `candidate_ids` column (document rows) to batches of queries; use with `Dataset.map(batched=True)`
    or `IterableDataset.map(batched=True)` so that a stream is mined lazily.

    Args:
        doc_embeddings: `(num_docs, dim)` teacher document embeddings (array or memmap).
        num_teacher_candidates: the teacher's top-K per query (the paper's best: 200).
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

    def __call__(self, batch: dict) -> dict:
        queries = np.asarray(batch[self.embedding_column], dtype=np.float32)
        columns = [np.empty((len(queries), 0), dtype=np.int64)]
        if self.num_teacher_candidates > 0:
            columns.append(teacher_top_k(queries, self.doc_embeddings, self.num_teacher_candidates, self.metric)[1])
        if self.num_random_candidates > 0:
            columns.append(self.rng.integers(0, len(self.doc_embeddings), (len(queries), self.num_random_candidates)))
        candidates = np.concatenate(columns, axis=1)
        positives = batch.get(self.positives_column) or [[] for _ in queries]
        rows = [list(dict.fromkeys([*map(int, positive), *map(int, row)])) for positive, row in zip(positives, candidates)]
        return {**batch, "candidate_ids": rows}
