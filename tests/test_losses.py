"""Each loss against a value computed by hand on a 1-query, 3-candidate example; the losses' configs and citations;
the combined objective's named terms on a real model."""

import math

import pytest
import torch

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.losses import (
    SCORE_LOSSES,
    DistillVQLoss,
    EmbeddingMatchingLoss,
    InBatchContrastiveLoss,
    KLDivergenceLoss,
    ListNetLoss,
    MarginMSELoss,
    MSELoss,
    RankNetLoss,
    build_score_loss,
)
from distill_vq.trainer import DistillVQCollator

STUDENT = torch.tensor([[1.0, 0.0, 2.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0]])


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_listnet_is_cross_entropy_of_softmaxes():
    p, q = softmax([2.0, 1.0, 0.0]), softmax([1.0, 0.0, 2.0])
    expected = -sum(pi * math.log(qi) for pi, qi in zip(p, q))
    assert ListNetLoss().compute_loss_from_scores(STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-6)
    p2, q2 = softmax([4.0, 2.0, 0.0]), softmax([2.0, 0.0, 4.0])  # temperature 0.5 doubles the logits, no rescaling
    expected = -sum(a * math.log(b) for a, b in zip(p2, q2))
    assert ListNetLoss(0.5).compute_loss_from_scores(STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-6)
    assert ListNetLoss(0.5)(STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-6)  # calling is the same


def test_kl_is_zero_for_equal_scores_and_is_multiplied_by_temperature_squared():
    assert KLDivergenceLoss().compute_loss_from_scores(TEACHER, TEACHER).item() == pytest.approx(0.0, abs=1e-7)
    p, q = softmax([2.0, 1.0, 0.0]), softmax([1.0, 0.0, 2.0])
    expected = sum(a * math.log(a / b) for a, b in zip(p, q))
    assert KLDivergenceLoss().compute_loss_from_scores(STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-6)
    p2, q2 = softmax([4.0, 2.0, 0.0]), softmax([2.0, 0.0, 4.0])
    expected = sum(a * math.log(a / b) for a, b in zip(p2, q2)) * 0.25
    assert KLDivergenceLoss(0.5).compute_loss_from_scores(STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-6)


def test_mse_and_margin_mse_are_divided_by_temperature_squared():
    assert MSELoss().compute_loss_from_scores(STUDENT, TEACHER).item() == pytest.approx((1 + 1 + 4) / 3)
    assert MSELoss(2.0).compute_loss_from_scores(STUDENT, TEACHER).item() == pytest.approx((1 + 1 + 4) / 3 / 4)
    # teacher top is column 0: teacher margins (0, 1, 2), student margins (0, 1, -1)
    assert MarginMSELoss().compute_loss_from_scores(STUDENT, TEACHER).item() == pytest.approx((0 + 0 + 9) / 3)
    assert MarginMSELoss(3.0).compute_loss_from_scores(STUDENT, TEACHER).item() == pytest.approx(1 / 3)


def test_ranknet_over_teacher_ordered_pairs():
    # teacher order 0 > 1 > 2; student differences s0-s1 = 1, s0-s2 = -1, s1-s2 = -2
    expected = sum(math.log1p(math.exp(-d)) for d in (1.0, -1.0, -2.0)) / 3
    assert RankNetLoss().compute_loss_from_scores(STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-6)
    # top_k=2 keeps the teacher's columns 0 and 1: one pair, s0 - s1 = 1
    assert RankNetLoss(top_k=2).compute_loss_from_scores(STUDENT, TEACHER).item() == pytest.approx(
        math.log1p(math.exp(-1.0)), rel=1e-6)


def test_contrastive_uses_label_or_teacher_top():
    log_q = [math.log(v) for v in softmax([1.0, 0.0, 2.0])]
    loss = InBatchContrastiveLoss()
    assert loss.compute_loss_from_scores(STUDENT, TEACHER).item() == pytest.approx(-log_q[0], rel=1e-6)
    assert loss.compute_loss_from_scores(STUDENT, TEACHER, torch.tensor([2])).item() == pytest.approx(-log_q[2], rel=1e-6)
    assert loss.compute_loss_from_scores(STUDENT, TEACHER, torch.tensor([-100])).item() == pytest.approx(-log_q[0],
                                                                                                         rel=1e-6)


def test_embedding_matching():
    loss = EmbeddingMatchingLoss()
    assert loss.compute_loss_from_embeddings(torch.zeros(2, 3), torch.ones(2, 3)).item() == pytest.approx(3.0)
    assert loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[3.0, 5.0]])).item() == pytest.approx(9 + 16)


