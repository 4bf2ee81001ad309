"""distill-vq: learn faiss IVF-PQ indexes by distilling dense-retrieval scores (Distill-VQ, EmbedDistill)."""

from transformers import AutoConfig, AutoModel

from .configuration_distill_vq import DistillVQConfig
from .modeling_distill_vq import DistillVQModel, DistillVQOutput
from .trainer import DistillVQTrainer, DistillVQTrainingArguments

AutoConfig.register("distill_vq", DistillVQConfig)
AutoModel.register(DistillVQConfig, DistillVQModel)

__version__ = "0.1.0"
__all__ = ["DistillVQConfig", "DistillVQModel", "DistillVQOutput", "DistillVQTrainer", "DistillVQTrainingArguments"]
