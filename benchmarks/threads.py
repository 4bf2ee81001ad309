"""Threads under load: the seconds of faiss's OPQ and RQ training and of a distillation step with 1 and 2 threads,
on an idle machine and beside another CPU job, with OpenMP's default and its passive wait policy.

    python benchmarks/threads.py                 # writes results/threads/results.{json,md}

Each measurement is a fresh process (OpenMP reads `OMP_WAIT_POLICY` when it starts) on the Debian embeddings
(`--corpus`): faiss trains `OPQ16,IVF256,PQ16x8` and `IVF256,RQ16x8_Nnone` on `--train-docs` documents, then a
`DistillVQModel` from the OPQ index runs `--steps` distillation steps of 64 queries against every document. The
load is another process running `--load-threads` threads of float32 matrix products for as long as the
measurements under load last. OpenMP's default wait policy spins at its barriers; a spinning thread holds a core
that a thread of the other job needs, so with as many threads as cores, both jobs slow down beyond their share.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

LOAD_JOB = """
import sys, torch
torch.set_num_threads(int(sys.argv[1]))
matrix = torch.randn(1024, 1024)
while True:
    matrix = (matrix @ matrix).tanh_()
"""


def measure(corpus: Path, threads: int, train_docs: int, steps: int) -> dict:
    """Seconds of OPQ training, RQ training and a distillation step, on `threads` threads (in this process)."""
    import faiss
    import numpy as np
    import torch
    from step_speed import seconds_per_step

    from distill_vq import DistillVQModel

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    embeddings = corpus / "embeddings" / "all-MiniLM-L6-v2"
    docs = np.load(embeddings / "docs.npy").astype(np.float32)
    queries = np.load(embeddings / "queries.npy").astype(np.float32)
    sample = docs[np.random.default_rng(0).choice(len(docs), train_docs, replace=False)]
    seconds, indexes = {}, {}
    for name, factory in (("opq_train", "OPQ16,IVF256,PQ16x8"), ("rq_train", "IVF256,RQ16x8_Nnone")):
        indexes[name] = faiss.index_factory(docs.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        start = time.perf_counter()
        indexes[name].train(sample)
        seconds[name] = time.perf_counter() - start
    seconds["distill_step"] = seconds_per_step(DistillVQModel.from_faiss(indexes["opq_train"]), docs, queries, steps)
    return seconds


def run_measurement(args, threads: int, wait_policy: str | None) -> dict:
    """`measure` in a fresh process with `OMP_WAIT_POLICY` set (or unset: OpenMP's default)."""
    environment = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if wait_policy:
        environment["OMP_WAIT_POLICY"] = wait_policy
    command = [sys.executable, __file__, "--measure", "--threads", str(threads), "--corpus", str(args.corpus),
               "--train-docs", str(args.train_docs), "--steps", str(args.steps)]
    output = subprocess.run(command, env=environment, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])


def markdown(rows: list[dict], header: str) -> str:
    names = ["load", "wait_policy", "threads", "opq_train", "rq_train", "distill_step"]
    lines = [header, "", "| " + " | ".join(names) + " |", "| " + " | ".join("---" for _ in names) + " |"]
    for row in rows:
        cells = [row[name] if isinstance(row[name], str) else f"{row[name]:.2f}" if isinstance(row[name], float)
                 else str(row[name]) for name in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path(__file__).parents[2] / "shared/data/debian-descriptions")
    parser.add_argument("--train-docs", type=int, default=2000, help="faiss's training sample")
    parser.add_argument("--steps", type=int, default=5, help="distillation steps timed")
    parser.add_argument("--load-threads", type=int, default=2, help="threads of the CPU job beside the loaded runs")
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results" / "threads")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.corpus, args.threads, args.train_docs, args.steps)))
        return

    from distill_vq.io_utils import write_json, write_text

    rows = []
    for load in (0, args.load_threads):
        job = subprocess.Popen([sys.executable, "-c", LOAD_JOB, str(load)]) if load else None
        try:
            for wait_policy in (None, "PASSIVE"):
                for threads in (1, 2):
                    row = {"load": f"{load}-thread job" if load else "idle", "wait_policy": wait_policy or "default",
                           "threads": threads, "load_average": os.getloadavg()[0]}
                    row.update(run_measurement(args, threads, wait_policy))
                    print(row, flush=True)
                    rows.append(row)
        finally:
            if job is not None:
                job.kill()
    write_json(args.output_dir / "results.json", {"settings": {k: str(v) for k, v in vars(args).items()},
                                                  "cpu_count": os.cpu_count(), "rows": rows})
    header = (f"Seconds on {os.cpu_count()} cores: faiss training on {args.train_docs} Debian documents "
              f"(`OPQ16,IVF256,PQ16x8`, `IVF256,RQ16x8_Nnone`) and one distillation step (mean of {args.steps}); "
              f"loaded rows run beside a {args.load_threads}-thread matrix-product job. Command: "
              f"`python benchmarks/threads.py`.")
    write_text(args.output_dir / "results.md", markdown(rows, header))


if __name__ == "__main__":
    main()
