"""The folder `distill-vq train` writes: its files, staged so that it appears whole or not at all, and read back.

    config.json, model.safetensors   the trained `DistillVQModel` (`save_pretrained`)
    index.faiss, doc_ids.json        the exported faiss index and its row -> document id mapping
    index_config.json                nprobe and the data sources, for `evaluate` and `search`
    results.json, results.md         the evaluation of exact search, faiss and distill-vq
    recall.png                       a bar chart of those results
    README.md, model_card_data.json  the model card and its facts (see `model_card`)

`search` shows document texts by re-reading the corpus recorded in `index_config.json` (`corpus: null` is the
packaged default data), so the folder stays small; a corpus that moved can be given again with `--corpus`.
`read_index_files` is the one reader of the index files (`hub.load_index` fetches a repository's, then calls it).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import faiss
from accelerate import PartialState

from .data import DataError
from .evaluation import format_markdown_table
from .faiss_bridge import write_index
from .io_utils import write_json, write_text

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
DOC_IDS_FILE = "doc_ids.json"
INDEX_CONFIG_FILE = "index_config.json"
RESULTS_FILE = "results.json"
RESULTS_MARKDOWN_FILE = "results.md"
CHART_FILE = "recall.png"
CHART_METRICS = ("recall_vs_exact@10", "recall_vs_exact@100", "mrr@10", "ndcg@10")


def check_writable(output_dir: str | Path) -> None:
    """Refuse an `output_dir` that exists and is neither empty nor an earlier output folder (it would be replaced)."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise DataError(f"{output_dir} is a file; choose a folder for --output-dir.")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not (output_dir / INDEX_CONFIG_FILE).is_file():
        raise DataError(
            f"{output_dir} is not empty and not a distill-vq output folder; choose another --output-dir or empty it."
        )


def staging_folder(output_dir: str | Path) -> Path:
    """Where a run into `output_dir` writes before its folder appears whole: a hidden sibling folder."""
    output_dir = Path(output_dir)
    return output_dir.with_name(f".{output_dir.name}.staging")


@contextmanager
def staged_folder(output_dir: str | Path, state: PartialState | None = None):
    """Yield the staging folder of `output_dir`; on success it replaces `output_dir`, else it is removed unless it
    holds training checkpoints (kept for `--resume-from-checkpoint`).

    With several processes (`state`), all share the folder (the Trainer's checkpoints go there) and only the main
    process creates and moves it; the others leave without waiting, as they write nothing after training.
    """
    output_dir = Path(output_dir)
    staging = staging_folder(output_dir)
    is_main_process = state is None or state.is_main_process
    if is_main_process:
        check_writable(output_dir)
        staging.mkdir(parents=True, exist_ok=True)  # a killed run's folder is reused: its checkpoints resume
    if state is not None:
        state.wait_for_everyone()
    try:
        yield staging
        if is_main_process:
            _replace(output_dir, staging)
    except BaseException:
        if is_main_process and not any(staging.glob("checkpoints/checkpoint-*")):
            shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(output_dir: Path, staging: Path) -> None:
    """Move `staging` to `output_dir`, replacing an earlier output folder with a rename, never a half-deleted one."""
    if output_dir.exists():
        previous = output_dir.with_name(f".{output_dir.name}.{uuid.uuid4().hex}.old")
        os.replace(output_dir, previous)
        os.replace(staging, output_dir)
        shutil.rmtree(previous)
    else:
        os.replace(staging, output_dir)


def write_index_files(folder: Path, index: faiss.Index, doc_ids: list[str], index_config: dict) -> None:
    """Write `index.faiss`, `doc_ids.json` and `index_config.json` into `folder`."""
    write_index(index, folder / INDEX_FILE)
    write_json(folder / DOC_IDS_FILE, doc_ids)
    write_json(folder / INDEX_CONFIG_FILE, index_config)


def read_index_files(folder: str | Path, nprobe: int | None = None) -> tuple[faiss.Index, list[str], dict]:
    """`(index, doc_ids, index_config)` of a folder holding `index.faiss`, `doc_ids.json` and `index_config.json`
    (a `distill-vq train` folder, or `write_index_files` output), the index searching `nprobe` lists (default: the
    stored one)."""
    folder = Path(folder)
    missing = [name for name in (INDEX_FILE, DOC_IDS_FILE, INDEX_CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)}; pass a folder written by `distill-vq train`.")
    index = faiss.read_index(str(folder / INDEX_FILE))
    index_config = json.loads((folder / INDEX_CONFIG_FILE).read_text())
    faiss.extract_index_ivf(index).nprobe = nprobe or index_config["nprobe"]
    return index, json.loads((folder / DOC_IDS_FILE).read_text()), index_config


def write_results(folder: Path, results: dict) -> str:
    """Write `results.json`, `results.md` and `recall.png` for `results["results"]` rows; return the Markdown table."""
    folder.mkdir(parents=True, exist_ok=True)
    table = format_markdown_table(results["results"])
    write_json(folder / RESULTS_FILE, results)
    write_text(folder / RESULTS_MARKDOWN_FILE, table + "\n")
    plot_results(results["results"], folder / CHART_FILE)
    return table


def plot_results(rows: list[dict], path: Path) -> None:
    """A grouped bar chart: one group per metric of `CHART_METRICS` present, one bar per index."""
    from matplotlib.figure import Figure  # here, so that `import distill_vq` does not load matplotlib

    metrics = [metric for metric in CHART_METRICS if any(metric in row for row in rows)]
    figure = Figure(figsize=(7, 4), layout="constrained")
    axes = figure.subplots()
    width = 0.8 / len(rows)
    for position, row in enumerate(rows):
        offsets = [group + (position - (len(rows) - 1) / 2) * width for group in range(len(metrics))]
        bars = axes.bar(offsets, [row.get(metric, 0.0) for metric in metrics], width, label=row["index"])
        axes.bar_label(bars, fmt="%.3f", fontsize=7)
    axes.set_xticks(range(len(metrics)), metrics)
    axes.set_ylim(0, 1.2)
    axes.set_ylabel("score")
    axes.legend(loc="upper center", ncols=len(rows), fontsize=8, frameon=False)
    figure.savefig(path, dpi=120)


__all__ = [
    "CHART_FILE", "DOC_IDS_FILE", "INDEX_CONFIG_FILE", "INDEX_FILE", "RESULTS_FILE", "RESULTS_MARKDOWN_FILE",
    "check_writable", "plot_results", "read_index_files", "staged_folder", "staging_folder", "write_index_files",
    "write_results",
]
