"""EmbedDistill on the Debian set: a 2-3 layer student query encoder vs the 6-layer teacher, exact and quantized.

    python benchmarks/embed_distill.py ../shared/data/debian-descriptions --indexes benchmarks/results/models/*

The student is cut from all-MiniLM-L6-v2's lower layers and trained on the train queries (never the test ones)
against the teacher's frozen document embeddings. Ablation rows: the cut student untrained, score distillation
only, and score distillation + embedding matching. Each is evaluated with exact search over the teacher's
document embeddings and with each distilled index given by `--indexes` (folders saved by compare_faiss.py
--save-models): MRR@10 on the test qrels, recall@10 against the teacher's exact top-10, and query encoding
throughput (queries/second, this machine's threads). Writes `embed_distill.json` / `.md` to `--output-dir`.
"""

import argparse
import gzip
import json
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import torch
from datasets import Dataset
from transformers import AutoTokenizer

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.data import load_qrels
from distill_vq.encoding import TextEncoder, default_encoder_path
from distill_vq.evaluation import evaluate_index, exact_search, format_markdown_table
from distill_vq.io_utils import write_json, write_text
from distill_vq.trainer import DistillVQTrainer, DistillVQTrainingArguments

COLUMNS = ["query encoder", "index", "mrr@10", "recall_vs_exact@10", "mrr_kept", "queries_per_second"]
ABLATIONS = {  # name -> (student score-distillation weight, embedding-matching weight); None = untrained
    "cut, untrained": None,
    "score distillation": (1.0, 0.0),
    "score distillation + embedding matching": (1.0, 1.0),
}


def read_query_texts(folder: Path, embedding_folder: Path) -> list[str]:
    with gzip.open(folder / "queries.jsonl.gz", "rt", encoding="utf-8") as handle:
        text_of = {row["_id"]: row["text"] for row in map(json.loads, handle)}
    return [text_of[query_id] for query_id in json.loads((embedding_folder / "query_ids.json").read_text())]


def train_student(num_layers, weights, docs, train_embeddings, train_texts, args, output_dir) -> DistillVQModel:
    """A `num_layers` student cut from the teacher, trained with (score, embedding-matching) `weights`."""
    model = DistillVQModel(DistillVQConfig(embedding_dim=docs.shape[1], num_lists=1, num_subvectors=8))
    model.attach_query_encoder("all-MiniLM-L6-v2", num_layers=num_layers)
    if weights is None:
        return model
    student_weight, matching_weight = weights
    training_args = DistillVQTrainingArguments(
        output_dir=str(output_dir), max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        use_cpu=True, report_to=[], seed=0, num_teacher_candidates=args.num_teacher_candidates,
        pq_loss_weight=0.0, ivf_loss_weight=0.0, pq_learning_rate=0.0, ivf_learning_rate=0.0,
        student_loss_weight=student_weight, embedding_matching_weight=matching_weight,
        query_encoder_learning_rate=args.learning_rate, warmup_steps=50, logging_steps=100, save_strategy="no",
    )
    dataset = Dataset.from_dict({"query_embedding": train_embeddings, "query": train_texts})
    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    DistillVQTrainer(model, training_args, dataset, docs, processing_class=tokenizer).train()
    return model


def encode_with_student(model: DistillVQModel, texts: list[str]) -> tuple[np.ndarray, float]:
    """Embed with the student through the same `TextEncoder` path as the teacher: `(embeddings, queries/s)`."""
    with tempfile.TemporaryDirectory() as folder:
        model.query_encoder.save_pretrained(folder)
        AutoTokenizer.from_pretrained(default_encoder_path()).save_pretrained(folder)
        return timed_encode(TextEncoder(folder, pooling="mean", normalize=True), texts)


def timed_encode(encoder: TextEncoder, texts: list[str]) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    embeddings = encoder.encode(texts, batch_size=64, show_progress=False)
    return embeddings, len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--embeddings", default="all-MiniLM-L6-v2")
    parser.add_argument("--indexes", type=Path, nargs="*", default=[], help="saved distill-vq models to search")
    parser.add_argument("--layers", type=int, nargs="+", default=[3, 2])
    parser.add_argument("--ablations", nargs="+", choices=list(ABLATIONS), default=list(ABLATIONS))
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=2e-4)
    parser.add_argument("--num-teacher-candidates", type=int, default=50)
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()

    embedding_folder = args.folder / "embeddings" / args.embeddings
    docs = np.load(embedding_folder / "docs.npy").astype(np.float32)
    teacher_queries = np.load(embedding_folder / "queries.npy").astype(np.float32)
    doc_ids = json.loads((embedding_folder / "doc_ids.json").read_text())
    query_ids = json.loads((embedding_folder / "query_ids.json").read_text())
    texts = read_query_texts(args.folder, embedding_folder)
    test_qrels = load_qrels(args.folder / "qrels" / "test.tsv")
    held_out = set(test_qrels) | set(load_qrels(args.folder / "qrels" / "dev.tsv"))
    test_rows = [row for row, query_id in enumerate(query_ids) if query_id in test_qrels]
    train_rows = [row for row, query_id in enumerate(query_ids) if query_id not in held_out]
    test_texts = [texts[row] for row in test_rows]
    relevance = [test_qrels[query_ids[row]] for row in test_rows]
    teacher_exact_ids = exact_search(teacher_queries[test_rows], docs, 100)[1]

    exact_index = faiss.IndexFlatIP(docs.shape[1])
    exact_index.add(docs)
    indexes = {"exact": exact_index}
    for folder in args.indexes:
        model = DistillVQModel.from_pretrained(folder)
        indexes[f"distill-vq {model.config.bytes_per_vector:g} B"] = model.to_faiss(docs, nprobe=args.nprobe)

    rows = []

    def report(encoder_name, query_embeddings, queries_per_second):
        for index_name, index in indexes.items():
            metrics = evaluate_index(index, query_embeddings, doc_ids, relevance, teacher_exact_ids)
            rows.append({"query encoder": encoder_name, "index": index_name, "queries_per_second": queries_per_second,
                         **metrics})
            print(format_markdown_table(rows[-1:], COLUMNS[:4] + COLUMNS[5:]), flush=True)

    teacher_embeddings, teacher_speed = timed_encode(TextEncoder("all-MiniLM-L6-v2"), test_texts)
    report("teacher all-MiniLM-L6-v2 (6 layers)", teacher_embeddings, teacher_speed)
    train_embeddings, train_texts = teacher_queries[train_rows], [texts[row] for row in train_rows]
    for num_layers in args.layers:
        for ablation in args.ablations:
            weights = ABLATIONS[ablation]
            student = train_student(num_layers, weights, docs, train_embeddings, train_texts, args,
                                    args.output_dir / "student-checkpoints")
            report(f"student {num_layers} layers: {ablation}", *encode_with_student(student, test_texts))

    teacher_mrr = next(row["mrr@10"] for row in rows if row["index"] == "exact")
    for row in rows:
        row["mrr_kept"] = row["mrr@10"] / teacher_mrr
        row["speedup"] = row["queries_per_second"] / teacher_speed
    table = format_markdown_table(rows, COLUMNS + ["speedup"])
    settings = {key: [str(v) for v in value] if isinstance(value, list) else str(value) if isinstance(value, Path)
                else value for key, value in vars(args).items()}
    write_json(args.output_dir / "embed_distill.json", {"settings": settings, "torch_threads": torch.get_num_threads(),
                                                         "rows": rows})
    write_text(args.output_dir / "embed_distill.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
