"""A run never loses a user's files: it refuses folders it does not own, keeps what it did not write when replacing
an output folder, holds a lock against a second run, stages in a folder of its own, and a swap that a kill
interrupts is put back by the next command."""

import json
import logging
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DATA, packaged_slice

from distill_vq.cli import main
from distill_vq.data import DataError
from distill_vq.output_folder import (
    OWNED_NAMES, last_checkpoint, output_folder_lock, recover_interrupted_swap, staged_folder,
)

EMBEDDINGS = DATA / "default_data_embeddings"
PRECOMPUTED = ["--doc-embeddings", str(EMBEDDINGS / "docs.npy"), "--query-embeddings", str(EMBEDDINGS / "queries.npy")]
TRAIN = ["train", *PRECOMPUTED, "--max-steps", "2", "--num-lists", "16", "--num-subvectors", "8", "--no-rotation",
         "--disable-tqdm", "true"]



def earlier_run(folder, with_user_files=True):
    """An output folder as an earlier run left it, plus (by default) files of the user's."""
    folder.mkdir(parents=True)
    (folder / "index_config.json").write_text('{"run": "old"}')
    (folder / "results.json").write_text('{"run": "old"}')
    (folder / "checkpoints" / "checkpoint-9").mkdir(parents=True)
    if with_user_files:
        (folder / "src").mkdir()
        (folder / "src" / "notes.py").write_text("# mine")
        (folder / "evaluation").mkdir()
        (folder / "evaluation" / "results.json").write_text('{"evaluated": true}')


def new_run(folder):
    (folder / "index_config.json").write_text('{"run": "new"}')
    (folder / "results.json").write_text('{"run": "new"}')


def names(folder):
    return sorted(path.name for path in folder.iterdir())


def never(*args, **kwargs):
    pytest.fail("the data were loaded: the check came too late")


def test_a_rerun_keeps_the_files_it_does_not_own(tmp_path):
    output_dir = tmp_path / "out"
    earlier_run(output_dir)
    with staged_folder(output_dir) as folder:
        new_run(folder)
    assert names(tmp_path) == ["out"]  # no staging, lock or old folder left
    assert names(output_dir) == ["evaluation", "index_config.json", "results.json", "src"]  # old checkpoints gone
    assert json.loads((output_dir / "results.json").read_text()) == {"run": "new"}
    assert (output_dir / "src" / "notes.py").read_text() == "# mine"
    assert json.loads((output_dir / "evaluation" / "results.json").read_text()) == {"evaluated": True}
    assert {"evaluation", "src"}.isdisjoint(OWNED_NAMES) and "baseline.faiss" in OWNED_NAMES


def test_the_command_rerun_keeps_src_and_the_evaluation(tmp_path, tmp_path_factory):
    output_dir = tmp_path / "out"
    data = packaged_slice(tmp_path_factory.mktemp("data"))  # 1000 documents: the folder is tested, not the data
    train = [*TRAIN, *data]  # the later flags win
    assert main([*train, "--output-dir", str(output_dir)]) == 0
    (output_dir / "src").mkdir()
    (output_dir / "src" / "notes.py").write_text("# mine")
    assert main(["evaluate", str(output_dir), *data, "--results-dir", str(output_dir / "evaluation")]) == 0
    evaluation = (output_dir / "evaluation" / "results.json").read_text()
    baseline = (output_dir / "baseline.faiss").read_bytes()
    assert main([*train, "--output-dir", str(output_dir), "--seed", "7"]) == 0
    assert json.loads((output_dir / "index_config.json").read_text())["seed"] == 7
    assert (output_dir / "baseline.faiss").read_bytes() != baseline  # the run's own file: replaced, not carried over
    assert (output_dir / "src" / "notes.py").read_text() == "# mine"
    assert (output_dir / "evaluation" / "results.json").read_text() == evaluation
    assert names(tmp_path) == ["out"]


def test_a_folder_that_is_not_an_output_folder_needs_overwrite_and_keeps_its_files(tmp_path, capsys):
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_text("keep")
    assert main([*TRAIN, "--output-dir", str(project)]) == 2
    assert "not a distill-vq output folder" in capsys.readouterr().err and names(project) == ["notes.txt"]
    with staged_folder(project, overwrite=True) as folder:
        new_run(folder)
    assert (project / "notes.txt").read_text() == "keep" and (project / "results.json").exists()


