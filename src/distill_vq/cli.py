"""The `distill-vq` command: train, evaluate, search and push a distilled faiss index.

    distill-vq train [--corpus SOURCE] [--queries SOURCE] [--qrels QRELS] [--output-dir DIR] [...]
    distill-vq evaluate OUTPUT_DIR [--corpus SOURCE] [--queries SOURCE] [--qrels QRELS]
    distill-vq search OUTPUT_DIR "query text" [-k 10]
    distill-vq push OUTPUT_DIR REPO_ID [--private] [--include-index] [--revision BRANCH]

`train` passes every flag it does not know to `DistillVQTrainingArguments` (transformers `TrainingArguments`
plus the distillation settings), e.g. `--warmup-steps 20 --pq-learning-rate 1e-4 --save-strategy steps`.
User errors print one line `distill-vq: error: <message>` and exit with status 2.
"""

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from accelerate import PartialState
from datasets import Dataset
from transformers import HfArgumentParser

from .configuration_distill_vq import DistillVQConfig
from .data import DataError, default_data_path, load_corpus
from .faiss_bridge import documents_needed
from .hub import download_output_dir, push_output_dir
from .encoding import DEFAULT_ENCODER_NAME, TextEncoder, encode_dataset_cached, resolve_encoder
from .losses import SCORE_LOSSES
from .model_card import card_facts_from_results, write_model_card
from .modeling_distill_vq import DistillVQModel
from .output_folder import (
    check_writable,
    read_index_files,
    staged_folder,
    write_index_files,
    write_results,
)
from .retrieval_task import (
    RetrievalTask,
    compare_indexes,
    evaluation_cutoffs,
    exact_index,
    load_task,
    read_embeddings,
    training_queries,
)
from .trainer import DistillVQTrainer, DistillVQTrainingArguments
from .validation import check_embeddings

DEFAULT_OUTPUT_DIR = "./distill-vq-output"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "distill-vq" / "embeddings"
DEFAULT_MAX_STEPS = 300
DISTILLATION_LOSSES = [name for name in SCORE_LOSSES if name != "contrastive"]  # contrastive needs labels
MIN_POINTS_PER_LIST = 39  # faiss warns below 39 training points per k-means centroid
SNIPPET_CHARS = 100
DEFAULT_EVAL_SPLIT = "test"
EXACT, DISTILLED = "exact", "distill-vq"
FLAG_OF_SETTING = {"num_lists": "--num-lists", "bits_per_subvector": "--bits-per-subvector",
                   "use_rotation": "--no-rotation"}


