"""Train a distilled IVF-PQ index on a BEIR folder with the library pipeline's stages and print its gain over faiss.

    python examples/train_beir.py [FOLDER] [--max-docs 2000] [--max-queries 2000] [--max-steps 100] [--no-rotation]

FOLDER defaults to the packaged Debian package descriptions. Training uses the queries outside the `test` qrels;
the `test` queries are held out and scored by recall@10 against exact search.
"""

import argparse
import tempfile

import torch
from datasets import Dataset

from distill_vq import DistillVQModel, DistillVQTrainingArguments
from distill_vq.data import default_data_path, load_beir
from distill_vq.encoding import TextEncoder
from distill_vq.evaluation import compare_indexes
from distill_vq.pipeline import TrainSettings, build_config, distill


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=default_data_path(), help="a BEIR folder")
    parser.add_argument("--max-docs", type=int, help="use the first N documents")
    parser.add_argument("--max-queries", type=int, help="use the first N queries")
    parser.add_argument("--max-steps", type=int, default=100)
    parser.add_argument("--no-rotation", action="store_true", help="no OPQ rotation (needs >= 1000 documents)")
    args = parser.parse_args()

    data = load_beir(args.folder)
    corpus = first(data.corpus, args.max_docs)
    test_ids = set(data.qrels.get("test", {}))
    train_queries = first(data.queries.filter(lambda query: query["_id"] not in test_ids), args.max_queries)
    test_queries = first(data.queries.filter(lambda query: query["_id"] in test_ids), args.max_queries)

    encoder = TextEncoder()  # the packaged all-MiniLM-L6-v2
    doc_embeddings = encoder.encode(corpus["text"], role="document")
    train_embeddings = encoder.encode(train_queries["text"], role="query")
    test_embeddings = encoder.encode(test_queries["text"], role="query")

    settings = TrainSettings(num_subvectors=16, use_rotation=not args.no_rotation)  # lists: auto, nprobe: config's
    config = build_config(settings, len(corpus), encoder.embedding_dim, encoder.name)
    model = DistillVQModel.from_embeddings(doc_embeddings, config)  # faiss's own k-means training
    faiss_index = model.to_faiss(doc_embeddings)

    with tempfile.TemporaryDirectory() as checkpoints:
        training_args = DistillVQTrainingArguments(
            output_dir=checkpoints, max_steps=args.max_steps, per_device_train_batch_size=64, logging_steps=10,
            save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(),
        )
        distill(model, train_embeddings, doc_embeddings, training_args)
    distilled_index = model.to_faiss(doc_embeddings)

    metrics = compare_indexes({"faiss": faiss_index, "distill-vq": distilled_index}, doc_embeddings,
                              list(corpus["_id"]), test_embeddings, qrels_for_queries=None)
    before, after = metrics["faiss"]["recall_vs_exact@10"], metrics["distill-vq"]["recall_vs_exact@10"]
    print(f"{len(corpus)} documents, {len(train_queries)} training and {len(test_queries)} test queries, "
          f"{config.index_factory_string} ({config.bytes_per_vector:g} bytes/vector)")
    print(f"recall@10 vs exact: faiss {before:.3f} -> distill-vq {after:.3f} ({after - before:+.3f})")

    query = test_queries[0]["text"]
    _, rows = distilled_index.search(test_embeddings[:1], 3)
    print(f"top 3 for {query!r}: {[corpus[int(row)]['_id'] for row in rows[0]]}")


def first(dataset: Dataset, count: int | None) -> Dataset:
    """The first `count` rows of `dataset` (all of them for None)."""
    return dataset.select(range(min(count or len(dataset), len(dataset))))


if __name__ == "__main__":
    main()
