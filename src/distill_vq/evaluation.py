"""Retrieval quality and speed: recall against exact search, MRR/NDCG/Recall with qrels, a paired bootstrap
interval of a gain, QPS, memory, tables.

Recall against exact search is faiss's `contrib.evaluation.knn_intersection_measure`. Label metrics are computed by
ir-measures (`RR@k` by its MS MARCO provider, `nDCG@k` and `R@k` by pytrec_eval, i.e. trec_eval) with BEIR's
conventions: a document is relevant when its qrels score is > 0, NDCG uses the graded score as gain with a
log2(rank + 1) discount, Recall@k divides by all of a query's relevant documents, queries without relevant documents
are skipped, and a judged query with no results scores 0.
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from typing import Mapping, Sequence

import faiss
import ir_measures
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure

from .sampling import exact_search
from .validation import check_embeddings

logger = logging.getLogger(__name__)

EVALUATION_CUTOFFS = (10, 100)
LABEL_METRICS_BY = f"ir-measures {ir_measures.__version__}"  # recorded with the results that have label metrics


def recall_vs_exact(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-`k` found in the approximate top-`k` (faiss's `knn_intersection_measure`).

    Args:
        approx_ids: `(Q, k')` ids from the index under test, best first, k' >= k (-1 for no result).
        exact_ids: `(Q, k'')` ids from exact search, best first, k'' >= k.
    """
    return knn_intersection_measure(*_top_k(approx_ids, exact_ids, k))


