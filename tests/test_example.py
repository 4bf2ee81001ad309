"""examples/train_beir.py runs end to end on a slice of the packaged data with the packaged encoder."""

import gzip
import re
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import DEFAULT_DATA

EXAMPLE = Path(__file__).parents[1] / "examples" / "train_beir.py"


def test_train_beir_example_reports_the_recall_of_both_indexes(tmp_path):
    """On the packaged data as a BEIR folder, its documents shortest first: the example's first 300 documents (all
    distinct) average 16 words instead of 51, and encoding them took most of the run."""
    folder = tmp_path / "debian"
    shutil.copytree(DEFAULT_DATA, folder)  # the same queries and qrels
    with gzip.open(DEFAULT_DATA / "corpus.jsonl.gz", "rt") as handle:
        lines = handle.readlines()
    with gzip.open(folder / "corpus.jsonl.gz", "wt") as handle:
        handle.writelines(sorted(lines, key=len))  # every document, unchanged
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(folder), "--max-docs", "300", "--max-queries", "50", "--max-steps", "5",
         "--no-rotation"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "300 documents, 50 training and 50 test queries, IVF4,PQ16x8" in result.stdout
    assert re.search(r"recall@10 vs exact: faiss 0\.\d{3} -> distill-vq 0\.\d{3}", result.stdout)
