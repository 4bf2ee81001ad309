"""The folder `distill-vq train` writes: its files, written safely (whole or not at all, one run at a time, never
deleting what the run does not own), checked when read back.

    config.json, model.safetensors   the trained `DistillVQModel` (`save_pretrained`)
    index.faiss, doc_ids.json        the exported faiss index and its row -> document id mapping
    baseline.faiss                   faiss's own training of the same index, the baseline `evaluate` compares with
    index_config.json                nprobe, the data sources and the sha256 of the index files
    results.json, results.md         the evaluation of exact search, faiss and distill-vq
    recall.png                       a bar chart of those results
    README.md, model_card_data.json  the model card and its facts (see `model_card`)
    tokenizer.json, ...              the query encoder's tokenizer, when the model trained its own query encoder
    checkpoints/                     the Trainer's last checkpoints and `run_signature.json`, for resuming

Writing a folder X (`staged_folder`): the run holds the lock file `.X.lock` beside X (it names the run's process; a
lock whose process is dead is taken over with a warning, one held by a live process stops the second run), and
writes into its own staging folder `.X.staging-<id>`. On success the staging folder replaces X in a swap: X is
renamed `.X.<id>.old`, the entries of X that a run does not write (not in `OWNED_NAMES`: a user's `src/`, the
`evaluation/` folder of `distill-vq evaluate`) move into the new folder, the new folder is renamed X, and the
`.old` folder, now holding only the earlier run's own files, is removed. A run killed during the swap leaves
`.X.<id>.old` and no X: the next `distill-vq` command on X puts it back (`recover_interrupted_swap`) and says so.
A run that fails or is killed keeps its staging folder when it holds checkpoints, so that
`--resume-from-checkpoint last` (`last_checkpoint`) finds them; the next successful run into X removes them.

`search` shows document texts by re-reading the corpus recorded in `index_config.json` (`corpus: null` is the
packaged default data), so the folder stays small; a corpus that moved can be given again with `--corpus`.
`read_index_files` is the one reader of the index files (`hub.load_index` fetches a repository's, then calls it),
and `read_output_folder` adds the quantizer's config, each checked against the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import faiss
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from transformers.utils import CONFIG_NAME, SAFE_WEIGHTS_NAME

from .configuration_distill_vq import DistillVQConfig
from .data import DataError
from .evaluation import format_markdown_table
from .faiss_bridge import write_index
from .io_utils import write_json, write_text
from .model_card import CARD_DATA_FILE, CARD_FILE

logger = logging.getLogger(__name__)

INDEX_FILE = "index.faiss"
BASELINE_INDEX_FILE = "baseline.faiss"
DOC_IDS_FILE = "doc_ids.json"
INDEX_CONFIG_FILE = "index_config.json"
RESULTS_FILE = "results.json"
RESULTS_MARKDOWN_FILE = "results.md"
CHART_FILE = "recall.png"
CHECKPOINTS_DIR = "checkpoints"
RUN_SIGNATURE_FILE = "run_signature.json"
TRAINER_STATE_FILE = "trainer_state.json"  # a checkpoint is complete once the Trainer has written it, last
CHECKSUMMED_FILES = (INDEX_FILE, DOC_IDS_FILE)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
OWNED_NAMES = frozenset({
    CONFIG_NAME, SAFE_WEIGHTS_NAME, INDEX_FILE, BASELINE_INDEX_FILE, DOC_IDS_FILE, INDEX_CONFIG_FILE, RESULTS_FILE,
    RESULTS_MARKDOWN_FILE, CHART_FILE, CARD_FILE, CARD_DATA_FILE, CHECKPOINTS_DIR, *TOKENIZER_FILES,
})
# A pushed repository's config names the subfolder that carries its document encoder (`hub.push_output_dir`).
ENCODER_SUBFOLDER_KEY = "encoder_subfolder"
EVALUATED_KEY = "evaluated_folder"  # what `distill-vq evaluate` records in its results.json: the folder evaluated
CHART_METRICS = ("recall_vs_exact@10", "recall_vs_exact@100", "mrr@10", "ndcg@10")
REWRITE = "restore the folder from a copy, or write it again with `distill-vq train`"
_JSON_TYPES = {dict: "object", list: "array", str: "string", int: "number", float: "number", bool: "boolean"}


# ----- writing a folder safely -----


def is_output_folder(folder: str | Path) -> bool:
    """Whether `folder` is a distill-vq output folder (it has an `index_config.json`)."""
    return (Path(folder) / INDEX_CONFIG_FILE).is_file()


def check_writable(output_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse an `output_dir` that a run cannot replace: a file, the working folder (or one holding it), or a
    non-empty folder that is not an earlier output folder (unless `overwrite`; its other files are kept anyway)."""
    output_dir = _absolute(output_dir)
    if Path.cwd().is_relative_to(output_dir):
        raise DataError(f"--output-dir {output_dir} is the working folder or holds it, and the run replaces its output "
                        "folder whole; name a new folder, e.g. --output-dir ./distill-vq-output.")
    if output_dir.exists() and not output_dir.is_dir():
        raise DataError(f"{output_dir} is a file; choose a folder for --output-dir.")
    if output_dir.is_dir() and not overwrite and any(output_dir.iterdir()) and not is_output_folder(output_dir):
        raise DataError(
            f"{output_dir} is not empty and not a distill-vq output folder; choose another --output-dir, or pass "
            "--overwrite-output-dir to write into it (files other than the run's own are kept)."
        )


