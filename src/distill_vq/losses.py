"""Distillation losses: each compares student scores with teacher scores over the same candidates.

Every loss takes `student_scores (B, N)` and `teacher_scores (B, N)` (higher is better; one row per query, one
column per candidate document) and an optional `labels (B,)` (the column of each query's labelled positive,
`-100` where there is none), and returns a scalar.
"""

import torch
from torch import nn
from torch.nn import functional as F

IGNORE_INDEX = -100


class ListNetLoss(nn.Module):
    """Cross-entropy between the teacher's and the student's softmax over each query's candidates (the paper's
    default): `-sum_j softmax(t/T)_j log softmax(s/T)_j`."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_scores, teacher_scores, labels=None):
        targets = F.softmax(teacher_scores / self.temperature, dim=-1)
        return -(targets * F.log_softmax(student_scores / self.temperature, dim=-1)).sum(-1).mean()


class KLDivergenceLoss(nn.Module):
    """`KL(softmax(t/T) || softmax(s/T)) * T**2` (Hinton et al.); ListNet minus the teacher's entropy."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_scores, teacher_scores, labels=None):
        student = F.log_softmax(student_scores / self.temperature, dim=-1)
        teacher = F.log_softmax(teacher_scores / self.temperature, dim=-1)
        return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * self.temperature**2


class MSELoss(nn.Module):
    """Mean squared difference of the scores themselves."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_scores, teacher_scores, labels=None):
        return F.mse_loss(student_scores / self.temperature, teacher_scores / self.temperature)


class MarginMSELoss(nn.Module):
    """Margin-MSE (Hofstätter et al.): the student's margin between the teacher's top candidate and every other
    candidate must equal the teacher's margin."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_scores, teacher_scores, labels=None):
        top = teacher_scores.argmax(-1, keepdim=True)
        student_margins = student_scores.gather(-1, top) - student_scores
        teacher_margins = teacher_scores.gather(-1, top) - teacher_scores
        return F.mse_loss(student_margins / self.temperature, teacher_margins / self.temperature)


class RankNetLoss(nn.Module):
    """RankNet over the pairs of each query's `top_k` teacher candidates: `log(1 + exp(-(s_i - s_j)/T))` for every
    pair the teacher orders `t_i > t_j`."""

    def __init__(self, temperature: float = 1.0, top_k: int = 64):
        super().__init__()
        self.temperature = temperature
        self.top_k = top_k

    def forward(self, student_scores, teacher_scores, labels=None):
        top_teacher, columns = teacher_scores.topk(min(self.top_k, teacher_scores.shape[-1]), dim=-1)
        top_student = student_scores.gather(-1, columns)
        student_differences = (top_student.unsqueeze(-1) - top_student.unsqueeze(-2)) / self.temperature
        ordered = top_teacher.unsqueeze(-1) > top_teacher.unsqueeze(-2)
        return F.softplus(-student_differences)[ordered].mean()


class InBatchContrastiveLoss(nn.Module):
    """InfoNCE over the candidates: cross-entropy of the student's softmax at the labelled positive, or at the
    teacher's top candidate for queries without a label."""

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        self.temperature = temperature

    def forward(self, student_scores, teacher_scores, labels=None):
        targets = teacher_scores.argmax(-1)
        if labels is not None:
            targets = torch.where(labels == IGNORE_INDEX, targets, labels)
        return F.cross_entropy(student_scores / self.temperature, targets)


class EmbeddingMatchingLoss(nn.Module):
    """EmbedDistill's geometric term: `mean ||teacher_embeddings - student_embeddings||^2` over `(B, dim)`."""

    def forward(self, student_embeddings, teacher_embeddings):
        return (teacher_embeddings - student_embeddings).pow(2).sum(-1).mean()


SCORE_LOSSES = {
    "listnet": ListNetLoss,
    "kl": KLDivergenceLoss,
    "mse": MSELoss,
    "margin_mse": MarginMSELoss,
    "ranknet": RankNetLoss,
    "contrastive": InBatchContrastiveLoss,
}


def build_score_loss(name: str, temperature: float) -> nn.Module:
    """The score loss called `name` (one of `SCORE_LOSSES`) at `temperature`."""
    if name not in SCORE_LOSSES:
        raise ValueError(f"Unknown loss {name!r}; choose one of {sorted(SCORE_LOSSES)}.")
    return SCORE_LOSSES[name](temperature=temperature)
