"""Recall against exact search and label metrics (faiss and ir-measures) checked against values computed by hand, the
paired bootstrap interval, QPS, memory and markdown tables."""

import math

import faiss
import numpy as np
import pytest

from distill_vq.evaluation import (
    evaluate_index,
    format_markdown_table,
    label_metrics,
    measure_qps,
    paired_bootstrap_interval,
    peak_memory_mb,
    per_query_label_metrics,
    per_query_recall_vs_exact,
    recall_vs_exact,
)
from distill_vq import sampling
from distill_vq.sampling import ExactSearch, exact_search


def test_recall_vs_exact_by_hand():
    approx = np.array([[1, 2, 3], [4, 5, -1]])
    exact = np.array([[1, 3, 9], [7, 8, 4]])
    assert recall_vs_exact(approx, exact, 3) == pytest.approx((2 + 1) / 6)
    assert recall_vs_exact(approx, exact, 1) == pytest.approx(1 / 2)
    assert recall_vs_exact(approx, exact, 2) == pytest.approx(1 / 4)
    assert per_query_recall_vs_exact(approx, exact, 3) == pytest.approx([2 / 3, 1 / 3])
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


def test_per_query_label_metrics_by_hand():
    rankings = [["d1", "d2"], [], ["d4", "d3"], ["d7"]]
    qrels = [{"d2": 1, "d1": 0}, {"d5": 1}, {"d3": 3, "d8": 1}, {}]  # the second: judged, nothing retrieved
    metrics = per_query_label_metrics(rankings, qrels, ks=(10,))
    assert list(metrics) == ["mrr@10", "ndcg@10", "recall@10"]
    assert metrics["mrr@10"] == pytest.approx([1 / 2, 0, 1 / 2])  # the unjudged fourth query is skipped
    ideal_dcg = 3 + 1 / math.log2(3)
    assert metrics["ndcg@10"] == pytest.approx([1 / math.log2(3), 0, (3 / math.log2(3)) / ideal_dcg])
    assert metrics["recall@10"] == pytest.approx([1, 0, 1 / 2])
    assert label_metrics(rankings, qrels, ks=(10,))["mrr@10"] == pytest.approx(1 / 3)


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


@pytest.mark.parametrize("metric", ["inner_product", "l2"])
def test_exact_search_of_a_memory_map_answers_as_a_flat_index(random_embeddings, tmp_path, monkeypatch, metric):
    docs, queries = random_embeddings
    np.save(tmp_path / "docs.npy", docs)
    monkeypatch.setattr(sampling, "SEARCH_BLOCK_ROWS", 300)  # 7 blocks of the 2000 documents
    exact = ExactSearch(np.load(tmp_path / "docs.npy", mmap_mode="r"), metric)
    flat = faiss.IndexFlatIP(docs.shape[1]) if metric == "inner_product" else faiss.IndexFlatL2(docs.shape[1])
    flat.add(docs)
    scores, ids = exact.search(queries, 10)
    expected_scores, expected_ids = flat.search(queries, 10)
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_allclose(scores, expected_scores, rtol=1e-5, atol=1e-5)
    assert (exact.ntotal, exact.d) == (flat.ntotal, flat.d)
    assert evaluate_index(exact, queries, [str(row) for row in range(len(docs))], exact_ids=ids, ks=(10,))[
        "recall_vs_exact@10"] == 1.0


def test_approximate_index_loses_recall(random_embeddings):
    docs, queries = random_embeddings
    _, exact_ids = exact_search(queries, docs, k=10)
    index = faiss.index_factory(docs.shape[1], "IVF16,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(docs)
    index.add(docs)  # nprobe=1: only one list of 16 is searched
    recall = evaluate_index(index, queries, [str(row) for row in range(len(docs))], exact_ids=exact_ids, ks=(10,))
    assert 0 < recall["recall_vs_exact@10"] < 1


def test_per_query_values_average_to_the_metrics(random_embeddings):
    docs, queries = random_embeddings
    _, exact_ids = exact_search(queries, docs, k=10)
    doc_ids = [f"d{row}" for row in range(len(docs))]
    qrels = [{doc_ids[top_ids[1]]: 1} for top_ids in exact_ids]  # the exact second best is the relevant document
    index = faiss.index_factory(docs.shape[1], "IVF16,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(docs)
    index.add(docs)
    metrics, per_query = evaluate_index(index, queries, doc_ids, qrels, exact_ids, ks=(10,), return_per_query=True)
    assert set(per_query) == set(metrics) - {"qps"}
    assert all(values.shape == (len(queries),) for values in per_query.values())
    assert all(metrics[name] == pytest.approx(values.mean()) for name, values in per_query.items())
    assert 0 < metrics["recall_vs_exact@10"] < 1


@pytest.fixture(scope="module")
def recall_gains(debian_embeddings):
    """Per-query recall@10 vs exact of an IVF index searched with nprobe=2 and nprobe=1 on the packaged queries."""
    docs, queries = debian_embeddings
    queries = queries[:400]
    _, exact_ids = exact_search(queries, docs, k=10)
    index = faiss.index_factory(docs.shape[1], "IVF64,Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(docs)
    index.add(docs)
    recalls = {}
    for nprobe in (1, 2):
        index.nprobe = nprobe
        recalls[nprobe] = per_query_recall_vs_exact(index.search(queries, 10)[1], exact_ids, 10)
    return recalls[2], recalls[1]


def test_bootstrap_interval_holds_the_gain_and_widens_with_fewer_queries(recall_gains):
    after, before = recall_gains
    gain = (after - before).mean()
    low, high = paired_bootstrap_interval(after, before)
    assert 0 < low < gain < high  # more lists probed: a real gain, and the interval says so
    few_low, few_high = paired_bootstrap_interval(after[:40], before[:40])
    assert few_low < few_high and few_high - few_low > 1.5 * (high - low)  # ~ sqrt(400 / 40) = 3.2 times wider
    assert paired_bootstrap_interval(after, before) == (low, high)  # seeded
    assert paired_bootstrap_interval(after, before, seed=1) != (low, high)
    low_90, high_90 = paired_bootstrap_interval(after, before, confidence=0.9)
    assert low < low_90 < high_90 < high


def test_bootstrap_interval_by_hand():
    after = np.array([0.5, 0.7, 0.9])
    assert paired_bootstrap_interval(after, after - 0.25) == pytest.approx((0.25, 0.25))  # every resample gains 0.25
    # Two queries: resample means 0, 0.5 and 1 with chances 1/4, 1/2, 1/4, so the 30th to 70th percentiles are 0.5.
    gains = paired_bootstrap_interval(np.array([1.0, 0.0]), np.zeros(2), confidence=0.4, num_resamples=4000)
    assert gains == pytest.approx((0.5, 0.5))
    with pytest.raises(ValueError, match="two equal"):
        paired_bootstrap_interval(after, after[:2])
    with pytest.raises(ValueError, match="confidence=1.5"):
        paired_bootstrap_interval(after, after, confidence=1.5)


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
