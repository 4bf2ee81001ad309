"""Scale benchmark: the library's stages on corpora of 10k, 100k and 1M documents (384-d, 16 bytes per vector),
with the seconds and peak memory of each stage and the growth exponent of each stage's cost in N.

    OMP_NUM_THREADS=1 python benchmarks/scale.py --sizes 10000 100000 1000000
    python benchmarks/scale.py --plan 10000000        # disk, memory and projected time of 10M, without running

Corpus: the Debian all-MiniLM-L6-v2 embeddings (`--real-docs`, default the 59,093 documents of
../shared/data/debian-descriptions, else the packaged 5,000) plus synthetic documents drawn around them: a random
real document plus isotropic Gaussian noise whose norm is that document's distance to its nearest real neighbour
(`--noise-scale` times it; floored at the 5th percentile of those distances, so that duplicates get noise too),
L2-normalised like the real vectors. The corpus of N documents is the first N rows of one float32 `.npy` in
`--cache-dir`: the real documents in a seeded random order, then the synthetic ones, written block by block into a
memory map (never held in memory whole; each block's random draws depend only on the seed and the block, so the
file of a larger N starts with the corpus of a smaller one). `corpus` in results.json compares the synthetic
documents' distance to the nearest real document with the real documents' nearest-neighbour distances. Queries
are the real Debian queries (no text is encoded): `--eval-queries` held out for the evaluation, and
`--max-steps x --batch-size` others for the training.

Stages, each timed with its peak memory, for each N (faiss and torch on `--threads` threads):
- `faiss init`: `DistillVQModel.from_embeddings` (faiss trains `OPQ{m},IVF{auto},PQ{m}x8` on a sample of
  `faiss_bridge.training_sample_size` documents; `--no-rotation` drops OPQ);
- `mining`: teacher top-200 of the training queries by blocked exact search (`sampling.CandidateMiner`);
- `distill setup`: `DistillVQTrainer(...)` (input checks, which read every document once, the ranking temperature);
- `distill step`: `--max-steps` steps of `DistillVQTrainer.train`, reported per step;
- `export`: `model.to_faiss(docs)` (every document encoded and stored);
- `evaluation`: `evaluation.compare_indexes` on the held-out queries (their exact top-100 by blocked exact search).

Memory: a thread samples this process's /proc/self/status every `--memory-interval` seconds; a stage's
`peak_anon_mb` is the largest RssAnon (private memory: numpy, torch and faiss allocations) while it ran and
`peak_rss_mb` the largest VmRSS, which adds the pages of the memory-mapped corpus the stage read (page cache the
kernel can drop). Results merge into `--output-dir`'s results.json when the settings match, so sizes can run
separately: `results.json`, `results.md` (rewritten after every stage) and `scale.png` (seconds against N on log
axes, per stage, with each stage's fitted exponent: the slope of `numpy.polyfit(log N, log seconds, 1)`).
Flags it does not know go to `DistillVQTrainingArguments`, as in compare_faiss.py.

results/scale/ is `--no-rotation` (IVF,PQ): OPQ's training, capped by faiss at 65,536 documents, took 1,298 of the
1,415 seconds of the 100k run (results/scale/opq/, a loaded machine) and would dominate every size from there on.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np
import torch
from compare_faiss import machine_facts, training_arguments
from datasets import Dataset

from distill_vq import DistillVQModel
from distill_vq.configuration_distill_vq import DistillVQConfig
from distill_vq.evaluation import compare_indexes, format_markdown_table
from distill_vq.faiss_bridge import training_sample_size
from distill_vq.io_utils import atomic_path, write_json, write_text
from distill_vq.pipeline import auto_num_lists
from distill_vq.sampling import CandidateMiner
from distill_vq.trainer import DistillVQTrainer, DistillVQTrainingArguments

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = ROOT.parent / "shared" / "data" / "debian-descriptions" / "embeddings" / "all-MiniLM-L6-v2"
PACKAGED = ROOT / "tests" / "data" / "default_data_embeddings"
DEFAULT_EMBEDDINGS = DEBIAN if (DEBIAN / "docs.npy").is_file() else PACKAGED
BLOCK_ROWS = 65536  # synthetic documents drawn and written per block
DIAGNOSTIC_ROWS = 2000  # synthetic documents whose distance to the real ones is reported
STAGES = ["faiss init", "mining", "distill setup", "distill step", "export", "evaluation"]
COLUMNS = ["num_docs", "stage", "seconds", "peak_anon_mb", "peak_rss_mb", "start_anon_mb", "note"]
MB = 2**20
# The settings that must match for the results of two runs to share one table.
RUN_KEYS = ("real_docs", "real_queries", "bytes", "no_rotation", "max_train_docs", "max_steps", "batch_size",
            "eval_queries", "nprobe", "threads", "noise_scale", "seed", "training_arguments")


# ----- the corpus -----


def nearest_neighbour_distances(real: np.ndarray) -> np.ndarray:
    """`(R,)` L2 distance of each real document to its nearest other real document (exact search)."""
    squared, _ = faiss.knn(real, real, 2)  # the first result is the document itself (or an exact duplicate)
    return np.sqrt(np.maximum(squared[:, 1], 0))


def draw_block(real: np.ndarray, noise_norms: np.ndarray, num_rows: int, seed: int, block: int) -> np.ndarray:
    """`(num_rows, dim)` synthetic documents: random real ones plus Gaussian noise of norm ~ `noise_norms[parent]`,
    L2-normalised; the draws depend only on `seed` and `block`."""
    rng = np.random.default_rng([seed, block])
    parents = rng.integers(0, len(real), num_rows)
    noise = rng.standard_normal((num_rows, real.shape[1]), dtype=np.float32)
    noise *= (noise_norms[parents] / math.sqrt(real.shape[1]))[:, None]
    docs = real[parents] + noise
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    return docs


def build_corpus(path: Path, real: np.ndarray, num_rows: int, noise_scale: float, seed: int) -> dict:
    """Write the `(num_rows, dim)` float32 corpus to `path` block by block (see the module docstring); return how
    it was made."""
    start = time.perf_counter()
    nearest = nearest_neighbour_distances(real)
    noise_norms = noise_scale * np.maximum(nearest, np.percentile(nearest, 5)).astype(np.float32)
    order = np.random.default_rng(seed).permutation(len(real))
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(num_rows, real.shape[1]))
        out[: min(num_rows, len(real))] = real[order[:num_rows]]
        for block, first in enumerate(range(len(real), num_rows, BLOCK_ROWS)):
            last = min(first + BLOCK_ROWS, num_rows)
            out[first:last] = draw_block(real, noise_norms, last - first, seed, block)
            print(f"  corpus: {last} / {num_rows} rows", end="\r", flush=True)
        out.flush()
        del out
    facts = {"num_rows": num_rows, "num_real": min(num_rows, len(real)), "noise_scale": noise_scale, "seed": seed,
             "seconds": round(time.perf_counter() - start, 1),
             "real_nearest_neighbour_distance_p5_p50_p95": percentiles(nearest)}
    if num_rows > len(real):
        synthetic = np.load(path, mmap_mode="r")[len(real) : len(real) + DIAGNOSTIC_ROWS]
        squared, _ = faiss.knn(np.ascontiguousarray(synthetic), real, 1)
        facts["synthetic_distance_to_nearest_real_p5_p50_p95"] = percentiles(np.sqrt(np.maximum(squared[:, 0], 0)))
    print(f"  corpus: {num_rows} rows in {facts['seconds']} s -> {path}", flush=True)
    return facts


def percentiles(values: np.ndarray) -> list[float]:
    return [round(float(value), 4) for value in np.percentile(values, [5, 50, 95])]


def corpus_tag(args) -> str:
    """What decides the corpus's rows: the real documents (path and size), the noise scale and the seed."""
    source = Path(args.real_docs).resolve()
    key = f"{source}:{source.stat().st_size}:{args.noise_scale}:{args.seed}"
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def cached_corpora(args) -> dict[int, Path]:
    """Rows -> path of each corpus file already in the cache for these settings."""
    tag = corpus_tag(args)
    return {int(path.stem.rsplit("-", 1)[1]): path for path in Path(args.cache_dir).glob(f"docs-{tag}-*.npy")}


