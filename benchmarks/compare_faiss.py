"""distill-vq vs faiss's own training at the same bytes per vector, side by side in one run.

    python benchmarks/compare_faiss.py ../shared/data/debian-descriptions --bytes 16 48

For each size: exact search, faiss `IVF{n},PQ{m}`, faiss `OPQ{m},IVF{n},PQ{m}` and distill-vq initialised from
that same OPQ index and trained on the train queries (never the test queries). Reports recall@10/@100 against
exact search, MRR@10 / Recall@10 / Recall@100 against the test qrels, training time, search QPS, index size and
peak memory; writes `results.json`, `results.md` and `recall.png` to `--output-dir`.
"""

import argparse
import json
import time
from pathlib import Path

import faiss
import numpy as np
from datasets import Dataset

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.data import load_qrels
from distill_vq.evaluation import evaluate_index, format_markdown_table, peak_memory_mb
from distill_vq.faiss_bridge import train_faiss_index
from distill_vq.sampling import exact_search
from distill_vq.io_utils import atomic_path, write_json, write_text
from distill_vq.trainer import DistillVQTrainer, DistillVQTrainingArguments

COLUMNS = ["method", "bytes", "recall_vs_exact@10", "recall_vs_exact@100", "mrr@10", "recall@10", "recall@100",
           "train_seconds", "qps", "index_mb"]


def load_benchmark_data(folder: Path, embeddings: str):
    """Precomputed embeddings of the BEIR folder, the test queries with their qrels, and the train queries."""
    embedding_folder = folder / "embeddings" / embeddings
    doc_ids = json.loads((embedding_folder / "doc_ids.json").read_text())
    query_ids = json.loads((embedding_folder / "query_ids.json").read_text())
    docs = np.load(embedding_folder / "docs.npy", mmap_mode="r").astype(np.float32)
    queries = np.load(embedding_folder / "queries.npy", mmap_mode="r").astype(np.float32)
    row_of = {query_id: row for row, query_id in enumerate(query_ids)}
    test_qrels = load_qrels(folder / "qrels" / "test.tsv")
    test_rows = np.array(sorted(row_of[query_id] for query_id in test_qrels))
    held_out = set(test_qrels) | set(load_qrels(folder / "qrels" / "dev.tsv"))
    train_rows = np.array([row for row, query_id in enumerate(query_ids) if query_id not in held_out])
    test_relevance = [test_qrels[query_ids[row]] for row in test_rows]
    return docs, doc_ids, queries[train_rows], queries[test_rows], test_relevance


def index_megabytes(index) -> float:
    return faiss.serialize_index(index).nbytes / 2**20


