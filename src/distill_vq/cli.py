"""The `distill-vq` command: train, evaluate, search and push a distilled faiss index.

    distill-vq train [--corpus SOURCE] [--queries SOURCE] [--qrels QRELS] [--output-dir DIR] [...]
    distill-vq evaluate OUTPUT_DIR [--corpus SOURCE] [--queries SOURCE] [--qrels QRELS]
    distill-vq search OUTPUT_DIR "query text" [-k 10]
    distill-vq push OUTPUT_DIR REPO_ID [--private] [--include-index] [--include-encoder] [--revision BRANCH]

`train` passes every flag it does not know to `DistillVQTrainingArguments` (transformers `TrainingArguments`
plus the distillation settings), e.g. `--warmup-steps 20 --ivf-learning-rate 1e-3 --save-total-limit 3`.
User errors, damaged files and Hub failures print one line `distill-vq: error: <message>` and exit with status 2.
The libraries' progress bars and logs (datasets, transformers, huggingface_hub) are silenced unless `--verbose`.
Each command imports the library's heavy modules (torch, transformers, faiss) when it runs, so that `--help` and
`--version` answer at once.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .settings import (
    DEFAULT_CACHE_DIR, DEFAULT_ENCODER_NAME, DEFAULT_EVAL_SPLIT, DEFAULT_OUTPUT_DIR, INDEX_FACTORY_FIELDS,
    INDEX_FACTORY_FORMS, METRICS, MIN_POINTS_PER_LIST, TextColumns, TrainSettings, index_factory_conflict,
)

if TYPE_CHECKING:
    from .trainer import DistillVQTrainingArguments

DEFAULT_MAX_STEPS = 300
SAVE_EVERY = 0.1  # a checkpoint every 10% of the steps (and at the end, or when the time budget is spent)
SAVE_TOTAL_LIMIT = 2
# Literal here so that `--help` needs no torch; tests check them against `losses.SCORE_LOSSES` (less "contrastive",
# which needs labels) and `quantizers.QUANTIZERS`.
DISTILLATION_LOSSES = ("listnet", "kl", "mse", "margin_mse", "ranknet")
QUANTIZER_NAMES = ("pq", "rq")
SNIPPET_CHARS = 100
VERBOSE_HELP = ("show the libraries' progress bars and logs (datasets, transformers, huggingface_hub) and "
                "distill-vq's detailed log")
# Loggers whose info lines are progress, shown without --verbose: faiss's training time and its warnings' summary.
PROGRESS_LOGGERS = ("distill_vq.faiss_bridge",)
# A copy of the teacher starts where the index does and only needs nudging; a cut student must first learn to embed
# like the teacher (EmbedDistill's score and embedding terms, at the rate benchmarks/embed_distill.py found).
JOINT_DEFAULTS = {"query_encoder_learning_rate": 2e-5}
STUDENT_DEFAULTS = {"query_encoder_learning_rate": 5e-4, "student_loss_weight": 1.0, "embedding_matching_weight": 1.0}


class StepPrinter:
    """Prints numbered step headers such as `[1/6] Loading data`."""

    def __init__(self, total: int, enabled: bool = True):
        self.total, self.number, self.enabled = total, 0, enabled

    def __call__(self, message: str) -> None:
        self.number += 1
        if self.enabled:
            print(f"[{self.number}/{self.total}] {message}", flush=True)


class ConsoleHandler(logging.Handler):
    """distill-vq's log on the console: warnings to stderr as `distill-vq: warning: ...`; progress details (the
    `PROGRESS_LOGGERS`', or with `verbose` all) to stdout under the step lines, on the main process. Looks the streams
    up at each record, so that it writes where `sys.stdout` / `sys.stderr` are now."""

    def __init__(self, verbose: bool = False):
        super().__init__()
        self.verbose = verbose
        self.main_process = os.environ.get("RANK", "0") == "0"  # set by `accelerate launch`

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return self.main_process and (self.verbose or record.name in PROGRESS_LOGGERS)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            print(f"distill-vq: warning: {record.getMessage()}", file=sys.stderr, flush=True)
        else:
            print(f"    {record.getMessage()}", flush=True)


@contextmanager
def console_output(verbose: bool = False):
    """For a command's run: show distill-vq's log (`ConsoleHandler`) and, unless `verbose`, silence the libraries'
    progress bars and advisory logs (datasets' "Generating train split" and "Map", transformers' "Loading weights"
    and "Writing model shards", huggingface_hub's downloads). Everything is put back afterwards."""
    package = logging.getLogger("distill_vq")
    handler, level = ConsoleHandler(verbose), package.level
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    restores = [] if verbose else _quiet_libraries()
    try:
        yield
    finally:
        for restore in reversed(restores):
            restore()
        package.removeHandler(handler)
        package.setLevel(level)


def _quiet_libraries() -> list:
    """Silence the libraries' progress bars and logs below errors; return the calls that restore them."""
    import datasets
    from datasets.utils import logging as datasets_logging
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as transformers_logging

    restores = []
    bars = (
        (datasets.are_progress_bars_disabled, datasets.disable_progress_bars, datasets.enable_progress_bars),
        (hub_utils.are_progress_bars_disabled, hub_utils.disable_progress_bars, hub_utils.enable_progress_bars),
        (lambda: not transformers_logging.is_progress_bar_enabled(), transformers_logging.disable_progress_bar,
         transformers_logging.enable_progress_bar),
    )
    for disabled, disable, enable in bars:
        if not disabled():
            disable()
            restores.append(enable)
    for library in (datasets_logging, transformers_logging):
        verbosity = library.get_verbosity()
        library.set_verbosity_error()
        restores.append(lambda library=library, verbosity=verbosity: library.set_verbosity(verbosity))
    return restores


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity; all cores where that is unknown)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_threads(threads: int | None) -> None:
    """One thread count for torch and faiss (OpenMP): `threads`, at most the cores available (more would only
    contend; said in a warning), by default `OMP_NUM_THREADS` when set, else all the cores.

    OpenMP's threads wait at barriers asleep (`OMP_WAIT_POLICY=PASSIVE`, unless the environment says otherwise), not
    spinning: on cores that another job shares, spinning threads took the cores their own team waited for
    (`benchmarks/threads.py`, 2 threads beside a 2-thread job: OPQ training 450 s -> 102 s, a distillation step
    6.3 s -> 0.96 s)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # OpenMP reads it once, when torch and faiss first load it
    import faiss
    import torch

    cores = available_cores()
    if threads is not None and threads > cores:
        print(f"distill-vq: warning: --threads {threads} is more than the {cores} cores available; using {cores}.",
              file=sys.stderr)
    environment = os.environ.get("OMP_NUM_THREADS", "")
    threads = min(threads or (int(environment) if environment.isdigit() and int(environment) > 0 else cores), cores)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive integer")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0."""
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} is not a positive number")
    return value