def load_corpus(args, num_rows: int) -> tuple[np.ndarray, dict]:
    """The memory-mapped corpus of at least `num_rows` rows (built if the cache has none) and how it was made."""
    cached = {rows: path for rows, path in cached_corpora(args).items() if rows >= num_rows}
    if cached:
        path = cached[min(cached)]
    else:
        path = Path(args.cache_dir) / f"docs-{corpus_tag(args)}-{num_rows}.npy"
        print(f"Building the corpus of {num_rows} documents", flush=True)
        real = np.ascontiguousarray(np.load(args.real_docs), dtype=np.float32)
        write_json(path.with_suffix(".json"), build_corpus(path, real, num_rows, args.noise_scale, args.seed))
    facts = json.loads(path.with_suffix(".json").read_text())
    return np.load(path, mmap_mode="r"), {**facts, "path": str(path)}


def split_queries(args) -> tuple[np.ndarray, np.ndarray]:
    """`(eval_queries (E, dim), train_queries (T, dim))`: disjoint random real queries, float32."""
    queries = np.load(args.real_queries, mmap_mode="r")
    needed = args.eval_queries + args.max_steps * args.batch_size
    if needed > len(queries):
        raise ValueError(f"--eval-queries {args.eval_queries} + --max-steps x --batch-size "
                         f"{args.max_steps * args.batch_size} need {needed} queries but {args.real_queries} has "
                         f"{len(queries)}; lower them.")
    chosen = np.asarray(queries[np.random.default_rng(args.seed).permutation(len(queries))[:needed]], dtype=np.float32)
    return chosen[: args.eval_queries], chosen[args.eval_queries :]


