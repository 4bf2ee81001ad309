"""Which encoder embeds a model's queries: its own trained query encoder when it has one (Distill-VQ's joint mode,
an EmbedDistill student), the document encoder otherwise. A query adapter needs nothing here: it is the exported
index's first transform, so that index takes the document encoder's query embeddings.

    encoder = query_encoder_for("my-index")          # an output folder
    scores, rows = index.search(encoder.encode(["command line tool to compress files"]), 10)
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from .configuration_distill_vq import DistillVQConfig
from .encoding import Role, TextEncoder, resolve_encoder
from .modeling_distill_vq import DistillVQModel, check_layers
from .output_folder import read_config


class ModelQueryEncoder(TextEncoder):
    """`TextEncoder` over a `DistillVQModel`'s own query encoder (`model.encode_queries`) and its tokenizer.

    Args:
        model: a `DistillVQModel` with a query encoder.
        tokenizer: the query encoder's tokenizer.
        max_seq_length: longest query in tokens.
        device: where to run (default: the model's device).
    """

    def __init__(self, model: DistillVQModel, tokenizer: PreTrainedTokenizerBase, max_seq_length: int = 64,
                 device: str | torch.device | None = None):
        if model.query_encoder is None:
            raise ValueError("The model has no query encoder; its queries are embedded by "
                             f"{model.config.encoder_name_or_path or 'the document encoder'} (TextEncoder).")
        check_tokenizer(tokenizer, model.config.query_encoder_config.vocab_size, "the query encoder")
        self.name = f"{model.config.query_encoder_name_or_path or 'query encoder'} (trained against the index)"
        self.location, self.revision = None, None
        self.device = torch.device(device) if device is not None else model.device
        self.tokenizer = tokenizer
        self.model = model.eval()
        self.max_seq_length = max_seq_length
        self.embedding_dim = model.config.embedding_dim

    @cached_property
    def fingerprint(self) -> str:
        """sha256 of the query encoder's config and weights (the embedding cache's key), computed when a cache asks:
        hashing the weights would otherwise slow every search's start."""
        digest = hashlib.sha256(self.model.config.to_json_string().encode())
        for name, tensor in self.model.state_dict().items():
            if name.startswith(("query_encoder.", "query_projection.")):
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    def _embed_batch(self, texts: list[str], role: Role | None) -> np.ndarray:
        """One batch of queries `(batch,)` -> `(batch, dim)`: tokenized, then `model.encode_queries` (pooling,
        projection, normalisation); `role` changes nothing, this encoder embeds queries only."""
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length,
                                return_tensors="pt").to(self.model.device)
        return self.model.encode_queries(**tokens).float().cpu().numpy()


def check_tokenizer(tokenizer: PreTrainedTokenizerBase, vocab_size: int, encoder_name: str) -> None:
    """Refuse a tokenizer whose token ids the encoder cannot embed (another model's tokenizer)."""
    if len(tokenizer) > vocab_size:
        raise ValueError(f"The tokenizer has {len(tokenizer)} tokens but {encoder_name} embeds {vocab_size}: it is "
                         "another model's tokenizer; use the encoder's own.")


def check_query_encoder(name_or_path: str, layers: list[int] | None = None) -> None:
    """Refuse, before any encoding or training, a query encoder to train that lacks `layers` or whose tokenizer
    does not match it (reads the config and tokenizer only)."""
    location = resolve_encoder(name_or_path)[1]
    config = AutoConfig.from_pretrained(location)
    if layers is not None:
        num_layers = getattr(config, "num_hidden_layers", None)
        if num_layers is None:
            raise ValueError(f"{name_or_path} has no layer count (num_hidden_layers) to cut; drop --student-layers.")
        check_layers(layers, num_layers, name_or_path)
    check_tokenizer(query_tokenizer(name_or_path), config.vocab_size, name_or_path)


def query_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The tokenizer of the encoder a query encoder starts from."""
    return AutoTokenizer.from_pretrained(resolve_encoder(name_or_path)[1])


def query_encoder_for(folder: str | Path, config: DistillVQConfig | None = None) -> TextEncoder:
    """The encoder of an output folder's queries: the model's own (with the tokenizer saved beside it), else the
    document encoder its config names (or the copy the folder carries; see `output_folder.read_config`)."""
    config = config or (read_config(folder) if Path(folder).is_dir() else DistillVQConfig.from_pretrained(folder))
    if config.query_encoder_config is None:
        return TextEncoder(config.encoder_name_or_path, revision=config.encoder_revision)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as error:
        raise ValueError(f"{folder} carries a query encoder but not its tokenizer ({error}); save the tokenizer "
                         "with the model (tokenizer.save_pretrained), or train the folder again.") from None
    return ModelQueryEncoder(DistillVQModel.from_pretrained(folder), tokenizer)


__all__ = ["ModelQueryEncoder", "check_query_encoder", "check_tokenizer", "query_encoder_for", "query_tokenizer"]
