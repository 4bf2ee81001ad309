"""How far can the query side move a distilled index's recall against exact search? Per corpus, on a distilled
index saved by `compare_faiss.py --save-models`, searched at `--nprobe` like the benchmark:

- `probed lists`: the fraction of the exact top-10 that lies in the lists the teacher's query probes, the most any
  scoring of those lists can find;
- `adapter after the index`: a query map trained on every training query once the index is distilled, against the
  teacher's ranking of all documents in each query's probed lists (not only its mined top-200): a linear map at the
  identity, and with `--hidden N` also that map plus a residual two-layer MLP of width N;
- `oracle per query`: each of `--oracle-queries` test queries optimised on its own against the teacher's ranking of
  its probed lists' documents. It uses the test queries' exact results, so it is a ceiling, not a method: what any
  query map could reach at most, were it free to move each query anywhere.

Recall against exact search of the training queries (`train_recall_vs_exact@10`, 2,000 of them) tells a map that
cannot fit apart from one that fits but does not generalise. No labels are used in training.

    OMP_NUM_THREADS=1 python benchmarks/compare_faiss.py --corpora ../shared/data/debian-descriptions \\
        benchmarks/data/gcide-wordnet --bytes 16 --methods distill-rq --max-train-docs 5000 --max-steps 3000 \\
        --max-train-seconds 240 --save-models --output-dir OUT
    OMP_NUM_THREADS=1 python benchmarks/query_side_ceiling.py --corpora ../shared/data/debian-descriptions \\
        benchmarks/data/gcide-wordnet --models OUT/models --hidden 1536 \\
        --output-dir benchmarks/results/query_side_ceiling
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from compare_faiss import Corpus, load_corpus
from distill_vq import DistillVQModel
from distill_vq.evaluation import format_markdown_table, label_metrics, recall_vs_exact
from distill_vq.io_utils import write_json, write_text
from distill_vq.losses import ListNetLoss
from distill_vq.sampling import exact_search

COLUMNS = ["query side", "recall_vs_exact@10", "recall_vs_exact@100", "mrr@10", "train_recall_vs_exact@10",
           "seconds"]
NUM_TRAIN_CHECK = 2000  # training queries whose recall against exact search is measured too
SEARCH_BLOCK = 500  # queries scored against the whole corpus at a time
UNPROBED_SCORE = -1e4  # far below any inner product of unit-scale embeddings: exp underflows to 0 at any temperature < 50


class ProbedIndex:
    """A distilled index as dense tensors: the documents' reconstructions `(N, dim)` and lists `(N,)`, the teacher's
    documents, searched over the `nprobe` lists each query probes (inner product)."""

    def __init__(self, model: DistillVQModel, docs: np.ndarray, nprobe: int):
        if model.config.metric != "inner_product":
            raise ValueError(f"{model.config.metric} index: this benchmark scores inner products only.")
        self.model, self.nprobe = model.eval(), nprobe
        self.lists, codes = model.quantize(docs)
        self.reconstructions = model.reconstruct(self.lists, codes).float()
        self.docs = torch.from_numpy(docs)

    @torch.no_grad()
    def probed(self, queries: torch.Tensor) -> torch.Tensor:
        """`(Q, dim) -> (Q, N)` bool: the documents in the lists each query probes (faiss's choice: the `nprobe`
        best centroid scores of the rotated query)."""
        centroid_scores = self.model.rotate(queries) @ self.model.ivf_centroids.detach().float().T
        hit = torch.zeros(centroid_scores.shape, dtype=torch.bool)
        hit.scatter_(1, centroid_scores.topk(self.nprobe, dim=1).indices, True)
        return hit[:, self.lists]

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int = 100, routing: torch.Tensor | None = None) -> np.ndarray:
        """Top-`k` rows `(Q, k)` of the reconstructions' scores over the lists that `routing` (default: the queries)
        probe."""
        routing = queries if routing is None else routing
        found = []
        for start in range(0, len(queries), SEARCH_BLOCK):
            block = slice(start, start + SEARCH_BLOCK)
            scores = (queries[block] @ self.reconstructions.T).masked_fill(~self.probed(routing[block]), -torch.inf)
            found.append(scores.topk(k, dim=1).indices)
        return torch.cat(found).numpy()

    def ranking_loss(self, mapped: torch.Tensor, teacher: torch.Tensor, probed: torch.Tensor,
                     temperature: float) -> torch.Tensor:
        """`ListNetLoss` over each query's probed documents: the teacher's scores of the documents against the
        mapped queries' scores of the reconstructions. The rest is scored `UNPROBED_SCORE`, which gives it a weight
        of exactly 0 in both softmaxes (and, unlike -inf, a finite log-probability, so no 0 x -inf)."""
        teacher_scores = (teacher @ self.docs.T).masked_fill(~probed, UNPROBED_SCORE)
        scores = (mapped @ self.reconstructions.T).masked_fill(~probed, UNPROBED_SCORE)
        return ListNetLoss(temperature)(scores, teacher_scores)


class QueryMap(nn.Module):
    """`q -> A q (+ MLP(q))`: a linear map at the identity, plus a residual MLP of width `hidden` starting at 0."""

    def __init__(self, dim: int, hidden: int | None = None):
        super().__init__()
        self.linear = nn.Parameter(torch.eye(dim))
        self.mlp = None
        if hidden:
            self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
            nn.init.zeros_(self.mlp[-1].weight)
            nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        mapped = queries @ self.linear.T
        return mapped if self.mlp is None else mapped + self.mlp(queries)


def train_query_map(index: ProbedIndex, queries: torch.Tensor, query_map: QueryMap, args, temperature: float):
    """`args.steps` Adam steps of `args.batch_size` random training queries, routed by the teacher's query."""
    optimizer = torch.optim.Adam(query_map.parameters(), lr=args.learning_rate)
    generator = torch.Generator().manual_seed(0)
    for _ in range(args.steps):
        batch = queries[torch.randint(len(queries), (args.batch_size,), generator=generator)]
        loss = index.ranking_loss(query_map(batch), batch, index.probed(batch), temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return query_map.eval()


def oracle_queries(index: ProbedIndex, queries: torch.Tensor, args, temperature: float) -> torch.Tensor:
    """Each query's own vector, optimised against the teacher's ranking of its probed documents."""
    probed = index.probed(queries)
    free = queries.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([free], lr=1e-3)
    for _ in range(args.oracle_steps):
        loss = index.ranking_loss(free, queries, probed, temperature)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return free.detach()


def quality(index: ProbedIndex, corpus: Corpus, rows: slice, queries: torch.Tensor,
            routing: torch.Tensor | None = None) -> dict:
    """Recall@10/100 against exact search and MRR@10 of the test queries `rows`, searched with `queries` (over the
    lists `routing` probes; default: the lists `queries` probe, as the exported index does)."""
    found = index.search(queries, routing=routing)
    ranked = [[corpus.doc_ids[row] for row in result] for result in found]
    return {"recall_vs_exact@10": recall_vs_exact(found, corpus.exact_ids[rows], 10),
            "recall_vs_exact@100": recall_vs_exact(found, corpus.exact_ids[rows], 100),
            "mrr@10": label_metrics(ranked, corpus.test_qrels[rows], ks=(10,))["mrr@10"]}


def benchmark_corpus(corpus: Corpus, args) -> dict:
    model = DistillVQModel.from_pretrained(args.models / corpus.name / args.model_name)
    index = ProbedIndex(model, corpus.docs, args.nprobe)
    train = torch.from_numpy(corpus.train_queries)
    test = torch.from_numpy(corpus.test_queries)
    check = train[:NUM_TRAIN_CHECK]
    check_exact = exact_search(corpus.train_queries[:NUM_TRAIN_CHECK], corpus.docs, 10)[1]
    spread = float(exact_search(corpus.train_queries[:256], corpus.docs, 200)[0].std(axis=1, ddof=1).mean())
    in_probed = index.probed(test).gather(1, torch.from_numpy(corpus.exact_ids[:, :10]))
    entry = {"model": str(args.models / corpus.name / args.model_name), "index": model.config.index_factory_string,
             "num_train_queries": len(train), "num_test_queries": len(test), "ranking_temperature": spread,
             "exact_top10_in_probed_lists": float(in_probed.float().mean()), "rows": []}
    everything = slice(None)

    def add(name: str, test_queries: torch.Tensor, check_queries: torch.Tensor | None, seconds: float,
            rows: slice = everything, routing: torch.Tensor | None = None) -> None:
        row = {"query side": name, **quality(index, corpus, rows, test_queries, routing), "seconds": round(seconds, 1)}
        if check_queries is not None:
            row["train_recall_vs_exact@10"] = recall_vs_exact(index.search(check_queries, 10), check_exact, 10)
        entry["rows"].append(row)
        print(f"[{corpus.name}] {format_markdown_table([row], COLUMNS).splitlines()[-1]}", flush=True)

    add("the teacher's queries (index distilled alone)", test, check, 0.0)
    for hidden in (None, *args.hidden):
        start = time.perf_counter()
        query_map = train_query_map(index, train, QueryMap(train.shape[1], hidden), args, spread)
        name = "linear adapter after the index" if hidden is None else f"linear + MLP({hidden}) adapter after the index"
        with torch.no_grad():
            add(name, query_map(test), query_map(check), time.perf_counter() - start)
    rows = slice(0, args.oracle_queries)
    start = time.perf_counter()
    add(f"oracle per query (first {args.oracle_queries} test queries; lists of the teacher's query)",
        oracle_queries(index, test[rows], args, spread), None, time.perf_counter() - start, rows, routing=test[rows])
    add(f"the teacher's queries, the same {args.oracle_queries}", test[rows], None, 0.0, rows)
    return entry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpora", type=Path, nargs="+", required=True, help="BEIR folders with embeddings")
    parser.add_argument("--models", type=Path, required=True, help="compare_faiss.py's OUT/models folder")
    parser.add_argument("--model-name", default="distill-rq-16B", help="the model folder under models/<corpus>/")
    parser.add_argument("--embeddings", default="all-MiniLM-L6-v2", help="folder under each corpus's embeddings/")
    parser.add_argument("--nprobe", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1000, help="adapter training steps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-4, help="the adapters' (Adam)")
    parser.add_argument("--hidden", type=int, nargs="*", default=[], help="also train MLP adapters of these widths")
    parser.add_argument("--oracle-queries", type=int, default=500)
    parser.add_argument("--oracle-steps", type=int, default=300)
    parser.add_argument("--output-dir", type=Path, default=Path(__file__).parent / "results" / "query_side_ceiling")
    args = parser.parse_args()
    torch.manual_seed(0)
    settings = {**vars(args), "corpora": [str(folder) for folder in args.corpora], "models": str(args.models),
                "output_dir": str(args.output_dir)}
    results = {"settings": settings, "corpora": {}}
    for folder in args.corpora:
        corpus = load_corpus(folder, args.embeddings, None)
        results["corpora"][corpus.name] = benchmark_corpus(corpus, args)
        write_json(args.output_dir / "results.json", results)
    sections = []
    for name, entry in results["corpora"].items():
        facts = ", ".join(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}"
                          for key, value in entry.items() if key != "rows")
        sections.append(f"## {name}\n\n{facts}\n\n{format_markdown_table(entry['rows'], COLUMNS)}")
    write_text(args.output_dir / "results.md", "\n\n".join(sections) + "\n")
    print(f"Wrote {args.output_dir}/results.json and results.md")


if __name__ == "__main__":
    main()
