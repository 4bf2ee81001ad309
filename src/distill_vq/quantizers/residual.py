"""Residual quantization (faiss `RQ{m}x{b}`): the residual is the sum of one codeword from each of `num_codebooks`
full-dimension codebooks, chosen by faiss's beam search.

For inner product an additive code's score is `<q, c_list> + sum_m <q, C_m[code_m]>`: one look-up table of
`num_codebooks x 2**bits` per query and one add per codebook per document, PQ's cost. faiss's `IndexIVFResidualQuantizer`
recomputes that table for every probed list, so `lifted_ivfpq` exports the same codes and scores as a plain
`IndexIVFPQ` over the query repeated `num_codebooks` times (`[q, ..., q]`, dimension `num_codebooks * dim`, whose
m-th sub-codebook is `C_m`), which computes the table once per query.
"""

from __future__ import annotations

import faiss
import numpy as np
import torch

DEFAULT_BEAM_SIZE = 5  # faiss ResidualQuantizer's max_beam_size


class ResidualQuantizer:
    """`codebooks (num_codebooks, 2**bits, dim)`; codes `(N, num_codebooks)`.

    Codes are faiss's beam search (`max_beam_size = config.beam_size`), which is not differentiable: `quantize` takes
    codes computed beforehand (the trainer refreshes them every few steps) and lets the gradient reach the selected
    codewords and, through the residual, nothing else.
    """

    name = "rq"
    faiss_index_type = faiss.IndexIVFResidualQuantizer
    cached_codes = True  # beam search is too slow for every step: training reuses codes (`encoding_cache`)

    @classmethod
    def check_config(cls, config) -> None:
        if config.num_codebooks is None:
            config.num_codebooks = config.num_subvectors
        if config.beam_size is None:
            config.beam_size = DEFAULT_BEAM_SIZE
        if config.num_codebooks < 1 or config.beam_size < 1:
            raise ValueError(f"num_codebooks={config.num_codebooks} and beam_size={config.beam_size} must be positive.")
        if config.metric != "inner_product":
            raise ValueError(f"quantizer='rq' scores by inner product only (metric={config.metric!r}); use "
                             "metric='inner_product', or quantizer='pq' for l2.")
        if config.bits_per_subvector != 8:
            raise ValueError(f"quantizer='rq' needs 8-bit codebooks (bits_per_subvector={config.bits_per_subvector}); "
                             "set bits_per_subvector=8 and choose num_codebooks for the bytes per vector.")
        if config.use_rotation and config.embedding_dim % config.num_codebooks != 0:
            raise ValueError(f"OPQ{config.num_codebooks} needs num_codebooks={config.num_codebooks} to divide "
                             f"embedding_dim={config.embedding_dim}; change num_codebooks or use_rotation=False.")

    @classmethod
    def num_codes(cls, config) -> int:
        return config.num_codebooks

    @classmethod
    def codebook_shape(cls, config) -> tuple[int, int, int]:
        return config.num_codebooks, config.codebook_size, config.embedding_dim

    @classmethod
    def factory_string(cls, config) -> str:
        return f"RQ{config.num_codebooks}x{config.bits_per_subvector}_Nnone"

    @classmethod
    def quantize(cls, config, codebooks: torch.Tensor, residuals: torch.Tensor,
                 temperature: float | torch.Tensor | None = None, codes: torch.Tensor | None = None):
        """`(reconstruction (N, dim) float32, codes (N, num_codebooks), temperature ())` of `residuals (N, dim)`:
        the sum of the codewords that `codes` (default: beam search now) select; differentiable w.r.t. the
        codebooks. `temperature` is unused (no soft assignment) and returned as 0."""
        if codes is None:
            codes = cls.encode(config, codebooks, residuals)
        with torch.autocast(residuals.device.type, enabled=False):
            reconstruction = cls.decode(config, codebooks.float(), codes)
        return reconstruction, codes, torch.zeros((), device=residuals.device)

    @classmethod
    @torch.no_grad()
    def encode(cls, config, codebooks: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
        """`(N, dim) -> (N, num_codebooks)`: faiss's beam search with these codebooks (what the exported index holds)."""
        quantizer = cls.faiss_quantizer(config, codebooks.detach().cpu().float().numpy())
        packed = quantizer.compute_codes(np.ascontiguousarray(residuals.detach().cpu().float().numpy()))
        return torch.from_numpy(packed.astype(np.int64)).to(residuals.device)  # 8-bit codes: one byte each

    @classmethod
    def decode(cls, config, codebooks: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """`(N, num_codebooks) -> (N, dim)`: the sum of the selected codewords."""
        codebook_ids = torch.arange(config.num_codebooks, device=codes.device)
        return codebooks[codebook_ids, codes].sum(dim=1)

    # ----- faiss -----

    @classmethod
    def faiss_quantizer(cls, config, codebooks: np.ndarray) -> faiss.ResidualQuantizer:
        """A trained `faiss.ResidualQuantizer` carrying `codebooks (M, 2**bits, dim)`."""
        quantizer = faiss.ResidualQuantizer(config.embedding_dim, config.num_codebooks, config.bits_per_subvector)
        cls._load(config, quantizer, codebooks)
        return quantizer

    @classmethod
    def _load(cls, config, quantizer: faiss.ResidualQuantizer, codebooks: np.ndarray) -> None:
        faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, dtype=np.float32).ravel(), quantizer.codebooks)
        quantizer.is_trained = True
        quantizer.max_beam_size = config.beam_size
        quantizer.use_beam_LUT = 1
        quantizer.compute_codebook_tables()  # codeword norms and cross products for the beam search's tables

    @classmethod
    def config_fields(cls, ivf: faiss.IndexIVFResidualQuantizer) -> dict:
        """The config fields of an `IndexIVFResidualQuantizer`, trained or not."""
        bits = faiss.vector_to_array(ivf.rq.nbits)
        if len(set(bits.tolist())) != 1:
            raise ValueError(f"Unsupported faiss index: RQ codebooks of unequal sizes {bits.tolist()}; use one "
                             "size, e.g. RQ16x8.")
        if not ivf.by_residual:
            raise ValueError("Unsupported faiss index: IndexIVFResidualQuantizer with by_residual=False.")
        return {"quantizer": cls.name, "num_codebooks": ivf.rq.M, "bits_per_subvector": int(bits[0]),
                "beam_size": ivf.rq.max_beam_size}

    @classmethod
    def read_faiss(cls, ivf: faiss.IndexIVFResidualQuantizer) -> tuple[dict, np.ndarray]:
        """`(config fields, codebooks (M, 2**bits, dim))` of a trained `IndexIVFResidualQuantizer`."""
        fields = cls.config_fields(ivf)
        quantizer = ivf.rq
        codebooks = faiss.vector_to_array(quantizer.codebooks).reshape(
            quantizer.M, 1 << fields["bits_per_subvector"], quantizer.d)
        return fields, codebooks

    @classmethod
    def write_faiss(cls, config, ivf: faiss.IndexIVFResidualQuantizer, codebooks: np.ndarray) -> None:
        cls._load(config, ivf.rq, codebooks)
        ivf.rq.search_type = faiss.AdditiveQuantizer.ST_LUT_nonorm

    @classmethod
    def prepare_training(cls, config, ivf: faiss.IndexIVFResidualQuantizer, seed: int) -> None:
        ivf.rq.max_beam_size = config.beam_size
        ivf.rq.cp.seed = seed

    @classmethod
    def finish_export(cls, config, index: faiss.Index, ivf: faiss.IndexIVFResidualQuantizer) -> faiss.Index:
        """The index to search: the same codes and scores as a PQ-speed `IndexIVFPQ` (see `lifted_ivfpq`)."""
        return lifted_ivfpq(index)