@contextmanager
def output_folder_lock(output_dir: str | Path):
    """Hold the lock file `.X.lock` beside `output_dir` for the block: created with O_CREAT|O_EXCL and holding this
    process's id. A lock whose process is dead is taken over with a warning; one held by a live process (or naming
    none) is refused with a `DataError` naming it."""
    output_dir = _absolute(output_dir)
    lock = _sibling(output_dir, "lock")
    try:
        output_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:  # a file where a folder should be, a read-only place
        raise _unwritable(output_dir, error) from error
    for _ in range(2):  # a dead run's lock is removed, then taken
        try:
            handle = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid = _lock_pid(lock)
            if pid is None or _is_running(pid):
                holder = "names no process" if pid is None else f"is held by process {pid}"
                raise DataError(
                    f"{output_dir} is being written by another distill-vq run: its lock {lock} {holder}. Wait for "
                    f"that run to end or choose another --output-dir; delete {lock} only if no run is going on."
                ) from None
            logger.warning(f"Taking over {lock}: process {pid}, which held it, is gone (killed?).")
            lock.unlink(missing_ok=True)
            continue
        except OSError as error:  # a read-only folder
            raise _unwritable(output_dir, error) from error
        with os.fdopen(handle, "w") as file:
            file.write(f"{os.getpid()}\n")
        break
    else:
        raise DataError(f"Another run took {lock} at the same time; run one at a time into {output_dir}.")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


@contextmanager
def staged_folder(output_dir: str | Path, state: PartialState | None = None, overwrite: bool = False):
    """Yield a new staging folder for a run into `output_dir`, holding its lock; on success the staging folder
    replaces `output_dir` (keeping the entries a run does not own) and the staging folders of killed runs are
    removed; on failure it is removed unless it holds checkpoints (kept for `--resume-from-checkpoint last`).

    With several processes (`state`), all share the folder (the Trainer's checkpoints go there) and only the main
    process locks, creates and moves it; the others leave without waiting, as they write nothing after training.
    """
    output_dir = _absolute(output_dir)
    is_main_process = state is None or state.is_main_process
    if is_main_process:
        check_writable(output_dir, overwrite)  # before anything is written beside it
    with _main_process_lock(output_dir, is_main_process):
        staging = None
        if is_main_process and _recover(output_dir):
            check_writable(output_dir, overwrite)  # the folder put back, too
        if is_main_process:
            staging = _sibling(output_dir, f"staging-{uuid.uuid4().hex[:12]}")
            try:
                staging.mkdir()
            except OSError as error:
                raise _unwritable(output_dir, error) from error
        if state is not None and state.num_processes > 1:
            staging = broadcast_object_list([staging])[0]
        try:
            yield staging
            if is_main_process:
                _swap_in(staging, output_dir)
                for stale in _staging_folders(output_dir):
                    shutil.rmtree(stale, ignore_errors=True)
                    logger.info(f"Removed {stale.name}, the staging folder of a killed run into {output_dir}.")
        except BaseException:
            if is_main_process and not any(staging.glob(f"{CHECKPOINTS_DIR}/checkpoint-*")):
                shutil.rmtree(staging, ignore_errors=True)
            raise