# ----- measuring -----


class MemorySampler:
    """Peak RssAnon and VmRSS of this process while a stage runs, read from /proc/self/status by a thread."""

    FIELDS = ("VmRSS", "RssAnon")

    def __init__(self, interval: float):
        self.interval = interval
        self.peaks = self.read()
        self.lock = threading.Lock()
        threading.Thread(target=self.run, daemon=True).start()

    def read(self) -> dict[str, float]:
        """The current values of `FIELDS`, in MiB."""
        values = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in self.FIELDS:
                values[name] = int(value.split()[0]) / 1024  # kB
        return values

    def run(self) -> None:
        while True:
            time.sleep(self.interval)
            current = self.read()
            with self.lock:
                self.peaks = {name: max(self.peaks[name], current[name]) for name in self.FIELDS}

    @contextmanager
    def stage(self, row: dict):
        """Fill `row` with the block's seconds and memory peaks (`*_mb`)."""
        gc.collect()
        current = self.read()
        with self.lock:
            self.peaks = current
        start = time.perf_counter()
        yield row
        row["seconds"] = time.perf_counter() - start
        with self.lock:
            peaks = {name: max(self.peaks[name], value) for name, value in self.read().items()}
        row.update(peak_anon_mb=round(peaks["RssAnon"]), peak_rss_mb=round(peaks["VmRSS"]),
                   start_anon_mb=round(current["RssAnon"]))