def lifted_ivfpq(index: faiss.Index) -> faiss.Index:
    """`[rotation ->] repeat num_codebooks times -> IndexIVFPQ` scoring exactly like the `[OPQ,]IVF,RQ` `index`.

    The coarse quantizer looks at the first copy of the query only; the PQ's m-th sub-codebook is the m-th RQ
    codebook; the inverted lists (ids and codes) are copied as they are, since 8-bit RQ and PQ codes share a layout.
    Search only: `add` on it would PQ-encode, not beam-search (add documents to an `IVF,RQ` index and lift it again).
    """
    rotation = None
    if isinstance(index, faiss.IndexPreTransform):
        rotation = faiss.downcast_VectorTransform(index.chain.at(0))
        index = faiss.downcast_index(index.index)
    ivf = faiss.downcast_index(index)
    num_codebooks, dim = ivf.rq.M, ivf.d
    lifted_dim = num_codebooks * dim
    # faiss's Python layer keeps each part alive as long as the index that holds it (add_ref_in_constructor)
    first_dims = np.arange(dim, dtype=np.int32)  # named: faiss reads the maps through raw pointers
    repeated_dims = np.tile(first_dims, num_codebooks)
    first_copy = faiss.RemapDimensionsTransform(lifted_dim, dim, faiss.swig_ptr(first_dims))
    flat = faiss.IndexFlat(dim, ivf.metric_type)
    flat.add(faiss.downcast_index(ivf.quantizer).reconstruct_n(0, ivf.nlist))
    lifted = faiss.IndexIVFPQ(faiss.IndexPreTransform(first_copy, flat), lifted_dim, ivf.nlist, num_codebooks, 8,
                              ivf.metric_type)
    faiss.copy_array_to_vector(faiss.vector_to_array(ivf.rq.codebooks), lifted.pq.centroids)
    lifted.is_trained = True
    lifted.use_precomputed_table = 0
    lifted.nprobe = ivf.nprobe
    lists = faiss.ArrayInvertedLists(ivf.nlist, ivf.code_size)
    for list_number in range(ivf.nlist):
        size = ivf.invlists.list_size(list_number)
        if size:
            lists.add_entries(list_number, size, ivf.invlists.get_ids(list_number), ivf.invlists.get_codes(list_number))
    lifted.replace_invlists(lists, True)
    lists.this.disown()  # the index owns and frees its lists
    lifted.ntotal = ivf.ntotal
    repeat = faiss.RemapDimensionsTransform(dim, lifted_dim, faiss.swig_ptr(repeated_dims))
    searchable = faiss.IndexPreTransform(repeat, lifted)
    if rotation is not None:
        matrix = faiss.LinearTransform(dim, dim, False)
        faiss.copy_array_to_vector(faiss.vector_to_array(rotation.A), matrix.A)
        matrix.is_trained = True
        searchable.prepend_transform(matrix)
    return searchable


__all__ = ["DEFAULT_BEAM_SIZE", "ResidualQuantizer", "lifted_ivfpq"]
