"""DistillVQModel: gradients, PreTrainedModel round-trips, Auto classes and load errors."""

import json

import numpy as np
import pytest
import torch
from conftest import fast_opq
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModel

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.quantizers.product import SoftAssignment, codeword_distances

SMALL = {"embedding_dim": 32, "num_lists": 16, "num_subvectors": 8, "bits_per_subvector": 5}


@pytest.fixture(scope="module")
def model(random_embeddings):
    with fast_opq():  # a rotation faiss trains, in 4 OPQ iterations
        return DistillVQModel.from_embeddings(random_embeddings[0], DistillVQConfig(use_rotation=True, **SMALL))


def test_forward_shapes_and_teacher_scores(model, random_embeddings):
    docs, queries = map(torch.from_numpy, random_embeddings)
    output = model(queries, docs[:50])
    assert output.pq_scores.shape == output.ivf_scores.shape == output.teacher_scores.shape == (16, 50)
    torch.testing.assert_close(output.teacher_scores, queries @ docs[:50].T)
    per_query = model(queries, docs[:48].reshape(16, 3, 32))
    assert per_query.pq_scores.shape == (16, 3)
    torch.testing.assert_close(per_query.pq_scores, torch.stack([output.pq_scores[i, 3 * i : 3 * i + 3] for i in range(16)]))


def test_student_scores_approximate_teacher(model, random_embeddings):
    docs, queries = map(torch.from_numpy, random_embeddings)
    output = model(queries, docs)
    pq_error = (output.pq_scores - output.teacher_scores).abs().mean()
    ivf_error = (output.ivf_scores - output.teacher_scores).abs().mean()
    assert pq_error < 0.8 * ivf_error  # the residual codes add information over the list centroid


def test_gradients_reach_centroids_and_codebooks(model, random_embeddings):
    docs, queries = map(torch.from_numpy, random_embeddings)
    model.zero_grad()
    output = model(queries, docs[:200])
    (output.pq_scores.sum() + output.ivf_scores.sum()).backward()
    assert model.ivf_centroids.grad.abs().sum() > 0
    assert model.codebooks.grad.abs().sum() > 0
    # straight-through: codewords nobody uses still get a gradient through the soft assignment
    used = torch.zeros(model.codebooks.shape[:2], dtype=torch.bool)
    _, codes = model.quantize(docs[:200])
    used[torch.arange(8), codes] = True
    assert (model.codebooks.grad.abs().sum(-1)[~used] > 0).any()
    model.zero_grad()


