"""Retrieval quality and speed: recall against exact search, MRR/NDCG/Recall with qrels, QPS, memory, tables.

Label metrics follow BEIR (pytrec_eval): a document is relevant when its qrels score is > 0,
NDCG uses the graded score as gain with a log2(rank + 1) discount, Recall@k divides by all of a
query's relevant documents, and queries without relevant documents are skipped.
"""

import math
import resource
import sys
import time
from typing import Mapping, Sequence

import faiss
import numpy as np

from .sampling import exact_search
from .validation import check_embeddings

EVALUATION_CUTOFFS = (10, 100)


def recall_vs_exact(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-`k` found in the approximate top-`k`.

    Args:
        approx_ids: `(Q, k')` ids from the index under test, best first, k' >= k (-1 for no result).
        exact_ids: `(Q, k'')` ids from exact search, best first, k'' >= k.
    """
    approx_ids, exact_ids = np.asarray(approx_ids), np.asarray(exact_ids)
    if approx_ids.shape[0] != exact_ids.shape[0]:
        raise ValueError(f"approx_ids has {approx_ids.shape[0]} queries but exact_ids has {exact_ids.shape[0]}.")
    if k > min(approx_ids.shape[1], exact_ids.shape[1]):
        raise ValueError(
            f"k={k} exceeds the results given: approx_ids {approx_ids.shape}, exact_ids {exact_ids.shape}."
        )
    rows_per_batch = max(1, (1 << 24) // (k * k))
    found = 0
    for start in range(0, len(exact_ids), rows_per_batch):
        approx = approx_ids[start : start + rows_per_batch, :k, None]
        exact = exact_ids[start : start + rows_per_batch, None, :k]
        found += int((approx == exact).any(axis=1).sum())
    return found / (len(exact_ids) * k)


def label_metrics(
    ranked_doc_ids: Sequence[Sequence[str]], qrels: Sequence[Mapping[str, int]], ks: Sequence[int] = (10, 100)
) -> dict[str, float]:
    """MRR and NDCG at the smallest of `ks`, Recall at each of `ks`, averaged over queries with relevant docs.

    Args:
        ranked_doc_ids: per query, the retrieved doc ids, best first.
        qrels: per query (same order), {doc id: score}; empty for an unjudged query.

    Returns:
        e.g. `{"mrr@10", "ndcg@10", "recall@10", "recall@100"}` for `ks=(10, 100)`.
    """
    if len(ranked_doc_ids) != len(qrels):
        raise ValueError(f"{len(ranked_doc_ids)} rankings but {len(qrels)} qrels; give one qrels dict per query.")
    cutoff = min(ks)
    totals = dict.fromkeys([f"mrr@{cutoff}", f"ndcg@{cutoff}", *(f"recall@{k}" for k in ks)], 0.0)
    judged_queries = 0
    for ranking, judgements in zip(ranked_doc_ids, qrels):
        relevant = {doc_id: score for doc_id, score in judgements.items() if score > 0}
        if not relevant:
            continue
        judged_queries += 1
        hits = [rank for rank, doc_id in enumerate(ranking[:cutoff], start=1) if doc_id in relevant]
        totals[f"mrr@{cutoff}"] += 1 / hits[0] if hits else 0.0
        gain = sum(relevant[ranking[rank - 1]] / math.log2(rank + 1) for rank in hits)
        ideal_scores = sorted(relevant.values(), reverse=True)[:cutoff]
        ideal = sum(score / math.log2(rank + 1) for rank, score in enumerate(ideal_scores, start=1))
        totals[f"ndcg@{cutoff}"] += gain / ideal
        for k in ks:
            totals[f"recall@{k}"] += len(relevant.keys() & set(ranking[:k])) / len(relevant)
    if judged_queries == 0:
        raise ValueError("No query has a relevant document (qrels score > 0); pass the qrels of these queries.")
    return {name: total / judged_queries for name, total in totals.items()}


def measure_qps(index: faiss.Index, queries: np.ndarray, k: int, repeats: int = 3) -> float:
    """Queries per second of `index.search(queries (Q, dim), k)`, the best of `repeats` runs."""
    queries = check_embeddings(queries, "queries", index.d)
    best_seconds = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        index.search(queries, k)
        best_seconds = min(best_seconds, time.perf_counter() - start)
    return len(queries) / best_seconds


def evaluate_index(
    index: faiss.Index,
    query_embeddings: np.ndarray,
    doc_ids: Sequence[str],
    qrels_for_queries: Sequence[Mapping[str, int]] | None = None,
    exact_ids: np.ndarray | None = None,
    ks: Sequence[int] = (10, 100),
) -> dict[str, float]:
    """Search `index` once with the top max(`ks`) and report what the inputs allow.

    Args:
        index: a faiss index whose ids are rows of the corpus.
        query_embeddings: `(Q, dim)`.
        doc_ids: corpus ids by row, to match results against qrels.
        qrels_for_queries: per query, {doc id: score}; adds `mrr@`, `ndcg@`, `recall@` metrics.
        exact_ids: `(Q, >= max(ks))` exact-search ids; adds `recall_vs_exact@k` for each k.

    Returns:
        the metrics and `qps` (queries per second of that one search).
    """
    queries = check_embeddings(query_embeddings, "query_embeddings", index.d)
    start = time.perf_counter()
    _, ids = index.search(queries, max(ks))
    seconds = time.perf_counter() - start
    metrics = {}
    if exact_ids is not None:
        metrics.update({f"recall_vs_exact@{k}": recall_vs_exact(ids, exact_ids, k) for k in ks})
    if qrels_for_queries is not None:
        ranked_doc_ids = [[doc_ids[row] for row in query_ids if row >= 0] for query_ids in ids]
        metrics.update(label_metrics(ranked_doc_ids, qrels_for_queries, ks))
    metrics["qps"] = len(queries) / seconds
    return metrics


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


def format_markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """A GitHub markdown table of `rows`: floats to 3 decimals, numbers right-aligned, missing cells blank.

    `columns` defaults to every key, in order of first appearance.
    """
    columns = list(columns or dict.fromkeys(key for row in rows for key in row))

    def cell(value) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return f"{value:.3f}"
        return str(value).replace("|", "\\|")

    cells = [[cell(row.get(column)) for column in columns] for row in rows]
    numeric = [
        any(isinstance(row.get(column), (int, float)) for row in rows)
        and all(isinstance(row.get(column), (int, float, type(None))) for row in rows)
        for column in columns
    ]
    widths = [max([len(column), 3, *(len(row[i]) for row in cells)]) for i, column in enumerate(columns)]

    def line(values) -> str:
        return "| " + " | ".join(
            value.rjust(width) if right else value.ljust(width) for value, width, right in zip(values, widths, numeric)
        ) + " |"

    rules = ["-" * (width - 1) + ":" if right else "-" * width for width, right in zip(widths, numeric)]
    separator = "| " + " | ".join(rules) + " |"
    return "\n".join([line(columns), separator, *(line(row) for row in cells)])


def evaluation_cutoffs(num_docs: int) -> tuple[int, ...]:
    """The cutoffs `k` to report, capped at the corpus size."""
    return tuple(sorted({min(k, num_docs) for k in EVALUATION_CUTOFFS}))


def compare_indexes(
    indexes: dict[str, faiss.Index],
    doc_embeddings: np.ndarray,
    doc_ids: list[str],
    query_embeddings: np.ndarray,
    qrels_for_queries: list[dict[str, int]] | None,
    metric: str = "inner_product",
    index_queries: dict[str, np.ndarray] | None = None,
) -> dict[str, dict[str, float]]:
    """Index name -> its `recall_vs_exact@k`, label metrics (with qrels) and `qps` on the same queries: the teacher's
    `query_embeddings (Q, dim)`, which also give exact search's top-k, or for an index named in `index_queries` its
    own embeddings of the same queries (a trained query encoder's)."""
    queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    cutoffs = evaluation_cutoffs(len(doc_ids))
    exact_ids = exact_search(queries, doc_embeddings, max(cutoffs), metric)[1]
    results = {}
    for name, index in indexes.items():
        own_queries = (index_queries or {}).get(name, queries)
        metrics = evaluate_index(index, own_queries, doc_ids, qrels_for_queries, exact_ids, cutoffs)
        results[name] = {**metrics, "qps": round(metrics["qps"])}
    return results
