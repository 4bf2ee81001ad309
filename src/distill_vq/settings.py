"""What a run is asked to do: `TrainSettings` (the `distill-vq train` flags other than the Trainer's) and their
defaults, the columns of a data file (`TextColumns`) and the reading of a faiss factory string into the index
settings (`index_factory_settings`). Imports nothing heavy, so that the command answers `--help` without loading
torch (faiss is imported only to read a factory string)."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, fields
from pathlib import Path

DEFAULT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_OUTPUT_DIR = "./distill-vq-output"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "distill-vq" / "embeddings"
DEFAULT_EVAL_SPLIT = "test"
MIN_POINTS_PER_LIST = 39  # faiss warns below 39 training points per k-means centroid
# `--metric`: the similarity the index ranks by -> the `DistillVQConfig.metric` it trains with. "cosine" is inner
# product over L2-normalised document and query embeddings.
METRICS = {"ip": "inner_product", "l2": "l2", "cosine": "inner_product"}
INDEX_FACTORY_FORMS = ('"[OPQ{m},]IVF{n},PQ{m}[x{bits}]" or "[OPQ{m},]IVF{n},RQ{m}x8[_Nnone]" '
                       '(e.g. "OPQ16,IVF1024,PQ16x8", "IVF256,PQ16", "IVF1024,RQ16x8_Nnone")')
# The families distill-vq trains; faiss itself then reads the string (and refuses what it cannot build).
_INDEX_FACTORY_PATTERN = re.compile(r"(?:OPQ(?P<rotation>\d+),)?IVF\d+,(?:PQ|RQ)(?P<codes>\d+)(?:x\d+)?(?:_Nnone)?")
# The index settings a factory string fixes (the `distill-vq train` flags it replaces).
INDEX_FACTORY_FIELDS = {"num_lists": "--num-lists", "quantizer": "--quantizer", "num_subvectors": "--num-subvectors",
                        "num_codebooks": "--num-codebooks", "bits_per_subvector": "--bits-per-subvector",
                        "use_rotation": "--no-rotation"}


@dataclass(frozen=True)
class TextColumns:
    """The columns of a corpus or query file that hold each row's id, text and title.

    Args:
        id_column: default `_id`, else `id`.
        text_column: default `text`.
        title_column: prepended to the text when non-empty; default `title` when the file has one.
    """

    id_column: str | None = None
    text_column: str | None = None
    title_column: str | None = None

    @classmethod
    def from_dict(cls, values: dict | None, where: str = "the columns") -> TextColumns:
        """The columns `dataclasses.asdict` wrote (e.g. into `index_config.json`); None or `{}` are the defaults."""
        names = {item.name for item in fields(cls)}
        values = {} if values is None else values
        if not isinstance(values, dict) or not set(values) <= names or not all(
                value is None or isinstance(value, str) for value in values.values()):
            raise ValueError(f"{where}={values!r} is not a mapping of {sorted(names)} to column names; restore it.")
        return cls(**values)


def index_factory_settings(index_factory: str) -> dict:
    """The index settings of a `faiss.index_factory` string, read from the index faiss builds for it.

    Returns:
        `num_lists`, `quantizer`, `num_subvectors` (PQ) or `num_codebooks` (RQ), `bits_per_subvector` and
        `use_rotation`, e.g. `{"num_lists": 128, "quantizer": "pq", "num_subvectors": 16, "bits_per_subvector": 8,
        "use_rotation": True}` for `"OPQ16,IVF128,PQ16x8"`.

    Raises:
        ValueError: a family distill-vq does not train (HNSW, Flat, LSQ, fast-scan PQ...), a string faiss cannot
            build, or an OPQ rotation whose sub-vectors are not the codes'.
    """
    import faiss

    from .configuration_distill_vq import DistillVQConfig
    from .quantizers import QUANTIZERS

    form = _INDEX_FACTORY_PATTERN.fullmatch(index_factory)
    if form is None:
        raise ValueError(f"--index-factory {index_factory!r} is not an index distill-vq trains; give "
                         f"{INDEX_FACTORY_FORMS}, or use faiss directly for other indexes.")
    codes = int(form["codes"])
    rotation = None if form["rotation"] is None else int(form["rotation"])
    probe_dim = math.lcm(codes, rotation or 1)  # any dimension the string's sub-vectors divide
    try:
        index = faiss.index_factory(probe_dim, index_factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:  # faiss's message ends with the reason, e.g. "could not parse code description"
        reason = str(error).rpartition("failed: ")[2]
        raise ValueError(f"--index-factory {index_factory!r}: faiss cannot build it ({reason}); give "
                         f"{INDEX_FACTORY_FORMS}.") from error
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    family = next(family for family in QUANTIZERS.values() if type(ivf) is family.faiss_index_type)  # the pattern's
    values = {name: value for name, value in family.config_fields(ivf).items() if name in INDEX_FACTORY_FIELDS}
    if rotation is not None and rotation != codes:
        raise ValueError(f"--index-factory {index_factory!r}: distill-vq trains the OPQ rotation for the {codes} "
                         f"codes; write OPQ{codes} (got OPQ{rotation}).")
    values = {"num_lists": ivf.nlist, **values, "use_rotation": rotation is not None}
    try:  # the shapes distill-vq trains (e.g. RQ needs 8-bit codebooks), checked before any data is read
        DistillVQConfig(embedding_dim=probe_dim, **values)
    except ValueError as error:
        raise ValueError(f"--index-factory {index_factory!r}: {error}") from error
    return values


def index_factory_conflict(index_factory: str, flags: list[str]) -> ValueError:
    """The error for index `flags` given with `--index-factory`, which sets them."""
    return ValueError(f"--index-factory {index_factory!r} sets the index that {', '.join(flags)} would set; drop "
                      f"{'them' if len(flags) > 1 else 'it'}, or write the index into the factory string.")


@dataclass
class TrainSettings:
    """What to train on and which index to build: the `distill-vq train` flags other than the Trainer's.

    Args:
        corpus / queries / qrels / eval_split: the data (see `data.load_task`); `corpus=None` is the packaged data.
        encoder: the embedding model (Hub id or folder); ignored for sides given as `.npy` embeddings.
        doc_embeddings / query_embeddings: `.npy` files of precomputed embeddings, rows in file order.
        id_column / text_column / title_column: the corpus file's columns (see `TextColumns`; the defaults are
            `_id` or `id`, `text`, `title`); query_id_column / query_text_column: the queries file's.
        num_lists: IVF lists (default: `auto_num_lists(num_docs)`); quantizer, num_subvectors, num_codebooks,
        bits_per_subvector, use_rotation, nprobe: the index (see `DistillVQConfig`).
        index_factory: a `faiss.index_factory` string that sets the index settings instead (`index_factory_settings`),
            e.g. `"OPQ16,IVF128,PQ16x8"`; the faiss baseline is named by it.
        metric: `"ip"` (inner product), `"l2"`, or `"cosine"` (inner product of L2-normalised document and query
            embeddings, normalised before everything else).
        query_adapter: train a linear map of the query embeddings against the index (`DistillVQModel.
            attach_query_adapter`); for queries that arrive as embeddings.
        train_query_encoder: train a copy of `encoder` as the query encoder against the index (Distill-VQ's joint
            mode); student_layers / student_encoder: train a smaller query encoder instead (EmbedDistill), the
            layers `student_layers` of `student_encoder` (default: `encoder`). The documents stay the teacher's.
        seed: seeds faiss, the query split and training.
        output_dir / overwrite_output_dir: where to write (see `output_folder.staged_folder`), and whether a non-empty
            folder that is not an earlier output folder may be written into (its other files are kept).
    """

    corpus: str | None = None
    queries: str | None = None
    qrels: str | None = None
    eval_split: str | None = None
    encoder: str = DEFAULT_ENCODER_NAME
    doc_embeddings: str | None = None
    query_embeddings: str | None = None
    cache_dir: Path = DEFAULT_CACHE_DIR
    device: str | None = None  # "cuda" or "cpu" for encoding and training; None: CUDA when torch sees it
    id_column: str | None = None
    text_column: str | None = None
    title_column: str | None = None
    query_id_column: str | None = None
    query_text_column: str | None = None
    index_factory: str | None = None
    metric: str = "ip"
    num_lists: int | None = None
    quantizer: str = "pq"
    num_subvectors: int = 16
    num_codebooks: int | None = None
    bits_per_subvector: int = 8
    use_rotation: bool = True
    nprobe: int | None = None
    query_adapter: bool = False
    train_query_encoder: bool = False
    student_layers: list[int] | None = None
    student_encoder: str | None = None
    seed: int = 42
    output_dir: str = DEFAULT_OUTPUT_DIR
    overwrite_output_dir: bool = False

    def __post_init__(self):
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is unknown; use one of {sorted(METRICS)}.")
        if self.index_factory is not None:
            self._use_index_factory()
        if self.quantizer == "rq" and METRICS[self.metric] != "inner_product":
            raise ValueError(f"The RQ quantizer scores by inner product, not {self.metric}; use --metric ip or cosine, "
                             "or a PQ index for l2.")

    def _use_index_factory(self) -> None:
        """Set the index settings from `index_factory`, refusing ones set otherwise to other values."""
        values = index_factory_settings(self.index_factory)
        defaults = {item.name: item.default for item in fields(self)}
        conflicts = [INDEX_FACTORY_FIELDS[name] for name, value in values.items()
                     if getattr(self, name) not in (defaults[name], value)]
        if conflicts:
            raise index_factory_conflict(self.index_factory, conflicts)
        for name, value in values.items():
            setattr(self, name, value)

    @property
    def corpus_columns(self) -> TextColumns:
        return TextColumns(self.id_column, self.text_column, self.title_column)

    @property
    def query_columns(self) -> TextColumns:
        return TextColumns(self.query_id_column, self.query_text_column)

    @property
    def query_encoder(self) -> str | None:
        """The encoder the trained query encoder starts from, or None when the queries keep the teacher's."""
        if self.train_query_encoder or self.student_layers is not None or self.student_encoder is not None:
            return self.student_encoder or self.encoder
        return None


__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_ENCODER_NAME",
    "DEFAULT_EVAL_SPLIT",
    "DEFAULT_OUTPUT_DIR",
    "INDEX_FACTORY_FIELDS",
    "INDEX_FACTORY_FORMS",
    "METRICS",
    "MIN_POINTS_PER_LIST",
    "TextColumns",
    "TrainSettings",
    "index_factory_conflict",
    "index_factory_settings",
]
