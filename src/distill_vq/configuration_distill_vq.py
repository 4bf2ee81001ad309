"""`DistillVQConfig`: the shapes and scoring rule of a Distill-VQ quantizer (IVF lists + residual PQ)."""

from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

METRICS = ("inner_product", "l2")
POOLINGS = ("mean", "cls")
MIN_DEFAULT_NPROBE = 8
INTEGER_FIELDS = ("embedding_dim", "num_lists", "num_subvectors", "bits_per_subvector", "nprobe")


class DistillVQConfig(PreTrainedConfig):
    r"""
    Configuration of a [`DistillVQModel`]: an IVF coarse quantizer with `num_lists` centroids, a product
    quantizer of the residuals with `num_subvectors` sub-vectors of `bits_per_subvector` bits each, and an
    optional OPQ rotation. Together they fix the shapes of the weights and the scores, which are exactly
    those of `faiss.index_factory(embedding_dim, "[OPQ{m},]IVF{num_lists},PQ{m}x{bits}", metric)`.

    Args:
        embedding_dim (`int`): dimension of the document (and query) embeddings.
        num_lists (`int`): number of IVF lists (coarse centroids).
        num_subvectors (`int`): number of PQ sub-vectors; must divide `embedding_dim`. Bytes per vector is
            `num_subvectors * bits_per_subvector / 8`.
        bits_per_subvector (`int`): bits per PQ code, 1..16 (codebook size `2**bits_per_subvector`).
        nprobe (`int`, *optional*): IVF lists searched per query, 1..`num_lists`; defaults to an eighth of the lists,
            but at least `min(num_lists, 8)` so that small indexes are not searched through one list.
        use_rotation (`bool`): whether an OPQ rotation is applied to queries and documents first.
        metric (`str`): `"inner_product"` or `"l2"`; scores are inner products or negative squared distances.
        encoder_name_or_path (`str`, *optional*): Hub id or path of the encoder that made the document
            embeddings (like PEFT's `base_model_name_or_path`).
        encoder_revision (`str`, *optional*): revision of that encoder.
        query_encoder_config (`dict` or `PreTrainedConfig`, *optional*): config of a trained query encoder the
            model carries (Distill-VQ joint training, EmbedDistill student); `None` when queries are embedded
            by `encoder_name_or_path`.
        query_pooling (`str`): `"mean"` or `"cls"` pooling of the query encoder's token states.
        normalize_query_embeddings (`bool`): L2-normalise the query encoder's embeddings.
    """

    model_type = "distill_vq"
    sub_configs_defaults = {
        "query_encoder_config": SubConfigSpec(config_class=AutoConfig, model_type="bert", optional=True)
    }

    embedding_dim: int = 384
    num_lists: int = 1024
    num_subvectors: int = 16
    bits_per_subvector: int = 8
    nprobe: int | None = None
    use_rotation: bool = False
    metric: str = "inner_product"
    encoder_name_or_path: str | None = None
    encoder_revision: str | None = None
    query_encoder_config: dict | PreTrainedConfig | None = None
    query_pooling: str = "mean"
    normalize_query_embeddings: bool = True

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
        if self.query_pooling not in POOLINGS:
            raise ValueError(f"query_pooling={self.query_pooling!r} is unknown; use one of {POOLINGS}.")
        for name in ("embedding_dim", "num_lists", "num_subvectors"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be a positive integer.")
        if self.embedding_dim % self.num_subvectors != 0:
            divisors = [m for m in (4, 8, 12, 16, 24, 32, 48, 64, 96) if self.embedding_dim % m == 0]
            raise ValueError(
                f"num_subvectors={self.num_subvectors} does not divide embedding_dim={self.embedding_dim}; "
                f"choose a divisor such as {divisors}."
            )
        if not 1 <= self.nprobe <= self.num_lists:
            raise ValueError(f"nprobe={self.nprobe} must be between 1 and num_lists={self.num_lists}; lower nprobe.")
        if not 1 <= self.bits_per_subvector <= 16:
            raise ValueError(
                f"bits_per_subvector={self.bits_per_subvector} is outside 1..16; 8 is the usual choice."
            )

    @property
    def subvector_dim(self) -> int:
        return self.embedding_dim // self.num_subvectors

    @property
    def codebook_size(self) -> int:
        return 2**self.bits_per_subvector

    @property
    def bytes_per_vector(self) -> float:
        return self.num_subvectors * self.bits_per_subvector / 8

    @property
    def index_factory_string(self) -> str:
        """The `faiss.index_factory` description of the same index, e.g. `"OPQ16,IVF1024,PQ16x8"`."""
        rotation = f"OPQ{self.num_subvectors}," if self.use_rotation else ""
        return f"{rotation}IVF{self.num_lists},PQ{self.num_subvectors}x{self.bits_per_subvector}"


__all__ = ["DistillVQConfig"]
