"""Memory-mapped embeddings: used without a whole copy, refused early when opened wrong or when a copy would be
large, and faiss trained on a bounded sample of them."""

import numpy as np
import pytest
from datasets import Dataset

from distill_vq import DistillVQModel, DistillVQTrainer, DistillVQTrainingArguments, validation
from distill_vq.configuration_distill_vq import DistillVQConfig
from distill_vq.faiss_bridge import training_sample_size
from distill_vq.sampling import CandidateMiner
from distill_vq.validation import check_embeddings


@pytest.fixture
def saved_docs(tmp_path, debian_embeddings):
    """The packaged slice's first 2000 documents saved as a float32 .npy; its path."""
    path = tmp_path / "docs.npy"
    np.save(path, debian_embeddings[0][:2000])
    return path


def test_a_float32_memory_map_is_used_in_place(saved_docs):
    docs = np.load(saved_docs, mmap_mode="r")
    checked = check_embeddings(docs, "doc_embeddings")
    assert np.shares_memory(checked, docs) and checked.shape == (2000, 384)


def test_a_memory_map_whose_copy_would_be_large_is_refused(saved_docs, monkeypatch):
    np.save(saved_docs, np.load(saved_docs).astype(np.float16))
    docs = np.load(saved_docs, mmap_mode="r")
    assert check_embeddings(docs, "doc_embeddings").dtype == np.float32  # 3 MB: converted
    monkeypatch.setattr(validation, "MAX_MEMMAP_COPY_BYTES", 1 << 20)
    with pytest.raises(ValueError, match=r"memory-mapped \(2000, 384\) array of float16.*copy all of it.*open_memmap"):
        check_embeddings(docs, "doc_embeddings")
    assert check_embeddings(docs[:500], "a block").dtype == np.float32  # a block of it is still converted


def test_a_memory_map_opened_with_the_wrong_dtype_or_shape_is_refused(tmp_path, debian_embeddings):
    path = tmp_path / "docs.f32"
    debian_embeddings[0][:100].tofile(path)
    with pytest.raises(ValueError, match=r"float16 of shape \(100, 384\).*holds 153600 bytes.*dtype or shape"):
        check_embeddings(np.memmap(path, dtype=np.float16, mode="r", shape=(100, 384)), "doc_embeddings")
    with pytest.raises(ValueError, match=r"shape \(38400,\).*np.memmap without shape="):
        check_embeddings(np.memmap(path, dtype=np.float32, mode="r"), "doc_embeddings")
    right = np.memmap(path, dtype=np.float32, mode="r", shape=(100, 384))
    assert np.array_equal(check_embeddings(right, "doc_embeddings"), debian_embeddings[0][:100])


def test_the_default_training_sample_grows_with_the_lists():
    config = DistillVQConfig(num_lists=4096, use_rotation=True)
    assert training_sample_size(config, 1_000_000) == 64 * 4096
    assert training_sample_size(DistillVQConfig(num_lists=256), 1_000_000) == 65536  # faiss's PQ training sample
    assert training_sample_size(config, 5000) == 5000
    assert training_sample_size(config, 1_000_000, max_train_docs=20_000) == 20_000


def test_faiss_trains_on_a_random_sample_of_the_documents(saved_docs):
    docs = np.load(saved_docs, mmap_mode="r")
    config = DistillVQConfig(num_lists=16, num_subvectors=8, bits_per_subvector=6)
    sampled = DistillVQModel.from_embeddings(docs, config, seed=3, max_train_docs=800)
    rows = np.sort(np.random.default_rng(3).choice(2000, 800, replace=False))
    on_those_rows = DistillVQModel.from_embeddings(np.asarray(docs[rows]), config, seed=3)
    on_all = DistillVQModel.from_embeddings(docs, config, seed=3)
    assert np.array_equal(sampled.ivf_centroids.detach().numpy(), on_those_rows.ivf_centroids.detach().numpy())
    assert not np.allclose(sampled.ivf_centroids.detach().numpy(), on_all.ivf_centroids.detach().numpy())
    with pytest.raises(ValueError, match=r"40 documents \(max_train_docs=40\) are too few.*bits_per_subvector"):
        DistillVQModel.from_embeddings(docs, config, max_train_docs=40)


def test_mining_a_dataset_never_pickles_the_miner_and_its_documents(saved_docs, debian_embeddings, monkeypatch):
    """`datasets` would hash (pickle) the miner for the mined dataset's fingerprint, copying a memory-mapped corpus
    into memory (measured: +440 MB for 300k x 384); the trainer gives the fingerprint instead."""
    pickled = []

    def refuse(self, protocol):  # datasets falls back to a random fingerprint when hashing fails: record the attempt
        pickled.append(self)
        raise TypeError("the candidate miner, and with it every document, is being pickled")

    monkeypatch.setattr(CandidateMiner, "__reduce_ex__", refuse)
    docs = np.load(saved_docs, mmap_mode="r")
    model = DistillVQModel.from_embeddings(docs, DistillVQConfig(num_lists=8, num_subvectors=8))
    queries = Dataset.from_dict({"query_embedding": debian_embeddings[1][:64]})
    args = DistillVQTrainingArguments(output_dir="unused", use_cpu=True, report_to=[], num_teacher_candidates=20)
    mined = DistillVQTrainer(model, args, queries, docs).train_dataset
    assert len(mined) == 64 and len(mined[0]["candidate_ids"]) >= 20 and not pickled
    other = CandidateMiner(np.asarray(docs)[::-1], 20)  # other documents, other fingerprint; same ones, the same
    assert CandidateMiner(docs, 20).fingerprint("f") == CandidateMiner(np.asarray(docs), 20).fingerprint("f")
    assert other.fingerprint("f") != CandidateMiner(docs, 20).fingerprint("f")
