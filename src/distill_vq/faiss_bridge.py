"""Exact conversion between faiss `[OPQ,]IVF,PQ` / `[OPQ,]IVF,RQ` indexes and the weights of a `DistillVQModel`.

The code family's own faiss details (codebook layout, encoder settings, the index searched) live in
`distill_vq.quantizers`; this module handles what every family shares: the rotation, the IVF lists and the documents.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from contextlib import contextmanager

import faiss
import numpy as np
from tqdm.auto import tqdm

from .configuration_distill_vq import DistillVQConfig
from .io_utils import atomic_path
from .quantizers import QUANTIZERS, get_quantizer

logger = logging.getLogger(__name__)

FAISS_METRICS = {"inner_product": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
SUPPORTED_INDEXES = (
    'faiss.index_factory(d, "[OPQ{m},]IVF{n},PQ{m}[x{b}]" | "[OPQ{m},]IVF{n},RQ{m}x8[_Nnone]", metric) with metric '
    "METRIC_INNER_PRODUCT or METRIC_L2 (RQ: inner product)"
)


def _unsupported(what: str) -> ValueError:
    return ValueError(f"Unsupported faiss index: {what}. Supported: {SUPPORTED_INDEXES}.")


def read_faiss_index(index: faiss.Index) -> tuple[DistillVQConfig, dict[str, np.ndarray]]:
    """Read a trained faiss index into a config (its `nprobe` included) and its weights.

    Returns:
        `(config, weights)` where weights holds `ivf_centroids (num_lists, dim)`, `codebooks` (the family's shape,
        e.g. `(num_subvectors, 2**bits, dim // num_subvectors)` for PQ) and `rotation (dim, dim)`.
    """
    dim = index.d
    rotation = np.eye(dim, dtype=np.float32)
    use_rotation = False
    if isinstance(index, faiss.IndexPreTransform):
        if index.chain.size() != 1:
            raise _unsupported(f"IndexPreTransform with {index.chain.size()} transforms")
        transform = faiss.downcast_VectorTransform(index.chain.at(0))
        if not isinstance(transform, faiss.LinearTransform) or transform.d_in != transform.d_out:
            raise _unsupported(f"pre-transform {type(transform).__name__}")
        if transform.have_bias:
            raise _unsupported("a linear pre-transform with a bias")
        rotation = faiss.vector_to_array(transform.A).reshape(transform.d_out, transform.d_in)
        use_rotation = True
        index = faiss.downcast_index(index.index)
    family = next((family for family in QUANTIZERS.values() if type(index) is family.faiss_index_type), None)
    if family is None:
        raise _unsupported(type(index).__name__)
    if not index.is_trained:
        raise ValueError("The faiss index is not trained; call index.train(doc_embeddings) first.")
    metric = {value: key for key, value in FAISS_METRICS.items()}.get(index.metric_type)
    if metric is None:
        raise _unsupported(f"metric type {index.metric_type}")
    quantizer = faiss.downcast_index(index.quantizer)
    if not isinstance(quantizer, faiss.IndexFlat):
        raise _unsupported(f"coarse quantizer {type(quantizer).__name__} (only a flat quantizer is exact)")
    fields, codebooks = family.read_faiss(index)
    config = DistillVQConfig(embedding_dim=dim, num_lists=index.nlist, nprobe=min(index.nprobe, index.nlist),
                             use_rotation=use_rotation, metric=metric, **fields)
    weights = {"ivf_centroids": quantizer.reconstruct_n(0, index.nlist), "codebooks": codebooks, "rotation": rotation}
    return config, weights


def build_faiss_index(
    config: DistillVQConfig,
    ivf_centroids: np.ndarray,
    codebooks: np.ndarray,
    rotation: np.ndarray,
    list_ids: np.ndarray | None = None,
    codes: np.ndarray | None = None,
    nprobe: int | None = None,
    query_adapter: np.ndarray | None = None,
    batch_size: int = 65536,
) -> faiss.Index:
    """A faiss index carrying exactly these weights and, when given, documents stored with exactly these codes.

    Args:
        ivf_centroids: `(num_lists, dim)`; codebooks: the family's shape; rotation: `(dim, dim)`, used only when
            `config.use_rotation`.
        list_ids, codes: optional `(num_docs,)` IVF lists and `(num_docs, num_codes)` codes of the documents (the
            model's `quantize`), stored with ids `0..num_docs-1` without re-encoding.
        nprobe: lists searched per query; default `config.nprobe`.
        query_adapter: optional `(dim, dim)` map `A` of the queries, put before everything else: the index scores
            `A q` against the documents. Like RQ's export, such an index is for search: its `add` would map the
            documents too, so add documents through `DistillVQModel.to_faiss` (codes given here).

    Returns:
        the index the family searches with (`config.index_factory_string` itself for PQ; for RQ the same codes in a
        PQ-speed `IndexIVFPQ`, see `quantizers.residual.lifted_ivfpq`), behind the query adapter when there is one.
    """
    family = get_quantizer(config.quantizer)
    index = faiss.index_factory(config.embedding_dim, config.index_factory_string, FAISS_METRICS[config.metric])
    if config.use_rotation:
        transform = faiss.downcast_VectorTransform(index.chain.at(0))
        faiss.copy_array_to_vector(np.ascontiguousarray(rotation, dtype=np.float32).ravel(), transform.A)
        transform.set_is_orthonormal()  # enables reconstruct() through the rotation
        transform.is_trained = True
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.quantizer.add(np.ascontiguousarray(ivf_centroids, dtype=np.float32))
    family.write_faiss(config, ivf, codebooks)
    ivf.is_trained = True
    index.is_trained = True
    ivf.nprobe = nprobe or config.nprobe
    if codes is not None:
        for start in tqdm(range(0, len(codes), batch_size), desc="Adding documents", unit="batch",
                          disable=len(codes) <= batch_size):
            _add_codes(ivf, list_ids[start : start + batch_size], codes[start : start + batch_size],
                       config.bits_per_subvector)
        index.ntotal = ivf.ntotal  # an IndexPreTransform keeps its own count
    index = family.finish_export(config, index, ivf)
    if query_adapter is not None:
        index = _behind_query_adapter(index, query_adapter)
    return index


def _behind_query_adapter(index: faiss.Index, query_adapter: np.ndarray) -> faiss.IndexPreTransform:
    """`index` searched with `A q`: `A (dim, dim)` as the first transform of an `IndexPreTransform`."""
    adapter = faiss.LinearTransform(index.d, index.d, False)
    faiss.copy_array_to_vector(np.ascontiguousarray(query_adapter, dtype=np.float32).ravel(), adapter.A)
    adapter.is_trained = True
    if not isinstance(index, faiss.IndexPreTransform):
        return faiss.IndexPreTransform(adapter, index)
    if index.own_fields:  # index_factory's index frees its chain: hand the adapter over, or it is freed twice
        adapter.this.disown()
    index.prepend_transform(adapter)
    return index


def _add_codes(ivf: faiss.IndexIVF, list_ids: np.ndarray, codes: np.ndarray, bits: int) -> None:
    """Store `codes (n, num_codes)` (`bits` bits each, packed as faiss packs them) in lists `list_ids (n,)`, with
    the next ids: faiss's standalone code layout is the list number in `coarse_code_size` little-endian bytes, then
    the code."""
    list_ids, codes = np.asarray(list_ids, dtype=np.int64), np.asarray(codes, dtype=np.int64)
    coarse_size = ivf.coarse_code_size()
    packed = np.empty((len(codes), coarse_size + ivf.code_size), dtype=np.uint8)
    for byte in range(coarse_size):
        packed[:, byte] = (list_ids >> (8 * byte)) & 255
    packed[:, coarse_size:] = _pack_codes(codes, ivf.code_size, bits)
    ivf.add_sa_codes(packed, np.arange(ivf.ntotal, ivf.ntotal + len(codes), dtype=np.int64))


def _pack_codes(codes: np.ndarray, code_size: int, bits: int) -> np.ndarray:
    """`(n, num_codes)` integer codes -> `(n, code_size)` bytes, least significant bit first (faiss's BitstringWriter)."""
    shifts = np.arange(bits, dtype=np.int64)
    bit_array = ((codes[:, :, None] >> shifts) & 1).reshape(len(codes), -1).astype(np.uint8)  # (n, num_codes * bits)
    padded = np.zeros((len(codes), code_size * 8), dtype=np.uint8)
    padded[:, : bit_array.shape[1]] = bit_array
    return np.packbits(padded, axis=1, bitorder="little")


OPQ_MIN_DOCUMENTS = 1000  # faiss 1.15's OPQ training corrupts memory on a few hundred points
# faiss's training sample: this many documents per IVF list (faiss's k-means warns below 39 and samples 256 at most),
# and at least the sample faiss trains the codebooks on. Bounds the training's time (~ num_lists x sample) and its
# copies (the OPQ-rotated sample) on large corpora.
TRAIN_DOCS_PER_LIST = 64
_WHY = {"bits_per_subvector": " (2**bits codewords)", "use_rotation": " (OPQ training)"}


def documents_needed(config: DistillVQConfig) -> dict[str, int]:
    """Documents faiss's training needs, by the setting that asks for them: a document per IVF list and per
    codeword, and `OPQ_MIN_DOCUMENTS` for the rotation."""
    needs = {"num_lists": config.num_lists, "bits_per_subvector": config.codebook_size}
    if config.use_rotation:
        needs["use_rotation"] = OPQ_MIN_DOCUMENTS
    return needs


def training_sample_size(config: DistillVQConfig, num_docs: int, max_train_docs: int | None = None) -> int:
    """Documents `train_faiss_index` trains on: `max_train_docs`, by default `TRAIN_DOCS_PER_LIST` per IVF list and
    at least the sample faiss trains the codebooks on (PQ: 256 per codeword); all `num_docs` when there are no more."""
    if max_train_docs is None:
        index = faiss.index_factory(config.embedding_dim, config.index_factory_string, FAISS_METRICS[config.metric])
        codebook_sample = faiss.extract_index_ivf(index).train_encoder_num_vectors()
        max_train_docs = max(TRAIN_DOCS_PER_LIST * config.num_lists, codebook_sample)
    return min(num_docs, max_train_docs)


def train_faiss_index(doc_embeddings: np.ndarray, config: DistillVQConfig, seed: int = 1234,
                      max_train_docs: int | None = None) -> faiss.Index:
    """Train `config.index_factory_string` with faiss's own training (k-means for the lists and PQ, faiss's residual
    quantizer training for RQ) on a random sample of the documents: the paper's initialisation.

    Args:
        doc_embeddings: `(N, dim)`, in memory or memory-mapped (only the sample is read into memory).
        max_train_docs: the sample's size (default: `training_sample_size`).

    Raises:
        ValueError: fewer documents (or `max_train_docs`) than IVF lists or PQ codewords, or than OPQ training needs.
    """
    sample = training_sample_size(config, len(doc_embeddings), max_train_docs)
    short = [f"{field}{_WHY.get(field, '')} needs {count}" for field, count in documents_needed(config).items()
             if count > sample]
    if short:
        limit = f" (max_train_docs={max_train_docs})" if sample < len(doc_embeddings) else ""
        raise ValueError(f"{sample} documents{limit} are too few to train {config.index_factory_string}: "
                         f"{', '.join(short)}. Give more documents or lower those settings.")
    if sample < len(doc_embeddings):  # read only the sample (sorted rows: a memory map is read in order)
        rows = np.sort(np.random.default_rng(seed).choice(len(doc_embeddings), sample, replace=False))
        doc_embeddings = doc_embeddings[rows]
    index = faiss.index_factory(config.embedding_dim, config.index_factory_string, FAISS_METRICS[config.metric])
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.seed = seed
    get_quantizer(config.quantizer).prepare_training(config, ivf, seed)
    start = time.perf_counter()
    with summarised_kmeans_warnings():
        train_showing_elapsed(index, np.ascontiguousarray(doc_embeddings, dtype=np.float32),
                              f"faiss: training {config.index_factory_string}")
    logger.info(f"faiss: trained {config.index_factory_string} on {len(doc_embeddings)} documents in "
                f"{time.perf_counter() - start:.1f} s")
    return index


def train_showing_elapsed(index: faiss.Index, embeddings: np.ndarray, description: str) -> None:
    """`index.train(embeddings)` in a worker thread (faiss releases the GIL) while a terminal bar shows the time
    spent, so that a training of minutes is not a silent stretch (no bar when stdout is not a terminal)."""
    errors = []

    def train() -> None:
        try:
            index.train(embeddings)
        except BaseException as error:  # noqa: BLE001 - raised again in the calling thread
            errors.append(error)

    worker = threading.Thread(target=train, name="faiss-train")
    with tqdm(desc=description, bar_format="{desc}: {elapsed}", file=sys.stdout, leave=False, disable=None) as bar:
        worker.start()
        while worker.is_alive():
            worker.join(1)
            bar.refresh()
    if errors:
        raise errors[0]


# faiss's k-means writes this from C++ to file descriptor 2 on every run short of points, whatever `verbose` says
# (faiss/Clustering.cpp): OPQ training runs a k-means per sub-vector per iteration, 816 lines for OPQ16,...,PQ16x8.
KMEANS_WARNING = re.compile(r"WARNING clustering (\d+) points to (\d+) centroids: please provide at least (\d+) "
                            r"training points")


@contextmanager
def summarised_kmeans_warnings():
    """Count faiss's k-means warnings (too few points per centroid) written in the block and log them in one line.

    faiss writes them from C++ straight to file descriptor 2, out of reach of Python's `sys.stderr`, so the block's
    fd 2 is a temporary file; at the end the other lines written there are passed on to fd 2 unchanged.
    """
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    try:
        with tempfile.TemporaryFile() as captured:
            os.dup2(captured.fileno(), 2)
            try:
                yield
            finally:
                sys.stderr.flush()
                os.dup2(saved_stderr, 2)
                captured.seek(0)
                lines = captured.read().decode(errors="replace").splitlines(keepends=True)
                shortfalls = Counter(match.groups() for match in map(KMEANS_WARNING.search, lines) if match)
                others = "".join(line for line in lines if not KMEANS_WARNING.search(line))
                if others:
                    os.write(2, others.encode())
                if shortfalls:
                    count = shortfalls.total()
                    logger.info(f"faiss: {count} k-means warning{'s' if count > 1 else ''} (too few points per "
                                f"centroid): {_shortfall_text(shortfalls)}")
    finally:
        os.close(saved_stderr)


def _shortfall_text(shortfalls: Counter) -> str:
    """E.g. `816 x 1000 points to 256 centroids, faiss advises at least 9984`."""
    return "; ".join(f"{count} x {points} points to {centroids} centroids, faiss advises at least {advised}"
                     for (points, centroids, advised), count in shortfalls.most_common())


def write_index(index: faiss.Index, path) -> None:
    """Write a faiss index atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


__all__ = [
    "FAISS_METRICS", "KMEANS_WARNING", "OPQ_MIN_DOCUMENTS", "TRAIN_DOCS_PER_LIST", "build_faiss_index",
    "documents_needed", "read_faiss_index", "summarised_kmeans_warnings", "train_faiss_index",
    "train_showing_elapsed",
    "training_sample_size", "write_index",
]
