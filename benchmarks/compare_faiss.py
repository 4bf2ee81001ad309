"""distill-vq against every faiss code family at the same bytes per vector, on one or more BEIR corpora.

    OMP_NUM_THREADS=1 python benchmarks/compare_faiss.py --corpora ../shared/data/debian-descriptions \
        benchmarks/data/gcide-wordnet --bytes 16 48 --output-dir benchmarks/results/all_families

At each size: exact search, faiss IVF-PQ, OPQ-IVF-PQ, 4-bit fast-scan PQ, RQ, LSQ and PRQ, and distill-vq from the
OPQ and from the RQ index, with the same lists, nprobe and threads; every faiss family trains on the same sample
of documents. The query-side rows distil either index together with a query adapter (`+adapter`), a copy of the
teacher as query encoder (`+joint`, Distill-VQ's joint mode) or a 3-layer student (`+student`, layers 0,2,4 of the
teacher, EmbedDistill); their test queries are embedded by what they trained (query-encoding throughput:
`queries_per_second`). Recall against exact search and against the test qrels, training seconds, QPS, index size; writes
`results.json`, `results.md` (after every row) and `recall_vs_qps.png`. benchmarks/README.md says what is held
equal and how to read the rows. Flags it does not know go to `DistillVQTrainingArguments` (e.g. `--loss kl`).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import json
import math
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import torch
from datasets import Dataset
from transformers import HfArgumentParser

from distill_vq import DistillVQModel
from distill_vq.data import load_qrels
from distill_vq.evaluation import evaluate_index, format_markdown_table, measure_qps
from distill_vq.io_utils import atomic_path, write_json, write_text
from distill_vq.pipeline import auto_num_lists, distill
from distill_vq.query_encoding import ModelQueryEncoder, query_tokenizer
from distill_vq.sampling import exact_search
from distill_vq.trainer import DistillVQTrainingArguments

COLUMNS = ["method", "bytes", "recall_vs_exact@10", "recall_vs_exact@100", "mrr@10", "recall@10", "recall@100",
           "train_seconds", "qps", "queries_per_second", "index_mb"]
QPS_K = 10  # results per query when timing search
# faiss rows: method -> index_factory string at m bytes per vector over `nlist` lists. `np`: no polysemous
# training, which only reorders PQ codes for Hamming filtering (unused here) and costs minutes.
FAISS_METHODS = {
    "ivf-pq": "IVF{nlist},PQ{m}x8np",
    "opq-ivf-pq": "OPQ{m},IVF{nlist},PQ{m}x8np",
    "ivf-pq-fastscan": "IVF{nlist},PQ{m2}x4fs",
    "ivf-rq": "IVF{nlist},RQ{m}x8_Nnone",
    "ivf-lsq": "IVF{nlist},LSQ{m}x8_Nnone",
    "ivf-prq": "IVF{nlist},PRQ{half}x2x8_Nnone",
}
# distill-vq row -> (the faiss row it starts from, what embeds its queries): each start alone and with each query side
DISTILL_METHODS = {f"distill-{family}{'' if side is None else '+' + side}": (start, side)
                   for family, start in (("pq", "opq-ivf-pq"), ("rq", "ivf-rq"))
                   for side in (None, "adapter", "joint", "student")}
TEACHER = "all-MiniLM-L6-v2"
STUDENT_LAYERS = [0, 2, 4]
# The query encoder's training settings (as `distill-vq train --train-query-encoder / --student-layers` sets them).
QUERY_SIDE_ARGUMENTS = {"joint": {"query_encoder_learning_rate": 2e-5},
                        "student": {"query_encoder_learning_rate": 5e-4, "student_loss_weight": 1.0,
                                    "embedding_matching_weight": 1.0}}
METHODS = ["exact", *FAISS_METHODS, *DISTILL_METHODS]
SEARCH_TYPES = ("ST_LUT_nonorm", "ST_decompress")  # the exact search types of additive codes without norms
SEARCH_TYPE_TRIAL = 200  # queries that pick an additive index's faster search type


@dataclass
class Corpus:
    """A BEIR folder's embeddings: `docs (N, dim)`, `train_queries (T, dim)`, `test_queries (Q, dim)` with their
    qrels (one dict per query), exact search's `exact_ids (Q, 100)`, the query texts and, per train query, the rows
    of its relevant documents (for `--label-loss-weight`)."""

    name: str
    docs: np.ndarray
    doc_ids: list[str]
    train_queries: np.ndarray
    test_queries: np.ndarray
    test_qrels: list[dict[str, int]]
    exact_ids: np.ndarray
    train_texts: list[str]
    test_texts: list[str]
    train_positives: list[list[int]]


def load_corpus(folder: Path, embeddings: str, max_docs: int | None) -> Corpus:
    """The float32 document and query embeddings of a BEIR folder (the first `max_docs` documents), the train
    qrels' queries with their relevant documents' rows, and the test queries with a relevant document among those
    documents, with their qrels."""
    embedding_folder = folder / "embeddings" / embeddings
    doc_ids = json.loads((embedding_folder / "doc_ids.json").read_text())[:max_docs]
    query_ids = json.loads((embedding_folder / "query_ids.json").read_text())
    docs = np.load(embedding_folder / "docs.npy", mmap_mode="r")[: len(doc_ids)].astype(np.float32)
    queries = np.load(embedding_folder / "queries.npy", mmap_mode="r")
    row_of = {doc_id: row for row, doc_id in enumerate(doc_ids)}
    test_qrels = {query_id: judged for query_id, judged in load_qrels(folder / "qrels" / "test.tsv").items()
                  if any(score > 0 and doc_id in row_of for doc_id, score in judged.items())}
    train_qrels = load_qrels(folder / "qrels" / "train.tsv")
    test_rows = [row for row, query_id in enumerate(query_ids) if query_id in test_qrels]
    train_rows = [row for row, query_id in enumerate(query_ids) if query_id in train_qrels]
    test_queries = queries[test_rows].astype(np.float32)
    with gzip.open(folder / "queries.jsonl.gz", "rt", encoding="utf-8") as handle:
        text_of = {row["_id"]: row["text"] for row in map(json.loads, handle)}
    return Corpus(
        name=folder.name, docs=docs, doc_ids=doc_ids, train_queries=queries[train_rows].astype(np.float32),
        test_queries=test_queries, test_qrels=[test_qrels[query_ids[row]] for row in test_rows],
        exact_ids=exact_search(test_queries, docs, 100)[1],
        train_texts=[text_of[query_ids[row]] for row in train_rows],
        train_positives=[[row_of[doc_id] for doc_id, score in train_qrels[query_ids[row]].items()
                          if score > 0 and doc_id in row_of] for row in train_rows],
        test_texts=[text_of[query_ids[row]] for row in test_rows],
    )


def factory_strings(num_bytes: int, num_lists: int) -> dict[str, str]:
    """Each faiss method's index_factory string at `num_bytes` bytes per vector."""
    return {method: pattern.format(nlist=num_lists, m=num_bytes, m2=2 * num_bytes, half=num_bytes // 2)
            for method, pattern in FAISS_METHODS.items()}


def check_sizes(sizes: list[int], dim: int, num_lists: int, nprobe: int) -> None:
    """Refuse, before any training, a size some family cannot build at `dim` dimensions, or nprobe above the lists."""
    if nprobe > num_lists:
        raise ValueError(f"--nprobe {nprobe} is more than the {num_lists} lists; lower --nprobe or raise --num-lists.")
    for num_bytes in sizes:
        if num_bytes % 2:
            raise ValueError(f"--bytes {num_bytes} is odd, but PRQ splits it in pairs of codebooks; use an even size.")
        for method, factory in factory_strings(num_bytes, num_lists).items():
            try:
                faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as error:
                raise ValueError(f"--bytes {num_bytes}: faiss cannot build {factory} ({method}) for {dim}-d vectors "
                                 f"({str(error).splitlines()[0]}); use an even size whose double divides {dim}, "
                                 "such as 16 or 48.") from None


def train_faiss(factory: str, docs: np.ndarray, train_rows: np.ndarray) -> tuple[faiss.Index, float, float]:
    """A faiss index trained on `docs[train_rows]` holding every document; with its training and adding seconds."""
    index = faiss.index_factory(docs.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    start = time.perf_counter()
    index.train(docs[train_rows])
    trained = time.perf_counter()
    index.add(docs)
    return index, trained - start, time.perf_counter() - trained


def fastest_search(index: faiss.Index, queries: np.ndarray) -> dict:
    """QPS of `index` (best of 3). Additive codes first try each exact search type once on `SEARCH_TYPE_TRIAL`
    queries and keep the faster set."""
    ivf = faiss.try_extract_index_ivf(index)
    aq = getattr(faiss.downcast_index(ivf), "aq", None) if ivf is not None else None
    if aq is None:
        return {"qps": measure_qps(index, queries, QPS_K)}
    trials = {}
    for name in SEARCH_TYPES:
        aq.search_type = getattr(faiss.AdditiveQuantizer, name)
        trials[f"trial_qps_{name}"] = measure_qps(index, queries[:SEARCH_TYPE_TRIAL], QPS_K, repeats=1)
    best = max(SEARCH_TYPES, key=lambda name: trials[f"trial_qps_{name}"])
    aq.search_type = getattr(faiss.AdditiveQuantizer, best)
    return {"qps": measure_qps(index, queries, QPS_K), "search_type": best, **trials}


def measure(index: faiss.Index, corpus: Corpus, args, queries: np.ndarray | None = None) -> dict:
    """Search speed, then the quality of the same searches, at `args.nprobe`, with the teacher's test queries or
    the given embeddings of them."""
    queries = corpus.test_queries if queries is None else queries
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.nprobe = args.nprobe
    timing = fastest_search(index, queries[: args.qps_queries])
    metrics = evaluate_index(index, queries, corpus.doc_ids, corpus.test_qrels, corpus.exact_ids)
    return {**metrics, **timing, "index_mb": faiss.serialize_index(index).nbytes / 2**20}


def distill_from(index: faiss.Index, corpus: Corpus, training_args, query_side: str | None = None
                 ) -> tuple[DistillVQModel, object, float, int]:
    """distill-vq initialised from a trained faiss index and distilled on the train queries (as many as training
    will see, drawn at random, so that only those are mined), with a query adapter or a query encoder per
    `query_side`; with the query encoder's tokenizer (or None), its seconds and steps."""
    model = DistillVQModel.from_faiss(index)
    tokenizer = None
    if query_side == "adapter":
        model.attach_query_adapter()
    elif query_side is not None:
        model.attach_query_encoder(TEACHER, layers=STUDENT_LAYERS if query_side == "student" else None)
        tokenizer = query_tokenizer(TEACHER)
        training_args = dataclasses.replace(training_args, **QUERY_SIDE_ARGUMENTS[query_side])
    used = min(len(corpus.train_queries), training_args.max_steps * training_args.per_device_train_batch_size)
    rows = np.sort(np.random.default_rng(training_args.seed).choice(len(corpus.train_queries), used, replace=False))
    columns = {"query_embedding": corpus.train_queries[rows]}
    if tokenizer:
        columns["query"] = [corpus.train_texts[row] for row in rows]
    if training_args.label_loss_weight:  # the train qrels' labels, reported apart from the label-free rows
        columns["positive_ids"] = [corpus.train_positives[row] for row in rows]
    queries = Dataset.from_dict(columns)
    start = time.perf_counter()
    trainer = distill(model, queries, corpus.docs, training_args, tokenizer=tokenizer)
    return model, tokenizer, time.perf_counter() - start, trainer.state.global_step


def encoded_test_queries(model: DistillVQModel, tokenizer, corpus: Corpus) -> tuple[np.ndarray, float]:
    """The test queries embedded by the model's query encoder, and its throughput (queries per second)."""
    start = time.perf_counter()
    embeddings = ModelQueryEncoder(model, tokenizer).encode(corpus.test_texts, show_progress=False)
    return embeddings, len(embeddings) / (time.perf_counter() - start)


def benchmark_corpus(corpus: Corpus, args, training_args, entry: dict, save) -> None:
    """Every row of `args.methods` at each size of `args.bytes`, appended to `entry["rows"]`; `save()` after each."""
    num_lists = args.num_lists or auto_num_lists(len(corpus.docs))
    sample = min(args.max_train_docs, len(corpus.docs))
    train_rows = np.sort(np.random.default_rng(0).choice(len(corpus.docs), sample, replace=False))
    entry.update(num_docs=len(corpus.docs), num_train_queries=len(corpus.train_queries),
                 num_test_queries=len(corpus.test_queries), num_lists=num_lists, faiss_train_docs=sample, rows=[])

    def add(row: dict) -> None:
        entry["rows"].append(row)
        timings = ", ".join(f"{key} {row[key]:.1f}" for key in ("train_seconds", "add_seconds", "distill_seconds")
                            if key in row)
        print(f"{format_markdown_table([row], COLUMNS).splitlines()[-1]}  ({timings})", flush=True)
        save()

    if "exact" in args.methods:
        print(f"[{corpus.name}] exact search", flush=True)
        exact = faiss.IndexFlatIP(corpus.docs.shape[1])
        exact.add(corpus.docs)
        add({"method": "exact (IndexFlatIP)", "family": "exact", "bytes": 4 * corpus.docs.shape[1],
             "train_seconds": 0.0, **measure(exact, corpus, args)})
    needed = {DISTILL_METHODS[method][0] if method in DISTILL_METHODS else method for method in args.methods}
    for num_bytes in args.bytes:
        factories = factory_strings(num_bytes, num_lists)
        indexes, seconds = {}, {}
        for method, factory in factories.items():
            if method not in needed:
                continue
            print(f"[{corpus.name}] faiss {factory}: training on {sample} documents", flush=True)
            indexes[method], seconds[method], add_seconds = train_faiss(factory, corpus.docs, train_rows)
            if method in args.methods:
                add({"method": f"faiss {factory}", "family": method, "bytes": num_bytes,
                     "train_seconds": seconds[method], "add_seconds": add_seconds,
                     **measure(indexes[method], corpus, args)})
        for method, (source, query_side) in DISTILL_METHODS.items():
            if method not in args.methods:
                continue
            print(f"[{corpus.name}] {method} from {factories[source]}: distilling", flush=True)
            model, tokenizer, distill_seconds, steps = distill_from(indexes[source], corpus, training_args, query_side)
            queries, speed = (None, None) if tokenizer is None else encoded_test_queries(model, tokenizer, corpus)
            suffix = "" if query_side is None else f" + {query_side}"
            add({"method": f"distill-vq (from {factories[source]}){suffix}", "family": method, "bytes": num_bytes,
                 "train_seconds": seconds[source] + distill_seconds, "distill_seconds": distill_seconds,
                 "distill_steps": steps, "queries_per_second": speed,
                 **measure(model.to_faiss(corpus.docs), corpus, args, queries)})
            if args.save_models:
                model.save_pretrained(args.output_dir / "models" / corpus.name / f"{method}-{num_bytes}B")


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                platform.processor())


def machine_facts() -> dict:
    """Cores, processor, load average (other jobs running distort timings) and library versions."""
    return {"cpu_count": os.cpu_count(), "cpu": cpu_model(), "platform": platform.platform(),
            "load_average_start": os.getloadavg(), "faiss": faiss.__version__, "torch": torch.__version__,
            "numpy": np.__version__}


def write_results(results: dict, args) -> None:
    """results.json and results.md (one table per corpus), each written atomically."""
    results["machine"]["load_average_end"] = os.getloadavg()
    write_json(args.output_dir / "results.json", results)
    training, machine = results["settings"]["training_arguments"], results["machine"]
    header = (
        f"nprobe {args.nprobe}, {args.threads} thread(s); QPS: top-{QPS_K} search of {args.qps_queries or 'all'} "
        f"test queries, best of 3. Every faiss family trains on the same {args.max_train_docs} random documents at "
        f"most, then indexes all of them; distill-vq distils against all of them, {training['max_steps']} steps x "
        f"{training['per_device_train_batch_size']} train queries, max_train_seconds {training['max_train_seconds']}. "
        f"Load average at start / end: {machine['load_average_start'][0]:.1f} / "
        f"{machine['load_average_end'][0]:.1f} on {machine['cpu_count']} cores."
    )
    sections = [header]
    for name, corpus in results["corpora"].items():
        facts = {key: value for key, value in corpus.items() if key != "rows"}
        sections.append(f"## {name}\n\n{', '.join(f'{key} {value}' for key, value in facts.items())}\n\n"
                        f"{format_markdown_table(corpus['rows'], COLUMNS)}")
    write_text(args.output_dir / "results.md", "\n\n".join(sections) + "\n")


def plot_recall_vs_qps(results: dict, path: Path) -> None:
    """Recall@10 vs exact against QPS (log axis), one marker per method, one panel per corpus and size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    markers = dict(zip(METHODS, "*osDv^P<>Xhdp8H"))
    colors = dict(zip(METHODS, plt.cm.tab20.colors))
    names, sizes = list(results["corpora"]), results["settings"]["bytes"]
    figure, axes = plt.subplots(len(names), len(sizes), figsize=(5 * len(sizes), 4 * len(names) + 0.6), squeeze=False)
    for axis_row, name in zip(axes, names):
        for axis, size in zip(axis_row, sizes):
            for row in results["corpora"][name]["rows"]:
                if row["bytes"] == size or row["family"] == "exact":
                    axis.scatter(row["qps"], row["recall_vs_exact@10"], s=60, marker=markers[row["family"]],
                                 color=colors[row["family"]], label=row["family"])
            axis.set(xscale="log", xlabel=f"QPS ({results['settings']['threads']} thread(s))", ylim=(0, 1.02),
                     ylabel="recall@10 vs exact", title=f"{name}, {size} bytes/vector")
            axis.grid(alpha=0.3)
    handles = {label: handle for axis in axes.flat for handle, label in zip(*axis.get_legend_handles_labels())}
    columns = 3 * len(sizes)  # legend entries per row: as many as the figure's width holds
    legend_height = 0.3 * math.ceil(len(handles) / columns) + 0.2
    figure.set_figheight(figure.get_figheight() - 0.6 + legend_height)
    figure.legend(handles.values(), handles.keys(), loc="lower center", ncol=columns, fontsize=8)
    figure.tight_layout(rect=(0, legend_height / figure.get_figheight(), 1, 1))
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")


def parse_arguments() -> tuple[argparse.Namespace, DistillVQTrainingArguments]:
    """This script's flags, and the training arguments from the rest (refused when not a training field)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)  # an abbreviation could swallow a training flag
    parser.add_argument("--corpora", type=Path, nargs="+", required=True, help="BEIR folders with embeddings")
    parser.add_argument("--embeddings", default="all-MiniLM-L6-v2", help="folder under each corpus's embeddings/")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    parser.add_argument("--bytes", type=int, nargs="+", default=[16, 48], help="bytes per vector of each size")
    parser.add_argument("--num-lists", type=int, help="IVF lists (default: auto from the number of documents)")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="faiss and torch threads, training and search")
    parser.add_argument("--max-docs", type=int, help="benchmark the first N documents only (a quick check)")
    parser.add_argument("--max-train-docs", type=int, default=20000, help="faiss's training sample, every family")
    parser.add_argument("--qps-queries", type=int, help="time the first N test queries for QPS (default: all)")
    parser.add_argument("--max-steps", type=int, default=300, help="distillation steps")
    parser.add_argument("--batch-size", type=int, default=64, help="train queries per distillation step")
    parser.add_argument("--max-train-seconds", type=float, help="time budget of each distillation (stops early)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results" / "all_families")
    parser.add_argument("--save-models", action="store_true", help="save each distilled model to OUTPUT/models/")
    args, rest = parser.parse_known_args()
    return args, training_arguments(parser, rest, max_steps=args.max_steps, seed=0,
                                    per_device_train_batch_size=args.batch_size,
                                    max_train_seconds=args.max_train_seconds,
                                    logging_steps=max(1, args.max_steps // 10))


def training_arguments(parser: argparse.ArgumentParser, rest: list[str], **defaults) -> DistillVQTrainingArguments:
    """The benchmark's `DistillVQTrainingArguments`: `defaults` (no checkpoints, no reporting, the GPU when there
    is one) overridden by the flags in `rest` that the script's own `parser` did not know."""
    training_parser = HfArgumentParser(DistillVQTrainingArguments)
    training_parser.set_defaults(save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), **defaults)
    training_args, unknown = training_parser.parse_args_into_dataclasses(args=rest, return_remaining_strings=True)
    if unknown:
        parser.error(f"unrecognized arguments {unknown}: neither a flag of this script nor a training argument.")
    return training_args


def main() -> None:
    args, training_args = parse_arguments()
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    corpora = [load_corpus(folder, args.embeddings, args.max_docs) for folder in args.corpora]
    for corpus in corpora:
        check_sizes(args.bytes, corpus.docs.shape[1], args.num_lists or auto_num_lists(len(corpus.docs)), args.nprobe)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    settings.update(corpora=[str(folder) for folder in args.corpora], qps_k=QPS_K,
                    training_arguments=training_args.to_sanitized_dict())
    results = {"settings": settings, "machine": machine_facts(), "corpora": {}}
    with tempfile.TemporaryDirectory() as scratch:
        training_args.output_dir = scratch  # the Trainer's folder: nothing is saved there (save_strategy="no")
        for corpus in corpora:
            print(f"[{corpus.name}] {len(corpus.docs)} documents, {len(corpus.train_queries)} train queries, "
                  f"{len(corpus.test_queries)} test queries", flush=True)
            entry = results["corpora"].setdefault(corpus.name, {})
            benchmark_corpus(corpus, args, training_args, entry, lambda: write_results(results, args))
    write_results(results, args)
    plot_recall_vs_qps(results, args.output_dir / "recall_vs_qps.png")
    print(f"Wrote {args.output_dir}/results.json, results.md and recall_vs_qps.png")

if __name__ == "__main__":
    main()
