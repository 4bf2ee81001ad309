"""Cut the packaged default corpus (and the test fixtures' embeddings) from the full Debian set.

    python benchmarks/build_default_data.py ../shared/data/debian-descriptions --num-docs 5000

Writes `src/distill_vq/default_data/` (BEIR layout: the documents, the queries whose relevant documents are all
kept, the qrels of every split) and, for the tests, `tests/data/default_data_embeddings/` (the precomputed
all-MiniLM-L6-v2 embeddings of those documents and queries as float16, rows in file order).
"""

import argparse
import gzip
import json
import shutil
from pathlib import Path

import numpy as np


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with gzip.GzipFile(path, "wb", mtime=0) as raw:
        raw.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--num-docs", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(__file__).resolve().parents[1]

    corpus = read_jsonl(args.source / "corpus.jsonl.gz")
    queries = read_jsonl(args.source / "queries.jsonl.gz")
    qrels = {
        split: [line.rstrip("\n").split("\t") for line in (args.source / "qrels" / f"{split}.tsv").open()][1:]
        for split in ("train", "dev", "test")
    }
    rng = np.random.default_rng(args.seed)
    kept_rows = np.sort(rng.choice(len(corpus), size=args.num_docs, replace=False))
    kept_docs = {corpus[row]["_id"] for row in kept_rows}
    relevant: dict[str, set[str]] = {}
    for rows in qrels.values():
        for query_id, doc_id, _ in rows:
            relevant.setdefault(query_id, set()).add(doc_id)
    kept_queries = {query_id for query_id, doc_ids in relevant.items() if doc_ids <= kept_docs}
    query_rows = [row for row, query in enumerate(queries) if query["_id"] in kept_queries]

    target = root / "src/distill_vq/default_data"
    shutil.rmtree(target, ignore_errors=True)
    (target / "qrels").mkdir(parents=True)
    write_jsonl(target / "corpus.jsonl.gz", [corpus[row] for row in kept_rows])
    write_jsonl(target / "queries.jsonl.gz", [queries[row] for row in query_rows])
    for split, rows in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + ["\t".join(row) for row in rows if row[0] in kept_queries]
        (target / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")

    embeddings = args.source / "embeddings" / "all-MiniLM-L6-v2"
    fixtures = root / "tests/data/default_data_embeddings"
    fixtures.mkdir(parents=True, exist_ok=True)
    np.save(fixtures / "docs.npy", np.load(embeddings / "docs.npy", mmap_mode="r")[kept_rows])
    np.save(fixtures / "queries.npy", np.load(embeddings / "queries.npy", mmap_mode="r")[query_rows])
    print(f"{target}: {len(kept_rows)} documents, {len(query_rows)} queries; embeddings in {fixtures}")


if __name__ == "__main__":
    main()