@pytest.mark.parametrize("loss", [cls(0.25) for cls in SCORE_LOSSES.values()] + [EmbeddingMatchingLoss()],
                         ids=lambda loss: type(loss).__name__)
def test_every_loss_describes_itself(loss):
    config = loss.get_config_dict()
    if not isinstance(loss, EmbeddingMatchingLoss):
        assert config["temperature"] == 0.25
    assert loss.citation.strip().startswith("@") and "year" in loss.citation


def test_score_losses_have_their_papers():
    years = {"listnet": "2007", "ranknet": "2005", "margin_mse": "2010.02666", "kl": "1503.02531",
             "contrastive": "1807.03748", "mse": "2204.00185"}
    for name, reference in years.items():
        assert reference in SCORE_LOSSES[name]().citation, name
    assert "2301.12005" in EmbeddingMatchingLoss().citation
    assert RankNetLoss(top_k=8).get_config_dict() == {"temperature": 1.0, "top_k": 8}


def test_unknown_loss_and_bad_temperature_are_refused():
    with pytest.raises(ValueError, match="Unknown loss 'hinge'; choose one of"):
        build_score_loss("hinge", 1.0)
    with pytest.raises(ValueError, match="temperature=0 must be positive"):
        ListNetLoss(0)


@pytest.fixture(scope="module")
def small_model(debian_embeddings):
    return DistillVQModel.from_embeddings(debian_embeddings[0], DistillVQConfig(num_lists=16, num_subvectors=8))


@pytest.fixture(scope="module")
def batch(debian_embeddings):
    docs, queries = debian_embeddings
    features = [{"query_embedding": queries[i], "candidate_ids": [3 * i, 3 * i + 1, 3 * i + 2],
                 "positive_ids": [3 * i] if i % 2 else []} for i in range(4)]
    return DistillVQCollator(docs)(features)


def test_combined_loss_returns_the_weighted_named_terms(small_model, batch):
    loss = DistillVQLoss(small_model, ListNetLoss(0.05), pq_weight=1.0, ivf_weight=0.5, label_weight=2.0)
    terms, outputs = loss(batch, return_outputs=True)
    assert list(terms) == ["pq_listnet", "ivf_listnet", "labels_contrastive"]
    listnet = ListNetLoss(0.05)
    torch.testing.assert_close(terms["pq_listnet"], listnet(outputs.pq_scores, outputs.teacher_scores))
    torch.testing.assert_close(terms["ivf_listnet"], 0.5 * listnet(outputs.ivf_scores, outputs.teacher_scores))
    labelled = batch["labels"] >= 0
    assert labelled.sum() == 2
    expected = 2.0 * InBatchContrastiveLoss(0.05)(outputs.pq_scores[labelled], outputs.teacher_scores[labelled],
                                                 batch["labels"][labelled])
    torch.testing.assert_close(terms["labels_contrastive"], expected)
    assert set(loss(batch)) == set(terms)  # without return_outputs, the terms alone
    assert loss.trained_weights == {"codebooks", "ivf_centroids", "query_encoder", "query_adapter"}
    assert DistillVQLoss(small_model, ivf_weight=1.0, pq_weight=0.0).trained_weights == {
        "ivf_centroids", "query_encoder", "query_adapter"}


def test_combined_loss_config_and_citations(small_model):
    loss = DistillVQLoss(small_model, RankNetLoss(0.1, top_k=16), ivf_weight=0.0, label_weight=1.0)
    config = loss.get_config_dict()
    assert config["score_loss"] == "RankNetLoss" and config["score_loss_config"] == {"temperature": 0.1, "top_k": 16}
    assert (config["pq_weight"], config["ivf_weight"], config["label_weight"]) == (1.0, 0.0, 1.0)
    assert config["codeword_temperature"] is None
    assert loss.temperature == 0.1
    for reference in ("2204.00185", "burges2005ranknet", "1807.03748"):
        assert loss.citation.count(reference) == 1, reference
    assert "2301.12005" not in loss.citation  # no EmbedDistill term is weighted


def test_combined_loss_refuses_what_cannot_train(small_model):
    with pytest.raises(ValueError, match="Every weight is 0"):
        DistillVQLoss(small_model, pq_weight=0.0, ivf_weight=0.0)
    with pytest.raises(ValueError, match="embedding_matching term\\(s\\) train a query encoder, which this model lacks"):
        DistillVQLoss(small_model, embedding_matching_weight=1.0)
    with pytest.raises(TypeError, match="score_loss must be a ScoreLoss"):
        DistillVQLoss(small_model, score_loss=torch.nn.MSELoss())
