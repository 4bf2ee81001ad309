"""Model cards built from training facts, as sentence-transformers does: `DistillVQModelCardData` holds them,
`DistillVQModelCardCallback` fills it during `DistillVQTrainer.train`, and the `model_cards/` template renders it.

The card data lives on the model as `model.model_card_data` (the trainer attaches it); `DistillVQModel.save_pretrained`
and the standard `push_to_hub` write `README.md` from it, so the Python path and the command give the same card.
A hand-written `README.md` already in the folder (or repository) is updated, not replaced (PEFT-style): its text
stays, the metadata is set and one `- distill-vq <version>` line is added under "### Framework versions".
Jinja2 is imported by `huggingface_hub` when a card is rendered, never when this module is imported.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import platform
import re
import time
from dataclasses import MISSING, dataclass, field, fields
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from huggingface_hub import CardData, EvalResult, ModelCard
from huggingface_hub.repocard_data import eval_results_to_model_index
from huggingface_hub.utils import yaml_dump
from transformers import TrainerCallback

from .evaluation import format_markdown_table
from .io_utils import is_hub_id, write_text
from .losses import DISTILL_VQ_CITATION, EMBED_DISTILL_CITATION

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).parent / "templates" / "distill_vq_template.md"
CARD_FILE = "README.md"
CARD_DATA_FILE = "model_card_data.json"  # the card's facts, so that a saved folder's card can be rendered again
TAGS = ["faiss", "product-quantization", "dense-retrieval", "distill-vq"]
YAML_FIELDS = ["language", "license", "library_name", "tags", "base_model", "datasets", "model-index"]
# The first line of the template's text: a card holding it was rendered by distill-vq and is rendered again on save.
GENERATED_MARKER = "<!-- Rendered by distill-vq from DistillVQModelCardData"
# The sentence of the card `PushToHubMixin.push_to_hub` makes for a repository without one (replaced, not updated).
TRANSFORMERS_DEFAULT_CARD = "This model card has been automatically generated."
FRAMEWORK_HEADING = "### Framework versions"
MODEL_ROW = "distill-vq"
MODEL_ID_PLACEHOLDER = "your-namespace/your-quantizer"  # the usage snippet's id when the card has none
MAX_LOG_ROWS = 100
# Training arguments that describe where and how a run is logged and saved, not what it learns.
IGNORED_ARGUMENTS = {
    "output_dir", "logging_dir", "logging_strategy", "logging_first_step", "logging_steps", "eval_strategy",
    "eval_steps", "eval_delay", "save_strategy", "save_steps", "save_total_limit", "save_only_model",
    "metric_for_best_model", "greater_is_better", "report_to", "run_name", "disable_tqdm", "do_train", "do_eval",
    "do_predict", "overwrite_output_dir", "resume_from_checkpoint", "push_to_hub", "hub_model_id", "hub_strategy",
    "hub_token", "hub_private_repo", "hub_always_push", "hub_revision", "push_to_hub_token", "accelerator_config",
}
# Logged values that are not loss terms (the ranking temperature is a fact of its own, not a column).
LOG_KEYS_LEFT_OUT = {"loss", "epoch", "learning_rate", "grad_norm", "ranking_temperature"}
LIBRARY_CITATIONS = f"{DISTILL_VQ_CITATION.strip()}\n\n{EMBED_DISTILL_CITATION.strip()}"


def get_versions() -> dict[str, str]:
    """The versions of the libraries a card's model was trained and saved with."""
    names = {"distill-vq": "distill-vq", "Transformers": "transformers", "PyTorch": "torch", "faiss": "faiss-cpu",
             "huggingface_hub": "huggingface-hub"}
    versions = {"Python": platform.python_version()}
    for label, package in names.items():
        try:
            versions[label] = version(package)
        except PackageNotFoundError:  # e.g. faiss-gpu instead of faiss-cpu
            continue
    return versions