def recover_interrupted_swap(output_dir: str | Path) -> None:
    """Finish what a run killed while replacing `output_dir` left: put `.X.<id>.old` back as X when X is missing,
    or remove its earlier run's files when the new X is in place. Takes the folder's lock when there is anything to
    do (a run replacing X right now makes this a `DataError`)."""
    output_dir = _absolute(output_dir)
    if _old_folders(output_dir):
        with output_folder_lock(output_dir):
            _recover(output_dir)


def last_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of the runs into `output_dir`: in a killed run's staging folder, or in the
    `checkpoints/` of the folder itself; None when there is none.

    The Trainer writes a checkpoint's `trainer_state.json` after its weights, optimizer and RNG states, so a
    checkpoint is complete when that file is a whole JSON object; a run killed while writing it leaves it empty or
    cut, and the checkpoint before is taken instead (with a warning)."""
    output_dir = _absolute(output_dir)
    folders = [output_dir / CHECKPOINTS_DIR, *(staging / CHECKPOINTS_DIR for staging in _staging_folders(output_dir))]
    states = [state for folder in folders for state in folder.glob(f"checkpoint-*/{TRAINER_STATE_FILE}")]
    for state in sorted(states, key=lambda state: state.stat().st_mtime, reverse=True):
        try:
            _read_json(state, dict)
        except DataError:
            logger.warning(f"Skipping {state.parent}: its {TRAINER_STATE_FILE} is incomplete (the run was killed "
                           "while saving it).")
            continue
        return state.parent
    return None


def write_run_signature(folder: Path, signature: dict) -> None:
    """Record what a run trains on (see `check_run_signature`) beside its checkpoints."""
    write_json(folder / CHECKPOINTS_DIR / RUN_SIGNATURE_FILE, signature)


def check_run_signature(checkpoint: str | Path, signature: dict) -> None:
    """Refuse to resume from `checkpoint` when the run that saved it trained on other data or settings: each
    differing entry of `signature` is named. A checkpoint without a recorded signature is resumed with a warning."""
    path = Path(checkpoint).parent / RUN_SIGNATURE_FILE
    if not path.is_file():
        logger.warning(f"{checkpoint} has no {RUN_SIGNATURE_FILE} beside it: resuming without checking that it was "
                       "trained on the same data and settings.")
        return
    recorded = _read_json(path, dict)
    differences = [f"{key} {recorded.get(key)!r} there, {value!r} now" for key, value in signature.items()
                   if recorded.get(key) != value]
    if differences:
        raise DataError(
            f"Cannot resume from {checkpoint}: it was trained on other data or settings ({'; '.join(differences)}). "
            "Resume with the data and flags of that run, or train from scratch without --resume-from-checkpoint."
        )


# ----- the index files and the config -----


def write_index_files(folder: Path, index: faiss.Index, doc_ids: list[str], index_config: dict,
                      baseline_index: faiss.Index | None = None) -> None:
    """Write `index.faiss`, `doc_ids.json`, `baseline.faiss` (faiss's own training of the index, when given) and
    `index_config.json` (with the sha256 of the others) into `folder`."""
    write_index(index, folder / INDEX_FILE)
    write_json(folder / DOC_IDS_FILE, doc_ids)
    names = CHECKSUMMED_FILES
    if baseline_index is not None:
        write_index(baseline_index, folder / BASELINE_INDEX_FILE)
        names = (*names, BASELINE_INDEX_FILE)
    sha256 = {name: _sha256(folder / name) for name in names}
    write_json(folder / INDEX_CONFIG_FILE, {**index_config, "sha256": sha256})


def read_index_files(folder: str | Path, nprobe: int | None = None) -> tuple[faiss.Index, list[str], dict]:
    """`(index, doc_ids, index_config)` of a folder holding `index.faiss`, `doc_ids.json` and `index_config.json`
    (a `distill-vq train` folder, or `write_index_files` output), the index searching `nprobe` lists (default: the
    stored one). Damaged or inconsistent files raise a `DataError` naming the file: the recorded sha256 is verified,
    the index must be an IVF index and `doc_ids` one string per indexed vector."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder; pass a folder written by `distill-vq train` or a Hub repository.")
    missing = [name for name in (INDEX_FILE, DOC_IDS_FILE, INDEX_CONFIG_FILE) if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(missing)}; pass a folder written by `distill-vq train`.")
    index_config = _read_json(folder / INDEX_CONFIG_FILE, dict)
    _verify_sha256(folder, index_config.get("sha256", {}))
    index = _read_ivf_index(folder / INDEX_FILE)
    ivf = faiss.extract_index_ivf(index)
    stored_nprobe = index_config.get("nprobe")
    if not _is_int(stored_nprobe) or not 1 <= stored_nprobe <= ivf.nlist:
        raise DataError(f"{folder / INDEX_CONFIG_FILE}: nprobe={stored_nprobe!r} is not a number of lists between 1 "
                        f"and the index's {ivf.nlist}; {REWRITE}.")
    doc_ids = _read_json(folder / DOC_IDS_FILE, list)
    if len(doc_ids) != index.ntotal:
        raise DataError(f"{folder / DOC_IDS_FILE} holds {len(doc_ids)} ids but {INDEX_FILE} {index.ntotal} vectors; "
                        f"{REWRITE}.")
    if not all(isinstance(doc_id, str) for doc_id in doc_ids):
        raise DataError(f"{folder / DOC_IDS_FILE} holds entries that are not id strings; {REWRITE}.")
    ivf.nprobe = nprobe or stored_nprobe
    return index, doc_ids, index_config


