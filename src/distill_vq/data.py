"""Loading retrieval data: a corpus, queries and qrels from a BEIR folder, a single file or a Hub dataset.

Every corpus and query set comes back with exactly two string columns, `_id` and `text`. `text`
is what gets embedded: a non-empty `title` is prepended as `f"{title} {text}"`, the convention of
BEIR's and sentence-transformers' retrieval evaluators. Qrels map query id -> {doc id: score};
a score > 0 means relevant.

A source is, in this order of priority:
- a local BEIR folder: `corpus.jsonl[.gz]`, `queries.jsonl[.gz]`, `qrels/<split>.tsv` with the
  header `query-id<TAB>corpus-id<TAB>score`;
- a local `.jsonl[.gz]`, `.json[.gz]`, `.csv[.gz]` or `.parquet` file with an `_id` (or `id`)
  column, a `text` column and optionally a `title` column (other names are given as `TextColumns`);
- a Hub dataset id `owner/name`, loaded with `datasets.load_dataset(owner/name, config)` where
  the config is `corpus` or `queries` (BEIR's layout) unless given as `owner/name:config`.
A path that does not exist but looks like one (it starts with `.`, `/` or `~`, has more than one
`/`, or ends in a data-file suffix) is an error, never a Hub lookup.

Ids are read as strings (`1` and `"1"` are one id; a csv id `007` stays `007`); a null or empty id is an error.
Errors are `DataError`s naming the problem and the fix; a file that a reader fails on is re-read to name its
first bad line (not UTF-8, not a JSON object) or to find it empty or cut off. Streaming datasets (`streaming=True`)
are checked lazily: the columns and the first row when loaded, empty texts as rows are read;
duplicate ids and qrels ids are not checked, since that needs a full pass over the data.
"""

import contextlib
import csv
import gzip
import json
import logging
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import pyarrow
import pyarrow.compute as pc
import pyarrow.parquet as pq
from datasets.exceptions import DatasetGenerationError

from .io_utils import is_hub_id
from .settings import TextColumns

Kind = Literal["corpus", "queries"]
Qrels = dict[str, dict[str, int]]

BEIR_LAYOUT = "a BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv)"
QRELS_HEADER = ["query-id", "corpus-id", "score"]
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
COLUMN_FLAG_PREFIX = {"corpus": "", "queries": "query-"}  # the command's flags: --text-column, --query-text-column


class DataError(ValueError):
    """Retrieval data that cannot be used as given; the message says what to change."""


def default_data_path() -> Path:
    """The packaged BEIR folder of the default run: 5000 Debian package descriptions, their queries and qrels."""
    return Path(__file__).parent / "default_data"


@dataclass
class RetrievalData:
    """A corpus, its queries and their relevance judgements.

    Attributes:
        corpus: `_id`, `text` rows (a `Dataset`, or an `IterableDataset` when streaming).
        queries: `_id`, `text` rows, or None when the source has no queries.
        qrels: split name -> query id -> {doc id: score}.
    """

    corpus: datasets.Dataset | datasets.IterableDataset
    queries: datasets.Dataset | datasets.IterableDataset | None
    qrels: dict[str, Qrels] = field(default_factory=dict)


def load_corpus(source: str | Path, streaming: bool = False,
                columns: TextColumns | None = None) -> datasets.Dataset | datasets.IterableDataset:
    """Load documents as `_id`, `text` rows from a BEIR folder, a file or a Hub id (see the module docstring), reading
    the id, text and title from `columns` (default: `_id` or `id`, `text`, `title`)."""
    return _load_texts(source, "corpus", streaming, columns or TextColumns())


def load_queries(source: str | Path, streaming: bool = False,
                 columns: TextColumns | None = None) -> datasets.Dataset | datasets.IterableDataset:
    """Load queries as `_id`, `text` rows from a BEIR folder, a file or a Hub id (see the module docstring), reading
    the id, text and title from `columns` (default: `_id` or `id`, `text`, `title`)."""
    return _load_texts(source, "queries", streaming, columns or TextColumns())


