"""The distillation objective: score losses, the embedding matching loss, and `DistillVQLoss`, which combines them.

A score loss compares `student_scores (batch_size, num_candidates)` with `teacher_scores (batch_size,
num_candidates)` (higher is better; one row per query, one column per candidate document), given optional `labels
(batch_size,)` (the column of each query's labelled positive, `-100` where there is none), and returns a scalar. The
math lives in `compute_loss_from_scores`, so each loss can be tested on hand-made tensors; `DistillVQLoss` runs the
model and applies the score loss to each student it trains (IVF, IVF-PQ, a query encoder). Each loss describes itself
with `get_config_dict()` (its hyper-parameters) and `citation` (BibTeX), as sentence-transformers' losses do.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from .modeling_distill_vq import DistillVQModel, DistillVQOutput

logger = logging.getLogger(__name__)

IGNORE_INDEX = -100

DISTILL_VQ_CITATION = """
@inproceedings{xiao2022distillvq,
  title     = {Distill-VQ: Learning Retrieval Oriented Vector Quantization By Distilling Knowledge from Dense Embeddings},
  author    = {Xiao, Shitao and Liu, Zheng and Han, Weihao and Zhang, Jianjin and Lian, Defu and Gong, Yeyun and
               Chen, Qi and Yang, Fan and Sun, Hao and Shao, Yingxia and Xie, Xing},
  booktitle = {Proceedings of the 45th International ACM SIGIR Conference on Research and Development in Information Retrieval},
  year      = {2022},
  eprint    = {2204.00185},
  archivePrefix = {arXiv}
}
"""

EMBED_DISTILL_CITATION = """
@article{kim2023embeddistill,
  title   = {EmbedDistill: A Geometric Knowledge Distillation for Information Retrieval},
  author  = {Kim, Seungyeon and Rawat, Ankit Singh and Zaheer, Manzil and Jayasumana, Sadeep and
             Sadhanala, Veeranjaneyulu and Jitkrittum, Wittawat and Menon, Aditya Krishna and Fergus, Rob and Kumar, Sanjiv},
  journal = {arXiv preprint arXiv:2301.12005},
  year    = {2023}
}
"""


class ScoreLoss(nn.Module):
    """Base class of the score losses: `compute_loss_from_scores(student_scores, teacher_scores, labels=None)`
    holds the math, and calling the loss is the same call.

    Args:
        temperature: scores are divided by it before the loss is taken (each subclass says what that means for it).
    """

    name = "score"  # the key in `SCORE_LOSSES`, and the suffix of the logged terms (e.g. `pq_listnet`)

    def __init__(self, temperature: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature={temperature} must be positive; the teacher's score spread is a good one.")
        self.temperature = temperature

    def forward(self, student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.compute_loss_from_scores(student_scores, teacher_scores, labels)

    def compute_loss_from_scores(self, student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                                 labels: torch.Tensor | None = None) -> torch.Tensor:
        """`(batch_size, num_candidates)` student and teacher scores, `labels (batch_size,)` -> a scalar."""
        raise NotImplementedError

    def get_config_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    @property
    def citation(self) -> str:
        raise NotImplementedError


class ListNetLoss(ScoreLoss):
    """ListNet: the cross-entropy between the teacher's and the student's softmax over each query's candidates,
    `-sum_j softmax(t / T)_j log softmax(s / T)_j`, averaged over queries. Distill-VQ's best loss (the default).

    The temperature `T` sharpens both distributions; the loss is not rescaled by it.

    References:
        Cao et al., Learning to Rank: From Pairwise Approach to Listwise Approach, ICML 2007.
    """

    name = "listnet"

    def compute_loss_from_scores(self, student_scores, teacher_scores, labels=None):
        targets = F.softmax(teacher_scores / self.temperature, dim=-1)  # (batch_size, num_candidates)
        return -(targets * F.log_softmax(student_scores / self.temperature, dim=-1)).sum(-1).mean()

    @property
    def citation(self) -> str:
        return """