def read_baseline_index(folder: str | Path, index_config: dict, nprobe: int | None = None) -> faiss.Index | None:
    """The faiss baseline that `train` kept in `folder` (`baseline.faiss`, checked against the sha256 recorded in
    `index_config`), searching `nprobe` lists (default: the stored nprobe); None for a folder without one (written
    before distill-vq kept it)."""
    path = Path(folder) / BASELINE_INDEX_FILE
    if not path.is_file():
        return None
    _verify_sha256(Path(folder), index_config.get("sha256", {}), (BASELINE_INDEX_FILE,))
    index = _read_ivf_index(path)
    faiss.extract_index_ivf(index).nprobe = nprobe or index_config["nprobe"]
    return index


def read_config(folder: str | Path, name: str | None = None) -> DistillVQConfig:
    """The `DistillVQConfig` of a saved quantizer's folder (`name` describes it in errors, default: the folder);
    a missing, damaged or invalid `config.json`, or another model's, raises a `ValueError` naming it. When the
    folder carries its document encoder (a repository pushed with `--include-encoder`: `encoder_subfolder`), the
    config's `encoder_name_or_path` is that subfolder, so that whatever loads the encoder from the config uses it."""
    path = Path(folder) / CONFIG_NAME
    where = name or str(folder)
    if not path.is_file():
        raise FileNotFoundError(f"{where} has no {CONFIG_NAME}, which names the quantizer's encoder and shapes; save "
                                "the model with save_pretrained first (or pass a `distill-vq train` folder).")
    values = _read_json(path, dict)
    if values.get("model_type") != DistillVQConfig.model_type:
        raise ValueError(f"{where} holds a {values.get('model_type')!r} model, not a distill_vq quantizer.")
    try:
        config = DistillVQConfig.from_dict(values)
    except ValueError as error:
        raise DataError(f"{path}: {error}") from error
    subfolder = config.encoder_subfolder
    if subfolder is not None:
        parts = Path(subfolder).parts if isinstance(subfolder, str) else ()
        if not parts or Path(subfolder).is_absolute() or ".." in parts:
            raise DataError(f"{path}: {ENCODER_SUBFOLDER_KEY}={subfolder!r} must name a folder inside {where}, such "
                            "as 'encoder'; fix config.json, or push the folder again.")
        config.encoder_name_or_path, config.encoder_revision = str(_absolute(Path(folder) / subfolder)), None
    return config