@pytest.mark.parametrize("temperature", [None, 0.3])
def test_blocked_soft_assignment_has_the_gradients_of_the_autograd_straight_through(temperature):
    """`SoftAssignment` (blocks of 7 documents, a ragged last one) against the estimator written with autograd."""
    torch.manual_seed(0)
    subvectors = torch.randn(4, 300, 6, dtype=torch.float64, requires_grad=True)
    codebooks = torch.randn(4, 16, 6, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(4, 300, 6, dtype=torch.float64)
    nearest, codes, used_temperature = SoftAssignment.apply(subvectors, codebooks, temperature, 7)
    (nearest * upstream).sum().backward()
    gradients = subvectors.grad, codebooks.grad
    subvectors.grad = codebooks.grad = None

    distances = codeword_distances(subvectors, codebooks)  # (4, 300, 16)
    if temperature is None:
        nearest_two = distances.detach().topk(2, dim=-1, largest=False).values
        temperature = (nearest_two[..., 1] - nearest_two[..., 0]).mean()
    soft = torch.softmax(-distances / temperature, dim=-1)
    reference_codes = distances.argmin(dim=-1)
    hard = codebooks.gather(1, reference_codes.unsqueeze(-1).expand(-1, -1, 6))
    reference = hard + torch.bmm(soft - soft.detach(), codebooks.detach())
    (reference * upstream).sum().backward()

    assert torch.equal(codes, reference_codes) and torch.equal(nearest, reference)
    torch.testing.assert_close(used_temperature, torch.as_tensor(temperature, dtype=torch.float64))
    torch.testing.assert_close(gradients[0], subvectors.grad)
    torch.testing.assert_close(gradients[1], codebooks.grad)


@pytest.mark.parametrize("temperature", [None, 0.3])
def test_soft_assignment_takes_the_first_of_equal_codewords_and_keeps_nan_codes_in_range(temperature):
    codebooks = torch.randn(2, 16, 4)
    codebooks[:, 9] = codebooks[:, 3]  # two equal codewords: faiss's argmin takes the first
    subvectors = torch.stack([codebooks[:, 3], codebooks[:, 3] + 0.01, torch.full((2, 4), torch.nan)], dim=1)
    nearest, codes, _ = SoftAssignment.apply(subvectors, codebooks, temperature, 2)
    assert codes[:, :2].tolist() == [[3, 3], [3, 3]]
    assert (codes[:, 2] < 16).all() and nearest[:, 2].isfinite().all()  # a NaN row: a valid index, not an error


def test_save_and_load_round_trip_bit_exact(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "distill_vq"
    for loader in (DistillVQModel.from_pretrained, AutoModel.from_pretrained):
        loaded = loader(tmp_path)
        assert isinstance(loaded, DistillVQModel)
        for name, tensor in model.state_dict().items():
            assert torch.equal(tensor, loaded.state_dict()[name]), name
    assert isinstance(AutoConfig.from_pretrained(tmp_path), DistillVQConfig)


def test_no_tensor_left_uninitialised_after_loading(tmp_path):
    config = DistillVQConfig(**SMALL)
    DistillVQModel(config).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["rotation"]  # a checkpoint without the (identity) rotation still loads a valid model
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = DistillVQModel.from_pretrained(tmp_path)
    assert torch.equal(loaded.rotation, torch.eye(32))
    assert all(torch.isfinite(tensor).all() for tensor in loaded.state_dict().values())


def test_checkpoint_of_other_shapes_names_the_tensor(tmp_path):
    DistillVQModel(DistillVQConfig(**SMALL)).save_pretrained(tmp_path / "small")
    DistillVQModel(DistillVQConfig(**{**SMALL, "num_lists": 8})).save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text((tmp_path / "small" / "config.json").read_text())
    with pytest.raises(ValueError, match=r"ivf_centroids is \[8, 32\] in model.safetensors, expected \[16, 32\]"):
        DistillVQModel.from_pretrained(tmp_path / "other")


def test_query_encoder_round_trip(tmp_path):
    encoder_config = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "intermediate_size": 32, "vocab_size": 100}
    model = DistillVQModel(DistillVQConfig(query_encoder_config=encoder_config, **SMALL)).eval()
    input_ids = torch.randint(0, 100, (3, 7))
    embeddings = model.encode_queries(input_ids)
    assert embeddings.shape == (3, 32)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(3))
    model.save_pretrained(tmp_path)
    loaded = DistillVQModel.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(loaded.encode_queries(input_ids), embeddings, rtol=0, atol=0)


def test_encode_queries_without_encoder_explains(model):
    with pytest.raises(ValueError, match="no query encoder; pass query_embeddings"):
        model.encode_queries(torch.ones(1, 3, dtype=torch.long))


def test_reconstruction_error_is_below_centroid_error(model, random_embeddings):
    docs = random_embeddings[0]
    list_ids, codes = model.quantize(docs)
    reconstruction = model.reconstruct(list_ids, codes).numpy()
    centroid_only = (model.ivf_centroids[list_ids] @ model.rotation).detach().numpy()
    assert np.square(reconstruction - docs).sum() < 0.8 * np.square(centroid_only - docs).sum()


def test_too_few_documents_to_train_is_a_clear_error(random_embeddings):
    docs = random_embeddings[0]
    with pytest.raises(ValueError, match=r"doc_embeddings has 200 rows; at least 256 are needed"):
        DistillVQModel.from_embeddings(docs[:200], DistillVQConfig(embedding_dim=32, num_lists=256, num_subvectors=8))
    with pytest.raises(ValueError, match=r"200 documents are too few to train OPQ8,IVF16,PQ8x8: .*codewords\) needs 256"
                                         r", use_rotation \(OPQ training\) needs 1000"):
        DistillVQModel.from_embeddings(docs[:200], DistillVQConfig(embedding_dim=32, num_lists=16, num_subvectors=8,
                                                                   use_rotation=True))
