"""examples/train_beir.py runs end to end on a slice of the packaged data with the packaged encoder."""

import gzip
import re
import runpy
import shutil
import sys
from pathlib import Path

from conftest import DEFAULT_DATA

EXAMPLE = Path(__file__).parents[1] / "examples" / "train_beir.py"


def test_train_beir_example_reports_the_recall_of_both_indexes(tmp_path, monkeypatch, capsys):
    """On the packaged data as a BEIR folder, its documents shortest first: the example's first 300 documents (all
    distinct) average 16 words instead of 51, and encoding them took most of the run. Run as `python
    examples/train_beir.py ...` runs it, in this process (a fresh one would spend ~10 s importing torch again)."""
    folder = tmp_path / "debian"
    shutil.copytree(DEFAULT_DATA, folder)  # the same queries and qrels
    with gzip.open(DEFAULT_DATA / "corpus.jsonl.gz", "rt") as handle:
        lines = handle.readlines()
    with gzip.open(folder / "corpus.jsonl.gz", "wt") as handle:
        handle.writelines(sorted(lines, key=len))  # every document, unchanged
    monkeypatch.setattr(sys, "argv", [str(EXAMPLE), str(folder), "--max-docs", "300", "--max-queries", "50",
                                      "--max-steps", "5", "--no-rotation"])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    output = capsys.readouterr().out
    assert "300 documents, 50 training and 50 test queries, IVF4,PQ16x8" in output
    assert re.search(r"recall@10 vs exact: faiss 0\.\d{3} -> distill-vq 0\.\d{3}", output)