def per_query_recall_vs_exact(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> np.ndarray:
    """`recall_vs_exact` of each query: `(Q,)`, whose mean is `recall_vs_exact`."""
    approx_ids, exact_ids = _top_k(approx_ids, exact_ids, k)
    return np.array([knn_intersection_measure(approx[None], exact[None])
                     for approx, exact in zip(approx_ids, exact_ids)])


def _top_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Both id tables cut to their first `k` columns, after checking that they match.

    faiss counts a query's ids found as a set intersection, which equals counting the exact top-`k` ids found in the
    approximate top-`k`, since exact search returns distinct ids."""
    approx_ids, exact_ids = np.asarray(approx_ids), np.asarray(exact_ids)
    if approx_ids.shape[0] != exact_ids.shape[0]:
        raise ValueError(f"approx_ids has {approx_ids.shape[0]} queries but exact_ids has {exact_ids.shape[0]}.")
    if k > min(approx_ids.shape[1], exact_ids.shape[1]):
        raise ValueError(
            f"k={k} exceeds the results given: approx_ids {approx_ids.shape}, exact_ids {exact_ids.shape}."
        )
    return approx_ids[:, :k], exact_ids[:, :k]


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
    return {name: float(values.mean()) for name, values in per_query_label_metrics(ranked_doc_ids, qrels, ks).items()}


def per_query_label_metrics(
    ranked_doc_ids: Sequence[Sequence[str]], qrels: Sequence[Mapping[str, int]], ks: Sequence[int] = (10, 100)
) -> dict[str, np.ndarray]:
    """`label_metrics` of each query with a relevant document: `(num_judged_queries,)` per metric, in query order."""
    if len(ranked_doc_ids) != len(qrels):
        raise ValueError(f"{len(ranked_doc_ids)} rankings but {len(qrels)} qrels; give one qrels dict per query.")
    relevant = {str(query): {doc_id: score for doc_id, score in judgements.items() if score > 0}
                for query, judgements in enumerate(qrels)}
    relevant = {query: judgements for query, judgements in relevant.items() if judgements}
    if not relevant:
        raise ValueError("No query has a relevant document (qrels score > 0); pass the qrels of these queries.")
    run = {query: {doc_id: -float(rank) for rank, doc_id in enumerate(dict.fromkeys(ranked_doc_ids[int(query)]))}
           for query in relevant}  # scores that keep the ranking's order
    cutoff = min(ks)
    measures = {f"mrr@{cutoff}": ir_measures.RR @ cutoff, f"ndcg@{cutoff}": ir_measures.nDCG @ cutoff,
                **{f"recall@{k}": ir_measures.R @ k for k in ks}}
    name_of = {measure: name for name, measure in measures.items()}
    position = {query: position for position, query in enumerate(relevant)}
    values = {name: np.zeros(len(relevant)) for name in measures}
    for metric in ir_measures.iter_calc(list(measures.values()), relevant, run):
        values[name_of[metric.measure]][position[metric.query_id]] = metric.value
    return values


def paired_bootstrap_interval(
    after: np.ndarray, before: np.ndarray, confidence: float = 0.95, num_resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean gain `after - before` over queries resampled with replacement.

    Args:
        after, before: `(Q,)` per-query values of one metric for two indexes on the same queries.
        confidence: the interval's coverage, in (0, 1).
        num_resamples: bootstrap resamples; `seed` makes them repeatable.

    Returns:
        `(low, high)`.
    """
    if np.ndim(after) != 1 or np.shape(after) != np.shape(before) or len(after) == 0:
        raise ValueError(f"after {np.shape(after)} and before {np.shape(before)} must be per-query values of the same "
                         "queries: two equal (Q,) arrays with Q >= 1.")
    if not 0 < confidence < 1 or num_resamples < 1:
        raise ValueError(f"confidence={confidence}, num_resamples={num_resamples}: expected a confidence in (0, 1) "
                         "and at least 1 resample, e.g. 0.95 and 1000.")
    gains = np.asarray(after, dtype=np.float64) - np.asarray(before, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = [gains[rng.integers(0, len(gains), len(gains))].mean() for _ in range(num_resamples)]
    tail = 50 * (1 - confidence)
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


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
    return_per_query: bool = False,
) -> dict[str, float] | tuple[dict[str, float], dict[str, np.ndarray]]:
    """Search `index` once with the top max(`ks`) and report what the inputs allow.

    Args:
        index: a faiss index (or `sampling.ExactSearch`) whose ids are rows of the corpus.
        query_embeddings: `(Q, dim)`.
        doc_ids: corpus ids by row, to match results against qrels.
        qrels_for_queries: per query, {doc id: score}; adds `mrr@`, `ndcg@`, `recall@` metrics.
        exact_ids: `(Q, >= max(ks))` exact-search ids; adds `recall_vs_exact@k` for each k.
        return_per_query: also return each metric's per-query values (for `paired_bootstrap_interval`).

    Returns:
        the metrics and `qps` (queries per second of that one search); with `return_per_query`, also each metric's
        values per query: `(Q,)` for `recall_vs_exact@k`, `(num_judged_queries,)` for the label metrics.
    """
    queries = check_embeddings(query_embeddings, "query_embeddings", index.d)
    start = time.perf_counter()
    _, ids = index.search(queries, max(ks))
    seconds = time.perf_counter() - start
    per_query = {}
    if exact_ids is not None:
        per_query.update({f"recall_vs_exact@{k}": per_query_recall_vs_exact(ids, exact_ids, k) for k in ks})
    if qrels_for_queries is not None:
        ranked_doc_ids = [[doc_ids[row] for row in query_ids if row >= 0] for query_ids in ids]
        per_query.update(per_query_label_metrics(ranked_doc_ids, qrels_for_queries, ks))
    metrics = {name: float(values.mean()) for name, values in per_query.items()}
    metrics["qps"] = len(queries) / seconds
    return (metrics, per_query) if return_per_query else metrics


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
    return_per_query: bool = False,
) -> dict[str, dict[str, float]] | tuple[dict[str, dict[str, float]], dict[str, dict[str, np.ndarray]]]:
    """Index name -> its `recall_vs_exact@k`, label metrics (with qrels) and `qps` on the same queries: the teacher's
    `query_embeddings (Q, dim)`, which also give exact search's top-k, or for an index named in `index_queries` its
    own embeddings of the same queries (a trained query encoder's). With `return_per_query`, also index name -> each
    metric's per-query values (as `evaluate_index` gives them), for `paired_bootstrap_interval`."""
    queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    cutoffs = evaluation_cutoffs(len(doc_ids))
    exact_ids = exact_search(queries, doc_embeddings, max(cutoffs), metric)[1]
    results, per_query = {}, {}
    for name, index in indexes.items():
        own_queries = (index_queries or {}).get(name, queries)
        metrics, per_query[name] = evaluate_index(index, own_queries, doc_ids, qrels_for_queries, exact_ids, cutoffs,
                                                  return_per_query=True)
        results[name] = {**metrics, "qps": round(metrics["qps"])}
    return (results, per_query) if return_per_query else results


__all__ = [
    "EVALUATION_CUTOFFS", "LABEL_METRICS_BY", "compare_indexes", "evaluate_index", "evaluation_cutoffs",
    "format_markdown_table", "label_metrics", "measure_qps", "paired_bootstrap_interval", "peak_memory_mb",
    "per_query_label_metrics", "per_query_recall_vs_exact", "recall_vs_exact",
]
