"""Product quantization (faiss `PQ{m}x{b}`): the residual is cut into `num_subvectors` sub-vectors, each replaced by
the nearest of `2**bits` codewords of its own codebook."""

from __future__ import annotations

import faiss
import numpy as np
import torch


def codeword_distances(subvectors: torch.Tensor, codebooks: torch.Tensor, scale: float = 1.0,
                       squared_norms: torch.Tensor | None = None) -> torch.Tensor:
    """`(M, N, dsub), (M, K, dsub) -> (M, N, K)`: `scale` times each sub-vector's squared distance to every codeword
    of its sub-space, up to the per-sub-vector constant `||s||^2`. `squared_norms (M, 1, K)`: the codewords' squared
    norms, when a caller going through blocks of sub-vectors computed them once."""
    if squared_norms is None:
        squared_norms = codebooks.pow(2).sum(-1).unsqueeze(1)
    return torch.baddbmm(squared_norms, subvectors, codebooks.transpose(1, 2), beta=scale, alpha=-2 * scale)


# a training step's soft assignment goes through the documents in blocks whose (M, block, K) float32 temporaries
# take about this much, so that they stay in a CPU's cache (2 MiB measured fastest on 1 and 2 threads)
CACHE_BLOCK_BYTES = 2**21


class SoftAssignment(torch.autograd.Function):
    """Straight-through product quantization: the forward value is each sub-vector's nearest codeword; the backward
    is the gradient of the soft reconstruction `softmax(-distances / T) @ codebooks` (codebooks held fixed in the
    weighted sum), plus the nearest codewords' own gradient.

    The same gradients as writing it with autograd (`hard + bmm(soft - soft.detach(), codebooks.detach())`), but
    the `(M, N, K)` distances, whose passes through memory dominated a training step, are never held whole:
    documents go through in blocks of `block_size` whose `(M, block_size, K)` temporaries stay in the CPU's cache,
    and the backward recomputes each block's soft weights instead of storing them.
    """

    @staticmethod
    def forward(ctx, subvectors, codebooks, temperature, block_size):
        """`subvectors (M, N, dsub), codebooks (M, K, dsub)` -> `(nearest codewords (M, N, dsub), codes (M, N),
        temperature ())`; `temperature` `None` is the batch's mean gap between the nearest and second-nearest
        codeword distance."""
        subvectors = subvectors.contiguous()  # contiguous blocks: a product copies a strided one, every block
        codebooks = codebooks.contiguous()  # viewed as one row per codeword
        codes, gaps, squared_norms = [], [], codebooks.pow(2).sum(-1).unsqueeze(1)
        countdown = torch.arange(codebooks.shape[1], 0, -1, dtype=subvectors.dtype, device=subvectors.device)
        scratch = None
        for block in torch.split(subvectors, block_size, dim=1):
            logits = codeword_distances(block, codebooks, -1.0, squared_norms)  # (M, n, K), larger is nearer
            if logits.device.type == "cpu":  # max with indices is the slow part of a CPU's forward
                nearest = logits.amax(dim=-1, keepdim=True)
                scratch = torch.empty_like(logits) if scratch is None else scratch[:, : logits.shape[1]]
                block_codes = _first_max_index(logits, nearest, scratch, countdown)
            else:  # a GPU's one block: no scratch of its size
                nearest, block_codes = logits.max(dim=-1, keepdim=True)
            codes.append(block_codes.squeeze(-1))
            if temperature is None:  # the second-nearest: mask the nearest (a max is faster than topk(2))
                gaps.append((nearest.squeeze(-1) - logits.scatter_(-1, block_codes, -torch.inf).amax(-1)).sum())
        codes = torch.cat(codes, dim=1)
        if temperature is None:
            temperature = (torch.stack(gaps).sum() / codes.numel()).clamp_min(1e-12)
        temperature = torch.as_tensor(temperature, dtype=subvectors.dtype, device=subvectors.device)
        ctx.save_for_backward(subvectors, codebooks, codes)
        ctx.temperature, ctx.block_size = float(temperature), block_size
        ctx.mark_non_differentiable(codes, temperature)
        return _flat_codewords(codebooks)[_flat_codes(codes, codebooks)], codes, temperature

    @staticmethod
    def backward(ctx, grad_nearest, *_):
        """The gradients of the soft assignment, block by block, in float32 whatever the autocast around it."""
        with torch.autocast(grad_nearest.device.type, enabled=False):
            return SoftAssignment._backward(ctx, grad_nearest)

    @staticmethod
    def _backward(ctx, grad_nearest):
        subvectors, codebooks, codes = ctx.saved_tensors
        grad_nearest = grad_nearest.to(codebooks.dtype).contiguous()
        grad_subvectors, weighted_sums, soft_sums = [], torch.zeros_like(codebooks), 0
        squared_norms = codebooks.pow(2).sum(-1).unsqueeze(1)
        for block, grad_block in zip(torch.split(subvectors, ctx.block_size, dim=1),
                                     torch.split(grad_nearest, ctx.block_size, dim=1)):
            logits = codeword_distances(block, codebooks, -1.0 / ctx.temperature, squared_norms)  # (M, n, K)
            # weights under e^-60 of the nearest's are raised to it: no denormal floats, which are ~3x slower
            torch.maximum(logits, logits.amax(-1, keepdim=True) - 60.0, out=logits)
            soft = torch.softmax(logits, dim=-1)
            # d loss / d logits: soft * (g.c_k - sum_j soft_j g.c_j), (M, n, K)
            grad_logits = torch.bmm(grad_block, codebooks.transpose(1, 2))
            grad_logits.sub_((soft * grad_logits).sum(-1, keepdim=True)).mul_(soft)
            grad_subvectors.append(torch.bmm(grad_logits, codebooks))
            weighted_sums.baddbmm_(grad_logits.transpose(1, 2), block)
            soft_sums = soft_sums + grad_logits.sum(1)
        # logits = (2 s.c - ||c||^2) / T
        scale = 2.0 / ctx.temperature
        grad_codebooks = weighted_sums.sub_(codebooks * soft_sums.unsqueeze(-1)).mul_(scale)
        _flat_codewords(grad_codebooks).index_add_(0, _flat_codes(codes, codebooks).flatten(),
                                                  grad_nearest.reshape(-1, grad_nearest.shape[-1]))
        return torch.cat(grad_subvectors, dim=1).mul_(scale), grad_codebooks, None, None


