"""1 vs N data-parallel processes: the same `distill-vq train` run (same global batch and steps), timed.

    python benchmarks/processes.py --processes 1 2 --max-steps 100

Runs the command on the packaged default data with its precomputed embeddings (no encoding), once per process
count, under `accelerate launch` with `--config-file` (default: the CPU config) for N > 1 and plainly for 1. The global batch is
`--global-batch-size`, split evenly over the processes. Reports the training's steps/second (from the run's
results.json), the whole command's wall time, and recall@10 vs exact; writes `processes.json` / `.md`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from distill_vq.evaluation import format_markdown_table
from distill_vq.io_utils import write_json, write_text

ROOT = Path(__file__).parents[1]
EMBEDDINGS = ROOT / "tests" / "data" / "default_data_embeddings"
CPU_CONFIG = ROOT / "examples" / "accelerate" / "cpu_2_processes.yaml"


def run(num_processes: int, args, output_dir: Path) -> dict:
    """Train with `num_processes` processes; return the row of the table."""
    launcher = [sys.executable, "-m", "distill_vq"]
    if num_processes > 1:
        launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(args.config_file),
                    "--num_processes", str(num_processes), "--main_process_port", "0", "-m", "distill_vq"]
    command = [*launcher, "train", "--doc-embeddings", str(EMBEDDINGS / "docs.npy"), "--query-embeddings",
               str(EMBEDDINGS / "queries.npy"), "--max-steps", str(args.max_steps), "--batch-size",
               str(args.global_batch_size // num_processes), "--output-dir", str(output_dir), "--disable-tqdm", "true"]
    threads = max(1, (os.cpu_count() or 1) // num_processes)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo", "TOKENIZERS_PARALLELISM": "false"}
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    wall_seconds = time.perf_counter() - start
    results = json.loads((output_dir / "results.json").read_text())
    distilled = results["results"][-1]
    return {
        "processes": num_processes, "threads/process": threads, "global batch": results["batch_size"],
        "steps": results["training_steps"], "training_seconds": results["training_seconds"],
        "steps/second": results["training_steps"] / results["training_seconds"], "wall_seconds": wall_seconds,
        "recall_vs_exact@10": distilled["recall_vs_exact@10"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--global-batch-size", type=int, default=64)
    parser.add_argument("--config-file", type=Path, default=CPU_CONFIG,
                        help="accelerate config of the N-process runs (e.g. examples/accelerate/multi_gpu_bf16.yaml)")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        rows = [run(count, args, Path(scratch) / f"run-{count}") for count in args.processes]
    settings = vars(args) | {"output_dir": str(args.output_dir), "config_file": str(args.config_file)}
    write_json(args.output_dir / "processes.json", {"settings": settings,
                                                     "cpu_count": os.cpu_count(), "rows": rows})
    table = format_markdown_table(rows)
    write_text(args.output_dir / "processes.md", table + "\n")
    print(table)


if __name__ == "__main__":
    main()
