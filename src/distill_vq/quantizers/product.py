"""Product quantization (faiss `PQ{m}x{b}`): the residual is cut into `num_subvectors` sub-vectors, each replaced by
the nearest of `2**bits` codewords of its own codebook."""

from __future__ import annotations

import faiss
import numpy as np
import torch


class ProductQuantizer:
    """`codebooks (num_subvectors, 2**bits, dim // num_subvectors)`; codes `(N, num_subvectors)`."""

    name = "pq"
    faiss_index_type = faiss.IndexIVFPQ

    @classmethod
    def check_config(cls, config) -> None:
        if config.embedding_dim % config.num_subvectors != 0:
            divisors = [m for m in (4, 8, 12, 16, 24, 32, 48, 64, 96) if config.embedding_dim % m == 0]
            raise ValueError(
                f"num_subvectors={config.num_subvectors} does not divide embedding_dim={config.embedding_dim}; "
                f"choose a divisor such as {divisors}."
            )
        for name in ("num_codebooks", "beam_size"):
            if getattr(config, name) is not None:
                raise ValueError(f"{name} is a setting of quantizer='rq'; a PQ model has num_subvectors "
                                 "sub-vector codebooks: drop it, or set quantizer='rq'.")

    @classmethod
    def num_codes(cls, config) -> int:
        return config.num_subvectors

    @classmethod
    def codebook_shape(cls, config) -> tuple[int, int, int]:
        return config.num_subvectors, config.codebook_size, config.embedding_dim // config.num_subvectors

    @classmethod
    def factory_string(cls, config) -> str:
        return f"PQ{config.num_subvectors}x{config.bits_per_subvector}"

    @classmethod
    def quantize(cls, config, codebooks: torch.Tensor, residuals: torch.Tensor,
                 temperature: float | torch.Tensor | None = None, codes: torch.Tensor | None = None):
        """Product-quantize `residuals (N, dim)` with a straight-through estimator.

        The forward value is the hard nearest-codeword reconstruction (what faiss stores); the gradient flows
        through a softmax over codewords at `temperature` (default: the batch's mean gap between the nearest and the
        second-nearest codeword distance, so it follows the data's scale). `codes` are recomputed (PQ encoding is
        cheap and exact), so the argument is ignored. Runs in float32 with autocast off.

        Returns:
            `(reconstruction (N, dim) float32, codes (N, num_subvectors), temperature ())`.
        """
        num_docs = residuals.shape[0]
        with torch.autocast(residuals.device.type, enabled=False):
            codebooks = codebooks.float()  # (M, K, dsub)
            distances = cls._codeword_distances(config, codebooks, residuals)  # (M, N, K)
            codes = distances.argmin(dim=-1)  # (M, N)
            if temperature is None:
                nearest_two = distances.detach().topk(2, dim=-1, largest=False).values
                temperature = (nearest_two[..., 1] - nearest_two[..., 0]).mean().clamp_min(1e-12)
            temperature = torch.as_tensor(temperature, dtype=distances.dtype, device=distances.device)
            soft = torch.softmax(-distances / temperature, dim=-1)
            hard_codewords = codebooks.gather(1, codes.unsqueeze(-1).expand(-1, -1, codebooks.shape[-1]))
            # straight-through: the value is the hard codeword, the assignment's gradient is the soft one's
            reconstruction = hard_codewords + torch.bmm(soft - soft.detach(), codebooks.detach())
        return reconstruction.transpose(0, 1).reshape(num_docs, -1), codes.T, temperature

    @classmethod
    @torch.no_grad()
    def encode(cls, config, codebooks: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
        """`(N, dim) -> (N, num_subvectors)`: the nearest codeword of each sub-vector, as faiss encodes."""
        with torch.autocast(residuals.device.type, enabled=False):
            return cls._codeword_distances(config, codebooks.float(), residuals).argmin(dim=-1).T

    @staticmethod
    def _codeword_distances(config, codebooks: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
        """`(M, K, dsub), (N, dim) -> (M, N, K)`: each sub-vector's squared distance to every codeword of its
        sub-space, up to the per-sub-vector constant `||r_m||^2` (float32)."""
        subvectors = residuals.float().reshape(residuals.shape[0], config.num_subvectors, -1).transpose(0, 1)
        return torch.baddbmm(codebooks.pow(2).sum(-1).unsqueeze(1), subvectors, codebooks.transpose(1, 2), alpha=-2)

    @classmethod
    def decode(cls, config, codebooks: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """`(N, num_subvectors) -> (N, dim)`: the concatenated codewords."""
        subvector_ids = torch.arange(config.num_subvectors, device=codes.device)
        return codebooks[subvector_ids, codes].reshape(codes.shape[0], -1)

    # ----- faiss -----

    @classmethod
    def config_fields(cls, ivf: faiss.IndexIVFPQ) -> dict:
        """The config fields of an `IndexIVFPQ`, trained or not."""
        if not ivf.by_residual:
            raise ValueError("Unsupported faiss index: IndexIVFPQ with by_residual=False (the codes must encode "
                             "the residual to the list's centroid).")
        return {"quantizer": cls.name, "num_subvectors": ivf.pq.M, "bits_per_subvector": ivf.pq.nbits}

    @classmethod
    def read_faiss(cls, ivf: faiss.IndexIVFPQ) -> tuple[dict, np.ndarray]:
        """`(config fields, codebooks (M, 2**bits, dsub))` of a trained `IndexIVFPQ`."""
        pq = ivf.pq
        return cls.config_fields(ivf), faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub)

    @classmethod
    def write_faiss(cls, config, ivf: faiss.IndexIVFPQ, codebooks: np.ndarray) -> None:
        faiss.copy_array_to_vector(np.ascontiguousarray(codebooks, dtype=np.float32).ravel(), ivf.pq.centroids)

    @classmethod
    def prepare_training(cls, config, ivf: faiss.IndexIVFPQ, seed: int) -> None:
        ivf.pq.cp.seed = seed
        ivf.do_polysemous_training = False  # only permutes codewords for Hamming filtering, which is not used

    @classmethod
    def finish_export(cls, config, index: faiss.Index, ivf: faiss.IndexIVFPQ) -> faiss.Index:
        """The index to search: `IndexIVFPQ` with its precomputed tables."""
        ivf.precompute_table()
        return index


__all__ = ["ProductQuantizer"]