def layer_list(text: str) -> list[int]:
    """argparse type: comma-separated layer numbers, e.g. `0,2,4`."""
    try:
        return [int(number) for number in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of layer numbers such as 0,2,4")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill-vq", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"distill-vq {__version__}")
    parser.add_argument("--threads", type=positive_int,
                        help=f"torch and faiss threads (default: OMP_NUM_THREADS, else the {available_cores()} cores "
                             "this process may use)")
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", allow_abbrev=False, help="train a distilled IVF-PQ index and write an output folder",
        description="Train a faiss [OPQ,]IVF,PQ index by distilling exact search, evaluate it against faiss's "
                    "own training at the same bytes per vector, and write an output folder. Flags not listed "
                    "here are passed to DistillVQTrainingArguments (e.g. --warmup-steps 20).",
    )
    _add_data_arguments(train)
    index = train.add_argument_group("index")
    index.add_argument("--index-factory", metavar="STRING",
                       help=f"the index as a faiss.index_factory string, in place of "
                            f"{', '.join(INDEX_FACTORY_FIELDS.values())}: {INDEX_FACTORY_FORMS}")
    index.add_argument("--metric", default="ip", choices=METRICS,
                       help="ip (inner product), l2, or cosine (the document and query embeddings are L2-normalised "
                            "before everything else, then scored by inner product) (default: ip)")
    index.add_argument("--num-lists", type=positive_int,
                       help=f"IVF lists (default: a power of two near 4*sqrt(num_docs), at most num_docs/"
                            f"{MIN_POINTS_PER_LIST})")
    index.add_argument("--quantizer", choices=QUANTIZER_NAMES,
                       help="code family: pq (faiss PQ) or rq (faiss residual quantizer, inner product; exported as a "
                            "PQ-speed index) (default: pq)")
    index.add_argument("--num-subvectors", type=positive_int, help="PQ sub-vectors (default: 16)")
    index.add_argument("--num-codebooks", type=positive_int,
                       help="RQ codebooks, i.e. bytes per vector (--quantizer rq; default: --num-subvectors)")
    index.add_argument("--bits-per-subvector", type=positive_int, help="bits per PQ code (default: 8)")
    index.add_argument("--no-rotation", action="store_true", help="no OPQ rotation")
    index.add_argument("--nprobe", type=positive_int,
                       help="lists searched per query (default: num_lists // 8, at least min(num_lists, 8))")
    queries = train.add_argument_group("query side (default: queries keep the document encoder's embeddings)")
    queries.add_argument("--query-adapter", action="store_true",
                         help="train a linear map of the query embeddings against the index (for --query-embeddings "
                              "users too); the exported index applies it")
    queries.add_argument("--train-query-encoder", action="store_true",
                         help="train a copy of --encoder as the query encoder against the index (Distill-VQ's joint "
                              "mode); search and evaluate then embed queries with it")
    queries.add_argument("--student-layers", type=layer_list,
                         help="train a smaller query encoder (EmbedDistill): these layers of --student-encoder, "
                              "e.g. 0,2,4")
    queries.add_argument("--student-encoder", help="the query encoder to train (default: --encoder)")
    training = train.add_argument_group("training")
    training.add_argument("--loss", default="listnet", choices=DISTILLATION_LOSSES, help="(default: listnet)")
    training.add_argument("--max-steps", type=positive_int, help=f"optimizer steps (default: {DEFAULT_MAX_STEPS})")
    training.add_argument("--num-train-epochs", type=float, help="train for epochs (> 0) instead of --max-steps")
    training.add_argument("--batch-size", type=positive_int, default=64, help="queries per step (default: 64)")
    training.add_argument("--learning-rate", "--lr", "--learning_rate", type=float, metavar="LR",
                          help="learning rate of the PQ/RQ codebooks, the weights trained most (the Distill-VQ "
                               "paper's 1e-4; default: 1e-2 x their RMS); the IVF centroids' is --ivf-learning-rate, "
                               "a query encoder's --query-encoder-learning-rate")
    training.add_argument("--max-train-seconds", type=positive_float,
                          help="a time budget: stop training (and save a checkpoint) after this many seconds, before "
                               "--max-steps if need be")
    training.add_argument("--num-teacher-candidates", type=positive_int, default=200,
                          help="the exact search's top documents each query is distilled over (default: 200)")
    training.add_argument("--seed", type=int, default=42, help="seed of faiss, the query split and training")
    train.add_argument("--output-dir", default=DEFAULT_OUTPUT_DIR, help=f"(default: {DEFAULT_OUTPUT_DIR})")
    train.add_argument("--overwrite-output-dir", action="store_true",
                       help="write into a non-empty folder that is not an earlier output folder (its files other "
                            "than the run's own are kept)")

    evaluate = commands.add_parser(
        "evaluate", help="evaluate an output folder's index against exact search and faiss",
        description="Evaluate an output folder's index against exact search and the faiss baseline that train kept "
                    "(baseline.faiss), as train does; data default to those it was trained with. Writes "
                    "results.json, results.md and recall.png to --results-dir (default: ./evaluation).",
    )
    evaluate.add_argument("output_dir", help="a `train` output folder or a Hub repository pushed with its index")
    _add_data_arguments(evaluate, encoder=False)
    evaluate.add_argument("--nprobe", type=positive_int, help="lists searched per query (default: the stored one)")
    evaluate.add_argument("--results-dir", type=Path, default=Path("evaluation"),
                          help="where to write; results files there that evaluate did not write are refused "
                               "(default: ./evaluation, in the working folder)")

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
    push.add_argument("--include-encoder", action=argparse.BooleanOptionalAction,
                      help="also upload the document encoder's folder into encoder/, which loading the repository "
                           "then uses (default: only when the encoder is a local folder, not a Hub id)")
    push.add_argument("--revision", help="branch to push to")
    push.add_argument("--token", help="Hub token (default: the logged-in one)")
    for command in commands.choices.values():  # `distill-vq train --verbose` too
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=VERBOSE_HELP)
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
    data.add_argument("--device", choices=["cuda", "cpu"],
                      help="where to encode (and train); default: cuda when torch sees a CUDA device, else cpu")
    columns = parser.add_argument_group("columns of .jsonl/.csv/.parquet data (evaluate: default the recorded ones)")
    columns.add_argument("--id-column", help="the corpus's document ids (default: _id, else id)")
    columns.add_argument("--text-column", help="the corpus's document texts (default: text)")
    columns.add_argument("--title-column", help="titles put before the texts (default: title, when there is one)")
    columns.add_argument("--query-id-column", help="the queries' ids (default: _id, else id)")
    columns.add_argument("--query-text-column", help="the queries' texts (default: text)")