def distill(model, docs, train_queries, args, output_dir: Path) -> tuple[float, int]:
    """Train `model` in place; return the seconds it took (mining included) and the steps it made."""
    training_args = DistillVQTrainingArguments(
        output_dir=str(output_dir / "checkpoints"), max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        logging_steps=50, save_strategy="no", report_to=[], use_cpu=True, seed=0, lr_scheduler_type="constant",
        num_teacher_candidates=args.num_teacher_candidates, ivf_loss_weight=args.ivf_loss_weight,
        ivf_learning_rate=args.ivf_learning_rate, dataloader_drop_last=True, max_train_seconds=args.max_train_seconds,
    )
    used = min(len(train_queries), args.max_steps * args.batch_size)  # mine only the queries training will see
    train_queries = train_queries[np.random.default_rng(0).choice(len(train_queries), used, replace=False)]
    start = time.perf_counter()
    trainer = DistillVQTrainer(model, training_args, Dataset.from_dict({"query_embedding": train_queries}), docs)
    trainer.train()
    return time.perf_counter() - start, trainer.state.global_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="BEIR folder with embeddings/<name>/{docs,queries}.npy")
    parser.add_argument("--embeddings", default="all-MiniLM-L6-v2")
    parser.add_argument("--bytes", type=int, nargs="+", default=[16, 48])
    parser.add_argument("--num-lists", type=int, default=1024)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-teacher-candidates", type=int, default=200)
    parser.add_argument("--ivf-loss-weight", type=float, default=0.5)
    parser.add_argument("--ivf-learning-rate", type=float, default=None)
    parser.add_argument("--max-train-seconds", type=float, help="time budget of each distillation (stops early)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--save-models", action="store_true", help="save each trained model to OUTPUT/models/")
    args = parser.parse_args()

    docs, doc_ids, train_queries, test_queries, test_relevance = load_benchmark_data(args.folder, args.embeddings)
    print(f"{len(docs)} documents, {len(train_queries)} train queries, {len(test_queries)} test queries")
    exact = faiss.IndexFlatIP(docs.shape[1])
    exact.add(docs)
    exact_ids = exact_search(test_queries, docs, 100)[1]
    rows = [{"method": "exact (IndexFlatIP)", "bytes": docs.shape[1] * 4, "train_seconds": 0.0,
             "index_mb": index_megabytes(exact), **evaluate_index(exact, test_queries, doc_ids, test_relevance, exact_ids)}]

    def report(method, num_bytes, index, seconds):
        faiss.extract_index_ivf(index).nprobe = args.nprobe
        metrics = evaluate_index(index, test_queries, doc_ids, test_relevance, exact_ids)
        rows.append({"method": method, "bytes": num_bytes, "train_seconds": seconds, "index_mb": index_megabytes(index),
                     **metrics})
        print(format_markdown_table(rows[-1:], COLUMNS), flush=True)

    for num_bytes in args.bytes:
        for use_rotation in (False, True):
            config = DistillVQConfig(embedding_dim=docs.shape[1], num_lists=args.num_lists,
                                     num_subvectors=num_bytes, use_rotation=use_rotation)
            start = time.perf_counter()
            index = train_faiss_index(docs, config)
            faiss_seconds = time.perf_counter() - start
            index.add(docs)
            report(f"faiss {config.index_factory_string}", num_bytes, index, faiss_seconds)
        model = DistillVQModel.from_faiss(index)
        distill_seconds, steps = distill(model, docs, train_queries, args, args.output_dir)
        report(f"distill-vq (from {config.index_factory_string})", num_bytes, model.to_faiss(docs),
               faiss_seconds + distill_seconds)
        rows[-1].update(distill_seconds=distill_seconds, distill_steps=steps)
        if args.save_models:
            model.save_pretrained(args.output_dir / "models" / f"distill-vq-{num_bytes}B")

    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    results = {"settings": settings, "peak_memory_mb": peak_memory_mb(), "rows": rows}
    args.output_dir.mkdir(parents=True, exist_ok=True)
    write_json(args.output_dir / "results.json", results)
    table = format_markdown_table(rows, COLUMNS)
    write_text(args.output_dir / "results.md", f"{table}\n\nPeak memory: {results['peak_memory_mb']:.0f} MB. "
               f"num_lists={args.num_lists}, nprobe={args.nprobe}, {args.max_steps} steps x {args.batch_size} queries, "
               f"time budget {args.max_train_seconds} s.\n")
    plot(rows, args.output_dir / "recall.png")
    print(table)


def plot(rows: list[dict], path: Path) -> None:
    """Bar chart of recall@10 vs exact and MRR@10 per method and size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{row['method']}\n{row['bytes']} B" for row in rows]
    positions = np.arange(len(rows))
    figure, axis = plt.subplots(figsize=(max(8, 1.6 * len(rows)), 4.5))
    axis.bar(positions - 0.2, [row["recall_vs_exact@10"] for row in rows], 0.4, label="recall@10 vs exact")
    axis.bar(positions + 0.2, [row["mrr@10"] for row in rows], 0.4, label="MRR@10 (test qrels)")
    axis.set_xticks(positions, labels, fontsize=7)
    axis.set_ylim(0, 1)
    axis.legend()
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")


if __name__ == "__main__":
    main()