@inproceedings{cao2007listnet,
  title     = {Learning to Rank: From Pairwise Approach to Listwise Approach},
  author    = {Cao, Zhe and Qin, Tao and Liu, Tie-Yan and Tsai, Ming-Feng and Li, Hang},
  booktitle = {Proceedings of the 24th International Conference on Machine Learning},
  pages     = {129--136},
  year      = {2007}
}
"""


class KLDivergenceLoss(ScoreLoss):
    """Knowledge distillation: `KL(softmax(t / T) || softmax(s / T)) * T**2`, averaged over queries; ListNet minus
    the teacher's entropy, so the same gradient.

    The loss is multiplied by `temperature**2` (Hinton et al.), which keeps the gradients' size independent of `T`.

    References:
        Hinton et al., Distilling the Knowledge in a Neural Network, arXiv:1503.02531.
    """

    name = "kl"

    def compute_loss_from_scores(self, student_scores, teacher_scores, labels=None):
        student = F.log_softmax(student_scores / self.temperature, dim=-1)
        teacher = F.log_softmax(teacher_scores / self.temperature, dim=-1)
        return F.kl_div(student, teacher, log_target=True, reduction="batchmean") * self.temperature**2

    @property
    def citation(self) -> str:
        return """
@misc{hinton2015distilling,
  title         = {Distilling the Knowledge in a Neural Network},
  author        = {Hinton, Geoffrey and Vinyals, Oriol and Dean, Jeff},
  year          = {2015},
  eprint        = {1503.02531},
  archivePrefix = {arXiv},
  primaryClass  = {stat.ML}
}
"""


class MSELoss(ScoreLoss):
    """Mean squared difference of the scores themselves, `mean((s / T - t / T)**2)`: the temperature divides the
    loss by `T**2` (a plain MSE at `T = 1`). One of the losses Distill-VQ compares.

    References:
        Xiao et al., Distill-VQ, SIGIR 2022, arXiv:2204.00185.
    """

    name = "mse"

    def compute_loss_from_scores(self, student_scores, teacher_scores, labels=None):
        return F.mse_loss(student_scores / self.temperature, teacher_scores / self.temperature)

    @property
    def citation(self) -> str:
        return DISTILL_VQ_CITATION


class MarginMSELoss(ScoreLoss):
    """Margin-MSE: the student's margin between the teacher's top candidate and every other candidate must equal
    the teacher's margin, `mean(((s_top - s_j) / T - (t_top - t_j) / T)**2)`; the temperature divides the loss by
    `T**2`.

    References:
        Hofstätter et al., Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation,
        arXiv:2010.02666.
    """

    name = "margin_mse"

    def compute_loss_from_scores(self, student_scores, teacher_scores, labels=None):
        top = teacher_scores.argmax(-1, keepdim=True)  # (batch_size, 1)
        student_margins = student_scores.gather(-1, top) - student_scores
        teacher_margins = teacher_scores.gather(-1, top) - teacher_scores
        return F.mse_loss(student_margins / self.temperature, teacher_margins / self.temperature)

    @property
    def citation(self) -> str:
        return """
@misc{hofstatter2020improving,
  title         = {Improving Efficient Neural Ranking Models with Cross-Architecture Knowledge Distillation},
  author        = {Hofst{\\"a}tter, Sebastian and Althammer, Sophia and Schr{\\"o}der, Michael and Sertkan, Mete and
                   Hanbury, Allan},
  year          = {2020},
  eprint        = {2010.02666},
  archivePrefix = {arXiv},
  primaryClass  = {cs.IR}
}
"""


class RankNetLoss(ScoreLoss):
    """RankNet over the pairs of each query's `top_k` teacher candidates: the mean of `log(1 + exp(-(s_i - s_j) / T))`
    over every pair the teacher orders `t_i > t_j`. The temperature scales the student's score differences.

    Args:
        top_k: candidates per query whose pairs are compared (the cost grows as `top_k**2`).

    References:
        Burges et al., Learning to Rank using Gradient Descent, ICML 2005.
    """

    name = "ranknet"

    def __init__(self, temperature: float = 1.0, top_k: int = 64):
        super().__init__(temperature)
        self.top_k = top_k

    def compute_loss_from_scores(self, student_scores, teacher_scores, labels=None):
        top_teacher, columns = teacher_scores.topk(min(self.top_k, teacher_scores.shape[-1]), dim=-1)  # (B, k)
        top_student = student_scores.gather(-1, columns)
        student_differences = (top_student.unsqueeze(-1) - top_student.unsqueeze(-2)) / self.temperature  # (B, k, k)
        ordered = top_teacher.unsqueeze(-1) > top_teacher.unsqueeze(-2)
        return F.softplus(-student_differences)[ordered].mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "top_k": self.top_k}

    @property
    def citation(self) -> str:
        return """