class StepPrinter:
    """Prints numbered step headers such as `[1/6] Loading data`."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.number, self.enabled = total, 0, enabled

    def __call__(self, message: str) -> None:
        self.number += 1
        if self.enabled:
            print(f"[{self.number}/{self.total}] {message}", flush=True)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill-vq", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", allow_abbrev=False, help="train a distilled IVF-PQ index and write an output folder",
        description="Train a faiss [OPQ,]IVF,PQ index by distilling exact search, evaluate it against faiss's "
                    "own training at the same bytes per vector, and write an output folder. Flags not listed "
                    "here are passed to DistillVQTrainingArguments (e.g. --warmup-steps 20).",
    )
    _add_data_arguments(train)
    index = train.add_argument_group("index")
    index.add_argument("--num-lists", type=positive_int,
                       help=f"IVF lists (default: a power of two near 4*sqrt(num_docs), at most num_docs/"
                            f"{MIN_POINTS_PER_LIST})")
    index.add_argument("--num-subvectors", type=positive_int, default=16, help="PQ sub-vectors (default: 16)")
    index.add_argument("--bits-per-subvector", type=positive_int, default=8, help="bits per PQ code (default: 8)")
    index.add_argument("--no-rotation", action="store_true", help="no OPQ rotation")
    index.add_argument("--nprobe", type=positive_int, help="lists searched per query (default: num_lists // 8)")
    training = train.add_argument_group("training")
    training.add_argument("--loss", default="listnet", choices=DISTILLATION_LOSSES, help="(default: listnet)")
    training.add_argument("--max-steps", type=positive_int, help=f"optimizer steps (default: {DEFAULT_MAX_STEPS})")
    training.add_argument("--num-train-epochs", type=float, help="train for epochs instead of --max-steps")
    training.add_argument("--batch-size", type=positive_int, default=64, help="queries per step (default: 64)")
    training.add_argument("--seed", type=int, default=42, help="seed of faiss, the query split and training")
    train.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help=f"(default: {DEFAULT_OUTPUT_DIR})")

    evaluate = commands.add_parser(
        "evaluate", help="evaluate an output folder's index against exact search",
        description="Evaluate an output folder's index against exact search; data default to those it was "
                    "trained with. Writes results.json, results.md and recall.png to --results-dir.",
    )
    evaluate.add_argument("output_dir", help="a `train` output folder or a Hub repository pushed with its index")
    _add_data_arguments(evaluate, encoder=False)
    evaluate.add_argument("--nprobe", type=positive_int, help="lists searched per query (default: the stored one)")
    evaluate.add_argument("--results-dir", type=Path, help="(default: OUTPUT_DIR/evaluation, ./evaluation for a Hub repository)")

    search = commands.add_parser("search", help="search an output folder's index with a text query")
    search.add_argument("output_dir", help="a `train` output folder or a Hub repository pushed with its index")
    search.add_argument("query")
    search.add_argument("-k", type=positive_int, default=10, help="results to show (default: 10)")
    search.add_argument("--nprobe", type=positive_int, help="lists searched (default: the stored one)")
    search.add_argument("--corpus", help="where to read document texts (default: the training corpus)")

    push = commands.add_parser("push", help="upload an output folder to the Hugging Face Hub")
    push.add_argument("output_dir", type=Path)
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push.add_argument("--include-index", action="store_true", help="also upload index.faiss and doc_ids.json")
    push.add_argument("--revision", help="branch to push to")
    push.add_argument("--token", help="Hub token (default: the logged-in one)")
    return parser


def _add_data_arguments(parser: argparse.ArgumentParser, encoder: bool = True) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--corpus", help="BEIR folder, .jsonl/.csv/.parquet file or Hub dataset id "
                                       "(default: the packaged 5000 Debian package descriptions)")
    data.add_argument("--queries", help="queries file, folder or Hub id (default: the corpus source's)")
    data.add_argument("--qrels", help="evaluation qrels: a .tsv file, a split name, or a folder/Hub id of splits")
    data.add_argument("--eval-split", help="qrels split held out for evaluation (default: "
                      f"{DEFAULT_EVAL_SPLIT}; evaluate: the split the training held out)")
    if encoder:
        data.add_argument("--encoder", default=DEFAULT_ENCODER_NAME, help="embedding model (default: the "
                                                                          "packaged all-MiniLM-L6-v2)")
    data.add_argument("--doc-embeddings", help=".npy of document embeddings, rows in corpus order (skips encoding)")
    data.add_argument("--query-embeddings", help=".npy of query embeddings, rows in query order")
    data.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR,
                      help=f"embedding cache (default: {DEFAULT_CACHE_DIR})")


# ----- train -----


def auto_num_lists(num_docs: int) -> int:
    """A power of two near `4 * sqrt(num_docs)`, at most `num_docs / 39` so that k-means has enough points."""
    target = round(math.log2(4 * math.sqrt(num_docs)))
    cap = math.floor(math.log2(max(num_docs // MIN_POINTS_PER_LIST, 1)))
    return 2 ** max(0, min(target, cap))


def training_arguments(args: argparse.Namespace, flags: list[str]) -> DistillVQTrainingArguments:
    """The command's training settings, overridden by any `DistillVQTrainingArguments` flags passed through."""
    max_steps = -1 if args.num_train_epochs and args.max_steps is None else args.max_steps or DEFAULT_MAX_STEPS
    parser = HfArgumentParser(DistillVQTrainingArguments, exit_on_error=False)
    parser.set_defaults(
        output_dir=str(Path(args.output_dir) / "checkpoints"), per_device_train_batch_size=args.batch_size,
        max_steps=max_steps, num_train_epochs=args.num_train_epochs or 3.0, seed=args.seed, loss=args.loss,
        logging_steps=max(1, max_steps // 10) if max_steps > 0 else 50, save_strategy="no", report_to=[],
        use_cpu=not torch.cuda.is_available(), num_teacher_candidates=200,
    )
    try:
        training_args, unknown = parser.parse_args_into_dataclasses(args=flags, return_remaining_strings=True)
    except argparse.ArgumentError as error:
        raise ValueError(str(error)) from error
    if unknown:
        raise ValueError(f"unrecognized arguments {unknown}: not a train flag nor a DistillVQTrainingArguments field.")
    return training_args


def run_train(args: argparse.Namespace) -> None:
    """Encode, initialise from faiss, distill, export, evaluate and write the output folder.

    Under `accelerate launch` every process encodes its share of the texts and trains on its share of the queries
    (data parallel); the main process alone evaluates and writes.
    """
    check_writable(args.output_dir)
    training_args = training_arguments(args, args.training_flags)
    state = PartialState()  # after the training arguments, whose --ddp-* settings start the process group
    step = StepPrinter(6, enabled=state.is_main_process)
    task = _load_task(args, step)
    docs, queries, encoder_name, encoder_revision = _embeddings(task, args, args.encoder, step, state)
    config = DistillVQConfig(
        embedding_dim=docs.shape[1], num_lists=args.num_lists or auto_num_lists(len(docs)),
        num_subvectors=args.num_subvectors, bits_per_subvector=args.bits_per_subvector,
        use_rotation=not args.no_rotation, encoder_name_or_path=encoder_name, encoder_revision=encoder_revision,
    )
    _check_enough_documents(config, len(docs))
    nprobe = args.nprobe or config.default_nprobe
    train_rows, eval_rows = task.split_queries(args.seed)
    train_queries = training_queries(queries, train_rows, docs, args.seed)
    train_name = "training queries" if len(train_rows) else "documents as pseudo-queries (every query is judged)"

    step(f"Training faiss {config.index_factory_string} on {len(docs)} documents "
         f"({config.bytes_per_vector:g} bytes/vector)")
    model = DistillVQModel.from_embeddings(docs, config, seed=args.seed)  # DDP broadcasts the main process's
    faiss_name = f"faiss {config.index_factory_string}"
    faiss_index = model.to_faiss(docs, nprobe) if state.is_main_process else None

    with staged_folder(args.output_dir, state) as folder:
        training_args.output_dir = str(folder / "checkpoints")
        length = f"{training_args.max_steps} steps" if training_args.max_steps > 0 else \
            f"{training_args.num_train_epochs:g} epochs"
        step(f"Distilling exact search into the index: {length} of {training_args.per_device_train_batch_size} "
             f"x {state.num_processes} of {len(train_queries)} {train_name} ({training_args.loss} loss)")
        trainer = DistillVQTrainer(model, training_args, Dataset.from_dict({"query_embedding": train_queries}), docs)
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=_resume_argument(training_args.resume_from_checkpoint))
        training_seconds = time.perf_counter() - start
        if not state.is_main_process:
            return
        indexes = {EXACT: exact_index(docs, config.metric), faiss_name: faiss_index,
                   DISTILLED: model.to_faiss(docs, nprobe)}

        step(f"Evaluating exact search, faiss and distill-vq on {len(eval_rows)} queries ({task.eval_name})")
        facts = {
            **_evaluation_facts(task, indexes, docs, queries, eval_rows, config),
            "num_train_queries": len(train_queries), "base_model": encoder_name,
            "dataset_id": _hub_dataset_id(task.corpus_source), "index_factory": config.index_factory_string,
            "num_lists": config.num_lists, "num_subvectors": config.num_subvectors,
            "bits_per_subvector": config.bits_per_subvector, "bytes_per_vector": _number(config.bytes_per_vector),
            "use_rotation": config.use_rotation, "nprobe": nprobe, "loss": training_args.loss,
            "num_teacher_candidates": training_args.num_teacher_candidates,
            "training_steps": trainer.state.global_step,
            "batch_size": training_args.per_device_train_batch_size * state.num_processes,
            "num_processes": state.num_processes, "training_seconds": round(training_seconds, 1),
        }
        gain = gain_summary(facts["results"], faiss_name, config.bytes_per_vector)
        facts["summary"] = gain[0].upper() + gain[1:] + "."

        step(f"Writing {args.output_dir}")
        model.save_pretrained(folder)
        write_index_files(folder, indexes[DISTILLED], task.doc_ids, {
            "index_factory": config.index_factory_string, "nprobe": nprobe, "num_docs": len(docs),
            "corpus": _recorded(task.corpus_source), "queries": _recorded(args.queries),
            "qrels": _recorded(args.qrels), "eval_split": args.eval_split or DEFAULT_EVAL_SPLIT, "seed": args.seed,
        })
        table = write_results(folder, facts)
        write_model_card(folder / "README.md", card_facts_from_results(facts, str(args.output_dir)))
        _remove_if_empty(folder / "checkpoints")
    print(table)
    print(f"distill-vq: wrote {args.output_dir} — {gain}")