def _query_encoder_description(config) -> str | None:
    """E.g. "`all-MiniLM-L6-v2`, layers 0,2,4" for a model with its own query encoder; None without one."""
    if config.query_encoder_config is None:
        return None
    layers = config.query_encoder_layers
    origin = f"`{config.query_encoder_name_or_path}`" if config.query_encoder_name_or_path else "an encoder"
    return origin + ("" if layers is None else f", layers {','.join(map(str, layers))}")


@dataclass
class DistillVQModelCardData(CardData):
    """The facts of a distill-vq model card: fields the user gives, and facts recorded by `set_index` (at every
    save), `DistillVQModelCardCallback` (during training) and `set_evaluation` (by the pipeline).

    Args:
        language: the corpus language(s), e.g. `"en"`.
        license: e.g. `"apache-2.0"`.
        model_name: the card's title; default: the last part of `model_id`.
        model_id: the Hub id (or folder) the usage snippet loads; default: where the model is saved or pushed.
        tags: Hub tags; `generated_from_trainer` and `loss:<class>` are added by the callback.
        datasets: Hub ids of the data the index was trained on.
    """

    language: str | list[str] | None = None
    license: str | None = None
    model_name: str | None = None
    model_id: str | None = None
    tags: list[str] = field(default_factory=lambda: list(TAGS))
    datasets: list[str] = field(default_factory=list)

    # Recorded from the model's config by `set_index`
    base_model: str | None = field(default=None, init=False)
    index: dict = field(default_factory=dict, init=False)
    # Recorded by `DistillVQModelCardCallback`
    non_default_hyperparameters: dict = field(default_factory=dict, init=False)
    loss_name: str | None = field(default=None, init=False)
    loss_config: dict = field(default_factory=dict, init=False)
    citations: dict[str, str] = field(default_factory=dict, init=False)
    ranking_temperature: float | None = field(default=None, init=False)
    learning_rates: dict[str, float] = field(default_factory=dict, init=False)
    num_train_queries: int | None = field(default=None, init=False)
    batch_size: int | None = field(default=None, init=False)
    training_steps: int | None = field(default=None, init=False)
    training_seconds: float | None = field(default=None, init=False)
    training_logs: list[dict] = field(default_factory=list, init=False)
    # Recorded by `set_evaluation`
    evaluation: dict = field(default_factory=dict, init=False)
    eval_results: list[dict] = field(default_factory=list, init=False)
    version: dict[str, str] = field(default_factory=get_versions, init=False)

    def add_tags(self, tags: str | list[str]) -> None:
        for tag in [tags] if isinstance(tags, str) else tags:
            if tag not in self.tags:
                self.tags.append(tag)

    def set_index(self, config) -> None:
        """Record the index a `DistillVQConfig` describes; its encoder is the card's `base_model` when it is a Hub id."""
        encoder = config.encoder_name_or_path
        self.base_model = encoder if encoder and is_hub_id(encoder) else None
        self.index = {
            "factory": config.index_factory_string, "bytes_per_vector": f"{config.bytes_per_vector:g}",
            "embedding_dim": config.embedding_dim, "metric": config.metric, "num_lists": config.num_lists,
            "nprobe": config.nprobe, "quantizer": config.quantizer, "num_codes": config.num_codes,
            "bits_per_subvector": config.bits_per_subvector, "use_rotation": config.use_rotation,
            "encoder": encoder, "encoder_revision": config.encoder_revision,
            "encoder_subfolder": config.encoder_subfolder,
            "query_encoder": _query_encoder_description(config), "query_adapter": config.query_adapter,
        }

    def set_losses(self, loss) -> None:
        """Record the loss module's class, `get_config_dict()` and `citation` (BibTeX), when it has them."""
        self.loss_name = type(loss).__name__
        self.add_tags(f"loss:{self.loss_name}")
        if hasattr(loss, "get_config_dict"):
            self.loss_config = loss.get_config_dict()
        self.citations = _bibtex_entries(LIBRARY_CITATIONS + "\n\n" + (getattr(loss, "citation", None) or ""))

    def set_evaluation(self, rows: list[dict], corpus_name: str | None = None, num_docs: int | None = None,
                       eval_name: str | None = None, num_eval_queries: int | None = None, summary: str | None = None,
                       dataset_id: str | None = None, model_row: str = MODEL_ROW) -> None:
        """Record an evaluation: `rows` as in `results.json` (one per index, with `index`, `bytes/vector` and its
        metrics), the row named `model_row` being this model's (it gives the card's `model-index` metadata).
        `summary` is the one-line gain (e.g. `pipeline.gain_summary`); `dataset_id` the corpus' Hub id, if any."""
        names = [row.get("index") for row in rows]
        if model_row not in names:
            raise ValueError(f"The evaluation rows are for {names}, none named {model_row!r}; pass model_row= the "
                             "name of this model's row.")
        self.eval_results = [dict(row) for row in rows]
        self.evaluation = {"corpus_name": corpus_name, "num_docs": num_docs, "eval_name": eval_name,
                           "num_eval_queries": num_eval_queries, "summary": summary, "dataset_id": dataset_id,
                           "model_row": model_row}
        if dataset_id and dataset_id not in self.datasets:
            self.datasets.append(dataset_id)

    # ----- rendering -----

    def model_index_results(self) -> list[EvalResult]:
        """The model's own evaluation row as Hub `EvalResult`s (recall vs exact, MRR, NDCG, recall; not QPS)."""
        if not self.eval_results:
            return []
        row = next(row for row in self.eval_results if row.get("index") == self.evaluation["model_row"])
        dataset = self.evaluation["corpus_name"] or self.evaluation["dataset_id"] or "unknown"
        return [
            EvalResult(task_type="information-retrieval", task_name="Information Retrieval",
                       dataset_type=self.evaluation["dataset_id"] or dataset, dataset_name=dataset,
                       dataset_split=self.evaluation["eval_name"], metric_type=metric, metric_name=metric,
                       metric_value=float(value))
            for metric, value in row.items()
            if metric not in ("index", "bytes/vector", "qps") and isinstance(value, (int, float))
        ]

    def to_dict(self) -> dict:
        """The template's variables: the fields, with the tables and lists formatted."""
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["model_name"] = self.title()
        data["model_id"] = self.model_id or MODEL_ID_PLACEHOLDER
        data["hyperparameters"] = {key: _format_value(value) for key, value in self.non_default_hyperparameters.items()}
        data["loss_config_json"] = json.dumps(self.loss_config, indent=2, default=str) if self.loss_config else ""
        data["training_duration"] = _format_seconds(self.training_seconds)
        data["training_log_table"] = _training_log_table(self.training_logs)
        data["results_table"] = format_markdown_table(self.eval_results) if self.eval_results else ""
        data["citations"] = self.citations or _bibtex_entries(LIBRARY_CITATIONS)
        return data

    def to_yaml(self, line_break=None, original_order=None) -> str:
        """The card's YAML metadata: only `YAML_FIELDS`, empty ones left out."""
        metadata = {"language": self.language, "license": self.license, "library_name": "distill-vq",
                    "tags": self.tags, "base_model": self.base_model, "datasets": self.datasets}
        results = self.model_index_results()
        if results:
            metadata["model-index"] = eval_results_to_model_index(self.title(), results)
        metadata = {key: value for key, value in metadata.items() if value not in (None, [], {})}
        return yaml_dump(metadata, sort_keys=False, line_break=line_break).strip()

    def title(self) -> str:
        """`model_name`, else the last part of `model_id`."""
        return self.model_name or (Path(self.model_id.rstrip("/")).name if self.model_id else "distill-vq quantizer")

    def to_model_card(self, existing: ModelCard | None = None) -> ModelCard:
        """The card rendered from the template; a hand-written `existing` card is updated instead (PEFT-style: its
        text kept, our metadata set over its own with the tags merged, the distill-vq version line added once)."""
        card = ModelCard.from_template(self, template_path=str(TEMPLATE_PATH))
        card.text = re.sub(r"\n{3,}", "\n\n", card.text)  # the blank lines of the template's left-out sections
        if existing is None or _is_generated(existing):
            return card
        for key, value in card.data.to_dict().items():
            if key != "model-index":
                existing.data[key] = sorted({*(existing.data.get("tags") or []), *value}) if key == "tags" else value
        if card.data.eval_results:
            existing.data.eval_results, existing.data.model_name = card.data.eval_results, card.data.model_name
        existing.text = _with_framework_line(existing.text, f"- distill-vq {self.version.get('distill-vq')}")
        return existing

    def save(self, folder: str | Path, config=None, model_id: str | None = None) -> None:
        """Write `folder/README.md` (see `to_model_card`) and `folder/model_card_data.json` (these facts, to render
        the card again, e.g. for the repository a saved folder is pushed to).

        Args:
            config: the saved model's `DistillVQConfig`, whose index the card describes (see `set_index`).
            model_id: the Hub id the model goes to; kept as `self.model_id`. When neither is set, the usage snippet
                loads `folder`.

        Errors are logged, never raised: a card never fails a save.
        """
        folder = Path(folder)
        try:
            if config is not None:
                self.set_index(config)
            if model_id is not None:
                self.model_id = model_id
            card_data = copy.copy(self)
            card_data.model_id = self.model_id or str(folder)
            existing = ModelCard.load(folder / CARD_FILE) if (folder / CARD_FILE).is_file() else None
            write_text(folder / CARD_FILE, str(card_data.to_model_card(existing)))
            write_text(folder / CARD_DATA_FILE, json.dumps(self.to_json_dict(), indent=2, default=str) + "\n")
        except Exception as error:  # noqa: BLE001 - the model is saved; only its card is missing
            logger.warning(f"The model card in {folder} was not written: {type(error).__name__}: {error}")

    # ----- the card data file -----

    def to_json_dict(self) -> dict:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @classmethod
    def from_json_file(cls, path: str | Path) -> DistillVQModelCardData:
        """The card data `save` wrote to `path`; fields it does not know are ignored with a warning."""
        facts = json.loads(Path(path).read_text(encoding="utf-8"))
        known = {item.name: item for item in fields(cls)}
        unknown = sorted(set(facts) - set(known))
        if unknown:
            logger.warning(f"{path} has card facts this distill-vq version does not know, left out: {unknown}")
        card_data = cls(**{name: value for name, value in facts.items() if name in known and known[name].init})
        for name, value in facts.items():
            if name in known and not known[name].init:
                setattr(card_data, name, value)
        return card_data


