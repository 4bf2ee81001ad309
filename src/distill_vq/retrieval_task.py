"""The retrieval task the `distill-vq` command trains and evaluates on: texts, embeddings and a query split.

Training never sees an evaluation query. With qrels, the evaluation queries are those judged in the evaluation
split and training uses every other query; without qrels, a random 10% of the queries is held out and scored
against exact search only. Without queries, or when every query is judged, documents serve as pseudo-queries
(Distill-VQ needs no labels).
"""

from dataclasses import dataclass
from pathlib import Path

import datasets
import faiss
import numpy as np

from .data import DataError, Qrels, check_qrels, default_data_path, load_beir, load_corpus, load_qrels, load_queries
from .evaluation import evaluate_index, exact_search
from .faiss_bridge import FAISS_METRICS

HELD_OUT_FRACTION = 0.1
MAX_PSEUDO_QUERIES = 100_000
EVALUATION_CUTOFFS = (10, 100)


@dataclass
class RetrievalTask:
    """Documents and queries as `_id`, `text` rows, and the qrels of the evaluation queries.

    Attributes:
        corpus_source: the corpus as given (None: the packaged default data).
        eval_qrels: query id -> {doc id: score} of the evaluation split, or None without qrels.
        eval_name: how the evaluation queries were chosen, for reports (e.g. `"test"`).
        pseudo_queries: whether `queries` are the documents themselves.
    """

    corpus_source: str | None
    corpus: datasets.Dataset
    queries: datasets.Dataset
    eval_qrels: Qrels | None
    eval_name: str
    pseudo_queries: bool = False

    @property
    def doc_ids(self) -> list[str]:
        """Document ids by row."""
        return list(self.corpus["_id"])

    @property
    def corpus_name(self) -> str:
        return "the packaged Debian package descriptions" if self.corpus_source is None else self.corpus_source

    def split_queries(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """`(train_rows, eval_rows)` of `queries`: the rest vs the judged evaluation queries, or a seeded 10% hold-out.

        `train_rows` is empty when every query is judged (see `training_queries`).
        """
        query_ids = list(self.queries["_id"])
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
        query_ids = self.queries.select(query_rows)["_id"]
        return [self.eval_qrels.get(query_id, {}) for query_id in query_ids]


def load_task(
    corpus: str | None = None, queries: str | None = None, qrels: str | None = None, eval_split: str = "test"
) -> RetrievalTask:
    """Load the corpus (default: the packaged data), its queries and the evaluation qrels.

    Args:
        corpus: a BEIR folder, a jsonl/csv/parquet file or a Hub dataset id.
        queries: a queries file, folder or Hub id; default: the corpus source's queries.
        qrels: a qrels `.tsv` file (the evaluation qrels), a folder of `<split>.tsv` files or a Hub id
            (read `eval_split` from it), or a split name (overrides `eval_split`); default: the corpus folder's.
        eval_split: the qrels split whose queries are held out for evaluation.
    """
    source = Path(default_data_path() if corpus is None else corpus).expanduser()
    qrels_file = qrels_source = None
    if qrels is not None:
        if qrels.endswith(".tsv") or Path(qrels).expanduser().is_file():
            qrels_file = qrels
        elif Path(qrels).expanduser().is_dir() or "/" in qrels:
            qrels_source = qrels
        else:
            eval_split = qrels
    if source.is_file():
        if qrels_source is not None:
            raise DataError(f"--qrels {qrels}: when --corpus is a file, give the evaluation qrels as a .tsv file.")
        corpus_rows, query_rows, split_qrels = load_corpus(source), None, {}
    else:
        data = load_beir(corpus or source, qrels_source=qrels_source)
        corpus_rows, query_rows, split_qrels = data.corpus, data.queries, data.qrels
    if queries is not None:
        query_rows = load_queries(queries)
    if qrels_file is not None:
        eval_qrels, eval_name = load_qrels(qrels_file), Path(qrels_file).name
    elif split_qrels or qrels is not None:
        if eval_split not in split_qrels:
            raise DataError(f"there is no qrels split '{eval_split}' (available: {sorted(split_qrels)}); "
                            "pass --eval-split, or a qrels .tsv file with --qrels.")
        eval_qrels, eval_name = split_qrels[eval_split], eval_split
    else:
        eval_qrels, eval_name = None, f"held-out {HELD_OUT_FRACTION:.0%} of the queries"
    pseudo_queries = query_rows is None
    if pseudo_queries:
        query_rows, eval_qrels = corpus_rows, None
        eval_name = f"held-out {HELD_OUT_FRACTION:.0%} of the documents as pseudo-queries"
    if eval_qrels is not None:
        check_qrels(eval_qrels, corpus_rows["_id"], query_rows["_id"], name=f"qrels '{eval_name}'")
    corpus_source = None if corpus is None else str(corpus)
    return RetrievalTask(corpus_source, corpus_rows, query_rows, eval_qrels, eval_name, pseudo_queries)


def training_queries(query_embeddings, train_rows: np.ndarray, doc_embeddings, seed: int) -> np.ndarray:
    """`(num_train, dim)` teacher query embeddings to train on: the training queries, or when there are none, up
    to `MAX_PSEUDO_QUERIES` random documents as pseudo-queries."""
    if len(train_rows):
        return np.asarray(query_embeddings[train_rows], dtype=np.float32)
    count = min(len(doc_embeddings), MAX_PSEUDO_QUERIES)
    rows = np.sort(np.random.default_rng(seed).choice(len(doc_embeddings), count, replace=False))
    return np.asarray(doc_embeddings[rows], dtype=np.float32)


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


def evaluation_cutoffs(num_docs: int) -> tuple[int, ...]:
    """The cutoffs `k` to report, capped at the corpus size."""
    return tuple(sorted({min(k, num_docs) for k in EVALUATION_CUTOFFS}))


def exact_index(doc_embeddings: np.ndarray, metric: str = "inner_product") -> faiss.Index:
    """A flat (exact) faiss index of `doc_embeddings (N, dim)`."""
    index = faiss.IndexFlat(doc_embeddings.shape[1], FAISS_METRICS[metric])
    for start in range(0, len(doc_embeddings), 65536):
        index.add(np.ascontiguousarray(doc_embeddings[start : start + 65536], dtype=np.float32))
    return index


def compare_indexes(
    indexes: dict[str, faiss.Index],
    doc_embeddings: np.ndarray,
    doc_ids: list[str],
    query_embeddings: np.ndarray,
    qrels_for_queries: list[dict[str, int]] | None,
    metric: str = "inner_product",
) -> dict[str, dict[str, float]]:
    """Index name -> its `recall_vs_exact@k`, label metrics (with qrels) and `qps` on the same queries."""
    queries = np.ascontiguousarray(query_embeddings, dtype=np.float32)
    cutoffs = evaluation_cutoffs(len(doc_ids))
    exact_ids = exact_search(queries, doc_embeddings, max(cutoffs), metric)[1]
    results = {}
    for name, index in indexes.items():
        metrics = evaluate_index(index, queries, doc_ids, qrels_for_queries, exact_ids, cutoffs)
        results[name] = {**metrics, "qps": round(metrics["qps"])}
    return results