def _resume_argument(value: str | None) -> str | bool | None:
    """`--resume-from-checkpoint`: a checkpoint folder, or `true` / `last` for the newest one of this run."""
    return True if value is not None and value.lower() in ("true", "last") else value


def _evaluation_facts(task: RetrievalTask, indexes: dict, docs: np.ndarray, queries: np.ndarray,
                      eval_rows: np.ndarray, config: DistillVQConfig) -> dict:
    """The evaluation's setting and one result row per index (for results.json, results.md and the card)."""
    metrics = compare_indexes(indexes, docs, task.doc_ids, queries[eval_rows], task.qrels_for(eval_rows),
                              config.metric)
    bytes_per_vector = {EXACT: 4 * config.embedding_dim}
    return {
        "corpus_name": task.corpus_name, "num_docs": len(docs), "num_eval_queries": len(eval_rows),
        "eval_name": task.eval_name, "embedding_dim": config.embedding_dim, "metric": config.metric,
        "results": [
            {"index": name, "bytes/vector": bytes_per_vector.get(name, _number(config.bytes_per_vector)), **values}
            for name, values in metrics.items()
        ],
    }


def _check_enough_documents(config: DistillVQConfig, num_docs: int) -> None:
    """`train_faiss_index`'s check, worded with the flags that lower what faiss's training needs."""
    needs = documents_needed(config)
    too_many = [FLAG_OF_SETTING[setting] for setting, count in needs.items() if count > num_docs]
    if too_many:
        raise DataError(
            f"{num_docs} documents are too few to train {config.index_factory_string} (it needs "
            f"{max(needs.values())}); use more documents, or {' / '.join(too_many)}."
        )