class DistillVQModelCardCallback(TrainerCallback):
    """Fills `model.model_card_data` (created when the model has none) with the facts of a `DistillVQTrainer` run:
    the index and loss at `on_init_end`, the non-default arguments and learning rates at `on_train_begin`, the
    training log at `on_log`, and the steps and duration at `on_train_end`."""

    def __init__(self):
        self.start = None

    def on_init_end(self, args, state, control, model=None, trainer=None, **kwargs):
        if model.model_card_data is None:
            model.model_card_data = DistillVQModelCardData()
        card_data = model.model_card_data
        card_data.add_tags("generated_from_trainer")
        card_data.set_index(model.config)
        card_data.model_id = card_data.model_id or args.hub_model_id
        if trainer is not None:
            if getattr(trainer, "loss", None) is not None:
                card_data.set_losses(trainer.loss)
            if hasattr(trainer.train_dataset, "__len__"):
                card_data.num_train_queries = len(trainer.train_dataset)

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        card_data = model.model_card_data
        card_data.non_default_hyperparameters = _non_default_arguments(args)
        card_data.batch_size = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        if optimizer is not None:  # the rate each group starts from (`initial_lr`, before any warm-up)
            card_data.learning_rates = {
                group.get("name", f"group {number}"): group.get("initial_lr", group["lr"])
                for number, group in enumerate(optimizer.param_groups)
            }
        card_data.training_logs = []
        self.start = time.monotonic()

    def on_log(self, args, state, control, model=None, logs=None, **kwargs):
        if "loss" not in logs:
            return
        card_data = model.model_card_data
        if "ranking_temperature" in logs:
            card_data.ranking_temperature = logs["ranking_temperature"]
        terms = {key: value for key, value in logs.items()
                 if key not in LOG_KEYS_LEFT_OUT and isinstance(value, (int, float))}
        card_data.training_logs.append({"Epoch": state.epoch, "Step": state.global_step,
                                        "Training Loss": logs["loss"], **terms})

    def on_train_end(self, args, state, control, model=None, **kwargs):
        card_data = model.model_card_data
        card_data.training_steps = state.global_step
        card_data.training_seconds = round(time.monotonic() - self.start, 1)


