"""`DistillVQConfig`: the shapes and scoring rule of a Distill-VQ quantizer (IVF lists + residual codes)."""

from __future__ import annotations

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .quantizers import get_quantizer

METRICS = ("inner_product", "l2")
POOLINGS = ("mean", "cls")
MIN_DEFAULT_NPROBE = 8
INTEGER_FIELDS = ("embedding_dim", "num_lists", "num_subvectors", "num_codebooks", "bits_per_subvector", "nprobe",
                  "beam_size")


class DistillVQConfig(PreTrainedConfig):
    r"""
    Configuration of a [`DistillVQModel`]: an IVF coarse quantizer with `num_lists` centroids, a code family for the
    residuals (`quantizer`: product quantization with `num_subvectors` sub-vectors, or residual quantization with
    `num_codebooks` full-dimension codebooks, `bits_per_subvector` bits per code), and an optional OPQ rotation.
    Together they fix the shapes of the weights and the scores, which are exactly those of
    `faiss.index_factory(embedding_dim, config.index_factory_string, metric)`, e.g. `"OPQ16,IVF1024,PQ16x8"` or
    `"IVF1024,RQ16x8_Nnone"`.

    Args:
        embedding_dim (`int`): dimension of the document (and query) embeddings.
        num_lists (`int`): number of IVF lists (coarse centroids).
        quantizer (`str`, *optional*, defaults to `"pq"`): the code family, a key of `distill_vq.quantizers.QUANTIZERS`:
            `"pq"` (faiss PQ) or `"rq"` (faiss residual quantizer, inner product and 8 bits only).
        num_subvectors (`int`): number of PQ sub-vectors; must divide `embedding_dim`. Bytes per vector of a PQ
            model is `num_subvectors * bits_per_subvector / 8`.
        num_codebooks (`int`, *optional*): number of RQ codebooks (bytes per vector at 8 bits); `quantizer="rq"`
            only, defaulting to `num_subvectors`.
        bits_per_subvector (`int`): bits per code, 1..16 (codebook size `2**bits_per_subvector`).
        beam_size (`int`, *optional*): RQ's beam search width (faiss `max_beam_size`); `quantizer="rq"` only,
            defaulting to 5.
        nprobe (`int`, *optional*): IVF lists searched per query, 1..`num_lists`; defaults to an eighth of the lists,
            but at least `min(num_lists, 8)` so that small indexes are not searched through one list.
        use_rotation (`bool`): whether an OPQ rotation is applied to queries and documents first.
        metric (`str`): `"inner_product"` or `"l2"`; scores are inner products or negative squared distances.
        encoder_name_or_path (`str`, *optional*): Hub id or path of the encoder that made the document
            embeddings (like PEFT's `base_model_name_or_path`).
        encoder_revision (`str`, *optional*): revision of that encoder.
        encoder_subfolder (`str`, *optional*): the folder inside the model's repository that holds a copy of that
            encoder (`distill-vq push --include-encoder`: `"encoder"`); `None` when the encoder is only named.
        query_encoder_config (`dict` or `PreTrainedConfig`, *optional*): config of a trained query encoder the
            model carries (Distill-VQ joint training, EmbedDistill student); `None` when queries are embedded
            by `encoder_name_or_path`.
        query_encoder_name_or_path (`str`, *optional*): the encoder the query encoder was initialised from, and
        query_encoder_layers (`list[int]`, *optional*): the layers of it kept (all when `None`); for the record.
        query_pooling (`str`): `"mean"` or `"cls"` pooling of the query encoder's token states.
        normalize_query_embeddings (`bool`): L2-normalise the query encoder's embeddings.
        query_adapter (`bool`): whether the model carries a query adapter, a linear map `(dim, dim)` applied to query
            embeddings of `encoder_name_or_path` before they are scored (trained against the index, initialised
            at identity); for queries that arrive as embeddings. Exclusive with `query_encoder_config`.
    """

    model_type = "distill_vq"
    sub_configs_defaults = {
        "query_encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True)
    }

    embedding_dim: int = 384
    num_lists: int = 1024
    quantizer: str = "pq"
    num_subvectors: int = 16
    num_codebooks: int | None = None
    bits_per_subvector: int = 8
    beam_size: int | None = None
    nprobe: int | None = None
    use_rotation: bool = False
    metric: str = "inner_product"
    encoder_name_or_path: str | None = None
    encoder_revision: str | None = None
    encoder_subfolder: str | None = None
    query_encoder_config: dict | PreTrainedConfig | None = None
    query_encoder_name_or_path: str | None = None
    query_encoder_layers: list[int] | None = None
    query_pooling: str = "mean"
    normalize_query_embeddings: bool = True
    query_adapter: bool = False

    def __post_init__(self, **kwargs):
        self._check_types()
        if self.nprobe is None:
            self.nprobe = max(self.num_lists // 8, min(self.num_lists, MIN_DEFAULT_NPROBE))
        self._check_shapes()
        super().__post_init__(**kwargs)

    def _check_types(self):
        """Raise `ValueError` for a field of the wrong type (e.g. `"num_lists": "1024"` in a hand-edited config.json)."""
        for name in INTEGER_FIELDS:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"{name}={value!r} must be an integer, not {type(value).__name__}; fix config.json.")

    def _check_shapes(self):
        """Raise `ValueError` naming the field and the fix unless faiss can build these shapes."""
        if self.metric not in METRICS:
            raise ValueError(f"metric={self.metric!r} is unknown; use one of {METRICS}.")
        if self.query_adapter and self.query_encoder_config is not None:
            raise ValueError("query_adapter maps the teacher's query embeddings, but query_encoder_config gives the "
                             "model its own query encoder; keep one of the two.")
        if self.query_pooling not in POOLINGS:
            raise ValueError(f"query_pooling={self.query_pooling!r} is unknown; use one of {POOLINGS}.")
        for name in ("embedding_dim", "num_lists", "num_subvectors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer.")
        if not 1 <= self.nprobe <= self.num_lists:
            raise ValueError(f"nprobe={self.nprobe} must be between 1 and num_lists={self.num_lists}; lower nprobe.")
        if not 1 <= self.bits_per_subvector <= 16:
            raise ValueError(
                f"bits_per_subvector={self.bits_per_subvector} is outside 1..16; 8 is the usual choice."
            )
        get_quantizer(self.quantizer).check_config(self)  # the family's own shapes (fills its defaults)

    @property
    def num_codes(self) -> int:
        """Codes per vector: PQ sub-vectors or RQ codebooks."""
        return get_quantizer(self.quantizer).num_codes(self)

    @property
    def codebook_size(self) -> int:
        return 2**self.bits_per_subvector

    @property
    def bytes_per_vector(self) -> float:
        return self.num_codes * self.bits_per_subvector / 8

    @property
    def index_factory_string(self) -> str:
        """The `faiss.index_factory` description of the same index, e.g. `"OPQ16,IVF1024,PQ16x8"`."""
        rotation = f"OPQ{self.num_codes}," if self.use_rotation else ""
        return f"{rotation}IVF{self.num_lists},{get_quantizer(self.quantizer).factory_string(self)}"


AutoConfig.register(DistillVQConfig.model_type, DistillVQConfig)

__all__ = ["DistillVQConfig"]