def gain_summary(rows: list[dict], faiss_name: str, bytes_per_vector: float) -> str:
    """E.g. `recall@10 vs exact 0.584 -> 0.621 (+0.037 over faiss OPQ16,IVF128,PQ16x8 at 16 bytes/vector),
    MRR@10 0.592 -> 0.616`."""
    by_name = {row["index"]: row for row in rows}
    before, after = by_name[faiss_name], by_name[DISTILLED]
    k = evaluation_cutoffs(10**9)[0]
    recall = f"recall_vs_exact@{k}"
    text = (f"recall@{k} vs exact {before[recall]:.3f} -> {after[recall]:.3f} ({after[recall] - before[recall]:+.3f} "
            f"over {faiss_name} at {bytes_per_vector:g} bytes/vector)")
    if f"mrr@{k}" in after:
        text += f", MRR@{k} {before[f'mrr@{k}']:.3f} -> {after[f'mrr@{k}']:.3f}"
    return text


def _number(value: float) -> int | float:
    """`value` as an int when it is whole (for tables and cards)."""
    return int(value) if float(value).is_integer() else value


def _remove_if_empty(folder: Path) -> None:
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _recorded(source: str | None) -> str | None:
    """A data source or model as recorded for later commands: local paths made absolute, Hub ids and None kept."""
    if source is None or not Path(source).expanduser().exists():
        return source
    return str(Path(source).expanduser().resolve())