def _non_default_arguments(args) -> dict:
    """The training arguments that differ from their field's default, leaving out `IGNORED_ARGUMENTS`. (A default
    instance is no reference: building `TrainingArguments` resets accelerate's state, mid-training here.) A value
    that `__post_init__` fills in for an unset default (None -> False, "" -> []) counts as the default."""
    defaults = {item.name: item.default if item.default is not MISSING else item.default_factory()
                for item in fields(args) if item.default is not MISSING or item.default_factory is not MISSING}
    found = {}
    for key, value in args.to_dict().items():
        default = getattr(defaults.get(key), "value", defaults.get(key))  # enums as `to_dict` writes them
        if key not in IGNORED_ARGUMENTS and key in defaults and value != default and (value or default):
            found[key] = value
    return found


def _is_generated(card: ModelCard) -> bool:
    """Whether `card` was made by a program (rendered by distill-vq, or transformers' placeholder), not by hand."""
    return GENERATED_MARKER in card.text or TRANSFORMERS_DEFAULT_CARD in card.text


def _with_framework_line(text: str, line: str) -> str:
    """`text` with `line` under "### Framework versions" (added at the end when missing); unchanged when present."""
    lines = text.splitlines()
    if line in lines:
        return text
    if FRAMEWORK_HEADING in lines:
        lines.insert(lines.index(FRAMEWORK_HEADING) + 2, line)
    else:
        lines += ["", FRAMEWORK_HEADING, "", line]
    return "\n".join(lines) + "\n"


def _bibtex_entries(text: str) -> dict[str, str]:
    """BibTeX key -> entry, for every `@type{key, ...}` entry of `text` (so that one paper is cited once)."""
    starts = [(match.start(), match.group(1)) for match in re.finditer(r"@\w+\s*\{\s*([^,\s]+)\s*,", text)]
    ends = [start for start, _ in starts[1:]] + [len(text)]
    return {key: text[start:end].strip() for (start, key), end in zip(starts, ends)}


def _format_value(value):
    return round(value, 6) if isinstance(value, float) else value


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _training_log_table(logs: list[dict]) -> str:
    """The training log as a Markdown table, thinned to at most `MAX_LOG_ROWS` rows (the last one kept)."""
    if not logs:
        return ""
    stride = math.ceil(len(logs) / MAX_LOG_ROWS)
    rows = logs[::stride] + ([logs[-1]] if (len(logs) - 1) % stride else [])
    return format_markdown_table([{key: f"{value:.4g}" if isinstance(value, float) else value
                                   for key, value in row.items()} for row in rows])


__all__ = ["CARD_DATA_FILE", "DistillVQModelCardCallback", "DistillVQModelCardData", "TEMPLATE_PATH", "get_versions"]
