"""Exact conversion between faiss `[OPQ,]IVF,PQ` indexes and the weights of a `DistillVQModel`."""

import faiss
import numpy as np
from tqdm.auto import tqdm

from .configuration_distill_vq import DistillVQConfig
from .io_utils import atomic_path

FAISS_METRICS = {"inner_product": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
SUPPORTED_INDEXES = (
    'faiss.index_factory(d, "IVF{n},PQ{m}" | "IVF{n},PQ{m}x{b}" | "OPQ{m},IVF{n},PQ{m}[x{b}]", metric) '
    "with metric METRIC_INNER_PRODUCT or METRIC_L2"
)


def _unsupported(what: str) -> ValueError:
    return ValueError(f"Unsupported faiss index: {what}. Supported: {SUPPORTED_INDEXES}.")


def read_faiss_index(index: faiss.Index) -> tuple[DistillVQConfig, dict[str, np.ndarray]]:
    """Read a trained faiss index into a config (its `nprobe` included) and its weights.

    Returns:
        `(config, weights)` where weights holds `ivf_centroids (num_lists, dim)`,
        `pq_codebooks (num_subvectors, 2**bits, dim // num_subvectors)` and `rotation (dim, dim)`.
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
    if type(index) is not faiss.IndexIVFPQ:
        raise _unsupported(type(index).__name__)
    if not index.by_residual:
        raise _unsupported("IndexIVFPQ with by_residual=False")
    if not index.is_trained:
        raise ValueError("The faiss index is not trained; call index.train(doc_embeddings) first.")
    metric = {value: key for key, value in FAISS_METRICS.items()}.get(index.metric_type)
    if metric is None:
        raise _unsupported(f"metric type {index.metric_type}")
    quantizer = faiss.downcast_index(index.quantizer)
    if not isinstance(quantizer, faiss.IndexFlat):
        raise _unsupported(f"coarse quantizer {type(quantizer).__name__} (only a flat quantizer is exact)")
    pq = index.pq
    config = DistillVQConfig(
        embedding_dim=dim,
        num_lists=index.nlist,
        num_subvectors=pq.M,
        bits_per_subvector=pq.nbits,
        nprobe=min(index.nprobe, index.nlist),
        use_rotation=use_rotation,
        metric=metric,
    )
    weights = {
        "ivf_centroids": quantizer.reconstruct_n(0, index.nlist),
        "pq_codebooks": faiss.vector_to_array(pq.centroids).reshape(pq.M, pq.ksub, pq.dsub),
        "rotation": rotation,
    }
    return config, weights


def build_faiss_index(
    config: DistillVQConfig,
    ivf_centroids: np.ndarray,
    pq_codebooks: np.ndarray,
    rotation: np.ndarray,
    doc_embeddings: np.ndarray | None = None,
    nprobe: int | None = None,
    batch_size: int = 65536,
) -> faiss.Index:
    """Build `faiss.index_factory(config.index_factory_string)` carrying exactly these weights.

    Args:
        ivf_centroids: `(num_lists, dim)`; pq_codebooks: `(num_subvectors, 2**bits, dim // num_subvectors)`;
        rotation: `(dim, dim)`, used only when `config.use_rotation`.
        doc_embeddings: optional `(num_docs, dim)` documents to add, with ids `0..num_docs-1`.
        nprobe: lists searched per query; default `config.nprobe`.
    """
    index = faiss.index_factory(config.embedding_dim, config.index_factory_string, FAISS_METRICS[config.metric])
    if config.use_rotation:
        transform = faiss.downcast_VectorTransform(index.chain.at(0))
        faiss.copy_array_to_vector(np.ascontiguousarray(rotation, dtype=np.float32).ravel(), transform.A)
        transform.set_is_orthonormal()  # enables reconstruct() through the rotation
        transform.is_trained = True
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.quantizer.add(np.ascontiguousarray(ivf_centroids, dtype=np.float32))
    faiss.copy_array_to_vector(np.ascontiguousarray(pq_codebooks, dtype=np.float32).ravel(), ivf.pq.centroids)
    ivf.is_trained = True
    index.is_trained = True
    ivf.precompute_table()
    ivf.nprobe = nprobe or config.nprobe
    if doc_embeddings is not None:
        for start in tqdm(range(0, len(doc_embeddings), batch_size), desc="Adding documents", unit="batch",
                          disable=len(doc_embeddings) <= batch_size):
            index.add(np.ascontiguousarray(doc_embeddings[start : start + batch_size], dtype=np.float32))
    return index


OPQ_MIN_DOCUMENTS = 1000  # faiss 1.15's OPQ training corrupts memory on a few hundred points
_WHY = {"bits_per_subvector": " (2**bits codewords)", "use_rotation": " (OPQ training)"}


def documents_needed(config: DistillVQConfig) -> dict[str, int]:
    """Documents faiss's training needs, by the setting that asks for them: a document per IVF list and per PQ
    codeword, and `OPQ_MIN_DOCUMENTS` for the rotation."""
    needs = {"num_lists": config.num_lists, "bits_per_subvector": config.codebook_size}
    if config.use_rotation:
        needs["use_rotation"] = OPQ_MIN_DOCUMENTS
    return needs


def train_faiss_index(doc_embeddings: np.ndarray, config: DistillVQConfig, seed: int = 1234) -> faiss.Index:
    """Train `config.index_factory_string` on the documents with faiss's own k-means (the paper's initialisation).

    Raises:
        ValueError: fewer documents than IVF lists or PQ codewords, or than OPQ training needs.
    """
    short = [f"{field}{_WHY.get(field, '')} needs {count}" for field, count in documents_needed(config).items()
             if count > len(doc_embeddings)]
    if short:
        raise ValueError(f"{len(doc_embeddings)} documents are too few to train {config.index_factory_string}: "
                         f"{', '.join(short)}. Give more documents or lower those settings.")
    index = faiss.index_factory(config.embedding_dim, config.index_factory_string, FAISS_METRICS[config.metric])
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    ivf.cp.seed = seed
    ivf.pq.cp.seed = seed
    ivf.do_polysemous_training = False  # only permutes codewords for Hamming filtering, which is not used
    index.train(np.ascontiguousarray(doc_embeddings, dtype=np.float32))
    return index


def flat_index(doc_embeddings, metric: str = "inner_product", batch_size: int = 65536) -> faiss.Index:
    """Exact search as a faiss index: a flat index of `doc_embeddings (N, dim)`, added in batches (a memmap is read
    a batch at a time)."""
    index = faiss.IndexFlat(doc_embeddings.shape[1], FAISS_METRICS[metric])
    for start in range(0, len(doc_embeddings), batch_size):
        index.add(np.ascontiguousarray(doc_embeddings[start : start + batch_size], dtype=np.float32))
    return index


def write_index(index: faiss.Index, path) -> None:
    """Write a faiss index atomically (temp file + rename)."""
    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))