def run_size(docs: np.ndarray, queries: tuple[np.ndarray, np.ndarray], args, training_args, sampler: MemorySampler,
             record) -> None:
    """Every stage on `docs (N, dim)`; `record(row)` after each."""
    num_docs, dim = docs.shape
    eval_queries, train_queries = queries
    config = scale_config(num_docs, dim, vars(args))
    sample = training_sample_size(config, num_docs, args.max_train_docs)

    def stage(name: str, note: str = "") -> dict:
        print(f"[{num_docs}] {name}", flush=True)
        return {"num_docs": num_docs, "stage": name, "note": note}

    with sampler.stage(stage("faiss init", f"{config.index_factory_string}, trained on {sample} docs")) as row:
        model = DistillVQModel.from_embeddings(docs, config, seed=args.seed, max_train_docs=args.max_train_docs)
    record(row)
    miner = CandidateMiner(docs, training_args.num_teacher_candidates, training_args.num_random_candidates,
                           seed=args.seed)
    with sampler.stage(stage("mining", f"top-{training_args.num_teacher_candidates} of {len(train_queries)} "
                                       "queries")) as row:
        queries = Dataset.from_dict({"query_embedding": train_queries})
        mined = queries.map(miner, batched=True, batch_size=1024, new_fingerprint=miner.fingerprint(queries._fingerprint))
    record(row)
    with sampler.stage(stage("distill setup")) as row:
        trainer = DistillVQTrainer(model, training_args, mined, docs)
    record(row)
    with sampler.stage(stage("distill step")) as row:
        trainer.train()
    steps = trainer.state.global_step
    row.update(total_seconds=row["seconds"], steps=steps, seconds=row["seconds"] / steps,
               note=f"{steps} steps of {training_args.per_device_train_batch_size} queries, {row['seconds']:.1f} s")
    record(row)
    with sampler.stage(stage("export")) as row:
        index = model.to_faiss(docs)
    record(row)
    with sampler.stage(stage("evaluation")) as row:
        # no qrels: the rows stand for the ids (the synthetic documents have no labels)
        metrics = compare_indexes({"distill-vq": index}, docs, range(num_docs), eval_queries, None)["distill-vq"]
    row.update(metrics, note=f"{len(eval_queries)} queries, recall@10 vs exact "
                             f"{metrics['recall_vs_exact@10']:.3f} at nprobe {config.nprobe}")
    record(row)


# ----- results -----


def fit_exponents(rows: list[dict]) -> dict[str, dict]:
    """Per stage measured at two sizes or more: the slope of log seconds against log N over every size
    (`exponent`) and between the two largest (`last_exponent`: a fixed cost hides the growth at small N), and the
    largest N's seconds."""
    fits = {}
    for stage in STAGES:
        points = sorted((row["num_docs"], row["seconds"]) for row in rows if row["stage"] == stage)
        if len(points) >= 2:
            sizes, seconds = np.log(np.array(points)).T
            fits[stage] = {"exponent": round(float(np.polyfit(sizes, seconds, 1)[0]), 3),
                           "last_exponent": round(float((seconds[-1] - seconds[-2]) / (sizes[-1] - sizes[-2])), 3),
                           "largest_num_docs": points[-1][0], "seconds": points[-1][1]}
    return fits


