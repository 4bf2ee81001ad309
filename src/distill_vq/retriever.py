"""Text in, documents out: an output folder's faiss index searched with the encoder of its queries (the model's own
query encoder when it trained one, else the document encoder; a query adapter is inside the index).

    retriever = Retriever.from_folder("distill-vq-output")
    retriever.search("command line tool to compress files", k=3)
    # [[{'corpus_id': 2139, 'id': 'd2139', 'score': 0.61}, ...]]   (sentence-transformers' semantic_search shape)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import faiss

from .data import DataError
from .encoding import TextEncoder
from .output_folder import read_output_folder
from .query_encoding import query_encoder_for


@dataclass
class Retriever:
    """A corpus index, its document ids by row, the encoder of its queries, and what `index_config.json` records
    (the corpus source, nprobe, ...)."""

    index: faiss.Index
    doc_ids: list[str]
    encoder: TextEncoder
    index_config: dict = field(default_factory=dict)

    @classmethod
    def from_folder(cls, folder: str | Path, nprobe: int | None = None) -> Retriever:
        """The retriever of a `distill-vq train` output folder (its index searching `nprobe` lists, default the
        stored value); a local copy of a Hub repository pushed with `--include-index` serves too."""
        config, index, doc_ids, index_config = read_output_folder(folder, nprobe)
        encoder = query_encoder_for(folder, config)
        if encoder.embedding_dim != config.embedding_dim:
            raise DataError(f"{encoder.name} makes {encoder.embedding_dim}-d embeddings but the index holds "
                            f"{config.embedding_dim}-d ones; the index was trained on embeddings of another encoder.")
        return cls(index, doc_ids, encoder, index_config)

    def search(self, queries: str | list[str], k: int = 10) -> list[list[dict]]:
        """The top `k` documents of each query, best first: `{"corpus_id": row, "id": doc id, "score": score}`
        (cosine similarities for an index trained with `--metric cosine`, whose queries are L2-normalised too)."""
        texts = [queries] if isinstance(queries, str) else list(queries)
        embeddings = self.encoder.encode(texts, show_progress=False, role="query")
        if self.index_config.get("metric") == "cosine":
            faiss.normalize_L2(embeddings)
        scores, rows = self.index.search(embeddings, min(k, len(self.doc_ids)))
        return [[{"corpus_id": int(row), "id": self.doc_ids[row], "score": float(score)}
                 for score, row in zip(query_scores, query_rows) if row >= 0]
                for query_scores, query_rows in zip(scores, rows)]


__all__ = ["Retriever"]
