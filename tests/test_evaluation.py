"""Recall against exact search, label metrics computed by hand, QPS, memory and markdown tables."""

import math

import faiss
import numpy as np
import pytest

from distill_vq.evaluation import (
    evaluate_index,
    format_markdown_table,
    label_metrics,
    measure_qps,
    peak_memory_mb,
    recall_vs_exact,
)
from distill_vq.sampling import exact_search


def test_recall_vs_exact_by_hand():
    approx = np.array([[1, 2, 3], [4, 5, -1]])
    exact = np.array([[1, 3, 9], [7, 8, 4]])
    assert recall_vs_exact(approx, exact, 3) == pytest.approx((2 + 1) / 6)
    assert recall_vs_exact(approx, exact, 1) == pytest.approx(1 / 2)
    assert recall_vs_exact(approx, exact, 2) == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="k=4 exceeds"):
        recall_vs_exact(approx, exact, 4)


def test_mrr_ndcg_recall_by_hand():
    rankings = [["d1", "d2", "d3"], ["d1", "d2", "d3"], ["d5"], ["d6"]]
    qrels = [
        {"d3": 1},  # relevant at rank 3
        {"d2": 2, "d3": 1, "d9": 1},  # graded; d9 never retrieved
        {},  # unjudged: skipped
        {"d6": 0},  # judged not relevant: skipped
    ]
    metrics = label_metrics(rankings, qrels, ks=(2, 10))
    assert list(metrics) == ["mrr@2", "ndcg@2", "recall@2", "recall@10"]
    metrics_at_10 = label_metrics(rankings, qrels, ks=(10,))
    dcg = 2 / math.log2(3) + 1 / math.log2(4)
    ideal_dcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert metrics_at_10["mrr@10"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    assert metrics_at_10["ndcg@10"] == pytest.approx((1 / math.log2(4) + dcg / ideal_dcg) / 2)
    assert metrics_at_10["recall@10"] == pytest.approx((1 + 2 / 3) / 2)
    assert metrics["mrr@2"] == pytest.approx((0 + 1 / 2) / 2)
    assert metrics["ndcg@2"] == pytest.approx((0 + (2 / math.log2(3)) / (2 + 1 / math.log2(3))) / 2)
    assert metrics["recall@2"] == pytest.approx((0 + 1 / 3) / 2)


def test_label_metrics_needs_judged_queries():
    with pytest.raises(ValueError, match="No query has a relevant document"):
        label_metrics([["d1"]], [{}])
    with pytest.raises(ValueError, match="1 rankings but 2 qrels"):
        label_metrics([["d1"]], [{"d1": 1}, {}])


def test_evaluate_index_on_an_exact_index(random_embeddings):
    docs, queries = random_embeddings
    _, exact_ids = exact_search(queries, docs, k=10)
    doc_ids = [f"d{row}" for row in range(len(docs))]
    qrels = [{doc_ids[top_ids[0]]: 1} for top_ids in exact_ids]
    index = faiss.IndexFlatIP(docs.shape[1])
    index.add(docs)
    metrics = evaluate_index(index, queries, doc_ids, qrels, exact_ids, ks=(1, 10))
    assert set(metrics) == {
        "recall_vs_exact@1", "recall_vs_exact@10", "mrr@1", "ndcg@1", "recall@1", "recall@10", "qps"
    }
    assert all(value == pytest.approx(1.0) for name, value in metrics.items() if name != "qps")
    assert metrics["qps"] > 0
    assert list(evaluate_index(index, queries, doc_ids, ks=(10,))) == ["qps"]


def test_approximate_index_loses_recall(random_embeddings):
    docs, queries = random_embeddings
    _, exact_ids = exact_search(queries, docs, k=10)
    index = faiss.index_factory(docs.shape[1], "IVF16,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(docs)
    index.add(docs)  # nprobe=1: only one list of 16 is searched
    recall = evaluate_index(index, queries, [str(row) for row in range(len(docs))], exact_ids=exact_ids, ks=(10,))
    assert 0 < recall["recall_vs_exact@10"] < 1


def test_measure_qps_and_peak_memory(random_embeddings):
    docs, queries = random_embeddings
    index = faiss.IndexFlatL2(docs.shape[1])
    index.add(docs)
    assert measure_qps(index, queries, k=10, repeats=2) > 0
    assert 10 < peak_memory_mb() < 1e6


def test_format_markdown_table():
    rows = [
        {"index": "IVF64,PQ16", "recall@10": 0.61734, "qps": 1523.4, "bytes": 16},
        {"index": "distilled | frozen", "recall@10": 0.6281, "bytes": 16},
    ]
    assert format_markdown_table(rows) == (
        "| index               | recall@10 |      qps | bytes |\n"
        "| ------------------- | --------: | -------: | ----: |\n"
        "| IVF64,PQ16          |     0.617 | 1523.400 |    16 |\n"
        "| distilled \\| frozen |     0.628 |          |    16 |"
    )
    assert format_markdown_table(rows, ["bytes", "index"]).splitlines()[0] == "| bytes | index               |"
