"""Seconds per distillation step of `DistillVQTrainer`, and where they go, at given bytes and threads.

    python benchmarks/step_speed.py --bytes 16 48 --threads 1 2
    python benchmarks/step_speed.py --bytes 16 --profile          # adds torch.profiler's table of operators

faiss trains `OPQ{m},IVF{lists},PQ{m}x8` on `--train-docs` documents of the corpus (its Debian embeddings by
default); `--steps` steps of 64 training queries with their teacher top-200 among every document follow. Each line
gives the mean seconds per step and the seconds per step spent in the soft assignment's forward and backward
(`SoftAssignment`) and in the IVF list assignment (`DistillVQModel.assign_lists`). Run it at two commits (e.g. in a
`git worktree`) to compare them.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import faiss
import numpy as np
import torch
from datasets import Dataset
from torch.profiler import ProfilerActivity, profile

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.quantizers import product
from distill_vq.sampling import CandidateMiner
from distill_vq.trainer import DistillVQTrainer, DistillVQTrainingArguments


class PartTimer:
    """Adds the wall seconds of calls to a few functions, by name, while installed."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.originals = {}

    def wrap(self, owner, attribute: str, name: str, static: bool = False) -> None:
        function = getattr(owner, attribute)
        self.originals[(owner, attribute)] = owner.__dict__[attribute]

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[name] += time.perf_counter() - start

        setattr(owner, attribute, staticmethod(timed) if static else timed)

    def restore(self) -> None:
        for (owner, attribute), original in self.originals.items():
            setattr(owner, attribute, original)


def seconds_per_step(model, docs: np.ndarray, queries: np.ndarray, steps: int, profile_operators: bool = False) -> float:
    """Mean wall seconds of `steps` distillation steps of 64 `queries (>= 64 * steps, dim)` with their teacher
    top-200 among `docs (N, dim)` (mining and the trainer's setup not counted)."""
    train = Dataset.from_dict({"query_embedding": queries[: 64 * steps]}).map(
        CandidateMiner(docs, 200, 0, seed=0), batched=True, batch_size=1024)
    with tempfile.TemporaryDirectory() as scratch:
        training_args = DistillVQTrainingArguments(
            output_dir=scratch, max_steps=steps, per_device_train_batch_size=64, save_strategy="no", report_to=[],
            use_cpu=True, disable_tqdm=True, logging_steps=10**6, seed=0)
        trainer = DistillVQTrainer(model, training_args, train, docs)
        start = time.perf_counter()
        if profile_operators:
            with profile(activities=[ProfilerActivity.CPU]) as profiler:
                trainer.train()
            print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))
        else:
            trainer.train()
        return (time.perf_counter() - start) / steps


def time_steps(docs: np.ndarray, queries: np.ndarray, num_bytes: int, args) -> dict:
    """Seconds per step (and per part) of `args.steps` steps at `num_bytes` bytes per vector."""
    config = DistillVQConfig(embedding_dim=docs.shape[1], num_lists=args.num_lists, num_subvectors=num_bytes,
                             use_rotation=True)
    model = DistillVQModel.from_embeddings(docs, config, seed=0, max_train_docs=args.train_docs)
    timer = PartTimer()
    if hasattr(product, "SoftAssignment"):  # absent before commit c33abc2, whose steps this script compares
        timer.wrap(product.SoftAssignment, "forward", "soft assignment forward", static=True)
        timer.wrap(product.SoftAssignment, "backward", "soft assignment backward", static=True)
    timer.wrap(DistillVQModel, "assign_lists", "list assignment")
    try:
        seconds = seconds_per_step(model, docs, queries, args.steps, args.profile)
    finally:
        timer.restore()
    return {"step": seconds, **{name: value / args.steps for name, value in timer.seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path(__file__).parents[2] / "shared/data/debian-descriptions")
    parser.add_argument("--bytes", type=int, nargs="+", default=[16, 48])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--num-lists", type=int, default=1024)
    parser.add_argument("--train-docs", type=int, default=5000, help="faiss's training sample")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's operator table")
    args = parser.parse_args()
    embeddings = args.corpus / "embeddings" / "all-MiniLM-L6-v2"
    docs = np.load(embeddings / "docs.npy").astype(np.float32)
    queries = np.load(embeddings / "queries.npy").astype(np.float32)
    for threads in args.threads:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)
        for num_bytes in args.bytes:
            seconds = time_steps(docs, queries, num_bytes, args)
            parts = ", ".join(f"{name} {value:.3f}" for name, value in seconds.items() if name != "step")
            print(f"{num_bytes} bytes, {threads} thread(s): {seconds['step']:.3f} s per step ({parts})", flush=True)


if __name__ == "__main__":
    main()