# ----- train -----


def training_arguments(args: argparse.Namespace, flags: list[str]) -> DistillVQTrainingArguments:
    """The command's training settings, overridden by any `DistillVQTrainingArguments` flags passed through."""
    import torch
    from transformers import HfArgumentParser

    from .trainer import DistillVQTrainingArguments

    epochs = args.num_train_epochs is not None and args.max_steps is None
    max_steps = -1 if epochs else args.max_steps or DEFAULT_MAX_STEPS
    # No abbreviations: `--lr` would be "ambiguous" (--lr_scheduler_type, --lr_scheduler_kwargs) and exit.
    parser = HfArgumentParser(DistillVQTrainingArguments, exit_on_error=False, allow_abbrev=False)
    if getattr(args, "student_layers", None) is not None or getattr(args, "student_encoder", None) is not None:
        parser.set_defaults(**STUDENT_DEFAULTS)
    elif getattr(args, "train_query_encoder", False):
        parser.set_defaults(**JOINT_DEFAULTS)
    parser.set_defaults(
        output_dir=str(Path(args.output_dir) / "checkpoints"), per_device_train_batch_size=args.batch_size,
        max_steps=max_steps, num_train_epochs=args.num_train_epochs if epochs else 3.0, seed=args.seed,
        loss=args.loss, logging_steps=max(1, max_steps // 10) if max_steps > 0 else 50, save_strategy="steps",
        save_steps=SAVE_EVERY, save_total_limit=SAVE_TOTAL_LIMIT, report_to=[],
        use_cpu=args.device == "cpu" or not torch.cuda.is_available(),
        num_teacher_candidates=args.num_teacher_candidates,
        max_train_seconds=args.max_train_seconds,
        disable_tqdm=False,  # the step bar is progress, though transformers' logs are quiet (`console_output`)
    )
    if args.learning_rate is not None:
        if any(flag.split("=")[0] in ("--pq-learning-rate", "--pq_learning_rate") for flag in flags):
            raise ValueError("--learning-rate is the codebooks' learning rate, so --pq-learning-rate repeats it; "
                             "keep one of the two.")
        parser.set_defaults(pq_learning_rate=args.learning_rate)
    try:
        training_args, unknown = parser.parse_args_into_dataclasses(args=flags, return_remaining_strings=True)
    except argparse.ArgumentError as error:
        raise ValueError(str(error)) from error
    if unknown:
        raise ValueError(f"unrecognized arguments {unknown}: not a train flag nor a DistillVQTrainingArguments field.")
    return training_args


def settings_from(args: argparse.Namespace) -> TrainSettings:
    """The pipeline settings named by the parsed flags (flags a command lacks or that are not given keep their
    defaults); `--index-factory` refuses the index flags it replaces, `--device cuda` a machine without CUDA."""
    if getattr(args, "device", None) == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device (torch.cuda.is_available() is False); use "
                             "--device cpu, or install a CUDA build of torch on a machine with a GPU.")
    values = {item.name: getattr(args, item.name) for item in dataclasses.fields(TrainSettings)
              if getattr(args, item.name, None) is not None}
    if getattr(args, "no_rotation", False):
        values["use_rotation"] = False
    given = [flag for name, flag in INDEX_FACTORY_FIELDS.items() if name in values]
    if "index_factory" in values and given:
        raise index_factory_conflict(values["index_factory"], given)
    return TrainSettings(**values)