def test_a_second_run_is_refused_while_the_first_holds_the_lock(tmp_path, capsys):
    output_dir = tmp_path / "out"
    earlier_run(output_dir)
    with output_folder_lock(output_dir) as lock:  # the first run, alive: this process
        assert lock.name == ".out.lock" and lock.read_text().strip() == str(os.getpid())
        assert main([*TRAIN, "--output-dir", str(output_dir)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("distill-vq: error: ") and len(error.splitlines()) == 1
    assert "being written by another distill-vq run: its lock" in error and f"{tmp_path}/.out.lock" in error
    assert json.loads((output_dir / "results.json").read_text()) == {"run": "old"}
    assert names(tmp_path) == ["out"]  # the lock went with the first run


def test_a_dead_runs_lock_is_taken_over(tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / ".out.lock").write_text(f"{dead.pid}\n")
    with caplog.at_level(logging.WARNING), staged_folder(tmp_path / "out") as folder:
        new_run(folder)
    assert f"Taking over {tmp_path}/.out.lock: process {dead.pid}" in caplog.text
    assert names(tmp_path) == ["out"]


def test_a_lock_naming_no_process_is_refused(tmp_path):
    (tmp_path / ".out.lock").write_text("")
    with pytest.raises(DataError, match="its lock .*/.out.lock names no process"):
        staged_folder(tmp_path / "out").__enter__()


def test_each_run_stages_apart_and_a_killed_runs_checkpoints_are_not_published(tmp_path):
    output_dir = tmp_path / "out"
    killed = tmp_path / ".out.staging-killed"
    (killed / "checkpoints" / "checkpoint-3").mkdir(parents=True)
    (killed / "checkpoints" / "checkpoint-3" / "trainer_state.json").write_text("{}")
    assert last_checkpoint(output_dir) == killed / "checkpoints" / "checkpoint-3"
    stagings = []
    for _ in range(2):
        with staged_folder(output_dir) as folder:
            stagings.append(folder.name)
            assert folder.name.startswith(".out.staging-") and folder != killed
            new_run(folder)
    assert stagings[0] != stagings[1]
    assert names(tmp_path) == ["out"] and names(output_dir) == ["index_config.json", "results.json"]
    assert last_checkpoint(output_dir) is None


def test_a_checkpoint_cut_while_saving_is_passed_over_for_the_one_before(tmp_path, caplog):
    checkpoints = tmp_path / ".out.staging-killed" / "checkpoints"
    for step, state in ((1, '{"global_step": 1}'), (2, ""), (3, '{"global_st')):  # 2 and 3: killed mid-write
        (checkpoints / f"checkpoint-{step}").mkdir(parents=True)
        (checkpoints / f"checkpoint-{step}" / "trainer_state.json").write_text(state)
        time.sleep(0.01)  # the newest is the last written
    with caplog.at_level(logging.WARNING):
        assert last_checkpoint(tmp_path / "out") == checkpoints / "checkpoint-1"
    assert caplog.text.count("is incomplete (the run was killed while saving it)") == 2


def test_a_failed_run_without_checkpoints_leaves_nothing(tmp_path):
    output_dir = tmp_path / "out"
    earlier_run(output_dir)
    with pytest.raises(RuntimeError), staged_folder(output_dir) as folder:
        new_run(folder)
        raise RuntimeError("interrupted")
    assert names(tmp_path) == ["out"] and json.loads((output_dir / "results.json").read_text()) == {"run": "old"}


MOMENTS = {"old": "after-moving-the-old-folder-aside", "src": "after-carrying-src-over",
           "out": "after-the-new-folder-is-in-place"}


def swap_and_die(output_dir, moment):
    """A run's swap of a new output folder into `output_dir`, SIGKILLed right after the chosen step of the swap."""
    real_replace = os.replace

    def replace(source, target):
        real_replace(source, target)
        if moment == Path(target).name or moment == "old" and str(target).endswith(".old"):
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace
    with staged_folder(output_dir) as folder:
        new_run(folder)


def test_a_swap_killed_by_sigkill_is_put_back_by_the_next_command(tmp_path, caplog):
    killed = {}
    for moment in MOMENTS:  # one process per moment of the swap, killed there, all at once
        earlier_run(tmp_path / moment / "out")
        # forked from this process (distill_vq already imported): a fresh interpreter would spend seconds importing
        killed[moment] = multiprocessing.get_context("fork").Process(
            target=swap_and_die, args=(tmp_path / moment / "out", moment))
        killed[moment].start()
    for moment, process in killed.items():
        folder, output_dir = tmp_path / moment, tmp_path / moment / "out"
        process.join()
        assert process.exitcode == -signal.SIGKILL, MOMENTS[moment]
        assert any(path.name.endswith(".old") for path in folder.iterdir())
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            recover_interrupted_swap(output_dir)  # what every command on the folder does first
        assert json.loads((output_dir / "results.json").read_text()) == {"run": "new" if moment == "out" else "old"}
        assert (output_dir / "src" / "notes.py").read_text() == "# mine"
        assert (output_dir / "evaluation" / "results.json").exists()
        assert not any(path.name.endswith((".old", ".lock")) for path in folder.iterdir())
        assert ("Restored" in caplog.text) == (moment != "out"), MOMENTS[moment]
        stale = [path for path in folder.iterdir() if path.name.startswith(".out.staging-")]
        assert not any((path / "src").exists() for path in stale)  # nothing of the user's is left in a staging folder
        with staged_folder(output_dir) as new:  # and the next run cleans up
            new_run(new)
        assert names(folder) == ["out"] and (output_dir / "src" / "notes.py").exists()


def test_search_restores_a_folder_moved_aside_and_says_so(tmp_path, capsys, caplog):
    output_dir = tmp_path / "out"
    earlier_run(output_dir, with_user_files=False)
    os.replace(output_dir, tmp_path / ".out.0123abcd.old")
    with caplog.at_level(logging.WARNING):
        assert main(["search", str(output_dir), "anything"]) == 2  # restored, then refused: it has no index files
    assert f"Restored {output_dir} from .out.0123abcd.old" in caplog.text
    assert "lacks index.faiss" in capsys.readouterr().err and names(tmp_path) == ["out"]


@pytest.mark.parametrize("where, message", [
    (lambda tmp_path: ".", "is the working folder or holds it"),
    (lambda tmp_path: "..", "is the working folder or holds it"),
    (lambda tmp_path: "a-file/out", "Cannot write beside"),
    (lambda tmp_path: "a-file", "is a file; choose a folder"),
], ids=["working-folder", "parent-folder", "under-a-file", "a-file"])
def test_output_dirs_that_cannot_be_replaced_are_refused_before_loading(tmp_path, monkeypatch, capsys, where, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("keep")
    monkeypatch.setattr("distill_vq.pipeline.load_task", never)
    assert main([*TRAIN, "--output-dir", where(tmp_path)]) == 2
    assert message in capsys.readouterr().err
    assert names(tmp_path) == ["a-file"] and (tmp_path / "a-file").read_text() == "keep"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_parent_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    read_only = tmp_path / "read-only"
    read_only.mkdir(mode=0o500)
    monkeypatch.setattr("distill_vq.pipeline.load_task", never)
    assert main([*TRAIN, "--output-dir", str(read_only / "out")]) == 2
    assert "Cannot write beside" in capsys.readouterr().err


def test_evaluate_refuses_to_write_into_an_output_folder(tmp_path, capsys):
    for name in ("first", "second"):
        earlier_run(tmp_path / name, with_user_files=False)
    shutil.copy(tmp_path / "second" / "results.json", tmp_path / "results.before")
    for results_dir in ("second", "first"):  # another output folder, or the evaluated one itself
        assert main(["evaluate", str(tmp_path / "first"), "--results-dir", str(tmp_path / results_dir)]) == 2
        assert f"--results-dir {tmp_path / results_dir} is a distill-vq output" in capsys.readouterr().err
    assert (tmp_path / "second" / "results.json").read_text() == (tmp_path / "results.before").read_text()
