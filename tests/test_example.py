"""examples/train_beir.py runs end to end on a slice of the packaged data with the packaged encoder."""

import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[1] / "examples" / "train_beir.py"


def test_train_beir_example_reports_the_recall_of_both_indexes():
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--max-docs", "300", "--max-queries", "100", "--max-steps", "5",
         "--no-rotation"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "300 documents, 100 training and 100 test queries, IVF4,PQ16x8" in result.stdout
    assert re.search(r"recall@10 vs exact: faiss 0\.\d{3} -> distill-vq 0\.\d{3}", result.stdout)