def _hub_dataset_id(source: str | None) -> str | None:
    return None if source is None or Path(source).expanduser().exists() else source.partition(":")[0]


def _load_task(args: argparse.Namespace, step: StepPrinter) -> RetrievalTask:
    step(f"Loading {'the packaged default data' if args.corpus is None else args.corpus}")
    return load_task(args.corpus, args.queries, args.qrels, args.eval_split or DEFAULT_EVAL_SPLIT)


def _embeddings(task: RetrievalTask, args: argparse.Namespace, encoder_name: str, step: StepPrinter,
                state: PartialState | None = None, revision: str | None = None):
    """`(doc_embeddings, query_embeddings, encoder_name, encoder_revision)`: read from .npy files, else encoded."""
    num_docs, num_queries = len(task.corpus), len(task.queries)
    counts = {"documents": num_docs, "queries": 0 if task.pseudo_queries else num_queries}
    to_encode = [what for what, path in (("documents", args.doc_embeddings), ("queries", args.query_embeddings))
                 if path is None and counts[what]]
    name = _recorded(resolve_encoder(encoder_name)[0])
    if to_encode:
        step(f"Encoding {' and '.join(f'{counts[what]} {what}' for what in to_encode)} with {name}")
    else:
        step("Reading the embeddings")
    encoder = TextEncoder(encoder_name, revision=revision) if to_encode else None
    if args.doc_embeddings is not None:
        docs = read_embeddings(args.doc_embeddings, num_docs, "corpus")
    else:
        docs = encode_dataset_cached(encoder, task.corpus, "text", args.cache_dir.expanduser(), accelerator=state)
    docs = check_embeddings(docs, "doc embeddings")
    if encoder is not None and encoder.embedding_dim != docs.shape[1]:
        raise DataError(f"{name} makes {encoder.embedding_dim}-d embeddings but the documents' are "
                        f"{docs.shape[1]}-d; pass the --encoder that made --doc-embeddings.")
    if task.pseudo_queries:
        queries = docs
    elif args.query_embeddings is not None:
        queries = read_embeddings(args.query_embeddings, num_queries, "queries", dim=docs.shape[1])
    else:
        queries = encode_dataset_cached(encoder, task.queries, "text", args.cache_dir.expanduser(), accelerator=state)
    queries = check_embeddings(queries, "query embeddings")
    return docs, queries, name, None if encoder is None else encoder.revision


# ----- evaluate -----


def run_evaluate(args: argparse.Namespace) -> None:
    if not Path(args.output_dir).is_dir():  # a Hub repository: results go to the working folder, not the Hub cache
        args.results_dir = args.results_dir or Path("evaluation")
    args.output_dir = _local_output_dir(args.output_dir)
    if args.results_dir is not None and args.results_dir.resolve() == args.output_dir.resolve():
        raise DataError("--results-dir must not be the output folder itself: it would replace the training's "
                        "results and card facts; choose another folder.")
    index, doc_ids, index_config = read_index_files(args.output_dir, args.nprobe)
    config = DistillVQConfig.from_pretrained(args.output_dir)
    if args.corpus is None:  # the data the index was trained with
        args.corpus, args.queries = index_config["corpus"], args.queries or index_config["queries"]
        args.qrels = args.qrels or index_config["qrels"]
        args.eval_split = args.eval_split or index_config["eval_split"]
    step = StepPrinter(3)
    task = _load_task(args, step)
    docs, queries, _, _ = _embeddings(task, args, config.encoder_name_or_path or DEFAULT_ENCODER_NAME, step,
                                      revision=config.encoder_revision)
    if task.doc_ids != doc_ids:  # another corpus: index it with the trained quantizer
        index = DistillVQModel.from_pretrained(args.output_dir).to_faiss(docs, args.nprobe or index_config["nprobe"])
    _, eval_rows = task.split_queries(index_config["seed"])
    step(f"Evaluating exact search and distill-vq on {len(eval_rows)} queries ({task.eval_name})")
    facts = _evaluation_facts(task, {EXACT: exact_index(docs, config.metric), DISTILLED: index}, docs, queries,
                              eval_rows, config)
    results_dir = args.results_dir or args.output_dir / "evaluation"
    print(write_results(results_dir, facts))
    print(f"distill-vq: wrote {results_dir}")


