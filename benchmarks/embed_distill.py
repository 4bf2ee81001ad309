"""EmbedDistill on the Debian set: a 2-3 layer student query encoder vs the 6-layer teacher, exact and quantized.

    python benchmarks/embed_distill.py ../shared/data/debian-descriptions --indexes benchmarks/results/models/*

Each student keeps some of all-MiniLM-L6-v2's 6 layers (`--students 0,2,4 0,3`: every other layer; `0,1,2` the
lower three) and is trained on the train queries (never the test ones) against the teacher's frozen document
embeddings. Ablation rows: the cut student untrained, score distillation only, + embedding matching, + the
one-hot term on the train qrels (labels the teacher never saw). Each is evaluated with exact search over the
teacher's document embeddings and with each distilled index given by `--indexes` (folders saved by
compare_faiss.py --save-models): MRR@10 on the test qrels, recall@10 against the teacher's exact top-10, and
query encoding throughput (queries/second, this machine's threads). Writes `embed_distill.json` / `.md` to `--output-dir`.
"""

import argparse
import gzip
import json
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
from distill_vq.evaluation import evaluate_index, format_markdown_table
from distill_vq.sampling import exact_search
from distill_vq.io_utils import write_json, write_text
from distill_vq.query_encoding import ModelQueryEncoder
from distill_vq.trainer import DistillVQTrainer, DistillVQTrainingArguments

COLUMNS = ["query encoder", "index", "mrr@10", "recall_vs_exact@10", "mrr_kept", "queries_per_second"]
SCORE = {"student_loss_weight": 1.0}
MATCHING = {**SCORE, "embedding_matching_weight": 1.0}
ABLATIONS = {  # name -> loss weights; None = untrained
    "cut, untrained": None,
    "score distillation": SCORE,
    "score distillation + embedding matching": MATCHING,
    "score distillation + embedding matching + labels": {**MATCHING, "label_loss_weight": 1.0},
}


def read_query_texts(folder: Path, embedding_folder: Path) -> list[str]:
    with gzip.open(folder / "queries.jsonl.gz", "rt", encoding="utf-8") as handle:
        text_of = {row["_id"]: row["text"] for row in map(json.loads, handle)}
    return [text_of[query_id] for query_id in json.loads((embedding_folder / "query_ids.json").read_text())]


def train_student(layers, weights, docs, train_queries: dict, args, output_dir) -> DistillVQModel:
    """A student keeping the teacher's `layers`, trained with the loss `weights` on `train_queries` (columns
    `query_embedding`, `query` and `positive_ids`, the last used only by the label term)."""
    model = DistillVQModel(DistillVQConfig(embedding_dim=docs.shape[1], num_lists=1, num_subvectors=8))
    model.attach_query_encoder("all-MiniLM-L6-v2", layers=layers)
    if weights is None:
        return model
    training_args = DistillVQTrainingArguments(
        output_dir=str(output_dir), max_steps=args.max_steps, per_device_train_batch_size=args.batch_size,
        use_cpu=True, report_to=[], seed=0, num_teacher_candidates=args.num_teacher_candidates,
        pq_loss_weight=0.0, ivf_loss_weight=0.0, pq_learning_rate=0.0, ivf_learning_rate=0.0,
        query_encoder_learning_rate=args.learning_rate, warmup_steps=50, logging_steps=100, save_strategy="no",
        **weights,
    )
    if not weights.get("label_loss_weight"):  # the positives would otherwise join the candidates
        train_queries = {name: column for name, column in train_queries.items() if name != "positive_ids"}
    dataset = Dataset.from_dict(train_queries)
    tokenizer = AutoTokenizer.from_pretrained(default_encoder_path())
    DistillVQTrainer(model, training_args, dataset, docs, processing_class=tokenizer).train()
    return model


def encode_with_student(model: DistillVQModel, texts: list[str]) -> tuple[np.ndarray, float]:
    """Embed with the student as search does (`ModelQueryEncoder`): `(embeddings, queries/s)`."""
    return timed_encode(ModelQueryEncoder(model, AutoTokenizer.from_pretrained(default_encoder_path())), texts)


def timed_encode(encoder: TextEncoder | ModelQueryEncoder, texts: list[str], repeats: int = 3) -> tuple[np.ndarray, float]:
    """`(embeddings, queries/s)`, the throughput of the fastest of `repeats` passes (single passes vary by ~20%)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        embeddings = encoder.encode(texts, batch_size=64, show_progress=False, role="query")
        seconds.append(time.perf_counter() - start)
    return embeddings, len(texts) / min(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--embeddings", default="all-MiniLM-L6-v2")
    parser.add_argument("--indexes", type=Path, nargs="*", default=[], help="saved distill-vq models to search")
    parser.add_argument("--students", nargs="+", default=["0,2,4", "0,3"],
                        help="the teacher layers each student keeps, comma-separated")
    parser.add_argument("--ablations", nargs="+", choices=list(ABLATIONS), default=list(ABLATIONS))
    parser.add_argument("--max-steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
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
    train_qrels, row_of = load_qrels(args.folder / "qrels" / "train.tsv"), {doc: row for row, doc in enumerate(doc_ids)}
    positives = [[row_of[doc] for doc in train_qrels.get(query_ids[row], {}) if doc in row_of] for row in train_rows]
    train_queries = {"query_embedding": teacher_queries[train_rows], "query": [texts[row] for row in train_rows],
                     "positive_ids": positives}
    for spec in args.students:
        layers = [int(number) for number in spec.split(",")]
        for ablation in args.ablations:
            student = train_student(layers, ABLATIONS[ablation], docs, train_queries, args,
                                    args.output_dir / "student-checkpoints")
            report(f"student {len(layers)} layers ({spec}): {ablation}", *encode_with_student(student, test_texts))

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