def _first_max_index(logits: torch.Tensor, maxima: torch.Tensor, scratch: torch.Tensor,
                     countdown: torch.Tensor) -> torch.Tensor:
    """`(M, n, K)` logits and their `(M, n, 1)` maxima -> `(M, n, 1)` the index of each row's first maximum (the
    first of equals, as faiss's argmin), in three vectorised passes over `scratch (M, n, K)`: `max` with indices is
    ~3x slower on CPUs. `countdown`: `K, K - 1, ..., 1`."""
    torch.eq(logits, maxima, out=scratch)
    # a NaN row (weights gone NaN) matches nowhere: keep its index in range, so the NaN reaches the loss
    return (countdown.shape[0] - scratch.mul_(countdown).amax(-1, keepdim=True)).long().clamp_max_(
        countdown.shape[0] - 1)


def _flat_codewords(codebooks: torch.Tensor) -> torch.Tensor:
    """`(M, K, dsub) -> (M * K, dsub)`, a view: every codeword as one row (row indexing beats `gather`/`scatter` on
    CPUs by ~8x)."""
    return codebooks.view(-1, codebooks.shape[-1])


def _flat_codes(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """`(M, N)` codes -> `(M, N)` rows of `_flat_codewords(codebooks)`."""
    offsets = torch.arange(0, codebooks.shape[0] * codebooks.shape[1], codebooks.shape[1], device=codes.device)
    return codes + offsets.unsqueeze(1)


class ProductQuantizer:
    """`codebooks (num_subvectors, 2**bits, dim // num_subvectors)`; codes `(N, num_subvectors)`."""

    name = "pq"
    faiss_index_type = faiss.IndexIVFPQ
    cached_codes = False  # encoding is exact and cheap, and the soft assignment computes it every step anyway

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
            subvectors = cls._subvectors(config, residuals)
            block_size = max(1, CACHE_BLOCK_BYTES // (4 * codebooks.shape[0] * codebooks.shape[1]))
            if residuals.device.type != "cpu":  # cache blocking pays on CPUs; a GPU takes the batch at once
                block_size = max(1, num_docs)
            reconstruction, codes, temperature = SoftAssignment.apply(subvectors, codebooks.float(), temperature,
                                                                      block_size)
        return reconstruction.transpose(0, 1).reshape(num_docs, -1), codes.T, temperature

    @classmethod
    @torch.no_grad()
    def encode(cls, config, codebooks: torch.Tensor, residuals: torch.Tensor) -> torch.Tensor:
        """`(N, dim) -> (N, num_subvectors)`: the nearest codeword of each sub-vector, as faiss encodes."""
        with torch.autocast(residuals.device.type, enabled=False):
            return codeword_distances(cls._subvectors(config, residuals), codebooks.float()).argmin(dim=-1).T

    @staticmethod
    def _subvectors(config, residuals: torch.Tensor) -> torch.Tensor:
        """`(N, dim) -> (num_subvectors, N, dim // num_subvectors)` float32 (a view when it can be)."""
        return residuals.float().reshape(residuals.shape[0], config.num_subvectors, -1).transpose(0, 1)

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