def _local_output_dir(name: str) -> Path:
    """An output folder, or the local copy of a Hub repository pushed with `distill-vq push --include-index`."""
    if Path(name).is_dir():
        return Path(name)
    try:
        return download_output_dir(name)
    except OSError as error:
        raise FileNotFoundError(f"{name} is not a folder, and fetching it from the Hub failed: {error}") from None


# ----- search -----


def run_search(args: argparse.Namespace) -> None:
    args.output_dir = _local_output_dir(args.output_dir)
    index, doc_ids, index_config = read_index_files(args.output_dir, args.nprobe)
    config = DistillVQConfig.from_pretrained(args.output_dir)
    encoder = TextEncoder(config.encoder_name_or_path, revision=config.encoder_revision)
    if encoder.embedding_dim != config.embedding_dim:
        raise DataError(f"{config.encoder_name_or_path} makes {encoder.embedding_dim}-d embeddings but the index holds "
                        f"{config.embedding_dim}-d ones; the index was trained on embeddings of another encoder.")
    scores, rows = index.search(encoder.encode([args.query], show_progress=False), min(args.k, len(doc_ids)))
    texts = _document_texts(args.corpus or index_config["corpus"], rows[0], doc_ids)
    print(f"{'rank':>4}  {'score':>7}  {'doc id':<12}  text")
    for rank, (score, row) in enumerate(zip(scores[0], rows[0]), start=1):
        if row >= 0:
            print(f"{rank:>4}  {score:7.4f}  {doc_ids[row]:<12}  {texts.get(row, '')}")


def _document_texts(corpus: str | None, rows, doc_ids: list[str]) -> dict[int, str]:
    """Row -> a one-line snippet, read from the corpus; empty (with a warning) when it is gone or changed."""
    source = default_data_path() if corpus is None else corpus
    try:
        documents = load_corpus(source)
    except DataError as error:
        print(f"distill-vq: warning: no document texts ({error})", file=sys.stderr)
        return {}
    snippets = {}
    for row in map(int, rows):
        if 0 <= row < len(documents) and documents[row]["_id"] == doc_ids[row]:
            text = " ".join(documents[row]["text"].split())
            snippets[row] = text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"
    if len(snippets) < sum(row >= 0 for row in rows):
        print(f"distill-vq: warning: {source} is not the corpus the index was built from; pass --corpus.",
              file=sys.stderr)
    return snippets


# ----- push -----


def run_push(args: argparse.Namespace) -> None:
    try:
        commit = push_output_dir(args.output_dir, args.repo_id, private=args.private,
                                 include_index=args.include_index, token=args.token, revision=args.revision)
    except OSError as error:  # HfHubHTTPError and network errors are OSErrors
        raise ValueError(f"pushing to {args.repo_id} failed: {error}") from error
    print(f"distill-vq: pushed {args.output_dir} to {commit.commit_url}")


COMMANDS = {"train": run_train, "evaluate": run_evaluate, "search": run_search, "push": run_push}


def main(argv: list[str] | None = None) -> int:
    """Run the command; return its exit status (2 for a user error, reported in one line)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.training_flags = unknown
    try:
        COMMANDS[args.command](args)
    except (ValueError, OSError) as error:  # DataError, input checks, missing files, permissions, Hub and network
        message = " ".join(str(error).split())
        print(f"distill-vq: error: {message}", file=sys.stderr)
        return 2
    return 0
