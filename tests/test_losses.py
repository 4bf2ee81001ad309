"""Each loss against a value computed by hand on a 1-query, 3-candidate example."""

import math

import pytest
import torch

from distill_vq.losses import (
    EmbeddingMatchingLoss, InBatchContrastiveLoss, KLDivergenceLoss, ListNetLoss, MarginMSELoss, MSELoss,
    RankNetLoss, build_score_loss,
)

STUDENT = torch.tensor([[1.0, 0.0, 2.0]])
TEACHER = torch.tensor([[2.0, 1.0, 0.0]])


def softmax(values):
    exps = [math.exp(v) for v in values]
    return [e / sum(exps) for e in exps]


def test_listnet_is_cross_entropy_of_softmaxes():
    p, q = softmax([2.0, 1.0, 0.0]), softmax([1.0, 0.0, 2.0])
    expected = -sum(pi * math.log(qi) for pi, qi in zip(p, q))
    assert ListNetLoss()(STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-6)
    p2, q2 = softmax([4.0, 2.0, 0.0]), softmax([2.0, 0.0, 4.0])  # temperature 0.5 doubles the logits
    assert ListNetLoss(0.5)(STUDENT, TEACHER).item() == pytest.approx(-sum(a * math.log(b) for a, b in zip(p2, q2)), rel=1e-6)


def test_kl_is_zero_for_equal_scores_and_matches_hand_value():
    assert KLDivergenceLoss()(TEACHER, TEACHER).item() == pytest.approx(0.0, abs=1e-7)
    p, q = softmax([2.0, 1.0, 0.0]), softmax([1.0, 0.0, 2.0])
    assert KLDivergenceLoss()(STUDENT, TEACHER).item() == pytest.approx(sum(a * math.log(a / b) for a, b in zip(p, q)), rel=1e-6)


def test_mse_and_margin_mse():
    assert MSELoss()(STUDENT, TEACHER).item() == pytest.approx((1 + 1 + 4) / 3)
    # teacher top is column 0: teacher margins (0, 1, 2), student margins (0, 1, -1)
    assert MarginMSELoss()(STUDENT, TEACHER).item() == pytest.approx((0 + 0 + 9) / 3)


def test_ranknet_over_teacher_ordered_pairs():
    # teacher order 0 > 1 > 2; student differences s0-s1 = 1, s0-s2 = -1, s1-s2 = -2
    expected = sum(math.log1p(math.exp(-d)) for d in (1.0, -1.0, -2.0)) / 3
    assert RankNetLoss()(STUDENT, TEACHER).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_uses_label_or_teacher_top():
    log_q = [math.log(v) for v in softmax([1.0, 0.0, 2.0])]
    assert InBatchContrastiveLoss()(STUDENT, TEACHER).item() == pytest.approx(-log_q[0], rel=1e-6)
    assert InBatchContrastiveLoss()(STUDENT, TEACHER, torch.tensor([2])).item() == pytest.approx(-log_q[2], rel=1e-6)
    assert InBatchContrastiveLoss()(STUDENT, TEACHER, torch.tensor([-100])).item() == pytest.approx(-log_q[0], rel=1e-6)


def test_embedding_matching():
    assert EmbeddingMatchingLoss()(torch.zeros(2, 3), torch.ones(2, 3)).item() == pytest.approx(3.0)


def test_unknown_loss_lists_the_choices():
    with pytest.raises(ValueError, match="Unknown loss 'hinge'; choose one of"):
        build_score_loss("hinge", 1.0)