def write_results(results: dict, output_dir: Path) -> None:
    """results.json, results.md and scale.png, each written atomically."""
    rows = sorted(results["rows"], key=lambda row: (row["num_docs"], STAGES.index(row["stage"])))
    results["rows"] = rows
    fits = fit_exponents(rows)
    results["exponents"] = {stage: fit["exponent"] for stage, fit in fits.items()}
    write_json(output_dir / "results.json", results)
    settings, corpus = results["settings"], results["corpus"]
    exponents = [{"stage": stage, "exponent": fit["exponent"], "last_exponent": fit["last_exponent"]}
                 for stage, fit in fits.items()]
    loads = ", ".join(f"{size}: {load[0]:.1f} -> {load[1]:.1f}" for size, load in results["load_average"].items())
    header = (
        f"{settings['bytes']} bytes/vector ({'IVF,PQ' if settings['no_rotation'] else 'OPQ,IVF,PQ'}, lists: "
        f"`pipeline.auto_num_lists`), nprobe {settings['nprobe']}, {settings['threads']} thread(s), "
        f"{settings['max_steps']} distillation steps of {settings['batch_size']} queries; corpus: "
        f"{corpus['num_real']} real documents then synthetic ones (noise scale {corpus['noise_scale']}); real "
        f"nearest-neighbour distance p5/p50/p95 {corpus['real_nearest_neighbour_distance_p5_p50_p95']}, synthetic "
        f"to nearest real {corpus.get('synthetic_distance_to_nearest_real_p5_p50_p95')}. Seconds are wall "
        f"seconds (distill step: per step); memory in MiB: peak RssAnon (private) and VmRSS (adds the corpus's "
        f"mapped pages) while the stage ran, RssAnon at its start. 1-minute load average at start -> end of each "
        f"size: {loads} on {results['machine']['cpu_count']} cores."
    )
    text = (f"{header}\n\n{format_markdown_table(rows, COLUMNS)}\n\nGrowth exponent of each stage's seconds in N "
            f"(slope of log seconds against log N over every size; last_exponent: between the two largest):\n\n"
            f"{format_markdown_table(exponents)}\n")
    write_text(output_dir / "results.md", text)
    if results["exponents"]:
        plot_scale(rows, results["exponents"], output_dir / "scale.png")


