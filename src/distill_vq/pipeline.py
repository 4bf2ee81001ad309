"""The library pipeline behind `distill-vq train` and `distill-vq evaluate`, shared by the examples and benchmarks:
load -> encode -> initialise -> distil -> export -> evaluate -> write.

    settings = TrainSettings(corpus="path/to/beir-folder", output_dir="my-index")
    run = train(settings, training_arguments(settings))
    print(run.headline)

Each stage is a function of its own (`load_task`, `embed_task`, `build_config`, `distill`, `compare_indexes`,
`write_output_folder`), so a script can stop after any of them; `train` and `evaluate` chain them. Progress goes
to a `progress(message)` callable (the command prints numbered steps; by default it is logged).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import faiss
import numpy as np
from accelerate import PartialState
from datasets import Dataset, IterableDataset

from .configuration_distill_vq import DistillVQConfig
from .data import TRAIN_SPLIT, DataError, RetrievalTask, load_task, read_embeddings
from .encoding import TextEncoder, encode_dataset_cached, resolve_encoder
from .evaluation import (
    EVALUATION_CUTOFFS, LABEL_METRICS_BY, compare_indexes, paired_bootstrap_interval,
)
from .faiss_bridge import documents_needed
from .io_utils import is_hub_id
from .modeling_distill_vq import DistillVQModel
from .query_encoding import ModelQueryEncoder, check_query_encoder, query_encoder_for, query_tokenizer
from .sampling import ExactSearch
from .output_folder import (
    BASELINE_INDEX_FILE, CHECKPOINTS_DIR, EVALUATED_KEY, INDEX_CONFIG_FILE, TRAINER_STATE_FILE, check_results_dir,
    check_run_signature, last_checkpoint, read_baseline_index, read_output_folder, staged_folder, write_index_files,
    write_results, write_run_signature,
)
from .settings import (
    DEFAULT_CACHE_DIR, DEFAULT_ENCODER_NAME, DEFAULT_EVAL_SPLIT, DEFAULT_OUTPUT_DIR, METRICS, MIN_POINTS_PER_LIST,
    TextColumns, TrainSettings,
)
from .trainer import DistillVQTrainer, DistillVQTrainingArguments
from .validation import check_embeddings

logger = logging.getLogger(__name__)

MAX_PSEUDO_QUERIES = 100_000
MIN_CONFIDENT_QUERIES = 200  # below this many evaluation queries, differences of a few hundredths may be noise
EXACT, DISTILLED = "exact", "distill-vq"
HEADLINE_CUTOFF = min(EVALUATION_CUTOFFS)  # the headline: recall@10 vs exact (and MRR@10)
HEADLINE_METRIC = f"recall_vs_exact@{HEADLINE_CUTOFF}"
# The command's flag for each setting that decides how many documents faiss's training needs.
FLAG_OF_SETTING = {"num_lists": "--num-lists", "bits_per_subvector": "--bits-per-subvector",
                   "use_rotation": "--no-rotation"}


@dataclass
class TaskEmbeddings:
    """The teacher's embeddings of a task: `docs (num_docs, dim)`, `queries (num_queries, dim)` (the documents
    themselves for pseudo-queries), and the encoder that made them."""

    docs: np.ndarray
    queries: np.ndarray
    encoder_name: str
    encoder_revision: str | None = None


@dataclass
class TrainRun:
    """What `train` (or `evaluate`) did: the folder it wrote, its results (as in `results.json`), the one-line
    headline (empty when there is no faiss baseline to compare with) and the warnings."""

    output_dir: Path
    results: dict
    headline: str
    table: str = field(repr=False, default="")
    warnings: list[str] = field(default_factory=list)


# ----- stages -----


def auto_num_lists(num_docs: int) -> int:
    """A power of two near `4 * sqrt(num_docs)`, at most `num_docs / 39` so that k-means has enough points."""
    target = round(math.log2(4 * math.sqrt(num_docs)))
    cap = math.floor(math.log2(max(num_docs // MIN_POINTS_PER_LIST, 1)))
    return 2 ** max(0, min(target, cap))


def check_settings(settings: TrainSettings, task: RetrievalTask, label_loss_weight: float = 0.0) -> None:
    """Refuse, before any encoding or training, settings that would fail or run wrong only after it: nprobe above
    the lists, query embeddings with no queries to match them, evaluation qrels that judge nothing relevant, and a
    label term without training labels."""
    num_lists = settings.num_lists or auto_num_lists(len(task.corpus))
    if settings.nprobe is not None and settings.nprobe > num_lists:
        raise DataError(f"--nprobe {settings.nprobe} is more than the {num_lists} IVF lists it would search; lower "
                        "--nprobe or raise --num-lists.")
    if task.pseudo_queries and settings.query_embeddings is not None:
        raise DataError(f"--query-embeddings {settings.query_embeddings} is given but there are no queries (documents "
                        "serve as pseudo-queries); pass the --queries it embeds, or drop --query-embeddings.")
    if task.eval_qrels is not None and not any(score > 0 for judged in task.eval_qrels.values()
                                               for score in judged.values()):
        raise DataError(f"The qrels '{task.eval_name}' judge no document relevant (every score is <= 0), so MRR and "
                        "NDCG cannot be computed; pass qrels whose relevant documents have scores > 0.")
    if label_loss_weight:
        check_training_labels(task, task.split_queries(settings.seed)[0])
    if settings.query_encoder is None:
        return
    if settings.query_adapter:
        raise DataError("--query-adapter maps the document encoder's query embeddings, but --train-query-encoder / "
                        "--student-* train a query encoder of their own; keep one of the two.")
    if settings.query_embeddings is not None or (task.pseudo_queries and settings.doc_embeddings is not None):
        given = "--query-embeddings" if settings.query_embeddings is not None else "--doc-embeddings"
        raise DataError(f"A query encoder learns from the teacher's query embeddings of the query texts, but {given} "
                        "comes from an encoder it cannot copy; drop it so that --encoder embeds the queries, or use "
                        "--query-adapter with your own embeddings.")
    check_query_encoder(settings.query_encoder, settings.student_layers)


def embed_task(task: RetrievalTask, settings: TrainSettings, encoder_name: str | None = None,
               revision: str | None = None, state: PartialState | None = None,
               progress: Callable[[str], None] = logger.info) -> TaskEmbeddings:
    """Read the embeddings from `.npy` files, or encode the texts (cached under `settings.cache_dir`)."""
    encoder_name = encoder_name or settings.encoder
    num_docs, num_queries = len(task.corpus), len(task.queries)
    counts = {"documents": num_docs, "queries": 0 if task.pseudo_queries else num_queries}
    to_encode = [what for what, path in (("documents", settings.doc_embeddings),
                                         ("queries", settings.query_embeddings)) if path is None and counts[what]]
    name = recorded_source(resolve_encoder(encoder_name)[0])
    if to_encode:
        progress(f"Encoding {' and '.join(f'{counts[what]} {what}' for what in to_encode)} with {name}")
    else:
        progress("Reading the embeddings")
    encoder = TextEncoder(encoder_name, revision=revision, device=settings.device) if to_encode else None
    cache_dir = Path(settings.cache_dir).expanduser()
    if settings.doc_embeddings is not None:
        docs = read_embeddings(settings.doc_embeddings, num_docs, "corpus")
    else:
        docs = encode_dataset_cached(encoder, task.corpus, "text", cache_dir, accelerator=state, role="document")
    docs = check_embeddings(docs, "doc embeddings")
    if encoder is not None and encoder.embedding_dim != docs.shape[1]:
        raise DataError(f"{name} makes {encoder.embedding_dim}-d embeddings but the documents' are "
                        f"{docs.shape[1]}-d; pass the --encoder that made --doc-embeddings.")
    if task.pseudo_queries:
        queries = docs
    elif settings.query_embeddings is not None:
        queries = read_embeddings(settings.query_embeddings, num_queries, "queries", dim=docs.shape[1])
    else:
        queries = encode_dataset_cached(encoder, task.queries, "text", cache_dir, accelerator=state, role="query")
    queries = check_embeddings(queries, "query embeddings")
    if settings.metric == "cosine":
        docs = l2_normalized(docs)
        queries = docs if task.pseudo_queries else l2_normalized(queries)
    return TaskEmbeddings(docs, queries, name, None if encoder is None else encoder.revision)


def l2_normalized(embeddings: np.ndarray) -> np.ndarray:
    """A float32 copy of `(N, dim)` with rows scaled to unit length by `faiss.normalize_L2` (zero rows stay zero), for
    `metric="cosine"`, as `Retriever.search` scales its queries."""
    normalized = np.array(embeddings, dtype=np.float32)
    faiss.normalize_L2(normalized)
    return normalized


def check_training_labels(task: RetrievalTask, train_rows: np.ndarray) -> None:
    """Refuse a label term that no training query could feed: no `train` qrels split, or none of its relevant
    documents on a training query."""
    if task.train_qrels is None:
        raise DataError(f"--label-loss-weight trains on labelled training queries, but there are no qrels "
                        f"'{TRAIN_SPLIT}' for them (they are read from the corpus folder's qrels/{TRAIN_SPLIT}.tsv, "
                        "and only for its own queries); add that file, or drop --label-loss-weight.")
    if not any(task.positive_rows(train_rows)):
        raise DataError(f"--label-loss-weight: the qrels '{TRAIN_SPLIT}' judge no training query's document "
                        "relevant (score > 0); check that they name these queries, or drop --label-loss-weight.")


def build_config(settings: TrainSettings, num_docs: int, embedding_dim: int, encoder_name: str | None = None,
                 encoder_revision: str | None = None) -> DistillVQConfig:
    """The index of `settings` for `num_docs` documents, refused (naming the flags to lower) when faiss's training
    would have too few documents."""
    config = DistillVQConfig(
        embedding_dim=embedding_dim, num_lists=settings.num_lists or auto_num_lists(num_docs),
        quantizer=settings.quantizer, num_subvectors=settings.num_subvectors, num_codebooks=settings.num_codebooks,
        bits_per_subvector=settings.bits_per_subvector,
        nprobe=settings.nprobe, use_rotation=settings.use_rotation, metric=METRICS[settings.metric],
        encoder_name_or_path=encoder_name,
        encoder_revision=encoder_revision,
    )
    needs = documents_needed(config)
    too_many = [FLAG_OF_SETTING[setting] for setting, count in needs.items() if count > num_docs]
    if too_many:
        fix = f"a smaller --index-factory than {settings.index_factory}" if settings.index_factory else \
            " / ".join(too_many)
        raise DataError(
            f"{num_docs} documents are too few to train {config.index_factory_string} (it needs "
            f"{max(needs.values())}); use more documents, or {fix}."
        )
    return config


def training_queries(task: RetrievalTask, embeddings: TaskEmbeddings, train_rows: np.ndarray, seed: int,
                     with_texts: bool = False, with_labels: bool = False) -> Dataset:
    """The queries to train on: the training queries, or when there are none, up to `MAX_PSEUDO_QUERIES` random
    documents as pseudo-queries; a `query_embedding` column (the teacher's), `with_texts` their `query` text and
    `with_labels` their `positive_ids` (corpus rows the training qrels judge relevant)."""
    texts = task.queries
    if not len(train_rows):
        count = min(len(embeddings.docs), MAX_PSEUDO_QUERIES)
        train_rows = np.sort(np.random.default_rng(seed).choice(len(embeddings.docs), count, replace=False))
        texts = task.corpus
    vectors = embeddings.queries if texts is task.queries else embeddings.docs
    columns = {"query_embedding": np.asarray(vectors[train_rows], dtype=np.float32)}
    if with_texts:
        columns["query"] = texts.select(train_rows)["text"][:]
    if with_labels:
        columns["positive_ids"] = task.positive_rows(train_rows)
    return Dataset.from_dict(columns)


def query_side(settings: TrainSettings) -> str:
    """What embeds the queries the index is searched with, for the run signature, results and card."""
    if settings.query_adapter:
        return "query adapter"
    if settings.query_encoder is None:
        return "document encoder"
    layers = "" if settings.student_layers is None else f", layers {','.join(map(str, settings.student_layers))}"
    return f"query encoder from {recorded_source(resolve_encoder(settings.query_encoder)[0])}{layers}"


def run_signature(task: RetrievalTask, embeddings: TaskEmbeddings, config: DistillVQConfig, num_train_queries: int,
                  num_processes: int, queries_by: str = "document encoder", cosine: bool = False) -> dict:
    """What a run trains on, recorded beside its checkpoints; a resume must match it (`check_run_signature`).
    `cosine`: the embeddings were L2-normalised (`--metric cosine`), recorded as the metric."""
    return {
        "num_docs": len(task.doc_ids), "doc_ids_sha256": hashlib.sha256(json.dumps(task.doc_ids).encode()).hexdigest(),
        "encoder": embeddings.encoder_name, "embedding_dim": config.embedding_dim,
        "num_train_queries": num_train_queries, "index_factory": config.index_factory_string,
        "metric": "cosine" if cosine else config.metric,
        "num_processes": num_processes, "queries_by": queries_by,
    }


def resume_checkpoint(value: str | None, output_dir: str | Path) -> str | None:
    """`--resume-from-checkpoint`: None, a checkpoint folder, or `true` / `last` for the newest checkpoint of the
    runs into `output_dir` (`output_folder.last_checkpoint`). Whether it fits the run is `check_run_signature`'s."""
    if value is None:
        return None
    if value.lower() in ("true", "last"):
        checkpoint = last_checkpoint(output_dir)
        if checkpoint is None:
            raise DataError(f"--resume-from-checkpoint {value}: no run into {output_dir} left a checkpoint; drop the "
                            "flag to train from scratch.")
    elif not (Path(value) / TRAINER_STATE_FILE).is_file():
        raise DataError(f"--resume-from-checkpoint {value} is not a checkpoint folder (it has no {TRAINER_STATE_FILE}"
                        "); pass a checkpoint-N folder, or `last`.")
    else:
        checkpoint = value
    return str(checkpoint)


def distill(model: DistillVQModel, train_queries: np.ndarray | Dataset | IterableDataset, doc_embeddings,
            training_args: DistillVQTrainingArguments, resume_from_checkpoint: str | bool | None = None,
            tokenizer=None) -> DistillVQTrainer:
    """Train `model` in place on `train_queries` (teacher embeddings `(num_train, dim)`, or a `Dataset` or stream
    such as `training_queries`'s) against `doc_embeddings`; return the trainer. A model with a query encoder needs the
    `query` texts and the encoder's `tokenizer`."""
    if isinstance(train_queries, np.ndarray):
        train_queries = Dataset.from_dict({"query_embedding": train_queries})
    trainer = DistillVQTrainer(model, training_args, train_queries, doc_embeddings, processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


def evaluation_facts(task: RetrievalTask, indexes: dict, embeddings: TaskEmbeddings, eval_rows: np.ndarray,
                     config: DistillVQConfig, index_queries: dict[str, np.ndarray] | None = None) -> dict:
    """The evaluation's setting and one result row per index (for results.json, results.md and the card); an index
    named in `index_queries` is searched with those query embeddings (a trained query encoder's) instead of the
    teacher's."""
    qrels = task.qrels_for(eval_rows)
    metrics, per_query = compare_indexes(indexes, embeddings.docs, task.doc_ids, embeddings.queries[eval_rows],
                                         qrels, config.metric, index_queries, return_per_query=True)
    bytes_per_vector = {EXACT: 4 * config.embedding_dim}
    return {
        "corpus_name": task.corpus_name, "num_docs": len(embeddings.docs), "num_eval_queries": len(eval_rows),
        "eval_name": task.eval_name, "embedding_dim": config.embedding_dim, "metric": config.metric,
        **({"label_metrics_by": LABEL_METRICS_BY} if qrels is not None else {}), **_gain_interval(per_query),
        "results": [
            {"index": name, "bytes/vector": bytes_per_vector.get(name, _number(config.bytes_per_vector)), **values}
            for name, values in metrics.items()
        ],
    }


def _gain_interval(per_query: dict[str, dict[str, np.ndarray]], confidence: float = 0.95) -> dict:
    """`{"gain_interval": ...}`: the paired bootstrap interval of distill-vq's per-query gain over the baseline (the one
    index that is neither exact search nor distill-vq) on the headline's metric; `{}` without such a pair."""
    baselines = [name for name in per_query if name not in (EXACT, DISTILLED)]
    if DISTILLED not in per_query or len(baselines) != 1:
        return {}
    low, high = paired_bootstrap_interval(per_query[DISTILLED][HEADLINE_METRIC], per_query[baselines[0]][HEADLINE_METRIC],
                                          confidence)
    return {"gain_interval": {"metric": HEADLINE_METRIC, "baseline": baselines[0], "confidence": confidence,
                              "interval": [low, high]}}


def gain_summary(rows: list[dict], baseline_name: str, bytes_per_vector: float) -> str:
    """E.g. `recall@10 vs exact 0.584 -> 0.621 (+0.037 over faiss OPQ16,IVF128,PQ16x8 at 16 bytes/vector),
    MRR@10 0.592 -> 0.616`."""
    by_name = {row["index"]: row for row in rows}
    before, after = by_name[baseline_name], by_name[DISTILLED]
    k, recall = HEADLINE_CUTOFF, HEADLINE_METRIC
    text = (f"recall@{k} vs exact {before[recall]:.3f} -> {after[recall]:.3f} ({after[recall] - before[recall]:+.3f} "
            f"over {baseline_name} at {bytes_per_vector:g} bytes/vector)")
    if f"mrr@{k}" in after:
        text += f", MRR@{k} {before[f'mrr@{k}']:.3f} -> {after[f'mrr@{k}']:.3f}"
    return text


def headline_warnings(rows: list[dict], baseline_name: str, num_eval_queries: int,
                      gain_interval: dict | None = None) -> list[str]:
    """What the headline's gain does not show: each reported metric that distill-vq makes worse than the baseline,
    and too few evaluation queries to trust small differences, with the `gain_interval` that `evaluation_facts`
    records when given."""
    by_name = {row["index"]: row for row in rows}
    before, after = by_name[baseline_name], by_name[DISTILLED]
    metrics = [name for name in after if name != "qps" and isinstance(after[name], float) and name in before]
    worse = [f"{name} {before[name]:.3f} -> {after[name]:.3f}" for name in metrics if after[name] < before[name] - 5e-4]
    warnings = [f"distill-vq is worse than {baseline_name} on {', '.join(worse)}"] if worse else []
    if num_eval_queries < MIN_CONFIDENT_QUERIES:
        interval = ""
        if gain_interval is not None:
            low, high = gain_interval["interval"]
            interval = (f" ({gain_interval['confidence']:.0%} bootstrap interval of the {gain_interval['metric']} "
                        f"gain: [{low:+.3f}, {high:+.3f}])")
        warnings.append(f"only {num_eval_queries} evaluation queries: differences of a few hundredths may be noise"
                        f"{interval}; evaluate on {MIN_CONFIDENT_QUERIES} or more")
    return warnings


def add_headline(results: dict, baseline_name: str, bytes_per_vector: float) -> str:
    """Add the `summary` (`gain_summary` as a sentence) and the `warnings` (`headline_warnings`) to the results of
    `evaluation_facts`; return the headline."""
    headline = gain_summary(results["results"], baseline_name, bytes_per_vector)
    results["summary"] = headline[0].upper() + headline[1:] + "."
    results["warnings"] = headline_warnings(results["results"], baseline_name, results["num_eval_queries"],
                                            results.get("gain_interval"))
    return headline


def write_output_folder(folder: Path, model: DistillVQModel, index, task: RetrievalTask, settings: TrainSettings,
                        results: dict, tokenizer=None, baseline_name: str | None = None,
                        baseline_index=None) -> str:
    """Write the model with its card (and its query encoder's `tokenizer`), the index files (with the faiss
    baseline, `baseline_index` named `baseline_name`, which `evaluate` compares with again) and the results into
    `folder`; return the results table."""
    card_data = model.model_card_data  # attached and filled by DistillVQTrainer's card callback
    card_data.model_id = card_data.model_id or str(settings.output_dir)
    card_data.set_evaluation(results["results"], corpus_name=results["corpus_name"], num_docs=results["num_docs"],
                             eval_name=results["eval_name"], num_eval_queries=results["num_eval_queries"],
                             summary=results["summary"], dataset_id=results["dataset_id"])
    model.save_pretrained(folder)  # config.json, model.safetensors, README.md, model_card_data.json
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    write_index_files(folder, index, task.doc_ids, {
        "index_factory": model.config.index_factory_string, "nprobe": model.config.nprobe,
        "num_docs": len(task.doc_ids), "corpus": recorded_source(task.corpus_source),
        "queries": recorded_source(settings.queries), "qrels": recorded_source(settings.qrels),
        "eval_split": settings.eval_split or DEFAULT_EVAL_SPLIT, "seed": settings.seed, "metric": settings.metric,
        "corpus_columns": asdict(settings.corpus_columns), "query_columns": asdict(settings.query_columns),
        **({"baseline": baseline_name} if baseline_index is not None else {}),
    }, baseline_index)
    return write_results(folder, results)


# ----- the whole runs -----


def train(settings: TrainSettings, training_args: DistillVQTrainingArguments,
          progress: Callable[[str], None] = logger.info) -> TrainRun | None:
    """Load, encode, initialise from faiss, distil, export, evaluate and write `settings.output_dir`.

    The output folder is locked and staged from the start (see `output_folder.staged_folder`), and every setting
    is checked before the encoding and training. Under `accelerate launch` every process encodes its share of the
    texts and trains on its share of the queries (data parallel); the main process alone evaluates and writes, and
    the others return None.
    """
    state = PartialState()  # after the training arguments, whose --ddp-* settings start the process group
    with staged_folder(settings.output_dir, state, settings.overwrite_output_dir) as folder:
        progress(f"Loading {'the packaged default data' if settings.corpus is None else settings.corpus}")
        task = load_task(settings.corpus, settings.queries, settings.qrels, settings.eval_split or DEFAULT_EVAL_SPLIT,
                         settings.corpus_columns, settings.query_columns)
        check_settings(settings, task, training_args.label_loss_weight)
        checkpoint = resume_checkpoint(training_args.resume_from_checkpoint, settings.output_dir)
        embeddings = embed_task(task, settings, state=state, progress=progress)
        docs = embeddings.docs
        config = build_config(settings, len(docs), docs.shape[1], embeddings.encoder_name, embeddings.encoder_revision)
        train_rows, eval_rows = task.split_queries(settings.seed)
        train_queries = training_queries(task, embeddings, train_rows, settings.seed,
                                         with_texts=settings.query_encoder is not None,
                                         with_labels=training_args.label_loss_weight > 0)
        train_name = "training queries" if len(train_rows) else "documents as pseudo-queries (every query is judged)"
        queries_by = query_side(settings)
        signature = run_signature(task, embeddings, config, len(train_queries), state.num_processes, queries_by,
                                  cosine=settings.metric == "cosine")
        if checkpoint is not None:
            check_run_signature(checkpoint, signature)
        training_args.output_dir = str(folder / CHECKPOINTS_DIR)
        if state.is_main_process:
            write_run_signature(folder, signature)

        progress(f"Training faiss {config.index_factory_string} on {len(docs)} documents "
                 f"({config.bytes_per_vector:g} bytes/vector)")
        model = DistillVQModel.from_embeddings(docs, config, seed=settings.seed)  # DDP broadcasts the main process's
        baseline_name = f"faiss {settings.index_factory or config.index_factory_string}"
        baseline_index = model.to_faiss(docs) if state.is_main_process else None
        tokenizer = None
        if settings.query_adapter:
            model.attach_query_adapter()
        elif settings.query_encoder is not None:
            model.attach_query_encoder(settings.query_encoder, layers=settings.student_layers)
            tokenizer = query_tokenizer(settings.query_encoder)
        length = f"{training_args.max_steps} steps" if training_args.max_steps > 0 else \
            f"{training_args.num_train_epochs:g} epochs"
        progress(f"Distilling exact search into the index: {length} of {training_args.per_device_train_batch_size} "
                 f"x {state.num_processes} of {len(train_queries)} {train_name} ({training_args.loss} loss; queries "
                 f"by the {queries_by})")
        start = time.perf_counter()
        trainer = distill(model, train_queries, docs, training_args, checkpoint, tokenizer)
        training_seconds = time.perf_counter() - start
        if not state.is_main_process:
            return None
        indexes = {EXACT: ExactSearch(docs, config.metric), baseline_name: baseline_index,
                   DISTILLED: model.to_faiss(docs)}
        progress(f"Evaluating exact search, faiss and distill-vq on {len(eval_rows)} queries ({task.eval_name})")
        index_queries = None
        if tokenizer is not None:  # the distilled index is searched with the trained query encoder's queries
            query_texts = task.queries.select(eval_rows)["text"][:]
            index_queries = {DISTILLED: ModelQueryEncoder(model, tokenizer).encode(query_texts, show_progress=False)}
        results = {
            **evaluation_facts(task, indexes, embeddings, eval_rows, config, index_queries),
            "num_train_queries": len(train_queries), "base_model": embeddings.encoder_name,
            "dataset_id": _hub_dataset_id(task.corpus_source), "index_factory": config.index_factory_string,
            "requested_index_factory": settings.index_factory,
            "num_lists": config.num_lists, "quantizer": config.quantizer, "num_codes": config.num_codes,
            "bits_per_subvector": config.bits_per_subvector, "bytes_per_vector": _number(config.bytes_per_vector),
            "use_rotation": config.use_rotation, "nprobe": config.nprobe, "loss": training_args.loss,
            "num_teacher_candidates": training_args.num_teacher_candidates,
            "training_steps": trainer.state.global_step,
            "batch_size": training_args.per_device_train_batch_size * state.num_processes,
            "num_processes": state.num_processes, "training_seconds": round(training_seconds, 1),
            "queries_by": queries_by,
        }
        headline = add_headline(results, baseline_name, config.bytes_per_vector)
        progress(f"Writing {settings.output_dir}")
        table = write_output_folder(folder, model, indexes[DISTILLED], task, settings, results, tokenizer,
                                    baseline_name, baseline_index)
        if not any(folder.glob(f"{CHECKPOINTS_DIR}/checkpoint-*")):  # save_strategy="no": only the signature
            shutil.rmtree(folder / CHECKPOINTS_DIR, ignore_errors=True)
    return TrainRun(Path(settings.output_dir), results, headline, table, results["warnings"])


def evaluate(output_dir: Path, settings: TrainSettings, results_dir: Path,
             progress: Callable[[str], None] = logger.info) -> TrainRun:
    """Evaluate an output folder's index against exact search and the faiss baseline that `train` kept (on the
    corpus it was trained on) on `settings`' data (default: the data it was trained with), and write the results to
    `results_dir`; return them with the headline and warnings, as `train` does."""
    check_results_dir(results_dir)
    config, index, doc_ids, index_config = read_output_folder(output_dir, settings.nprobe)
    baseline_name = index_config.get("baseline", f"faiss {config.index_factory_string}")
    baseline_index = read_baseline_index(output_dir, index_config, settings.nprobe)
    if config.query_encoder_config is not None and settings.query_embeddings is not None:
        raise DataError(f"{output_dir} embeds queries with its own query encoder, so --query-embeddings (another "
                        "encoder's) cannot search it; drop --query-embeddings.")
    corpus_columns, query_columns = settings.corpus_columns, settings.query_columns
    if settings.corpus is None:  # the data the index was trained with
        recorded = _recorded_data(index_config, Path(output_dir) / INDEX_CONFIG_FILE)
        settings.corpus, settings.queries = recorded["corpus"], settings.queries or recorded["queries"]
        settings.qrels = settings.qrels or recorded["qrels"]
        settings.eval_split = settings.eval_split or recorded["eval_split"]
        where = Path(output_dir) / INDEX_CONFIG_FILE
        if corpus_columns == TextColumns():
            corpus_columns = TextColumns.from_dict(index_config.get("corpus_columns"), f"{where}: corpus_columns")
        if query_columns == TextColumns():
            query_columns = TextColumns.from_dict(index_config.get("query_columns"), f"{where}: query_columns")
    settings.metric = index_config.get("metric", "ip")  # cosine: the embeddings are normalised as in training
    progress(f"Loading {'the packaged default data' if settings.corpus is None else settings.corpus}")
    task = load_task(settings.corpus, settings.queries, settings.qrels, settings.eval_split or DEFAULT_EVAL_SPLIT,
                     corpus_columns, query_columns)
    embeddings = embed_task(task, settings, config.encoder_name_or_path or DEFAULT_ENCODER_NAME,
                            revision=config.encoder_revision, progress=progress)
    if embeddings.docs.shape[1] != config.embedding_dim:
        raise DataError(f"The documents' embeddings are {embeddings.docs.shape[1]}-d but {output_dir} indexes "
                        f"{config.embedding_dim}-d ones; pass embeddings of the encoder it was trained with.")
    missing_baseline = None if baseline_index is not None else (
        f"no {baseline_name} row: {output_dir} has no {BASELINE_INDEX_FILE}, the faiss baseline that `distill-vq "
        "train` now keeps (older output folders and repositories pushed without it lack it); train again to compare "
        "with faiss")
    if task.doc_ids != doc_ids:  # another corpus: index it with the trained quantizer
        model = DistillVQModel.from_pretrained(output_dir)
        index = model.to_faiss(embeddings.docs, settings.nprobe or index_config["nprobe"])
        if baseline_index is not None:
            baseline_index = None
            missing_baseline = (f"no {baseline_name} row: {BASELINE_INDEX_FILE} indexes the corpus the index was "
                                "trained on, not this one")
    seed = index_config.get("seed", settings.seed)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise DataError(f"{Path(output_dir) / INDEX_CONFIG_FILE}: seed={seed!r} is not an integer; restore the file.")
    _, eval_rows = task.split_queries(seed)
    index_queries = None
    if config.query_encoder_config is not None:  # never the teacher's queries for a trained query encoder
        query_texts = task.queries.select(eval_rows)["text"][:]
        index_queries = {DISTILLED: query_encoder_for(output_dir, config).encode(query_texts, show_progress=False)}
    indexes = {EXACT: ExactSearch(embeddings.docs, config.metric),
               **({baseline_name: baseline_index} if baseline_index is not None else {}), DISTILLED: index}
    compared = f"exact search, {baseline_name} and" if baseline_index is not None else "exact search and"
    progress(f"Evaluating {compared} distill-vq on {len(eval_rows)} queries ({task.eval_name})")
    results = {**evaluation_facts(task, indexes, embeddings, eval_rows, config, index_queries),
               EVALUATED_KEY: str(output_dir)}
    headline = ""
    if baseline_index is None:
        results["warnings"] = [missing_baseline]
    else:
        headline = add_headline(results, baseline_name, config.bytes_per_vector)
    table = write_results(results_dir, results)
    return TrainRun(Path(results_dir), results, headline, table, results["warnings"])


def recorded_source(source: str | None) -> str | None:
    """A data source or model as recorded for later commands: local paths made absolute, Hub ids and None kept."""
    if source is None or _is_hub_source(source):
        return source
    return str(Path(source).expanduser().resolve())


def _is_hub_source(source: str) -> bool:
    """Whether a data source names a Hub dataset (`owner/name[:config]`) rather than a local path."""
    return is_hub_id(source.partition(":")[0])


def _hub_dataset_id(source: str | None) -> str | None:
    return source.partition(":")[0] if source is not None and _is_hub_source(source) else None


def _recorded_data(index_config: dict, path: Path) -> dict:
    """The data sources an index was trained with, as `index_config.json` records them."""
    recorded = {key: index_config.get(key) for key in ("corpus", "queries", "qrels", "eval_split")}
    wrong = [key for key, value in recorded.items() if value is not None and not isinstance(value, str)]
    if "corpus" not in index_config or wrong:
        raise DataError(f"{path} does not record {'the corpus' if not wrong else ', '.join(wrong)} of the training "
                        "as a path or Hub id; pass --corpus (with --queries / --qrels) to evaluate on given data.")
    return recorded


def _number(value: float) -> int | float:
    """`value` as an int when it is whole (for tables and cards)."""
    return int(value) if float(value).is_integer() else value


__all__ = [
    "DEFAULT_CACHE_DIR", "DEFAULT_OUTPUT_DIR", "TaskEmbeddings", "TrainRun", "TrainSettings", "add_headline",
    "auto_num_lists",
    "build_config", "check_settings", "distill", "embed_task", "evaluate", "evaluation_facts", "gain_summary",
    "headline_warnings",
    "query_side",
    "resume_checkpoint", "run_signature", "train", "training_queries", "write_output_folder",
]