def load_qrels(path: str | Path) -> Qrels:
    """Read a BEIR qrels file (header `query-id<TAB>corpus-id<TAB>score`) into query id -> {doc id: score}."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such qrels file; pass a BEIR qrels/<split>.tsv file.")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:  # utf-8-sig drops a byte-order mark
            return _read_qrels_rows(csv.reader(handle, delimiter="\t"), path)
    except UnicodeDecodeError as error:
        raise DataError(_unreadable(path, "qrels", error)) from error


def _read_qrels_rows(reader: Iterator[list[str]], path: Path) -> Qrels:
    qrels: Qrels = {}
    header = next(reader, None)
    if header != QRELS_HEADER:
        raise DataError(
            f"{path}: the first line is {header}, not the header 'query-id<TAB>corpus-id<TAB>score'; add it."
        )
    for line_number, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) != 3 or not re.fullmatch(r"-?\d+", row[2].strip()):
            raise DataError(
                f"{path}, line {line_number}: expected 'query-id<TAB>corpus-id<TAB>integer score', "
                f"got {row}; fix that line."
            )
        qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels


def check_qrels(
    qrels: Qrels, corpus_ids: Iterable[str], query_ids: Iterable[str] | None = None, name: str = "qrels"
) -> None:
    """Raise a `DataError` if `qrels` name query ids absent from `query_ids` or doc ids absent from `corpus_ids`."""
    if query_ids is not None:
        known_queries = set(query_ids)
        unknown = [query_id for query_id in qrels if query_id not in known_queries]
        if unknown:
            raise DataError(
                f"{name}: {len(unknown)} of {len(qrels)} query ids are not among the queries (e.g. '{unknown[0]}'); "
                "use the queries these qrels were made for, or drop those lines."
            )
    known_docs = set(corpus_ids)
    unknown = list(dict.fromkeys(doc_id for docs in qrels.values() for doc_id in docs if doc_id not in known_docs))
    if unknown:
        raise DataError(
            f"{name}: {len(unknown)} doc ids are not in the corpus (e.g. '{unknown[0]}'); "
            "use the corpus these qrels were made for, or drop those lines."
        )


def load_beir(
    source: str | Path,
    splits: Iterable[str] | None = None,
    streaming: bool = False,
    qrels_source: str | Path | None = None,
    corpus_columns: TextColumns | None = None,
    query_columns: TextColumns | None = None,
) -> RetrievalData:
    """Load a BEIR dataset: a local folder, or a Hub id with `corpus` and `queries` configs.

    Args:
        source: a BEIR folder or a Hub dataset id.
        splits: the qrels splits to load (e.g. `["test"]`); all by default.
        streaming: return `IterableDataset`s (for corpora that do not fit in memory).
        qrels_source: a folder of `<split>.tsv` files, or a Hub id whose splits have `query-id`,
            `corpus-id`, `score` columns (BEIR publishes them as `BeIR/<name>-qrels`). Defaults to
            `<source>/qrels` for a folder (no qrels if it is absent) and to none for a Hub id.
        corpus_columns / query_columns: the columns holding ids, texts and titles (see `load_corpus`).
    """
    folder = Path(source).expanduser()
    if folder.is_file():
        raise DataError(f"{source} is a file; pass {BEIR_LAYOUT}, or load the file with load_corpus.")
    corpus = load_corpus(source, streaming, corpus_columns)
    has_queries = not folder.is_dir() or _beir_file(folder, "queries") is not None
    queries = load_queries(source, streaming, query_columns) if has_queries else None
    if qrels_source is None and folder.is_dir() and (folder / "qrels").is_dir():
        qrels_source = folder / "qrels"
    qrels = _load_qrels_splits(qrels_source, None if splits is None else list(splits))
    if not streaming:
        for split, split_qrels in qrels.items():
            query_ids = None if queries is None else queries["_id"][:]
            check_qrels(split_qrels, corpus["_id"][:], query_ids, name=f"qrels '{split}'")
    return RetrievalData(corpus, queries, qrels)


def _load_qrels_splits(source: str | Path | None, splits: list[str] | None) -> dict[str, Qrels]:
    """Read the requested qrels splits from a folder of `<split>.tsv` files or a Hub id."""
    if source is None:
        if splits:
            raise DataError(f"qrels splits {splits} were requested but there are no qrels; pass qrels_source.")
        return {}
    folder = Path(source).expanduser()
    if folder.is_dir():
        available = {path.stem: path for path in sorted(folder.glob("*.tsv"))}
        _check_splits(splits, available, source)
        return {split: load_qrels(available[split]) for split in splits or available}
    if _looks_local(str(source)):
        raise DataError(f"{source}: no such qrels folder; pass a folder of <split>.tsv files or a Hub id.")
    splits_on_hub = _load_hub(str(source), str(source), streaming=False)
    _check_splits(splits, splits_on_hub, source)
    return {
        split: _qrels_from_rows(splits_on_hub[split], f"{source} split '{split}'") for split in splits or splits_on_hub
    }


def _check_splits(splits: list[str] | None, available, source) -> None:
    missing = sorted(set(splits or []) - set(available))
    if missing:
        raise DataError(f"{source} has no qrels split {missing}; available: {sorted(available)}.")


def _qrels_from_rows(rows: datasets.Dataset, name: str) -> Qrels:
    if set(QRELS_HEADER) - set(rows.column_names):
        raise DataError(f"{name} has columns {rows.column_names}, not {QRELS_HEADER}; pass a qrels dataset.")
    qrels: Qrels = {}
    for query_id, doc_id, score in zip(rows["query-id"], rows["corpus-id"], rows["score"]):
        qrels.setdefault(str(query_id), {})[str(doc_id)] = int(score)
    return qrels


def _load_texts(source: str | Path, kind: Kind, streaming: bool,
                columns: TextColumns) -> datasets.Dataset | datasets.IterableDataset:
    """Load a corpus or query set from any supported source and normalise it to `_id`, `text` rows."""
    path = Path(source).expanduser()
    if path.is_dir():
        path = _beir_file(path, kind)
        if path is None:
            raise DataError(
                f"{source} has no {kind}.jsonl or {kind}.jsonl.gz; point to {BEIR_LAYOUT} or to the {kind} file itself."
            )
    if path.is_file():
        builder = _file_builder(path)
        # pandas would read csv ids such as 007 as numbers (7)
        id_columns = [columns.id_column] if columns.id_column else ["_id", "id"]
        options = {"converters": dict.fromkeys(id_columns, str)} if builder == "csv" else {}
        try:
            with _local_file_readers():
                dataset = datasets.load_dataset(
                    builder, data_files=str(path), split="train", streaming=streaming, **options
                )
        except (StopIteration, ValueError, DatasetGenerationError, EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise DataError(_unreadable(path, kind, error)) from error
    elif _looks_local(str(source)):
        raise DataError(
            f"{source}: no such file or folder; pass {BEIR_LAYOUT}, a .jsonl[.gz]/.csv/.parquet file, "
            "or a Hub dataset id such as 'BeIR/scifact'."
        )
    else:
        repo_id, _, config = str(source).partition(":")
        splits = _load_hub(str(source), repo_id, config or kind, streaming=streaming)
        dataset = _single_split(splits, kind, source)
    try:
        return _normalise(dataset, str(source), kind, streaming, columns)
    except UnicodeDecodeError as error:  # the JSON reader keeps invalid UTF-8; decoding the rows finds it
        raise DataError(_unreadable(path, kind, error)) from error


@contextlib.contextmanager
def _local_file_readers():
    """`datasets`' file readers for a local file: their error log muted (failures are reported as one `DataError`
    instead), and without the download-count request to the Hub that `load_dataset` sends for its `json`/`csv`/
    `parquet` builders (`HF_UPDATE_DOWNLOAD_COUNTS`): reading a local file stays off the network."""
    readers = logging.getLogger("datasets.packaged_modules")
    level, counts = readers.level, datasets.config.HF_UPDATE_DOWNLOAD_COUNTS
    readers.setLevel(logging.CRITICAL)
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    try:
        yield
    finally:
        readers.setLevel(level)
        datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = counts


def _unreadable(path: Path, kind: str, error: BaseException) -> str:
    """The message for a data file a library failed to read, naming the first bad line when a re-read finds it."""
    damage = _find_damage(path, kind) if path.is_file() else None
    if damage is not None:
        return f"{path}{damage}."
    cause = error.__cause__ or error  # a DatasetGenerationError carries the reader's error as its cause
    return (
        f"{path} cannot be read as {kind} ({type(cause).__name__}: {' '.join(str(cause).split())}); "
        "fix the file, or export it again (JSON lines with '_id' and 'text' keys are the safest format)."
    )


def _find_damage(path: Path, kind: str) -> str | None:
    """What a re-read finds wrong with a data file, as a message tail, or None.

    Finds an empty file, a damaged gzip stream, and (reading line by line) the first line that is not UTF-8 or,
    in JSON lines, not a JSON object.
    """
    empty = f" is empty: it has no {kind} rows; give it at least one"
    if path.suffix == ".parquet":
        try:
            return empty if pq.read_metadata(path).num_rows == 0 else None
        except pyarrow.ArrowException:
            return None
    is_json_lines = ".jsonl" in path.suffixes
    is_empty = True
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as handle:
            for line_number, line in enumerate(handle, start=1):
                problem = _line_problem(line, line_number == 1, is_json_lines)
                if problem is not None:
                    if not line.endswith(b"\n"):
                        problem += " (the file ends inside that line: was it cut off? write or download it again)"
                    return f", line {line_number}: {problem}"
                is_empty = is_empty and not line.strip()
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        return f" is not a complete gzip file ({error}); compress it again, or drop the .gz suffix if it is plain text"
    return empty if is_empty else None


def _line_problem(line: bytes, is_first: bool, is_json_lines: bool) -> str | None:
    """What is wrong with one line of a text data file (bytes not UTF-8, or not one JSON object), or None."""
    try:
        text = line.decode("utf-8-sig" if is_first else "utf-8")
    except UnicodeDecodeError as error:
        return (
            f"byte {error.start + 1} (0x{line[error.start]:02x}) is not UTF-8; "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        )
    if not is_json_lines or not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        return f"not valid JSON ({error.msg.removesuffix(' at')} at column {error.colno}); fix or drop that line"
    if not isinstance(value, dict):
        return f"{text.strip()[:40]} is not a JSON object; write each row as {{\"_id\": ..., \"text\": ...}}"
    return None


def _beir_file(folder: Path, kind: Kind) -> Path | None:
    return next((path for path in (folder / f"{kind}.jsonl", folder / f"{kind}.jsonl.gz") if path.is_file()), None)


def _file_builder(path: Path) -> str:
    suffixes = [suffix for suffix in path.suffixes if suffix != ".gz"]
    builder = FILE_BUILDERS.get(suffixes[-1] if suffixes else "")
    if builder is None:
        raise DataError(f"{path}: unsupported file type; use .jsonl[.gz], .json[.gz], .csv[.gz] or .parquet.")
    return builder


def _looks_local(source: str) -> bool:
    """Whether `source` reads as a file path rather than a Hub id `owner/name[:config]`."""
    has_data_suffix = any(source.endswith(suffix) for suffix in (*FILE_BUILDERS, ".gz", ".tsv"))
    return has_data_suffix or not is_hub_id(source.partition(":")[0])


def _load_hub(source: str, *args, **kwargs) -> datasets.DatasetDict | datasets.IterableDatasetDict:
    """`datasets.load_dataset(*args, **kwargs)` for a Hub id; an unreachable or unknown repo is a `DataError`."""
    try:
        return datasets.load_dataset(*args, **kwargs)
    except (ConnectionError, FileNotFoundError, ValueError) as error:
        raise DataError(
            f"'{source}' is neither a local path nor a loadable Hub dataset ({type(error).__name__}: {error}); "
            "check the path, or the id and your connection (HF_HUB_OFFLINE)."
        ) from error


def _single_split(splits, kind: Kind, source) -> datasets.Dataset | datasets.IterableDataset:
    """Pick the one split of a Hub config, or the split named like the config (BEIR names it `corpus`/`queries`)."""
    if len(splits) == 1:
        return next(iter(splits.values()))
    if kind in splits:
        return splits[kind]
    raise DataError(
        f"'{source}' has splits {list(splits)}; pick the config holding the {kind} with 'owner/name:config'."
    )


def _normalise(dataset, source: str, kind: Kind, streaming: bool,
               columns: TextColumns) -> datasets.Dataset | datasets.IterableDataset:
    """Return `_id` (str) and `text` (title prepended) columns only, read from `columns`; raise a `DataError` on bad
    rows or a named column the data lacks."""
    if streaming:
        first_row = next(iter(dataset), None)
        names = None if first_row is None else list(first_row)
    else:
        names = dataset.column_names if len(dataset) else None
    if names is None:
        raise DataError(f"{source} is empty: it has no {kind} rows; give it at least one.")
    for role, name in (("id", columns.id_column), ("text", columns.text_column), ("title", columns.title_column)):
        if name is not None and name not in names:
            raise DataError(f"{source} has no column '{name}' for the {kind} {role}s; its columns are {names}: "
                            f"pass one of them as --{COLUMN_FLAG_PREFIX[kind]}{role}-column.")
    text_column = columns.text_column or "text"
    if text_column not in names:
        raise DataError(
            f"{source} has no 'text' column (columns: {names}); rename the column holding the {kind} text to 'text', "
            f"or name it with --{COLUMN_FLAG_PREFIX[kind]}text-column."
        )
    id_column = columns.id_column or ("_id" if "_id" in names else "id" if "id" in names else None)
    if id_column is None:
        raise DataError(f"{source} has no '_id' or 'id' column (columns: {names}); add a unique id to every row, or "
                        f"name the id column with --{COLUMN_FLAG_PREFIX[kind]}id-column.")
    title_column = columns.title_column or ("title" if "title" in names else None)

    def to_id_and_text(batch: dict, rows: list[int]) -> dict:
        for row, row_id in zip(rows, batch[id_column]):
            if row_id is None or not str(row_id).strip():
                raise DataError(
                    f"{source}: {kind} row {row + 1} has no '{id_column}' (it is null, empty or missing); "
                    "give every row a unique id."
                )
        ids = [str(row_id) for row_id in batch[id_column]]  # ids mixing numbers and strings all become strings
        texts = ["" if text is None else str(text) for text in batch[text_column]]
        if title_column is not None:
            texts = [f"{title} {text}".strip() if title else text for title, text in zip(batch[title_column], texts)]
        for row_id, text in zip(ids, texts):
            if not text.strip():
                raise DataError(
                    f"{source}: the {kind} row with id '{row_id}' has empty text; drop the empty rows or fill them in."
                )
        return {"_id": ids, "text": texts}

    features = datasets.Features({"_id": datasets.Value("string"), "text": datasets.Value("string")})
    dataset = dataset.map(to_id_and_text, with_indices=True, batched=True, remove_columns=names, features=features)
    if not streaming:
        _check_unique_ids(dataset, source)
    return dataset


def _check_unique_ids(dataset: datasets.Dataset, source: str) -> None:
    counts = pc.value_counts(dataset.data.column("_id"))
    repeated = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(repeated):
        example = repeated[0]
        raise DataError(
            f"{source}: id '{example['values']}' appears {example['counts']} times "
            f"({len(repeated)} ids occur more than once); ids must be unique, drop or rename the duplicates."
        )


# ----- the retrieval task of the `distill-vq` command -----
# Training never sees an evaluation query. With qrels, the evaluation queries are those judged in the evaluation split
# and training uses every other query; without qrels, a random 10% of the queries is held out and scored against exact
# search only. Without queries, or when every query is judged, documents serve as pseudo-queries (Distill-VQ needs no
# labels).

HELD_OUT_FRACTION = 0.1
TRAIN_SPLIT = "train"  # the qrels split whose labels the label term (--label-loss-weight) trains on


@dataclass
class RetrievalTask:
    """Documents and queries as `_id`, `text` rows, and the qrels of the evaluation queries.

    Attributes:
        corpus_source: the corpus as given (None: the packaged default data).
        eval_qrels: query id -> {doc id: score} of the evaluation split, or None without qrels.
        eval_name: how the evaluation queries were chosen, for reports (e.g. `"test"`).
        pseudo_queries: whether `queries` are the documents themselves.
        train_qrels: query id -> {doc id: score} of the source's `train` split (None without one, or when it is
            the evaluation split): the labels of the training queries, for the label term.
    """

    corpus_source: str | None
    corpus: datasets.Dataset
    queries: datasets.Dataset
    eval_qrels: Qrels | None
    eval_name: str
    pseudo_queries: bool = False
    train_qrels: Qrels | None = None

    @cached_property
    def doc_ids(self) -> list[str]:
        """Document ids by row (read once: a run asks for them several times)."""
        return self.corpus["_id"][:]  # `[:]` reads the column at once; iterating `Column` decodes row by row (150x)

    @cached_property
    def doc_rows(self) -> dict[str, int]:
        """Document id -> corpus row."""
        return {doc_id: row for row, doc_id in enumerate(self.doc_ids)}

    @property
    def corpus_name(self) -> str:
        return "the packaged Debian package descriptions" if self.corpus_source is None else self.corpus_source

    def split_queries(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """`(train_rows, eval_rows)` of `queries`: the rest vs the judged evaluation queries, or a seeded 10% hold-out.

        `train_rows` is empty when every query is judged (see `training_queries`).
        """
        query_ids = self.queries["_id"][:]
        if self.eval_qrels is not None:
            is_eval = np.array([query_id in self.eval_qrels for query_id in query_ids], dtype=bool)
        else:
            order = np.random.default_rng(seed).permutation(len(query_ids))
            is_eval = np.zeros(len(query_ids), dtype=bool)
            is_eval[order[: max(1, round(HELD_OUT_FRACTION * len(query_ids)))]] = True
        return np.flatnonzero(~is_eval), np.flatnonzero(is_eval)

    def qrels_for(self, query_rows: np.ndarray) -> list[dict[str, int]] | None:
        """Per query row, its {doc id: score}; None without qrels."""
        if self.eval_qrels is None:
            return None
        query_ids = self.queries.select(query_rows)["_id"][:]
        return [self.eval_qrels.get(query_id, {}) for query_id in query_ids]

    def positive_rows(self, query_rows: np.ndarray) -> list[list[int]]:
        """Per query row, the corpus rows its training qrels judge relevant (score > 0); empty lists without
        training qrels."""
        if self.train_qrels is None:
            return [[] for _ in query_rows]
        query_ids = self.queries.select(query_rows)["_id"][:]
        return [[self.doc_rows[doc_id] for doc_id, score in self.train_qrels.get(query_id, {}).items() if score > 0]
                for query_id in query_ids]


def load_task(
    corpus: str | None = None, queries: str | None = None, qrels: str | None = None, eval_split: str = "test",
    corpus_columns: TextColumns | None = None, query_columns: TextColumns | None = None,
) -> RetrievalTask:
    """Load the corpus (default: the packaged data), its queries and the evaluation qrels.

    Args:
        corpus: a BEIR folder, a jsonl/csv/parquet file or a Hub dataset id.
        queries: a queries file, folder or Hub id; default: the corpus source's queries.
        qrels: a qrels `.tsv` file (the evaluation qrels), a folder of `<split>.tsv` files or a Hub id
            (read `eval_split` from it), or a split name (overrides `eval_split`); default: the corpus folder's.
        eval_split: the qrels split whose queries are held out for evaluation.
        corpus_columns / query_columns: the columns holding ids, texts and titles (see `load_corpus`).
    """
    source = Path(default_data_path() if corpus is None else corpus).expanduser()
    qrels_file = qrels_source = None
    if qrels is not None:
        if qrels.endswith(".tsv") or Path(qrels).expanduser().is_file():
            qrels_file = qrels
        elif "/" in qrels or not is_hub_id(qrels):  # a folder, or a Hub id `owner/name`; a bare name is a split
            qrels_source = qrels
        else:
            eval_split = qrels
    if source.is_file():
        if qrels_source is not None:
            raise DataError(f"--qrels {qrels}: when --corpus is a file, give the evaluation qrels as a .tsv file.")
        corpus_rows, query_rows, split_qrels = load_corpus(source, columns=corpus_columns), None, {}
    else:
        data = load_beir(corpus or source, qrels_source=qrels_source, corpus_columns=corpus_columns,
                         query_columns=query_columns)
        corpus_rows, query_rows, split_qrels = data.corpus, data.queries, data.qrels
    if queries is not None:
        query_rows = load_queries(queries, columns=query_columns)
    if qrels_file is not None:
        eval_qrels, eval_name = load_qrels(qrels_file), Path(qrels_file).name
    elif split_qrels or qrels is not None:
        if eval_split not in split_qrels:
            raise DataError(f"there is no qrels split '{eval_split}' (available: {sorted(split_qrels)}); "
                            "pass --eval-split, or a qrels .tsv file with --qrels.")
        eval_qrels, eval_name = split_qrels[eval_split], eval_split
    else:
        eval_qrels, eval_name = None, f"held-out {HELD_OUT_FRACTION:.0%} of the queries"
    train_qrels = split_qrels.get(TRAIN_SPLIT) if eval_name != TRAIN_SPLIT and queries is None else None
    pseudo_queries = query_rows is None
    if pseudo_queries:
        query_rows, eval_qrels, train_qrels = corpus_rows, None, None
        eval_name = f"held-out {HELD_OUT_FRACTION:.0%} of the documents as pseudo-queries"
    if eval_qrels is not None:
        check_qrels(eval_qrels, corpus_rows["_id"][:], query_rows["_id"][:], name=f"qrels '{eval_name}'")
    corpus_source = None if corpus is None else str(corpus)
    return RetrievalTask(corpus_source, corpus_rows, query_rows, eval_qrels, eval_name, pseudo_queries, train_qrels)


def read_embeddings(path: str | Path, num_rows: int, what: str, dim: int | None = None) -> np.ndarray:
    """A `.npy` of `(num_rows, dim)` embeddings, rows in the order of the `what` texts, memory-mapped."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such embeddings file; pass a .npy with one row per {what} entry.")
    try:
        embeddings = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise DataError(f"{path} is not a plain .npy array ({error}); save it with numpy.save.") from error
    if embeddings.ndim != 2 or len(embeddings) != num_rows:
        raise DataError(
            f"{path} has shape {embeddings.shape} but the {what} has {num_rows} rows; give one embedding row per "
            f"{what} entry, in file order."
        )
    if dim is not None and embeddings.shape[1] != dim:
        raise DataError(f"{path} has dimension {embeddings.shape[1]}, not {dim}; embed both sides with one encoder.")
    return embeddings
