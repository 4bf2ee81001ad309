"""`DistillVQTrainer`: a thin `transformers.Trainer` that distills exact-search scores into the quantizer.

The objective is `losses.DistillVQLoss`; mining and the data-derived scales are `sampling`'s. The trainer builds the
loss from `DistillVQTrainingArguments`, gathers candidates across processes, sums and logs the loss's terms, and
gives each weight its own learning rate.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .encoding_cache import EncodingCache
from .losses import IGNORE_INDEX, SCORE_LOSSES, DistillVQLoss, build_score_loss
from .model_card import DistillVQModelCardCallback
from .sampling import CandidateMiner, learning_rates, teacher_score_spread
from .validation import check_embeddings

logger = logging.getLogger(__name__)


@dataclass
class DistillVQTrainingArguments(TrainingArguments):
    """`TrainingArguments` plus the distillation settings (the weights of `DistillVQLoss`'s terms, the candidates,
    the learning rate of each weight). Temperatures and learning rates left at `None` are derived from the data's
    scale when training starts and logged (see `sampling.teacher_score_spread` and `sampling.learning_rates`)."""

    loss: str = field(default="listnet", metadata={"help": "listnet | kl | mse | margin_mse | ranknet | contrastive"})
    pq_loss_weight: float = field(default=1.0, metadata={"help": "Weight of the loss on the IVF-PQ student scores."})
    ivf_loss_weight: float = field(default=0.5, metadata={"help": "Weight of the loss on the IVF student scores."})
    student_loss_weight: float = field(
        default=0.0, metadata={"help": "EmbedDistill: weight of the ranking loss of the student query encoder's "
                                       "scores against the exact documents."}
    )
    label_loss_weight: float = field(
        default=0.0, metadata={"help": "Weight of the one-hot (contrastive) term on the labelled positives."}
    )
    embedding_matching_weight: float = field(
        default=0.0, metadata={"help": "EmbedDistill: weight of ||teacher query - student query||^2."}
    )
    doc_embedding_matching_weight: float = field(
        default=0.0, metadata={"help": "EmbedDistill, symmetric student: weight of ||teacher doc - student doc||^2 "
                                       "over each query's first candidate (its positive, else the teacher's top "
                                       "document), embedded by the query encoder from `doc_texts`."}
    )
    ranking_temperature: float | None = field(
        default=None, metadata={"help": "Softmax temperature of the ranking loss; default: the mean spread (std) "
                                        "of the teacher's scores over each query's top candidates."}
    )
    ranking_temperature_scale: float = field(
        default=1.0, metadata={"help": "Multiplies the derived ranking temperature (when ranking_temperature is "
                                       "None); below 1 sharpens the teacher's target towards its top documents, "
                                       "which favours MRR (0.25 lifted RQ's MRR@10 most on the Debian set)."}
    )
    codeword_temperature: float | None = field(
        default=None, metadata={"help": "Soft codeword-assignment temperature; default: the batch's mean gap "
                                        "between the nearest and second-nearest codeword distance."}
    )
    pq_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the PQ codebooks (paper: 1e-4); default: "
                                        "pq_relative_learning_rate x the codebooks' RMS. 0 freezes them."}
    )
    ivf_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the IVF centroids (paper: 1e-3); default: "
                                        "ivf_relative_learning_rate x the centroids' RMS. 0 freezes them."}
    )
    pq_relative_learning_rate: float = field(default=1e-2, metadata={"help": "See pq_learning_rate."})
    ivf_relative_learning_rate: float = field(default=6e-4, metadata={"help": "See ivf_learning_rate."})
    query_encoder_learning_rate: float = field(default=5e-6, metadata={"help": "Learning rate of the query encoder."})
    query_adapter_learning_rate: float = field(
        default=1e-4, metadata={"help": "Learning rate of the query adapter (a linear map at identity)."}
    )
    code_refresh_steps: int = field(
        default=50, metadata={"help": "With in-batch candidates, a document's IVF list (and RQ's beam-search codes, "
                                      "too slow for every step) is reused for this many steps, then encoded again "
                                      "with the current weights when next a candidate (see `encoding_cache`)."}
    )
    num_teacher_candidates: int = field(default=200, metadata={"help": "Teacher top-K documents per query."})
    num_random_candidates: int = field(default=0, metadata={"help": "Random documents per query."})
    in_batch_candidates: bool = field(
        default=True, metadata={"help": "Score every query against the candidates of the whole batch."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept: the collator reads the columns."})
    max_train_seconds: float | None = field(
        default=None, metadata={"help": "Stop training (and save a checkpoint) once this many seconds have passed, "
                                        "before max_steps if need be: a time budget."}
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Every trainable weight gets a gradient (weights no loss reaches are "
                                         "frozen), so DDP need not search."}
    )

    def __post_init__(self):
        super().__post_init__()
        weights = ("pq_loss_weight", "ivf_loss_weight", "student_loss_weight", "label_loss_weight",
                   "embedding_matching_weight", "doc_embedding_matching_weight")
        if not any(getattr(self, name) for name in weights):
            raise ValueError(f"Every loss weight is 0, so nothing would train; set one of {', '.join(weights)}.")
        if self.loss not in SCORE_LOSSES:
            raise ValueError(f"Unknown loss {self.loss!r}; choose one of {sorted(SCORE_LOSSES)}.")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError(f"num_train_epochs={self.num_train_epochs:g} with max_steps={self.max_steps} would train "
                             "nothing; set num_train_epochs > 0, or max_steps > 0.")
        if self.code_refresh_steps < 1:
            raise ValueError(f"code_refresh_steps={self.code_refresh_steps} must be at least 1 (1 encodes the "
                             "candidates every step).")
        if self.ranking_temperature_scale <= 0:
            raise ValueError(f"ranking_temperature_scale={self.ranking_temperature_scale} must be positive.")
        if self.num_teacher_candidates + self.num_random_candidates < 2:
            raise ValueError("Ranking needs at least 2 candidates per query; raise num_teacher_candidates.")


class DistillVQCollator:
    """Turns mined query rows into model inputs.

    Features hold `query_embedding (dim,)`, `candidate_ids` (document rows) and optionally `positive_ids` and the
    query text `query`. Returns `query_embeddings (B, dim)`, `doc_embeddings` - `(U, dim)` for the union of the
    batch's candidates when `in_batch` (with their rows, `doc_ids (U,)`), else `(B, K, dim)` - `labels (B,)`
    (column of the first positive, `-100` without one) and, with a tokenizer, the tokenized queries; with
    `doc_texts` (texts by document row) also each query's first candidate tokenized (`doc_input_ids (B, L)`,
    `doc_attention_mask`) and its teacher embedding (`matched_doc_embeddings (B, dim)`).
    """

    def __init__(self, doc_embeddings, in_batch: bool = True, tokenizer=None, max_query_length: int = 64,
                 doc_texts=None, max_doc_length: int = 128):
        self.doc_embeddings = doc_embeddings
        self.in_batch = in_batch
        self.tokenizer = tokenizer
        self.max_query_length = max_query_length
        self.doc_texts = doc_texts
        self.max_doc_length = max_doc_length

    def rows(self, rows) -> torch.Tensor:
        """`(U,)` or `(B, K)` document rows -> their embeddings `(U, dim)` or `(B, K, dim)`."""
        return torch.from_numpy(np.asarray(self.doc_embeddings[np.asarray(rows)], dtype=np.float32))

    def __call__(self, features: list[dict]) -> dict:
        queries = torch.tensor(np.array([feature["query_embedding"] for feature in features], dtype=np.float32))
        positives = [feature.get("positive_ids") or [] for feature in features]
        candidates = [feature["candidate_ids"] for feature in features]
        if self.in_batch:
            unique_rows = np.unique(np.concatenate(candidates))
            column_of = dict(zip(unique_rows.tolist(), range(len(unique_rows))))
            labels = [column_of[positive[0]] if positive else IGNORE_INDEX for positive in positives]
            batch = {"doc_embeddings": self.rows(unique_rows), "doc_ids": torch.from_numpy(unique_rows)}
        else:
            width = min(len(row) for row in candidates)
            labels = [0 if positive else IGNORE_INDEX for positive in positives]  # mining puts positives first
            batch = {"doc_embeddings": self.rows([row[:width] for row in candidates])}
        batch["query_embeddings"] = queries
        batch["labels"] = torch.tensor(labels)
        if self.tokenizer is not None:
            batch.update(self.tokenizer([feature["query"] for feature in features], padding=True, truncation=True,
                                        max_length=self.max_query_length, return_tensors="pt"))
        if self.doc_texts is not None:
            first_rows = [int(row[0]) for row in candidates]
            tokens = self.tokenizer([self.doc_texts[row] for row in first_rows], padding=True, truncation=True,
                                    max_length=self.max_doc_length, return_tensors="pt")
            batch.update(doc_input_ids=tokens["input_ids"], doc_attention_mask=tokens["attention_mask"],
                         matched_doc_embeddings=self.rows(first_rows))
        return batch


class TimeBudgetCallback(TrainerCallback):
    """Ends training at the first step after `max_seconds` of training (every process decides on the main
    process's clock, so that they stop at the same step)."""

    def __init__(self, max_seconds: float):
        self.max_seconds = max_seconds

    def on_train_begin(self, args, state, control, **kwargs):
        self.start = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        elapsed = torch.tensor(time.monotonic() - self.start, device=args.device)
        if args.world_size > 1:
            torch.distributed.broadcast(elapsed, src=0)
        if elapsed.item() > self.max_seconds:
            logger.info(f"Stopping at step {state.global_step}: the {self.max_seconds:g} s budget is spent.")
            control.should_training_stop = True
            control.should_save = args.save_strategy != "no"
        return control


class DistillVQTrainer(Trainer):
    """Trains a `DistillVQModel` so that its IVF / IVF-PQ scores rank each query's candidates like exact search.

    Args:
        model: the `DistillVQModel` (usually `DistillVQModel.from_embeddings(...)`, faiss's initialisation).
        args: `DistillVQTrainingArguments`.
        train_dataset: queries as a `Dataset` or streaming `IterableDataset` with a `query_embedding` column
            (the teacher's query embeddings), optionally `positive_ids` (labelled document rows) and `query` text
            (for a model with a query encoder). Documents may serve as pseudo-queries. Mined lazily when needed.
        doc_embeddings: `(num_docs, dim)` teacher document embeddings; a memory-mapped array stays on disk.
        processing_class: the query encoder's tokenizer, for a model with a query encoder.
        doc_texts: the documents' texts by row (e.g. `corpus["text"]`), for `doc_embedding_matching_weight`.
        loss: a `DistillVQLoss`; by default one is built from `args` (at the ranking temperature derived from the
            teacher's score spread unless `args.ranking_temperature` is set).
    """

    def __init__(self, model, args: DistillVQTrainingArguments, train_dataset, doc_embeddings,
                 data_collator=None, processing_class=None, doc_texts=None, loss: DistillVQLoss | None = None,
                 **kwargs):
        self.doc_embeddings = check_embeddings(doc_embeddings, "doc_embeddings", model.config.embedding_dim,
                                               min_rows=model.config.num_lists)
        self._check_text_inputs(model, args, processing_class, doc_texts)
        train_dataset = self._mine(train_dataset, args, model)
        data_collator = data_collator or DistillVQCollator(
            self.doc_embeddings, args.in_batch_candidates,
            processing_class if model.query_encoder is not None else None,
            doc_texts=doc_texts if args.doc_embedding_matching_weight else None,
        )
        super().__init__(model=model, args=args, train_dataset=train_dataset, data_collator=data_collator,
                         processing_class=processing_class, **kwargs)
        if args.max_train_seconds is not None:
            self.add_callback(TimeBudgetCallback(args.max_train_seconds))
        if loss is not None and not isinstance(loss, DistillVQLoss):
            raise TypeError(f"loss must be a DistillVQLoss; got {type(loss).__name__}. Wrap your score loss: "
                            "DistillVQLoss(model, score_loss=...).")
        self.loss = loss if loss is not None else self.build_loss(model, train_dataset)
        self.encoding_cache = None  # used with the batch's candidates shared by its queries (their rows known)
        if args.in_batch_candidates:
            self.encoding_cache = EncodingCache(
                len(self.doc_embeddings), model.code_family.num_codes(model.config) if model.code_family.cached_codes
                else None, args.code_refresh_steps)
        self._loss_terms = defaultdict(list)
        card_callback = DistillVQModelCardCallback()  # fills model.model_card_data, written to README.md on save
        self.add_callback(card_callback)
        card_callback.on_init_end(args, self.state, self.control, model=model, trainer=self)

    def build_loss(self, model, train_dataset) -> DistillVQLoss:
        """The `DistillVQLoss` that `args` describe, at `args.ranking_temperature` or the teacher's score spread."""
        args = self.args
        temperature = args.ranking_temperature or args.ranking_temperature_scale * teacher_score_spread(
            train_dataset, self.doc_embeddings, model.config.metric, args.num_teacher_candidates or None)
        return DistillVQLoss(
            model, build_score_loss(args.loss, temperature), pq_weight=args.pq_loss_weight,
            ivf_weight=args.ivf_loss_weight, student_weight=args.student_loss_weight,
            label_weight=args.label_loss_weight, embedding_matching_weight=args.embedding_matching_weight,
            doc_embedding_matching_weight=args.doc_embedding_matching_weight,
            codeword_temperature=args.codeword_temperature,
        )

    def _check_text_inputs(self, model, args, processing_class, doc_texts) -> None:
        """A query encoder needs its tokenizer; document embedding matching needs the documents' texts too."""
        if model.query_encoder is not None and processing_class is None:
            raise ValueError("The model has a query encoder, which embeds the query text: give its tokenizer "
                             "(processing_class=...) and a 'query' column in train_dataset.")
        if args.doc_embedding_matching_weight and (doc_texts is None or model.query_encoder is None):
            raise ValueError("doc_embedding_matching_weight needs a model with a query encoder "
                             "(attach_query_encoder) and the documents' texts (doc_texts=...).")
        if doc_texts is not None and len(doc_texts) != len(self.doc_embeddings):
            raise ValueError(f"doc_texts has {len(doc_texts)} texts but doc_embeddings {len(self.doc_embeddings)} "
                             "rows; give the texts in the rows' order.")

    def _mine(self, dataset, args, model):
        """Check the queries and add `candidate_ids` (lazily for a stream) unless they are already there."""
        first = next(iter(dataset), None)
        if first is None:
            raise ValueError("The training query set is empty; give queries, or documents as pseudo-queries.")
        if "query_embedding" not in first:
            raise ValueError(f"The training queries need a 'query_embedding' column; found {sorted(first)}. "
                             "Embed the queries with the teacher encoder first.")
        if model.query_encoder is not None and "query" not in first:
            raise ValueError(f"The model's query encoder needs the query text in a 'query' column; found "
                             f"{sorted(first)}.")
        dim = len(first["query_embedding"])
        if dim != self.doc_embeddings.shape[1]:
            raise ValueError(f"query_embedding has dimension {dim} but doc_embeddings has "
                             f"{self.doc_embeddings.shape[1]}; embed both with the same encoder.")
        num_docs = len(self.doc_embeddings)
        positives = first.get("positive_ids") or []
        if isinstance(dataset, Dataset) and "positive_ids" in dataset.column_names:
            positives = [row for rows in dataset["positive_ids"][:] for row in rows or []]
        bad = sorted({row for row in positives if not 0 <= row < num_docs})[:5]
        if bad:
            raise ValueError(f"positive_ids {bad} are outside the {num_docs} documents; map qrels ids to rows of "
                             "doc_embeddings and drop ids absent from the corpus.")
        if isinstance(dataset, Dataset):
            check_embeddings(dataset.with_format("numpy")["query_embedding"][:], "query_embedding", dim)
        if "candidate_ids" in first:
            return dataset
        miner = CandidateMiner(self.doc_embeddings, args.num_teacher_candidates, args.num_random_candidates,
                               metric=model.config.metric, seed=args.seed)
        kwargs = ({"desc": "Mining teacher candidates", "new_fingerprint": miner.fingerprint(dataset._fingerprint)}
                  if isinstance(dataset, Dataset) else {})
        return dataset.map(miner, batched=True, batch_size=1024, **kwargs)

    def get_optimizer_cls_and_kwargs(self, args, model=None):
        """The Trainer's optimizer with one parameter group per weight at its own rate (`sampling.learning_rates`);
        a weight that no weighted term reaches (`DistillVQLoss.trained_weights`), or whose rate is 0, is frozen."""
        optimizer_cls, optimizer_kwargs = super().get_optimizer_cls_and_kwargs(args, model)
        model = self.accelerator.unwrap_model(model or self.model)
        rates = learning_rates(
            model, pq_learning_rate=args.pq_learning_rate, ivf_learning_rate=args.ivf_learning_rate,
            pq_relative_learning_rate=args.pq_relative_learning_rate,
            ivf_relative_learning_rate=args.ivf_relative_learning_rate,
            query_encoder_learning_rate=args.query_encoder_learning_rate,
            query_adapter_learning_rate=args.query_adapter_learning_rate,
        )
        rates = {name: rate if name in self.loss.trained_weights else 0.0 for name, rate in rates.items()}
        weights = {"codebooks": [model.codebooks], "ivf_centroids": [model.ivf_centroids],
                   "query_encoder": [param for name, param in model.named_parameters()
                                     if name.startswith(("query_encoder.", "query_projection."))],
                   "query_adapter": [] if model.query_adapter is None else [model.query_adapter]}
        groups = []
        for name, params in weights.items():
            for param in params:
                param.requires_grad_(rates[name] > 0)
            if params and rates[name] > 0:
                decay = args.weight_decay if name == "query_encoder" else 0.0
                groups.append({"params": params, "lr": rates[name], "weight_decay": decay, "name": name})
        logger.info(f"Learning rates: {rates}")
        return optimizer_cls, {**optimizer_kwargs, "params": groups}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Gather the candidates of every process, run the loss on the (possibly wrapped) model, keep each term for
        `log`, and return their sum."""
        doc_ids = inputs.pop("doc_ids", None)
        if doc_ids is not None and self.accelerator.num_processes > 1:
            inputs["doc_embeddings"], inputs["labels"], doc_ids = self.share_candidates(doc_ids, inputs["labels"])
        if self.encoding_cache is not None and doc_ids is not None:
            inputs["doc_list_ids"], inputs["doc_codes"] = self.encoding_cache.lookup(
                self.accelerator.unwrap_model(model), doc_ids, inputs["doc_embeddings"], self.state.global_step)
        if self.loss.model is not model:  # the DDP wrapper, so that its forward synchronises the gradients
            self.loss.model = model
        terms, outputs = self.loss(inputs, return_outputs=True)
        for name, value in terms.items():
            self._loss_terms[name].append(value.detach())
        self._loss_terms["codeword_temperature"].append(outputs.codeword_temperature.detach())
        loss = torch.stack(list(terms.values())).sum()
        return (loss, outputs) if return_outputs else loss

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs):
        """`Trainer.train`, restoring the documents' encodings that the checkpoint saved with its weights."""
        if self.encoding_cache is not None:
            self.encoding_cache.clear()
            checkpoint = resume_from_checkpoint
            if checkpoint is True:  # the newest in output_dir; none is the Trainer's error to raise
                checkpoint = get_last_checkpoint(self.args.output_dir)
            if checkpoint:
                self.encoding_cache.load(checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def _save_checkpoint(self, model, trial) -> None:
        """The Trainer's checkpoint, with the documents' encodings written first (its `trainer_state.json`, written
        last, marks a checkpoint complete)."""
        if self.encoding_cache is not None and self.args.should_save:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self.encoding_cache.save(folder)
        super()._save_checkpoint(model, trial)

    def create_model_card(self, *args, **kwargs) -> None:
        """For `Trainer.push_to_hub`: the model's distill-vq card in `args.output_dir`, naming the repository, instead of
        transformers' generic one (set language, license and tags on `model.model_card_data`)."""
        if self.is_world_process_zero():
            self.model.model_card_data.save(self.args.output_dir, self.model.config, model_id=self.hub_model_id)

    def share_candidates(self, doc_ids: torch.Tensor, labels: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cross-process in-batch negatives: every process scores its queries against the union of all processes'
        candidates. Only document rows travel (the documents are the teacher's constants, so no gradient needs
        to cross processes); each process reads the embeddings itself.

        Returns the union's embeddings `(U_all, dim)`, `labels (B,)` re-pointed at the union's columns, and the
        union's rows `(U_all,)`.
        """
        everyone = self.accelerator.gather(self.accelerator.pad_across_processes(doc_ids, pad_index=-1))
        union = torch.unique(everyone[everyone >= 0])
        labels = torch.where(labels >= 0, torch.searchsorted(union, doc_ids[labels.clamp_min(0)]), labels)
        return self.data_collator.rows(union.cpu().numpy()).to(doc_ids.device), labels, union

    def log(self, logs: dict, *args, **kwargs) -> None:
        """Add the mean of each loss term since the last log, and the ranking temperature."""
        if "loss" in logs:
            for name, values in self._loss_terms.items():
                logs[name] = round(float(torch.stack(values).mean()), 6)
            self._loss_terms.clear()
            logs["ranking_temperature"] = self.loss.temperature
        super().log(logs, *args, **kwargs)


__all__ = ["DistillVQCollator", "DistillVQTrainer", "DistillVQTrainingArguments", "TimeBudgetCallback"]
