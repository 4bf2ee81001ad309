"""The residual-quantizer code family: exact faiss round trips (native IVF-RQ in, PQ-speed lifted index out), training
with cached beam-search codes, save/load, and the errors that name the field."""

import faiss
import numpy as np
import pytest
import torch
from datasets import Dataset

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.trainer import DistillVQTrainer, DistillVQTrainingArguments

NUM_DOCS = 1000  # faiss trains IVF8,RQ4x8 on them in 4 s (2000: 7.5 s)


@pytest.fixture(scope="module")
def rq_index(debian_embeddings):
    """faiss's own `IVF8,RQ4x8_Nnone` (4 bytes per vector) trained on NUM_DOCS Debian documents, with them added."""
    docs = debian_embeddings[0][:NUM_DOCS]
    index = faiss.index_factory(384, "IVF8,RQ4x8_Nnone", faiss.METRIC_INNER_PRODUCT)
    index.train(docs)
    index.add(docs)
    index.nprobe = 8
    return index


def model_scores(model, queries, docs) -> np.ndarray:
    return model(torch.from_numpy(queries), torch.from_numpy(docs)).pq_scores.detach().numpy()


def assert_index_scores_like(index, model, queries, docs, k=20):
    """The index's top-k scores are the model's scores of the documents it returns (every list probed)."""
    scores, rows = index.search(queries, k)
    np.testing.assert_allclose(np.take_along_axis(model_scores(model, queries, docs), rows, 1), scores, atol=1e-5)


def test_from_faiss_scores_like_faiss_and_exports_a_faster_index_with_the_same_scores(rq_index, debian_embeddings):
    docs, queries = debian_embeddings[0][:NUM_DOCS], debian_embeddings[1][:50]
    model = DistillVQModel.from_faiss(rq_index)
    assert (model.config.quantizer, model.config.num_codebooks, model.config.index_factory_string) == (
        "rq", 4, "IVF8,RQ4x8_Nnone")
    assert model.config.bytes_per_vector == 4 and tuple(model.codebooks.shape) == (4, 256, 384)
    assert_index_scores_like(rq_index, model, queries, docs)
    exported = model.to_faiss(docs, nprobe=8)
    assert isinstance(faiss.downcast_index(faiss.extract_index_ivf(exported)), faiss.IndexIVFPQ)  # one table per query
    native_scores, native_rows = rq_index.search(queries, 20)
    scores, rows = exported.search(queries, 20)
    np.testing.assert_allclose(scores, native_scores, atol=1e-5)
    assert (rows == native_rows).mean() > 0.99  # equal up to ties


def test_a_rotation_is_exported_exactly(rq_index, debian_embeddings, tmp_path):
    docs, queries = debian_embeddings[0][:NUM_DOCS], debian_embeddings[1][:50]
    model = DistillVQModel.from_faiss(rq_index)
    model.config.use_rotation = True  # any orthogonal matrix tests the rotation path; no OPQ training needed
    model.rotation.copy_(torch.linalg.qr(torch.randn(384, 384, generator=torch.Generator().manual_seed(0)))[0])
    exported = model.to_faiss(docs, nprobe=8)
    assert_index_scores_like(exported, model, queries, docs)
    faiss.write_index(exported, str(tmp_path / "index.faiss"))
    reread = faiss.read_index(str(tmp_path / "index.faiss"))
    np.testing.assert_array_equal(reread.search(queries, 10)[1], exported.search(queries, 10)[1])
    model.save_pretrained(tmp_path / "model")
    loaded = DistillVQModel.from_pretrained(tmp_path / "model")
    assert loaded.config.quantizer == "rq" and loaded.config.use_rotation
    assert torch.equal(loaded.codebooks, model.codebooks) and torch.equal(loaded.rotation, model.rotation)


def test_training_moves_the_codebooks_and_the_export_still_scores_like_the_model(rq_index, debian_embeddings,
                                                                                tmp_path):
    docs, queries = debian_embeddings[0][:NUM_DOCS], debian_embeddings[1]
    model = DistillVQModel.from_faiss(rq_index)
    initial = model.codebooks.detach().clone()
    args = DistillVQTrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=32,
                                      num_teacher_candidates=50, code_refresh_steps=2, report_to=[], use_cpu=True,
                                      save_strategy="no", disable_tqdm=True)
    trainer = DistillVQTrainer(model, args, Dataset.from_dict({"query_embedding": queries[:256]}), docs)
    trainer.train()
    cache = trainer.encoding_cache  # candidates encoded at step 0, again at step 2 or later
    assert cache.codes.shape == (NUM_DOCS, 4) and set(cache.encoded_at[cache.encoded_at >= 0].tolist()) >= {0, 2}
    assert not torch.equal(model.codebooks.detach(), initial)
    assert_index_scores_like(model.to_faiss(docs, nprobe=8), model, queries[:50], docs)


@pytest.mark.parametrize("settings, message", [
    ({"quantizer": "lsq"}, "quantizer='lsq' is unknown; use one of ['pq', 'rq']"),
    ({"quantizer": "rq", "metric": "l2"}, "scores by inner product only"),
    ({"quantizer": "rq", "bits_per_subvector": 4}, "needs 8-bit codebooks"),
    ({"num_codebooks": 16}, "num_codebooks is a setting of quantizer='rq'"),
    ({"beam_size": 8}, "beam_size is a setting of quantizer='rq'"),
    ({"quantizer": "rq", "num_codebooks": 7, "use_rotation": True}, "OPQ7 needs num_codebooks=7 to divide"),
])
def test_bad_settings_name_the_field(settings, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        DistillVQConfig(**settings)


def test_unsupported_faiss_families_are_refused(debian_embeddings):
    index = faiss.index_factory(384, "IVF4,LSQ2x4_Nnone", faiss.METRIC_INNER_PRODUCT)
    with pytest.raises(ValueError, match="Unsupported faiss index: IndexIVFLocalSearchQuantizer"):
        DistillVQModel.from_faiss(index)
