"""Loading retrieval data: a corpus, queries and qrels from a BEIR folder, a single file or a Hub dataset.

Every corpus and query set comes back with exactly two string columns, `_id` and `text`. `text`
is what gets embedded: a non-empty `title` is prepended as `f"{title} {text}"`, the convention of
BEIR's and sentence-transformers' retrieval evaluators. Qrels map query id -> {doc id: score};
a score > 0 means relevant.

A source is, in this order of priority:
- a local BEIR folder: `corpus.jsonl[.gz]`, `queries.jsonl[.gz]`, `qrels/<split>.tsv` with the
  header `query-id<TAB>corpus-id<TAB>score`;
- a local `.jsonl[.gz]`, `.json[.gz]`, `.csv[.gz]` or `.parquet` file with an `_id` (or `id`)
  column, a `text` column and optionally a `title` column;
- a Hub dataset id `owner/name`, loaded with `datasets.load_dataset(owner/name, config)` where
  the config is `corpus` or `queries` (BEIR's layout) unless given as `owner/name:config`.
A path that does not exist but looks like one (it starts with `.`, `/` or `~`, has more than one
`/`, or ends in a data-file suffix) is an error, never a Hub lookup.

Errors are `DataError`s naming the problem and the fix. Streaming datasets (`streaming=True`)
are checked lazily: the columns and the first row when loaded, empty texts as rows are read;
duplicate ids and qrels ids are not checked, since that needs a full pass over the data.
"""

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Literal

import datasets
import pyarrow.compute as pc

Kind = Literal["corpus", "queries"]
Qrels = dict[str, dict[str, int]]

BEIR_LAYOUT = "a BEIR folder (corpus.jsonl[.gz], queries.jsonl[.gz], qrels/<split>.tsv)"
QRELS_HEADER = ["query-id", "corpus-id", "score"]
FILE_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
_HUB_ID = re.compile(r"[\w-][\w.-]*(/[\w.-]+)?(:[\w.-]+)?")


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


def load_corpus(source: str | Path, streaming: bool = False) -> datasets.Dataset | datasets.IterableDataset:
    """Load documents as `_id`, `text` rows from a BEIR folder, a file or a Hub id (see the module docstring)."""
    return _load_texts(source, "corpus", streaming)


def load_queries(source: str | Path, streaming: bool = False) -> datasets.Dataset | datasets.IterableDataset:
    """Load queries as `_id`, `text` rows from a BEIR folder, a file or a Hub id (see the module docstring)."""
    return _load_texts(source, "queries", streaming)


def load_qrels(path: str | Path) -> Qrels:
    """Read a BEIR qrels file (header `query-id<TAB>corpus-id<TAB>score`) into query id -> {doc id: score}."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such qrels file; pass a BEIR qrels/<split>.tsv file.")
    qrels: Qrels = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, delimiter="\t")
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
) -> RetrievalData:
    """Load a BEIR dataset: a local folder, or a Hub id with `corpus` and `queries` configs.

    Args:
        source: a BEIR folder or a Hub dataset id.
        splits: the qrels splits to load (e.g. `["test"]`); all by default.
        streaming: return `IterableDataset`s (for corpora that do not fit in memory).
        qrels_source: a folder of `<split>.tsv` files, or a Hub id whose splits have `query-id`,
            `corpus-id`, `score` columns (BEIR publishes them as `BeIR/<name>-qrels`). Defaults to
            `<source>/qrels` for a folder (no qrels if it is absent) and to none for a Hub id.
    """
    folder = Path(source).expanduser()
    if folder.is_file():
        raise DataError(f"{source} is a file; pass {BEIR_LAYOUT}, or load the file with load_corpus.")
    corpus = load_corpus(source, streaming)
    has_queries = not folder.is_dir() or _beir_file(folder, "queries") is not None
    queries = load_queries(source, streaming) if has_queries else None
    if qrels_source is None and folder.is_dir() and (folder / "qrels").is_dir():
        qrels_source = folder / "qrels"
    qrels = _load_qrels_splits(qrels_source, None if splits is None else list(splits))
    if not streaming:
        for split, split_qrels in qrels.items():
            query_ids = None if queries is None else queries["_id"]
            check_qrels(split_qrels, corpus["_id"], query_ids, name=f"qrels '{split}'")
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


def _load_texts(source: str | Path, kind: Kind, streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
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
        try:
            dataset = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=streaming)
        except (StopIteration, ValueError) as error:  # what `datasets` raises for an empty file
            raise DataError(
                f"{path} is empty or unreadable ({type(error).__name__}: {error}); give it at least one {kind} row."
            ) from error
    elif _looks_local(str(source)):
        raise DataError(
            f"{source}: no such file or folder; pass {BEIR_LAYOUT}, a .jsonl[.gz]/.csv/.parquet file, "
            "or a Hub dataset id such as 'BeIR/scifact'."
        )
    else:
        repo_id, _, config = str(source).partition(":")
        splits = _load_hub(str(source), repo_id, config or kind, streaming=streaming)
        dataset = _single_split(splits, kind, source)
    return _normalise(dataset, str(source), kind, streaming)


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
    return source.startswith((".", "~")) or has_data_suffix or not _HUB_ID.fullmatch(source)


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


def _normalise(dataset, source: str, kind: Kind, streaming: bool) -> datasets.Dataset | datasets.IterableDataset:
    """Return `_id` (str) and `text` (title prepended) columns only; raise a `DataError` on bad rows."""
    if streaming:
        first_row = next(iter(dataset), None)
        columns = None if first_row is None else list(first_row)
    else:
        columns = dataset.column_names if len(dataset) else None
    if columns is None:
        raise DataError(f"{source} is empty: it has no {kind} rows; give it at least one.")
    if "text" not in columns:
        raise DataError(
            f"{source} has no 'text' column (columns: {columns}); rename the column holding the {kind} text to 'text'."
        )
    id_column = "_id" if "_id" in columns else "id" if "id" in columns else None
    if id_column is None:
        raise DataError(f"{source} has no '_id' or 'id' column (columns: {columns}); add a unique id to every row.")

    def to_id_and_text(batch: dict) -> dict:
        ids = [str(row_id) for row_id in batch[id_column]]
        texts = ["" if text is None else str(text) for text in batch["text"]]
        if "title" in batch:
            texts = [f"{title} {text}".strip() if title else text for title, text in zip(batch["title"], texts)]
        for row_id, text in zip(ids, texts):
            if not text.strip():
                raise DataError(
                    f"{source}: the {kind} row with id '{row_id}' has empty text; drop the empty rows or fill them in."
                )
        return {"_id": ids, "text": texts}

    dataset = dataset.map(to_id_and_text, batched=True, remove_columns=columns)
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