def plot_scale(rows: list[dict], exponents: dict[str, float], path: Path) -> None:
    """Seconds against N (log axes), one line per stage, labelled with its fitted exponent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 5))
    for stage in STAGES:
        points = sorted((row["num_docs"], row["seconds"]) for row in rows if row["stage"] == stage)
        if points:
            label = f"{stage}" + (f" (N^{exponents[stage]:.2f})" if stage in exponents else "")
            axis.plot(*zip(*points), marker="o", label=label)
    axis.set(xscale="log", yscale="log", xlabel="documents N", ylabel="seconds (distill step: per step)",
             title="distill-vq stages against corpus size")
    axis.grid(alpha=0.3, which="both")
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=120, format="png")


def previous_results(path: Path, settings: dict) -> dict | None:
    """The results.json of an earlier run with the same `RUN_KEYS` settings, else None (it is then replaced)."""
    if not path.is_file():
        return None
    previous = json.loads(path.read_text())
    if any(previous["settings"].get(key) != settings[key] for key in RUN_KEYS):
        print(f"{path} was written with other settings: starting a new one.", flush=True)
        return None
    return previous


# ----- the plan of a size too large to run here -----


def plan(args, sizes: list[int]) -> None:
    """Disk, memory and projected seconds of each size, from the measured results; nothing runs."""
    results = json.loads((args.output_dir / "results.json").read_text())
    rows, settings = results["rows"], results["settings"]
    fits, measured = fit_exponents(rows), max(row["num_docs"] for row in rows)
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    memory_mb = {name: int(meminfo[name].split()[0]) / 1024 for name in ("MemTotal", "MemAvailable")}
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(cache).free / MB
    dim = np.load(Path(args.real_docs), mmap_mode="r").shape[1]
    largest_cached = max(cached_corpora(args), default=0)
    generation = results["corpus"]["seconds"] / results["corpus"]["num_rows"]  # seconds per row, measured
    planned = []
    for num_docs in sizes:
        corpus_mb = num_docs * dim * 4 / MB
        config = scale_config(num_docs, dim, settings)
        fitted = {stage: fit["seconds"] * (num_docs / fit["largest_num_docs"]) ** max(fit["exponent"],
                                                                                       fit["last_exponent"])
                  for stage, fit in fits.items()}
        modelled = {stage: fit["seconds"] * stage_work(stage, num_docs, dim, settings)
                    / stage_work(stage, fit["largest_num_docs"], dim, settings) for stage, fit in fits.items()}
        stages = {stage: max(fitted[stage], modelled[stage]) for stage in fits}
        if "distill step" in stages:
            stages["distill step"] *= settings["max_steps"]
        peak_anon = max(linear_projection(rows, stage, num_docs) for stage in STAGES)
        disk_needed = 0 if largest_cached >= num_docs else corpus_mb
        entry = {
            "num_docs": num_docs, "index": config.index_factory_string,
            "faiss_train_docs": training_sample_size(config, num_docs, settings["max_train_docs"]),
            "corpus_file_mb": round(corpus_mb), "disk_free_mb": round(free_mb), "disk_ok": disk_needed < free_mb,
            "projected_peak_anon_mb": round(peak_anon), "memory_total_mb": round(memory_mb["MemTotal"]),
            "memory_available_mb": round(memory_mb["MemAvailable"]),
            "memory_ok": peak_anon < memory_mb["MemAvailable"],
            "corpus_fits_page_cache": corpus_mb + peak_anon < memory_mb["MemAvailable"],
            "projected_corpus_seconds": round(0 if disk_needed == 0 else generation * num_docs),
            "projected_seconds": {stage: round(seconds) for stage, seconds in stages.items()},
            "projected_total_seconds": round(sum(stages.values())),
            "fitted_seconds": {stage: round(seconds) for stage, seconds in fitted.items()},
            "work_model_seconds": {stage: round(seconds) for stage, seconds in modelled.items()},
        }
        planned.append(entry)
        print(json.dumps(entry, indent=2), flush=True)
    text = (f"Plan from {args.output_dir / 'results.json'} (measured up to {measured} documents): each stage's "
            "seconds projected from the largest measured size, the larger of two projections: with the larger of "
            "its two fitted exponents (over every size, and between the two largest), and in proportion to its work "
            "(`stage_work`: k-means and export grow with the lists too); distill step x max_steps. Peak private "
            "memory (RssAnon) on the line through each stage's peaks at the two largest sizes.\n\n"
            + format_markdown_table([{key: value for key, value in entry.items() if not key.endswith("_seconds")
                                      or key.startswith(("projected_total", "projected_corpus"))}
                                     | {f"{stage} s": seconds for stage, seconds in entry["projected_seconds"].items()}
                                     for entry in planned]) + "\n")
    write_json(args.output_dir / "plan.json", {"measured_up_to": measured, "exponents": fits, "plan": planned})
    write_text(args.output_dir / "plan.md", text)
    print(f"Wrote {args.output_dir}/plan.json and plan.md")


def scale_config(num_docs: int, dim: int, settings: dict) -> DistillVQConfig:
    """The index the benchmark builds for `num_docs` documents."""
    return DistillVQConfig(embedding_dim=dim, num_lists=auto_num_lists(num_docs), num_subvectors=settings["bytes"],
                           bits_per_subvector=8, use_rotation=not settings["no_rotation"], nprobe=settings["nprobe"])


def stage_work(stage: str, num_docs: int, dim: int, settings: dict) -> float:
    """A stage's work at `num_docs` documents, up to a constant factor: faiss's k-means (training sample x lists),
    every document's list assignment (export: N x lists), exact search of a fixed set of queries or a read of every
    document (mining, evaluation, distill setup: N), a step (constant)."""
    config = scale_config(num_docs, dim, settings)
    if stage == "faiss init":
        return training_sample_size(config, num_docs, settings["max_train_docs"]) * config.num_lists
    if stage == "export":
        return num_docs * config.num_lists
    return 1.0 if stage == "distill step" else float(num_docs)


def linear_projection(rows: list[dict], stage: str, num_docs: int) -> float:
    """A stage's peak RssAnon at `num_docs`, on the straight line through its peaks at the two largest measured
    sizes (a fixed part plus a part per document; a power law would misread the fixed part), never below them."""
    points = sorted((row["num_docs"], row["peak_anon_mb"]) for row in rows if row["stage"] == stage)[-2:]
    if len(points) < 2:
        return float(max((peak for _, peak in points), default=0))
    (small, small_peak), (large, large_peak) = points
    slope = max(0.0, (large_peak - small_peak) / (large - small))
    return large_peak + slope * (num_docs - large)


# ----- the command -----


def parse_arguments() -> tuple[argparse.Namespace, DistillVQTrainingArguments]:
    """This script's flags, and the training arguments from the rest (refused when not a training field)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)  # an abbreviation could swallow a training flag
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000],
                        help="corpus sizes N to run, in documents")
    parser.add_argument("--plan", type=int, nargs="+", metavar="N",
                        help="only check disk and memory for these sizes and project their time from results.json")
    parser.add_argument("--real-docs", type=Path, default=DEFAULT_EMBEDDINGS / "docs.npy")
    parser.add_argument("--real-queries", type=Path, default=DEFAULT_EMBEDDINGS / "queries.npy")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / "benchmarks" / "data" / "scale",
                        help="where the corpus files are written (git-ignored)")
    parser.add_argument("--noise-scale", type=float, default=1.0,
                        help="synthetic noise norm, in units of the parent's nearest-neighbour distance")
    parser.add_argument("--bytes", type=int, default=16, help="bytes per vector: PQ sub-vectors of 8 bits")
    parser.add_argument("--no-rotation", action="store_true", help="IVF,PQ without OPQ")
    parser.add_argument("--max-train-docs", type=int, help="faiss's training sample (default: the library's)")
    parser.add_argument("--max-steps", type=int, default=20, help="distillation steps")
    parser.add_argument("--batch-size", type=int, default=64, help="train queries per distillation step")
    parser.add_argument("--eval-queries", type=int, default=500, help="held-out queries for the evaluation")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--threads", type=int, default=1, help="faiss and torch threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--memory-interval", type=float, default=0.02, help="seconds between memory samples")
    parser.add_argument("--output-dir", type=Path, default=ROOT / "benchmarks" / "results" / "scale")
    args, rest = parser.parse_known_args()
    return args, training_arguments(parser, rest, max_steps=args.max_steps, seed=args.seed,
                                    per_device_train_batch_size=args.batch_size,
                                    logging_steps=max(1, args.max_steps // 4), disable_tqdm=True)


def main() -> None:
    args, training_args = parse_arguments()
    if args.plan:
        plan(args, args.plan)
        return
    faiss.omp_set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    settings["training_arguments"] = training_args.to_sanitized_dict()
    queries = split_queries(args)
    docs, corpus = load_corpus(args, max(args.sizes))
    results = previous_results(args.output_dir / "results.json", settings) or {"rows": [], "load_average": {}}
    results.update(settings=settings, corpus=corpus, machine=machine_facts())
    sampler = MemorySampler(args.memory_interval)

    def record(row: dict) -> None:
        results["rows"].append(row)
        print(f"  {row['stage']}: {row['seconds']:.2f} s, peak anon {row['peak_anon_mb']} MB, "
              f"rss {row['peak_rss_mb']} MB  {row['note']}", flush=True)
        write_results(results, args.output_dir)

    with tempfile.TemporaryDirectory() as scratch:
        training_args.output_dir = scratch  # the Trainer's folder: nothing is saved there (save_strategy="no")
        for num_docs in sorted(args.sizes):
            results["rows"] = [row for row in results["rows"] if row["num_docs"] != num_docs]
            load_start = os.getloadavg()[0]
            run_size(docs[:num_docs], queries, args, training_args, sampler, record)
            results["load_average"][str(num_docs)] = [load_start, os.getloadavg()[0]]
            write_results(results, args.output_dir)
            gc.collect()
    print(f"Wrote {args.output_dir}/results.json, results.md and scale.png")


if __name__ == "__main__":
    main()