@inproceedings{burges2005ranknet,
  title     = {Learning to Rank using Gradient Descent},
  author    = {Burges, Chris and Shaked, Tal and Renshaw, Erin and Lazier, Ari and Deeds, Matt and Hamilton, Nicole and
               Hullender, Greg},
  booktitle = {Proceedings of the 22nd International Conference on Machine Learning},
  pages     = {89--96},
  year      = {2005}
}
"""


class InBatchContrastiveLoss(ScoreLoss):
    """InfoNCE over the candidates: the cross-entropy of the student's softmax `softmax(s / T)` at the labelled
    positive, or at the teacher's top candidate for queries without a label (`-100`). The temperature sharpens the
    softmax (sentence-transformers' `scale` is `1 / T`).

    References:
        van den Oord et al., Representation Learning with Contrastive Predictive Coding, arXiv:1807.03748.
    """

    name = "contrastive"

    def compute_loss_from_scores(self, student_scores, teacher_scores, labels=None):
        targets = teacher_scores.argmax(-1)  # (batch_size,)
        if labels is not None:
            targets = torch.where(labels == IGNORE_INDEX, targets, labels)
        return F.cross_entropy(student_scores / self.temperature, targets)

    @property
    def citation(self) -> str:
        return """
@misc{oord2018representation,
  title         = {Representation Learning with Contrastive Predictive Coding},
  author        = {van den Oord, Aaron and Li, Yazhe and Vinyals, Oriol},
  year          = {2018},
  eprint        = {1807.03748},
  archivePrefix = {arXiv},
  primaryClass  = {cs.LG}
}
"""


class EmbeddingMatchingLoss(nn.Module):
    """EmbedDistill's geometric term: `mean ||teacher_embeddings - student_embeddings||^2`, the squared distance
    summed over the `dim` axis and averaged over rows. No temperature.

    References:
        Kim et al., EmbedDistill: A Geometric Knowledge Distillation for Information Retrieval, arXiv:2301.12005.
    """

    def forward(self, student_embeddings: torch.Tensor, teacher_embeddings: torch.Tensor) -> torch.Tensor:
        return self.compute_loss_from_embeddings(student_embeddings, teacher_embeddings)

    def compute_loss_from_embeddings(self, student_embeddings: torch.Tensor,
                                     teacher_embeddings: torch.Tensor) -> torch.Tensor:
        """`(batch_size, dim)` student and teacher embeddings -> a scalar."""
        return (teacher_embeddings - student_embeddings).pow(2).sum(-1).mean()

    def get_config_dict(self) -> dict[str, Any]:
        return {}

    @property
    def citation(self) -> str:
        return EMBED_DISTILL_CITATION


SCORE_LOSSES = {
    loss.name: loss
    for loss in (ListNetLoss, KLDivergenceLoss, MSELoss, MarginMSELoss, RankNetLoss, InBatchContrastiveLoss)
}


def build_score_loss(name: str, temperature: float) -> ScoreLoss:
    """The score loss called `name` (one of `SCORE_LOSSES`) at `temperature`."""
    if name not in SCORE_LOSSES:
        raise ValueError(f"Unknown loss {name!r}; choose one of {sorted(SCORE_LOSSES)}.")
    return SCORE_LOSSES[name](temperature=temperature)


class DistillVQLoss(nn.Module):
    """The Distill-VQ objective as a weighted sum of named terms (sentence-transformers' `SpladeLoss` style).

    `forward` runs the model on a batch (from `DistillVQCollator`) and returns each weighted term under its name;
    the trainer sums them and logs each one. A term whose weight is 0 is not computed.

    - `pq_<score loss>` (`pq_weight`): the score loss of the IVF-PQ scores (what the exported faiss index computes)
      against the teacher's exact scores.
    - `ivf_<score loss>` (`ivf_weight`): the same for the IVF scores (query against its documents' list centroids).
    - `student_<score loss>` (`student_weight`, EmbedDistill): the same for the scores of the model's query encoder
      against the exact documents.
    - `labels_contrastive` (`label_weight`): `InBatchContrastiveLoss` on the labelled positives of the queries that
      have one, over the query encoder's scores (or the IVF-PQ scores without one).
    - `embedding_matching` (`embedding_matching_weight`, EmbedDistill): `EmbeddingMatchingLoss` between the query
      encoder's queries and the teacher's (both rotated).
    - `doc_embedding_matching` (`doc_embedding_matching_weight`, EmbedDistill, symmetric student): the same between
      each query's first candidate embedded by the query encoder and its teacher embedding.

    When the model has a query encoder, that encoder embeds the query text (`input_ids`) for the students, and the
    teacher keeps its own query embeddings (`query_embeddings`) for the teacher scores.

    Args:
        model: the `DistillVQModel` being trained.
        score_loss: a `ScoreLoss`; default `ListNetLoss()` at temperature 1 (`DistillVQTrainer` builds it at the
            temperature derived from the teacher's score spread). Its temperature also serves the label term.
        pq_weight, ivf_weight, student_weight, label_weight, embedding_matching_weight, doc_embedding_matching_weight:
            the weights of the terms above.
        codeword_temperature: temperature of the soft codeword assignment that carries the PQ gradients (see
            `DistillVQModel.quantize_residuals`); `None` derives it from each batch.

    References:
        Xiao et al., Distill-VQ, arXiv:2204.00185; Kim et al., EmbedDistill, arXiv:2301.12005.
    """

    def __init__(
        self,
        model: DistillVQModel,
        score_loss: ScoreLoss | None = None,
        pq_weight: float = 1.0,
        ivf_weight: float = 0.5,
        student_weight: float = 0.0,
        label_weight: float = 0.0,
        embedding_matching_weight: float = 0.0,
        doc_embedding_matching_weight: float = 0.0,
        codeword_temperature: float | None = None,
    ):
        super().__init__()
        score_loss = ListNetLoss() if score_loss is None else score_loss
        if not isinstance(score_loss, ScoreLoss):
            raise TypeError(f"score_loss must be a ScoreLoss such as ListNetLoss(temperature=...); got "
                            f"{type(score_loss).__name__}. Subclass ScoreLoss and implement compute_loss_from_scores.")
        self.model = model
        self.score_loss = score_loss
        self.label_loss = InBatchContrastiveLoss(score_loss.temperature)
        self.embedding_matching = EmbeddingMatchingLoss()
        self.weights = {"pq": pq_weight, "ivf": ivf_weight, "student": student_weight, "label": label_weight,
                        "embedding_matching": embedding_matching_weight,
                        "doc_embedding_matching": doc_embedding_matching_weight}
        self.codeword_temperature = codeword_temperature
        if not any(self.weights.values()):
            raise ValueError(f"Every weight is 0, so nothing would train; set one of {sorted(self.weights)}.")
        encoder_terms = [name for name in ("student", "embedding_matching", "doc_embedding_matching")
                         if self.weights[name]]
        if encoder_terms and model.query_encoder is None:
            raise ValueError(f"The {', '.join(encoder_terms)} term(s) train a query encoder, which this model lacks; "
                             "call model.attach_query_encoder(...) first, or set their weights to 0.")

    @property
    def quantizer(self) -> DistillVQModel:
        """The model itself, also once the trainer has wrapped it for distributed training (`.module`)."""
        return getattr(self.model, "module", self.model)

    @property
    def temperature(self) -> float:
        """The ranking temperature: the score loss's."""
        return self.score_loss.temperature

    @property
    def trained_weights(self) -> set[str]:
        """The model's weight groups that some weighted term reaches: the codebooks need the PQ term, the centroids
        the PQ or IVF term; every term reaches the query encoder and the query adapter."""
        reached = {"query_encoder", "query_adapter"}
        if self.weights["pq"]:
            reached |= {"codebooks", "ivf_centroids"}
        if self.weights["ivf"]:
            reached.add("ivf_centroids")
        return reached

    def forward(self, inputs: dict[str, torch.Tensor], return_outputs: bool = False
                ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], DistillVQOutput]:
        """Run the model on a collated batch and return the weighted terms by name (and the model's outputs).

        Args:
            inputs: `query_embeddings (B, dim)`, `doc_embeddings`, optional `labels (B,)`, the tokenized queries
                (`input_ids`, ...) for a model with a query encoder, and `doc_input_ids`, `doc_attention_mask`,
                `matched_doc_embeddings (B, dim)` for the document embedding matching.
        """
        inputs = dict(inputs)
        labels = inputs.pop("labels", None)
        matched_docs = inputs.pop("matched_doc_embeddings", None)
        inputs.pop("doc_ids", None)
        teacher_queries = inputs["query_embeddings"]
        embeds_queries = self.quantizer.query_encoder is not None
        if embeds_queries:
            inputs.update(query_embeddings=None, teacher_query_embeddings=teacher_queries)
        outputs = self.model(**inputs, codeword_temperature=self.codeword_temperature)
        teacher_scores = outputs.teacher_scores
        terms = {}  # name -> (weight, unweighted value)
        for student, scores in (("pq", outputs.pq_scores), ("ivf", outputs.ivf_scores),
                                ("student", outputs.student_scores)):
            if self.weights[student]:
                terms[f"{student}_{self.score_loss.name}"] = (
                    self.weights[student], self.score_loss.compute_loss_from_scores(scores, teacher_scores, labels))
        if self.weights["label"] and labels is not None and (labels >= 0).any():
            labelled = labels >= 0
            scores = outputs.student_scores if embeds_queries else outputs.pq_scores
            terms["labels_contrastive"] = (self.weights["label"], self.label_loss.compute_loss_from_scores(
                scores[labelled], teacher_scores[labelled], labels[labelled]))
        if self.weights["embedding_matching"]:
            terms["embedding_matching"] = (self.weights["embedding_matching"],
                                           self.embedding_matching.compute_loss_from_embeddings(
                                               outputs.query_embeddings, self.quantizer.rotate(teacher_queries)))
        if self.weights["doc_embedding_matching"]:
            if matched_docs is None:
                raise ValueError("doc_embedding_matching_weight needs each query's first candidate as text: build the "
                                 "batches with DistillVQCollator(doc_texts=..., tokenizer=...).")
            terms["doc_embedding_matching"] = (self.weights["doc_embedding_matching"],
                                               self.embedding_matching.compute_loss_from_embeddings(
                                                   outputs.student_doc_embeddings, matched_docs))
        terms = {name: weight * value for name, (weight, value) in terms.items()}
        return (terms, outputs) if return_outputs else terms

    def get_config_dict(self) -> dict[str, Any]:
        return {"score_loss": type(self.score_loss).__name__, "score_loss_config": self.score_loss.get_config_dict(),
                **{f"{name}_weight": weight for name, weight in self.weights.items()},
                "codeword_temperature": self.codeword_temperature}

    @property
    def citation(self) -> str:
        """The BibTeX of Distill-VQ and of each sub-loss a weighted term uses, de-duplicated."""
        citations = [DISTILL_VQ_CITATION]
        if self.weights["pq"] or self.weights["ivf"] or self.weights["student"]:
            citations.append(self.score_loss.citation)
        if self.weights["label"]:
            citations.append(self.label_loss.citation)
        if self.weights["student"] or self.weights["embedding_matching"] or self.weights["doc_embedding_matching"]:
            citations.append(EMBED_DISTILL_CITATION)
        return "".join(dict.fromkeys(citations))


__all__ = [
    "SCORE_LOSSES",
    "DistillVQLoss",
    "EmbeddingMatchingLoss",
    "InBatchContrastiveLoss",
    "KLDivergenceLoss",
    "ListNetLoss",
    "MSELoss",
    "MarginMSELoss",
    "RankNetLoss",
    "ScoreLoss",
    "build_score_loss",
]
