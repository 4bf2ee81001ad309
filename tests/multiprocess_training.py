"""Trains the packaged slice's quantizer for a few steps; run by test_multiprocess.py, alone or under torchrun.

    python tests/multiprocess_training.py INIT_DIR OUTPUT_DIR PER_DEVICE_BATCH_SIZE

Each rank writes its final weights to OUTPUT_DIR/rank{N}.safetensors, with the wrapper class and world size.
"""

import sys
from pathlib import Path

import numpy as np
from datasets import Dataset
from safetensors.torch import save_file

from distill_vq import DistillVQModel
from distill_vq.trainer import DistillVQTrainer, DistillVQTrainingArguments

EMBEDDINGS = Path(__file__).parent / "data" / "default_data_embeddings"


def main(init_dir: str, output_dir: str, per_device_batch_size: int) -> None:
    docs = np.load(EMBEDDINGS / "docs.npy").astype(np.float32)
    queries = np.load(EMBEDDINGS / "queries.npy").astype(np.float32)[:512]
    model = DistillVQModel.from_pretrained(init_dir)
    args = DistillVQTrainingArguments(
        output_dir=output_dir, per_device_train_batch_size=per_device_batch_size, max_steps=3, use_cpu=True,
        report_to=[], seed=0, num_teacher_candidates=50, lr_scheduler_type="constant", save_strategy="no",
        disable_tqdm=True,
    )
    trainer = DistillVQTrainer(model, args, Dataset.from_dict({"query_embedding": queries}), docs)
    trainer.train()
    metadata = {"wrapper": type(trainer.model_wrapped).__name__, "world_size": str(args.world_size)}
    weights = {name: tensor.contiguous() for name, tensor in model.state_dict().items()}
    save_file(weights, str(Path(output_dir) / f"rank{args.process_index}.safetensors"), metadata=metadata)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
