"""`DistillVQModel`: IVF centroids, residual codebooks (PQ or RQ) and an OPQ rotation, scored exactly as faiss does."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import SAFE_WEIGHTS_NAME, ModelOutput, cached_file

from .configuration_distill_vq import DistillVQConfig
from .encoding import pool_tokens, resolve_encoder
from .faiss_bridge import build_faiss_index, read_faiss_index, train_faiss_index
from .quantizers import get_quantizer
from .validation import check_embeddings

QUANTIZE_BATCH_BYTES = 2**28  # `quantize`'s largest temporary per batch: 256 MiB of float32 scores


@dataclass
class DistillVQOutput(ModelOutput):
    """Teacher and student scores of queries against documents (higher is better for both metrics).

    Args:
        ivf_scores (`(batch, num_docs)`): `s(Rq, c_list(d))`, the coarse (IVF) student.
        pq_scores (`(batch, num_docs)`): `s(Rq, c_list(d) + Q(Rd - c_list(d)))`, the exported index's score with the
            residual's codes (PQ or RQ); differentiable w.r.t. centroids and codebooks.
        teacher_scores (`(batch, num_docs)`): `s(q, d)`, exact search with the original embeddings.
        student_scores (`(batch, num_docs)`): `s(q, d)` of the model's own (student) query embeddings against the
            exact documents; only when the queries come from the query encoder (EmbedDistill's score term).
        query_embeddings (`(batch, dim)`): the queries as the index scores them, after the query adapter and the
            rotation: `R A q`.
        student_doc_embeddings (`(num_texts, dim)`): documents embedded by the query encoder (a symmetric student),
            only when document tokens are given (EmbedDistill's document embedding matching).
        codeword_temperature (`()`): temperature of the soft codeword assignment used for the gradients.
    """

    ivf_scores: torch.Tensor | None = None
    pq_scores: torch.Tensor | None = None
    teacher_scores: torch.Tensor | None = None
    student_scores: torch.Tensor | None = None
    query_embeddings: torch.Tensor | None = None
    student_doc_embeddings: torch.Tensor | None = None
    codeword_temperature: torch.Tensor | None = None


def pairwise_scores(queries: torch.Tensor, docs: torch.Tensor, metric: str) -> torch.Tensor:
    """Scores of `queries (B, D)` against `docs (N, D)` -> `(B, N)`, or against `docs (B, K, D)` -> `(B, K)`.

    Inner product, or the negative squared L2 distance, so that higher is better for both metrics. Always float32
    with autocast off (as vector-quantize-pytorch's `Codebook.forward`): under bf16 mixed precision the scores, and
    the list assignments made from them, stay those of the exported faiss index.
    """
    with torch.autocast(queries.device.type, enabled=False):
        queries, docs = queries.float(), docs.float()
        if docs.dim() == 2:
            products = queries @ docs.T
        else:
            products = torch.einsum("bd,bkd->bk", queries, docs)
        if metric == "inner_product":
            return products
        query_norms = queries.pow(2).sum(-1, keepdim=True)
        doc_norms = docs.pow(2).sum(-1)
        return 2 * products - query_norms - (doc_norms if docs.dim() == 3 else doc_norms.unsqueeze(0))


class DistillVQPreTrainedModel(PreTrainedModel):
    config_class = DistillVQConfig
    base_model_prefix = "distill_vq"
    main_input_name = "query_embeddings"
    # The model card's facts (`distill_vq.model_card.DistillVQModelCardData`), written to README.md on save; set by
    # `DistillVQTrainer`, or by hand. Anything with `save(folder, config, model_id=None)` serves: this module
    # imports nothing of the card.
    model_card_data = None

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, DistillVQModel):
            init.normal_(module.ivf_centroids, std=0.02)
            init.normal_(module.codebooks, std=0.02)
            init.eye_(module.rotation)
            if module.query_adapter is not None:
                init.eye_(module.query_adapter)
        else:
            super()._init_weights(module)


class DistillVQModel(DistillVQPreTrainedModel):
    """A differentiable `[OPQ,]IVF,PQ` or `[OPQ,]IVF,RQ` index.

    Weights:
        ivf_centroids `(num_lists, dim)`, codebooks (PQ: `(num_subvectors, 2**bits, dim // num_subvectors)`, RQ:
        `(num_codebooks, 2**bits, dim)`),
        rotation `(dim, dim)` (persistent buffer; identity without OPQ), and optionally a `query_encoder`
        (with `query_projection` when its hidden size differs from `dim`) or a `query_adapter` `(dim, dim)`.
    """

    def __init__(self, config: DistillVQConfig):
        super().__init__(config)
        dim = config.embedding_dim
        self.ivf_centroids = nn.Parameter(torch.empty(config.num_lists, dim))
        self.codebooks = nn.Parameter(torch.empty(*get_quantizer(config.quantizer).codebook_shape(config)))
        self.register_buffer("rotation", torch.empty(dim, dim), persistent=True)
        self.query_encoder = None
        self.query_projection = None
        self.query_adapter = nn.Parameter(torch.empty(dim, dim)) if config.query_adapter else None
        if config.query_encoder_config is not None:
            self.query_encoder = _without_pooler(AutoModel.from_config(config.query_encoder_config))
            hidden_size = config.query_encoder_config.hidden_size
            if hidden_size != dim:
                self.query_projection = nn.Linear(hidden_size, dim, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs) -> "DistillVQModel":
        """`PreTrainedModel.from_pretrained` (a folder or a Hub id, `revision=` included), refusing checkpoints of
        another model type and naming each tensor whose shape mismatches."""
        if kwargs.get("config") is None:
            hub_kwargs = {key: kwargs[key] for key in ("revision", "cache_dir", "token") if key in kwargs}
            config_dict, _ = DistillVQConfig.get_config_dict(pretrained_model_name_or_path, **hub_kwargs)
            if config_dict.get("model_type") != DistillVQConfig.model_type:
                raise ValueError(
                    f"{pretrained_model_name_or_path} holds a {config_dict.get('model_type')!r} model, not a "
                    "distill_vq quantizer; load it with its own class (e.g. AutoModel)."
                )
        kwargs.setdefault("key_mapping", {r"^pq_codebooks$": "codebooks"})  # checkpoints saved before RQ existed
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        except SafetensorError as error:  # cut off, empty, or not a safetensors file (a pickle is never unpickled)
            raise ValueError(
                f"{pretrained_model_name_or_path}: {SAFE_WEIGHTS_NAME} is not a readable safetensors file ({error}); "
                "it is damaged or cut off: copy it again, or train the model again."
            ) from error
        except RuntimeError as error:
            if "ignore_mismatched_sizes" not in str(error):
                raise
            mismatches = _shape_mismatches(pretrained_model_name_or_path, kwargs)
            raise ValueError(
                f"The checkpoint {pretrained_model_name_or_path} has tensors of other shapes than its config "
                f"implies: {mismatches}. Load it with the config it was saved with, or rebuild the model."
            ) from error

    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus `README.md` from `model_card_data` when the model carries one
        (`DistillVQTrainer` attaches it): rendered again if distill-vq wrote it, updated if written by hand."""
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        if is_main_process and self.model_card_data is not None:
            self.model_card_data.save(save_directory, self.config)

    def _upload_modified_files(self, working_dir, repo_id: str, *args, **kwargs):
        """`push_to_hub` replaces the saved README.md with the repository's card (or transformers' placeholder)
        before this upload; write the model card over it, naming `repo_id`, so that the push carries it."""
        if self.model_card_data is not None:
            self.model_card_data.save(working_dir, self.config, model_id=repo_id)
        return super()._upload_modified_files(working_dir, repo_id, *args, **kwargs)

    def attach_query_encoder(self, encoder_name_or_path, num_layers: int | None = None,
                             layers: Sequence[int] | None = None, revision: str | None = None):
        """Give the model its own trainable query encoder (EmbedDistill's student), loaded from
        `encoder_name_or_path` and cut to its first `num_layers` transformer layers (e.g. 3 of all-MiniLM-L6-v2's
        6) or to the layers numbered `layers` (e.g. `[0, 2, 4]`, every other layer, which distills better than
        the lower three on the Debian benchmark). A projection to `embedding_dim` is added when the hidden sizes
        differ. Returns the model."""
        if self.query_adapter is not None:
            raise ValueError("The model has a query adapter (for queries embedded by the document encoder); a query "
                             "encoder replaces that encoder: build the model without query_adapter.")
        if num_layers is not None and layers is not None:
            raise ValueError("Give num_layers (the first n layers) or layers (their numbers), not both.")
        _, location = resolve_encoder(encoder_name_or_path)
        encoder = AutoModel.from_pretrained(location, revision=revision)
        keep = list(range(num_layers)) if num_layers is not None else layers
        if keep is not None:
            stack = getattr(getattr(encoder, "encoder", None), "layer", None)
            if not isinstance(stack, nn.ModuleList):
                raise ValueError(f"{encoder_name_or_path} has no BERT-style layer stack (encoder.layer) to cut; "
                                 "leave num_layers and layers unset to train it whole.")
            check_layers(keep, len(stack), encoder_name_or_path)
            encoder.encoder.layer = nn.ModuleList(stack[number] for number in keep)
            encoder.config.num_hidden_layers = len(keep)
        self.config.query_encoder_config = encoder.config
        self.config.query_encoder_name_or_path = resolve_encoder(encoder_name_or_path)[0]
        self.config.query_encoder_layers = None if keep is None else list(keep)
        self.query_encoder = _without_pooler(encoder).to(self.device)
        self.query_projection = None
        if encoder.config.hidden_size != self.config.embedding_dim:
            self.query_projection = nn.Linear(encoder.config.hidden_size, self.config.embedding_dim, bias=False)
            nn.init.normal_(self.query_projection.weight, std=encoder.config.hidden_size**-0.5)
            self.query_projection.to(self.device)
        return self

    def attach_query_adapter(self):
        """Give the model a trainable query adapter: a linear map `(dim, dim)` on the query embeddings, at identity,
        which training fits against the index (for queries embedded by `encoder_name_or_path`). Returns the model."""
        if self.query_encoder is not None:
            raise ValueError("The model has its own query encoder, which the training already fits to the index; a "
                             "query adapter is for queries embedded by the document encoder.")
        self.config.query_adapter = True
        self.query_adapter = nn.Parameter(torch.eye(self.config.embedding_dim, device=self.device))
        return self

    # ----- construction from faiss -----

    @classmethod
    def from_faiss(cls, index, **config_kwargs) -> "DistillVQModel":
        """Copy the centroids, codebooks and rotation of a trained faiss `[OPQ,]IVF,PQ` or `[OPQ,]IVF,RQ` index.

        `config_kwargs` (e.g. `encoder_name_or_path`) are added to the config read from the index.
        """
        config, weights = read_faiss_index(index)
        config.update(config_kwargs)
        model = cls(config)
        with torch.no_grad():
            for name, value in weights.items():
                getattr(model, name).copy_(torch.from_numpy(np.ascontiguousarray(value)))
        return model

    @classmethod
    def from_embeddings(cls, doc_embeddings, config: DistillVQConfig, seed: int = 1234,
                        max_train_docs: int | None = None) -> "DistillVQModel":
        """Train faiss's initialisation (the paper's starting point) on a random sample of `doc_embeddings (N, dim)`
        (array or memory map) of at most `max_train_docs` documents (default: see `faiss_bridge.train_faiss_index`)."""
        docs = check_embeddings(
            doc_embeddings, "doc_embeddings", config.embedding_dim, min_rows=max(config.num_lists, 1)
        )
        index = train_faiss_index(docs, config, seed=seed, max_train_docs=max_train_docs)
        extra = {key: getattr(config, key) for key in config.to_diff_dict() if key not in _FAISS_FIELDS}
        return cls.from_faiss(index, **extra)

    def to_faiss(self, doc_embeddings=None, nprobe: int | None = None):
        """A faiss index carrying the current weights, with `doc_embeddings (N, dim)` stored under this model's codes
        as ids `0..N-1`, searching `nprobe` lists per query (default: `config.nprobe`).

        Its scores equal `forward(...).pq_scores` (for l2, faiss returns squared distances, i.e. `-pq_scores`). PQ
        exports `config.index_factory_string`; RQ exports the same codes in a PQ-speed `IndexIVFPQ` over the
        repeated query (`quantizers.residual.lifted_ivfpq`). A query adapter becomes the index's first transform, so
        the index takes the queries as the encoder embeds them (see `faiss_bridge.build_faiss_index`).
        """
        list_ids = codes = None
        if doc_embeddings is not None:
            list_ids, codes = (tensor.cpu().numpy() for tensor in self.quantize(doc_embeddings))
        return build_faiss_index(
            self.config,
            self.ivf_centroids.detach().cpu().float().numpy(),
            self.codebooks.detach().cpu().float().numpy(),
            self.rotation.detach().cpu().float().numpy(),
            list_ids=list_ids,
            codes=codes,
            nprobe=nprobe or self.config.nprobe,
            query_adapter=None if self.query_adapter is None else self.query_adapter.detach().cpu().float().numpy(),
        )

    # ----- quantization -----

    @property
    def code_family(self):
        """The config's code family (`distill_vq.quantizers`): how residuals become codes."""
        return get_quantizer(self.config.quantizer)

    def rotate(self, embeddings: torch.Tensor) -> torch.Tensor:
        """`(..., dim) -> (..., dim)`: `R x`, the OPQ rotation (identity without OPQ)."""
        if not self.config.use_rotation:
            return embeddings
        with torch.autocast(embeddings.device.type, enabled=False):  # quantization runs in fp32 (see assign_lists)
            return embeddings.float() @ self.rotation.float().T

    @torch.no_grad()
    def assign_lists(self, rotated_docs: torch.Tensor) -> torch.Tensor:
        """`(N, dim) -> (N,)`: the IVF list faiss assigns each (rotated) document to (scored in float32)."""
        scores = pairwise_scores(rotated_docs, self.ivf_centroids, self.config.metric)
        return scores.argmax(dim=-1)

    def quantize_residuals(self, residuals: torch.Tensor, temperature: float | torch.Tensor | None = None,
                           codes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize `residuals (N, dim)` with the config's code family, differentiably (see its `quantize`): PQ's
        straight-through soft assignment at `temperature`, or RQ's given `codes (N, num_codes)`.

        Returns:
            `(reconstruction (N, dim) float32, codes (N, num_codes), temperature ())`.
        """
        return self.code_family.quantize(self.config, self.codebooks, residuals, temperature, codes)

    @torch.no_grad()
    def quantize(self, doc_embeddings, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode `doc_embeddings (N, dim)` as the exported index stores them, in float32 with autocast off:
        `(list_ids (N,), codes (N, num_codes))`.

        `batch_size` documents at a time; by default as many as keep each batch's largest temporary, its scores
        against every list centroid or every codeword, near `QUANTIZE_BATCH_BYTES`, whatever the number of lists."""
        docs = check_embeddings(doc_embeddings, "doc_embeddings", self.config.embedding_dim)
        scores_per_doc = max(self.config.num_lists, self.codebooks.shape[0] * self.codebooks.shape[1])
        batch_size = batch_size or max(256, QUANTIZE_BATCH_BYTES // (4 * scores_per_doc))
        list_ids, codes = [], []
        for start in range(0, len(docs), batch_size):  # one batch in memory at a time (docs may be a memmap)
            batch_lists, batch_codes = self.encode_batch(torch.tensor(docs[start : start + batch_size],
                                                                      device=self.device))
            list_ids.append(batch_lists)
            codes.append(batch_codes)
        return torch.cat(list_ids), torch.cat(codes)

    @torch.no_grad()
    def encode_batch(self, docs: torch.Tensor, with_codes: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """`quantize` for a checked batch `docs (n, dim)` already on the model's device: `(list_ids (n,), codes
        (n, num_codes))`, or codes None when not `with_codes`."""
        with torch.autocast(docs.device.type, enabled=False):
            rotated = self.rotate(docs)
            lists = self.assign_lists(rotated)
            if not with_codes:
                return lists, None
            return lists, self.code_family.encode(self.config, self.codebooks, rotated - self.ivf_centroids[lists])

    @torch.no_grad()
    def reconstruct(self, list_ids: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """`(N,), (N, num_codes) -> (N, dim)`: decoded documents in the original (unrotated) space."""
        rotated = self.ivf_centroids[list_ids] + self.code_family.decode(self.config, self.codebooks, codes)
        return rotated @ self.rotation if self.config.use_rotation else rotated

    # ----- queries -----

    def adapt_queries(self, query_embeddings: torch.Tensor) -> torch.Tensor:
        """`(B, dim) -> (B, dim)`: `A q`, the query adapter (identity without one)."""
        if self.query_adapter is None:
            return query_embeddings
        with torch.autocast(query_embeddings.device.type, enabled=False):
            return query_embeddings.float() @ self.query_adapter.float().T

    def encode_queries(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """`(B, L)` token ids -> `(B, dim)` query embeddings from the model's own query encoder."""
        if self.query_encoder is None:
            raise ValueError(
                "This model has no query encoder; pass query_embeddings made by "
                f"{self.config.encoder_name_or_path or 'the document encoder'} instead of input_ids "
                "(distill_vq.query_encoding.query_encoder_for(folder) picks the right encoder for a saved model)."
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.query_encoder(**inputs).last_hidden_state  # (B, L, H)
        pooled = pool_tokens(hidden, attention_mask, self.config.query_pooling)
        if self.query_projection is not None:
            pooled = self.query_projection(pooled)
        if self.config.normalize_query_embeddings:
            pooled = nn.functional.normalize(pooled, dim=-1)
        return pooled

    # ----- scoring -----

    def forward(
        self,
        query_embeddings: torch.Tensor | None = None,
        doc_embeddings: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        codeword_temperature: float | None = None,
        teacher_query_embeddings: torch.Tensor | None = None,
        doc_input_ids: torch.Tensor | None = None,
        doc_attention_mask: torch.Tensor | None = None,
        doc_list_ids: torch.Tensor | None = None,
        doc_codes: torch.Tensor | None = None,
        **kwargs,
    ) -> DistillVQOutput:
        """Score queries against documents with the teacher, the IVF student and the PQ student.

        Args:
            query_embeddings: `(B, dim)` (mapped by the query adapter when the model has one, which makes the given
                embeddings the teacher's); or give `input_ids (B, L)` to embed queries with the query encoder.
            doc_embeddings: `(N, dim)` shared by all queries (scores `(B, N)`) or `(B, K, dim)` per query
                (scores `(B, K)`); the teacher's document embeddings.
            codeword_temperature: soft-assignment temperature for the PQ gradients (see `quantize_residuals`).
            teacher_query_embeddings: `(B, dim)` teacher queries for the teacher scores when the queries are
                embedded by a student encoder; defaults to `query_embeddings`.
            doc_input_ids: `(M, L)` document tokens for the query encoder to embed as a symmetric student.
            doc_list_ids, doc_codes: the documents' lists `(N,)` and codes `(N, num_codes)` (flattened like
                `doc_embeddings`) when computed beforehand (the trainer reuses them for a few steps, see
                `encoding_cache`; PQ recomputes its codes anyway); default: assigned and encoded now.
        """
        if query_embeddings is None:
            query_embeddings = self.encode_queries(input_ids, attention_mask, token_type_ids)
        student_scores = None
        if self.query_adapter is not None:  # the given queries are the teacher's, unless the teacher's are given too
            teacher_query_embeddings = query_embeddings if teacher_query_embeddings is None else teacher_query_embeddings
            query_embeddings = self.adapt_queries(query_embeddings)
        elif teacher_query_embeddings is not None:
            student_scores = pairwise_scores(query_embeddings, doc_embeddings, self.config.metric)
        else:
            teacher_query_embeddings = query_embeddings
        flat_docs = doc_embeddings.reshape(-1, doc_embeddings.shape[-1])
        rotated_docs = self.rotate(flat_docs)
        centroids = self.ivf_centroids[self.assign_lists(rotated_docs) if doc_list_ids is None else doc_list_ids]
        residuals, _, temperature = self.quantize_residuals(rotated_docs - centroids, codeword_temperature, doc_codes)
        shape = doc_embeddings.shape
        rotated_queries = self.rotate(query_embeddings)
        metric = self.config.metric
        return DistillVQOutput(
            ivf_scores=pairwise_scores(rotated_queries, centroids.reshape(shape), metric),
            pq_scores=pairwise_scores(rotated_queries, (centroids + residuals).reshape(shape), metric),
            teacher_scores=pairwise_scores(teacher_query_embeddings, doc_embeddings, metric),
            student_scores=student_scores,
            query_embeddings=rotated_queries,
            student_doc_embeddings=None if doc_input_ids is None else self.encode_queries(doc_input_ids,
                                                                                          doc_attention_mask),
            codeword_temperature=temperature,
        )


def check_layers(layers: Sequence[int], num_layers: int, encoder_name: str) -> None:
    """Refuse a list of layers to keep that is empty, repeats a layer or names one outside `0..num_layers-1`."""
    if not layers or len(set(layers)) < len(layers) or not all(0 <= number < num_layers for number in layers):
        raise ValueError(f"The layers {list(layers)} are not possible: {encoder_name} has {num_layers} layers "
                         f"(encoder.layer), numbered 0 to {num_layers - 1}; give distinct numbers.")


def _without_pooler(encoder: nn.Module) -> nn.Module:
    """The encoder without its pooler (BERT's `pooler`), whose output queries never use: it would get no gradient,
    which distributed training (`ddp_find_unused_parameters=False`) refuses."""
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def _shape_mismatches(pretrained_model_name_or_path, kwargs) -> str:
    """Describe each tensor of the checkpoint whose shape differs from the shape its config implies."""
    config = kwargs.get("config") or DistillVQConfig.from_pretrained(pretrained_model_name_or_path)
    hub_kwargs = {key: kwargs[key] for key in ("revision", "cache_dir", "token") if key in kwargs}
    weights_file = cached_file(pretrained_model_name_or_path, SAFE_WEIGHTS_NAME, **hub_kwargs)
    with torch.device("meta"):
        expected = {name: tuple(tensor.shape) for name, tensor in DistillVQModel(config).state_dict().items()}
    found = []
    with safe_open(weights_file, framework="pt") as checkpoint:
        for name in checkpoint.keys():
            shape = tuple(checkpoint.get_slice(name).get_shape())
            if name in expected and expected[name] != shape:
                found.append(f"{name} is {list(shape)} in {SAFE_WEIGHTS_NAME}, expected {list(expected[name])}")
    return "; ".join(found)


_FAISS_FIELDS = {"embedding_dim", "num_lists", "quantizer", "num_subvectors", "num_codebooks", "bits_per_subvector",
                 "beam_size", "use_rotation", "metric"}

AutoModel.register(DistillVQConfig, DistillVQModel)

__all__ = ["DistillVQModel", "DistillVQPreTrainedModel", "DistillVQOutput", "check_layers", "pairwise_scores"]