def read_output_folder(folder: str | Path, nprobe: int | None = None) -> tuple[DistillVQConfig, faiss.Index,
                                                                                 list[str], dict]:
    """`(config, index, doc_ids, index_config)` of an output folder (see `read_index_files`), the index checked
    against the config's dimension and lists."""
    index, doc_ids, index_config = read_index_files(folder, nprobe)
    config = read_config(folder)
    num_lists = faiss.extract_index_ivf(index).nlist
    if (index.d, num_lists) != (config.embedding_dim, config.num_lists):
        raise DataError(f"{Path(folder) / INDEX_FILE} holds {index.d}-d vectors in {num_lists} lists but "
                        f"{CONFIG_NAME} describes {config.embedding_dim}-d ones in {config.num_lists}: the files "
                        f"come from different runs; {REWRITE}.")
    return config, index, doc_ids, index_config


# ----- results -----


def check_results_dir(results_dir: str | Path) -> None:
    """Refuse to write evaluation results into an output folder or a saved model's folder (its own results would
    be replaced, and pushed with the model), or over results files that `distill-vq evaluate` did not write there
    (its `results.json` records the `EVALUATED_KEY`); earlier evaluation results are replaced."""
    results_dir = Path(results_dir)
    if is_output_folder(results_dir) or (results_dir / CONFIG_NAME).is_file():
        raise DataError(f"--results-dir {results_dir} is a distill-vq output or model folder, whose results.json the "
                        "evaluation would replace; choose another folder (default: ./evaluation).")
    present = [name for name in (RESULTS_FILE, RESULTS_MARKDOWN_FILE, CHART_FILE) if (results_dir / name).exists()]
    if present and not _is_evaluation(results_dir / RESULTS_FILE):
        raise DataError(f"--results-dir {results_dir} holds {', '.join(present)} that `distill-vq evaluate` did not "
                        "write, which the evaluation would replace; choose another --results-dir, or move them.")


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


# ----- helpers -----


def _absolute(path: str | Path) -> Path:
    """`path` made absolute without following links (`out/..` is the working folder, not a folder `..`)."""
    return Path(os.path.abspath(Path(path).expanduser()))


def _sibling(output_dir: Path, suffix: str) -> Path:
    """The hidden sibling `.X.<suffix>` of `output_dir` X."""
    return output_dir.with_name(f".{output_dir.name}.{suffix}")


def _staging_folders(output_dir: Path) -> list[Path]:
    return [path for path in output_dir.parent.glob(f".{output_dir.name}.staging-*") if path.is_dir()]


def _old_folders(output_dir: Path) -> list[Path]:
    """Earlier folders that a swap moved aside, newest first."""
    olds = [path for path in output_dir.parent.glob(f".{output_dir.name}.*.old") if path.is_dir()]
    return sorted(olds, key=lambda path: path.stat().st_mtime, reverse=True)


def _paired_staging(old: Path, output_dir: Path) -> Path:
    """The staging folder whose swap moved `.X.<id>.old` aside: `.X.staging-<id>`."""
    run_id = old.name[len(f".{output_dir.name}.") : -len(".old")]
    return _sibling(output_dir, f"staging-{run_id}")


def _unwritable(output_dir: Path, error: OSError) -> DataError:
    return DataError(f"Cannot write beside {output_dir} ({error.strerror}: {error.filename}); choose a writable "
                     "--output-dir.")


@contextmanager
def _main_process_lock(output_dir: Path, is_main_process: bool):
    if is_main_process:
        with output_folder_lock(output_dir):
            yield
    else:
        yield


def _swap_in(staging: Path, output_dir: Path) -> None:
    """Replace `output_dir` by `staging`, carrying over the entries a run does not own (see the module docstring)."""
    if not output_dir.exists():
        os.replace(staging, output_dir)
        return
    old = _sibling(output_dir, staging.name.rpartition("staging-")[2] + ".old")
    os.replace(output_dir, old)
    try:
        _carry_over(old, staging)
        os.replace(staging, output_dir)
    except BaseException:
        _restore(old, output_dir)
        raise
    _remove_owned(old)


