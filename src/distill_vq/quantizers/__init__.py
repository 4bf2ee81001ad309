"""Code families: how an IVF residual becomes a few bytes of codes, and back.

Each family is one module with one class of class methods over the config and the `codebooks` weight, so that a
third family (LSQ, product-residual) is a new module registered here, not new branches in the model or the bridge:

    product.py    `ProductQuantizer`: `num_subvectors` sub-vector codebooks, nearest codeword each (faiss PQ)
    residual.py   `ResidualQuantizer`: `num_codebooks` full-dimension codebooks summed, beam search (faiss RQ)

A family's `cached_codes` says whether training reuses its codes between encodings (`encoding_cache`): true where
encoding is a search too slow for every step.
"""

from __future__ import annotations

from .product import ProductQuantizer
from .residual import ResidualQuantizer

QUANTIZERS = {family.name: family for family in (ProductQuantizer, ResidualQuantizer)}


def get_quantizer(name: str):
    """The code family called `name` (a key of `QUANTIZERS`)."""
    if name not in QUANTIZERS:
        raise ValueError(f"quantizer={name!r} is unknown; use one of {sorted(QUANTIZERS)}.")
    return QUANTIZERS[name]


__all__ = ["QUANTIZERS", "ProductQuantizer", "ResidualQuantizer", "get_quantizer"]
