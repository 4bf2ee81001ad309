"""The headline's warnings: a metric made worse than faiss's, and too few evaluation queries."""

from distill_vq.pipeline import headline_warnings

ROWS = [{"index": "exact", "recall_vs_exact@10": 1.0, "mrr@10": 0.70, "qps": 900.0},
        {"index": "faiss X", "recall_vs_exact@10": 0.50, "mrr@10": 0.685, "recall@100": 0.886, "qps": 9000.0},
        {"index": "distill-vq", "recall_vs_exact@10": 0.55, "mrr@10": 0.646, "recall@100": 0.886, "qps": 8000.0}]


def test_a_worse_metric_and_few_queries_are_warned():
    warnings = headline_warnings(ROWS, "faiss X", num_eval_queries=40)
    assert warnings[0] == "distill-vq is worse than faiss X on mrr@10 0.685 -> 0.646"  # not qps, not equal recall@100
    assert warnings[1].startswith("only 40 evaluation queries")
    better = [*ROWS[:2], {**ROWS[2], "mrr@10": 0.70}]
    assert headline_warnings(better, "faiss X", num_eval_queries=377) == []


def test_the_few_queries_warning_gives_the_bootstrap_interval():
    interval = {"metric": "recall_vs_exact@10", "baseline": "faiss X", "confidence": 0.95, "interval": [-0.0312, 0.0118]}
    warning = headline_warnings(ROWS, "faiss X", num_eval_queries=40, gain_interval=interval)[1]
    assert warning == ("only 40 evaluation queries: differences of a few hundredths may be noise (95% bootstrap "
                       "interval of the recall_vs_exact@10 gain: [-0.031, +0.012]); evaluate on 200 or more")
    assert len(headline_warnings(ROWS, "faiss X", num_eval_queries=377, gain_interval=interval)) == 1  # enough queries