def _recover(output_dir: Path) -> bool:
    """Put back or clear the `.old` folders of swaps that a killed run left (the caller holds the lock); return
    whether there were any."""
    olds = _old_folders(output_dir)
    for old in olds:
        if output_dir.exists():
            _remove_owned(old)
        else:
            _restore(old, output_dir)
            logger.warning(f"Restored {output_dir} from {old.name}: a run was killed while replacing it.")
    return bool(olds)


def _restore(old: Path, output_dir: Path) -> None:
    """Move the entries carried over into the new folder back into `old`, then put `old` back as `output_dir`."""
    staging = _paired_staging(old, output_dir)
    if staging.is_dir():
        _carry_over(staging, old)
    os.replace(old, output_dir)


def _carry_over(source: Path, target: Path) -> None:
    """Move the entries of `source` that a run does not own into `target` (unless it has one of that name)."""
    for entry in list(source.iterdir()):
        if entry.name not in OWNED_NAMES and not (target / entry.name).exists():
            os.replace(entry, target / entry.name)


def _remove_owned(folder: Path) -> None:
    """Delete the entries of `folder` that a run owns, then the folder if that leaves it empty."""
    for entry in folder.iterdir():
        if entry.name in OWNED_NAMES and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.name in OWNED_NAMES:
            entry.unlink()
    if any(folder.iterdir()):
        logger.warning(f"Kept {folder}: it holds files that no distill-vq run wrote; move them out and delete it.")
    else:
        folder.rmdir()


def _lock_pid(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _verify_sha256(folder: Path, recorded: dict, names: tuple[str, ...] = CHECKSUMMED_FILES) -> None:
    """Compare the index files `names` with the sha256 that `write_index_files` recorded (folders without them
    pass)."""
    if not isinstance(recorded, dict):
        raise DataError(f"{folder / INDEX_CONFIG_FILE}: sha256 must map file names to digests; {REWRITE}.")
    for name in names:
        if name in recorded and _sha256(folder / name) != recorded[name]:
            raise DataError(f"{folder / name} does not match the sha256 recorded in {INDEX_CONFIG_FILE}: it was "
                            f"changed or damaged after it was written; {REWRITE}.")


def _is_evaluation(path: Path) -> bool:
    """Whether `path` is a `results.json` that `distill-vq evaluate` wrote."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(results, dict) and EVALUATED_KEY in results


def _read_json(path: Path, kind: type) -> dict | list:
    """The JSON value of `path`, which must be a `kind`; a `DataError` naming the file otherwise."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DataError(f"{path} is not valid JSON ({error}); {REWRITE}.") from error
    if not isinstance(value, kind):
        raise DataError(f"{path} holds a JSON {_JSON_TYPES.get(type(value), 'value')} where an "
                        f"{_JSON_TYPES[kind]} belongs; {REWRITE}.")
    return value


def _read_ivf_index(path: Path) -> faiss.Index:
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as error:  # faiss's C++ errors: cut off, empty, not a faiss file
        reason = re.sub(r"^Error in .*? at \S+:\d+: (Error: '.*?' failed: )?", "", str(error).strip())
        raise DataError(f"{path} is not a readable faiss index ({reason}); {REWRITE}.") from error
    try:
        faiss.extract_index_ivf(index)
    except RuntimeError:
        raise DataError(f"{path} holds a faiss {type(faiss.downcast_index(index)).__name__}, not an IVF index; "
                        "pass a folder written by `distill-vq train`.") from None
    return index


__all__ = [
    "BASELINE_INDEX_FILE", "CHART_FILE", "CHECKPOINTS_DIR", "DOC_IDS_FILE", "ENCODER_SUBFOLDER_KEY", "EVALUATED_KEY",
    "INDEX_CONFIG_FILE", "INDEX_FILE", "OWNED_NAMES", "RESULTS_FILE", "RESULTS_MARKDOWN_FILE", "RUN_SIGNATURE_FILE",
    "TRAINER_STATE_FILE", "check_results_dir", "check_run_signature", "check_writable", "is_output_folder",
    "last_checkpoint", "output_folder_lock", "plot_results", "read_baseline_index", "read_config", "read_index_files",
    "read_output_folder", "recover_interrupted_swap", "staged_folder", "write_index_files", "write_results",
    "write_run_signature",
]