def run_train(args: argparse.Namespace) -> None:
    from . import pipeline

    settings = settings_from(args)
    training_args = training_arguments(args, args.training_flags)
    run = pipeline.train(settings, training_args, StepPrinter(6, enabled=training_args.process_index == 0))
    if run is not None:
        print_run(run, args.output_dir)


def print_run(run, written) -> None:
    """The results table, `distill-vq: wrote <folder> — <headline>` and the warnings of a train or evaluate run."""
    print(run.table)
    print(f"distill-vq: wrote {written}" + (f" — {run.headline}" if run.headline else ""))
    for warning in run.warnings:
        print(f"distill-vq: warning: {warning}")


# ----- evaluate -----


def run_evaluate(args: argparse.Namespace) -> None:
    output_dir = _local_output_dir(args.output_dir)  # first: a Hub failure is reported before the long imports
    from . import pipeline

    print_run(pipeline.evaluate(output_dir, settings_from(args), args.results_dir, StepPrinter(3)), args.results_dir)


def _local_output_dir(name: str) -> Path:
    """An output folder (put back first if a killed run left it moved aside), or the local copy of a Hub repository
    pushed with `distill-vq push --include-index`."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    from .hub import download_output_dir
    from .io_utils import is_hub_id
    from .output_folder import recover_interrupted_swap

    recover_interrupted_swap(name)
    if not is_hub_id(name):
        return Path(name)
    try:
        return download_output_dir(name)
    except (RepositoryNotFoundError, RevisionNotFoundError) as error:
        raise FileNotFoundError(f"{name} is not a folder, and fetching it from the Hub failed: {error}") from None


# ----- search -----


def run_search(args: argparse.Namespace) -> None:
    args.output_dir = _local_output_dir(args.output_dir)  # first: a Hub failure is reported before the long imports
    from .retriever import Retriever

    retriever = Retriever.from_folder(args.output_dir, args.nprobe)
    hits = retriever.search(args.query, args.k)[0]
    columns = TextColumns.from_dict(retriever.index_config.get("corpus_columns"), "index_config.json: corpus_columns")
    texts = _document_texts(args.corpus or retriever.index_config.get("corpus"), [hit["corpus_id"] for hit in hits],
                            retriever.doc_ids, columns)
    print(f"{'rank':>4}  {'score':>7}  {'doc id':<12}  text")
    for rank, hit in enumerate(hits, start=1):
        print(f"{rank:>4}  {hit['score']:7.4f}  {printable(hit['id']):<12}  {printable(texts.get(hit['corpus_id'], ''))}")


def printable(text: str) -> str:
    """`text` with control and other unprintable characters escaped (`\\x1b`, `\\u202e`), so that document text
    cannot move the cursor, recolour or hide output in a terminal."""
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def _document_texts(corpus: str | None, rows, doc_ids: list[str], columns: TextColumns) -> dict[int, str]:
    """Row -> a one-line snippet, read from the corpus's `columns`; empty (with a warning) when it is gone or
    changed."""
    from .data import DataError, default_data_path, load_corpus

    source = default_data_path() if corpus is None else corpus
    try:
        documents = load_corpus(source, columns=columns)
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
    from .hub import push_output_dir

    try:
        commit = push_output_dir(args.output_dir, args.repo_id, private=args.private,
                                 include_index=args.include_index, include_encoder=args.include_encoder,
                                 token=args.token, revision=args.revision)
    except OSError as error:  # HfHubHTTPError and network errors are OSErrors
        raise ValueError(f"pushing to {args.repo_id} failed: {error}") from error
    print(f"distill-vq: pushed {args.output_dir} to {commit.commit_url}")


COMMANDS = {"train": run_train, "evaluate": run_evaluate, "search": run_search, "push": run_push}


def main(argv: list[str] | None = None) -> int:
    """Run the command; return its exit status (2 for a user error, a damaged file or a Hub failure, reported in
    one line)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "train":
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    args.training_flags = unknown
    from .hub_client import hub_error_message, set_hub_timeouts

    set_threads(args.threads)
    set_hub_timeouts()
    try:
        with console_output(args.verbose):
            COMMANDS[args.command](args)
    except Exception as error:  # noqa: BLE001 - Hub failures are recognised by hub_error_message, others re-raised
        message = hub_error_message(error)
        if message is None and not isinstance(error, (ValueError, OSError)):  # not a user error: a bug to report
            raise
        print(f"distill-vq: error: {printable(' '.join((message or str(error)).split()))}", file=sys.stderr)
        return 2
    return 0
