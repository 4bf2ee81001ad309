"""What a run is asked to do: `TrainSettings` (the `distill-vq train` flags other than the Trainer's) and their
defaults. Imports nothing heavy, so that the command answers `--help` without loading torch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
DEFAULT_OUTPUT_DIR = "./distill-vq-output"
DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "distill-vq" / "embeddings"
DEFAULT_EVAL_SPLIT = "test"
MIN_POINTS_PER_LIST = 39  # faiss warns below 39 training points per k-means centroid


@dataclass
class TrainSettings:
    """What to train on and which index to build: the `distill-vq train` flags other than the Trainer's.

    Args:
        corpus / queries / qrels / eval_split: the data (see `data.load_task`); `corpus=None` is the packaged data.
        encoder: the embedding model (Hub id or folder); ignored for sides given as `.npy` embeddings.
        doc_embeddings / query_embeddings: `.npy` files of precomputed embeddings, rows in file order.
        num_lists: IVF lists (default: `auto_num_lists(num_docs)`); quantizer, num_subvectors, num_codebooks,
        bits_per_subvector, use_rotation, nprobe: the index (see `DistillVQConfig`).
        query_adapter: train a linear map of the query embeddings against the index (`DistillVQModel.
            attach_query_adapter`); for queries that arrive as embeddings.
        train_query_encoder: train a copy of `encoder` as the query encoder against the index (Distill-VQ's joint
            mode); student_layers / student_encoder: train a smaller query encoder instead (EmbedDistill), the
            layers `student_layers` of `student_encoder` (default: `encoder`). The documents stay the teacher's.
        seed: seeds faiss, the query split and training.
        output_dir / overwrite_output_dir: where to write (see `output_folder.staged_folder`), and whether a non-empty
            folder that is not an earlier output folder may be written into (its other files are kept).
    """

    corpus: str | None = None
    queries: str | None = None
    qrels: str | None = None
    eval_split: str | None = None
    encoder: str = DEFAULT_ENCODER_NAME
    doc_embeddings: str | None = None
    query_embeddings: str | None = None
    cache_dir: Path = DEFAULT_CACHE_DIR
    num_lists: int | None = None
    quantizer: str = "pq"
    num_subvectors: int = 16
    num_codebooks: int | None = None
    bits_per_subvector: int = 8
    use_rotation: bool = True
    nprobe: int | None = None
    query_adapter: bool = False
    train_query_encoder: bool = False
    student_layers: list[int] | None = None
    student_encoder: str | None = None
    seed: int = 42
    output_dir: str = DEFAULT_OUTPUT_DIR
    overwrite_output_dir: bool = False

    @property
    def query_encoder(self) -> str | None:
        """The encoder the trained query encoder starts from, or None when the queries keep the teacher's."""
        if self.train_query_encoder or self.student_layers is not None or self.student_encoder is not None:
            return self.student_encoder or self.encoder
        return None


__all__ = [
    "DEFAULT_CACHE_DIR",
    "DEFAULT_ENCODER_NAME",
    "DEFAULT_EVAL_SPLIT",
    "DEFAULT_OUTPUT_DIR",
    "MIN_POINTS_PER_LIST",
    "TrainSettings",
]
