"""The exported faiss index scores exactly like the model; faiss indexes convert without loss."""

import faiss
import numpy as np
import pytest
import torch
from conftest import fast_opq

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.faiss_bridge import FAISS_METRICS, train_showing_elapsed

COMBINATIONS = [(metric, rotation) for metric in ("inner_product", "l2") for rotation in (False, True)]


def max_relative_difference(model, docs, queries):
    index = model.to_faiss(docs, nprobe=model.config.num_lists)
    distances, labels = index.search(queries, len(docs))
    faiss_scores = distances if model.config.metric == "inner_product" else -distances
    with torch.no_grad():
        model_scores = model(torch.from_numpy(queries), torch.from_numpy(docs)).pq_scores.numpy()
    model_scores = np.take_along_axis(model_scores, labels, axis=1)
    return np.abs(model_scores - faiss_scores).max() / np.abs(faiss_scores).max()


@pytest.mark.parametrize(("metric", "use_rotation"), COMBINATIONS)
def test_faiss_scores_equal_model_scores_random(random_embeddings, metric, use_rotation):
    docs, queries = random_embeddings
    config = DistillVQConfig(
        embedding_dim=32, num_lists=16, num_subvectors=8, bits_per_subvector=5, use_rotation=use_rotation, metric=metric
    )
    with fast_opq():  # any rotation faiss trains: the export must be exact for it
        model = DistillVQModel.from_embeddings(docs, config)
    assert max_relative_difference(model, docs, queries) < 1e-4


@pytest.fixture(scope="module")
def debian_weights(debian_embeddings):
    """faiss-trained IVF32,PQ16 weights on real embeddings, perturbed (the export must be exact for any
    weights, not only faiss's own), plus a random orthonormal rotation."""
    model = DistillVQModel.from_embeddings(debian_embeddings[0], DistillVQConfig(num_lists=32, num_subvectors=16))
    generator = torch.Generator().manual_seed(0)
    weights = {name: tensor + 0.01 * torch.randn(tensor.shape, generator=generator)
               for name, tensor in model.state_dict().items() if name != "rotation"}
    weights["rotation"] = torch.linalg.qr(torch.randn(384, 384, generator=generator))[0]
    return weights


@pytest.mark.parametrize(("metric", "use_rotation"), COMBINATIONS)
def test_faiss_scores_equal_model_scores_debian(debian_embeddings, debian_weights, metric, use_rotation):
    docs, queries = debian_embeddings
    model = DistillVQModel(DistillVQConfig(num_lists=32, num_subvectors=16, use_rotation=use_rotation, metric=metric))
    model.load_state_dict(debian_weights)
    assert max_relative_difference(model, docs, queries[:32]) < 1e-4


@pytest.mark.parametrize(
    ("factory", "metric"),
    [  # "np" skips faiss's polysemous training, which only permutes the codewords (shortened below)
        ("IVF16,PQ8", "inner_product"),
        ("IVF16,PQ8np", "l2"),
        ("IVF16,PQ8x4np", "inner_product"),
        ("OPQ8,IVF16,PQ8np", "inner_product"),
        ("OPQ8,IVF16,PQ8np", "l2"),
    ],
)
def test_from_faiss_to_faiss_searches_identically(random_embeddings, factory, metric):
    docs, queries = random_embeddings
    index = faiss.index_factory(32, factory, FAISS_METRICS[metric])
    if factory.startswith("OPQ"):
        faiss.downcast_VectorTransform(index.chain.at(0)).niter = 4  # a fast, still orthonormal, OPQ
    if not factory.endswith("np"):  # 5000 annealing steps instead of 500000 (30 s): still nearly every codeword moves
        polysemous = faiss.PolysemousTraining()
        polysemous.n_iter = 5000
        faiss.downcast_index(faiss.extract_index_ivf(index)).polysemous_training = polysemous
    index.train(docs)
    index.add(docs)
    faiss.extract_index_ivf(index).nprobe = 4
    model = DistillVQModel.from_faiss(index)
    assert model.config.metric == metric and model.config.use_rotation == factory.startswith("OPQ")
    exported = model.to_faiss(docs, nprobe=4)
    expected_distances, expected_labels = index.search(queries, 20)
    distances, labels = exported.search(queries, 20)
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_array_equal(distances, expected_distances)


@pytest.mark.parametrize("use_rotation", [False, True])
def test_quantize_and_reconstruct_match_faiss(random_embeddings, use_rotation):
    docs, _ = random_embeddings
    config = DistillVQConfig(embedding_dim=32, num_lists=16, num_subvectors=8, bits_per_subvector=5, use_rotation=use_rotation)
    with fast_opq():
        model = DistillVQModel.from_embeddings(docs, config)
    index = model.to_faiss(docs)
    ivf = faiss.extract_index_ivf(index)
    ivf.make_direct_map()
    list_ids, codes = model.quantize(docs)
    expected_lists = np.array([ivf.direct_map.get(i) >> 32 for i in range(len(docs))])
    np.testing.assert_array_equal(list_ids.numpy(), expected_lists)
    np.testing.assert_allclose(model.reconstruct(list_ids, codes).numpy(), index.reconstruct_n(0, len(docs)), atol=1e-5)


@pytest.mark.parametrize(
    "factory", ["IVF16,Flat", "HNSW8", "PCA16,IVF16,PQ8", "OPQ8,IVF16,PQ8,RFlat"]
)
def test_unsupported_faiss_index_is_refused(factory):
    index = faiss.index_factory(32, factory)
    with pytest.raises(ValueError, match="Supported: faiss.index_factory"):
        DistillVQModel.from_faiss(index)


def test_untrained_faiss_index_is_refused():
    with pytest.raises(ValueError, match="not trained"):
        DistillVQModel.from_faiss(faiss.index_factory(32, "IVF16,PQ8"))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda docs: docs[:, :16], "dimension 16 but the model expects 32"),
        (lambda docs: np.where(np.arange(len(docs))[:, None] == 7, np.nan, docs), "NaN or inf \\(first at row 7\\)"),
        (lambda docs: docs[:10], "10 rows; at least 16"),
        (lambda docs: docs[0], "must be a 2-d array"),
    ],
)
def test_from_embeddings_rejects_bad_input(random_embeddings, mutate, message):
    config = DistillVQConfig(embedding_dim=32, num_lists=16, num_subvectors=8)
    with pytest.raises(ValueError, match=message):
        DistillVQModel.from_embeddings(mutate(random_embeddings[0]), config)


def test_training_in_a_worker_thread_trains_and_raises_faiss_errors(random_embeddings):
    docs = random_embeddings[0]
    index = faiss.index_factory(docs.shape[1], "IVF4,Flat")
    train_showing_elapsed(index, docs, "faiss: training IVF4,Flat")
    assert index.is_trained and index.quantizer.ntotal == 4
    with pytest.raises(RuntimeError, match="should be at least as large as number of clusters"):
        train_showing_elapsed(faiss.index_factory(docs.shape[1], "IVF4,Flat"), docs[:2], "too few")
