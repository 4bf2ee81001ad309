"""distill-vq: learn faiss IVF-PQ / IVF-RQ indexes by distilling dense-retrieval scores (Distill-VQ, EmbedDistill).

Modules, from the ground floor up (each imports only modules listed above it):

    quantizers/                  code families: product (PQ) and residual (RQ) quantization, one module each
    settings.py                  TrainSettings: what a run is asked to do, and its defaults (no heavy imports)
    configuration_distill_vq.py  DistillVQConfig: shapes, code family, nprobe, encoder id
    validation.py, io_utils.py   input checks; atomic writes and the Hub-id test
    hub_client.py                Hub requests' time-outs, and Hub failures in one line
    faiss_bridge.py              exact faiss <-> weights conversion, faiss's own training, flat index
    encoding.py                  text encoder (sentence-transformers folders) and the embedding cache
    modeling_distill_vq.py       DistillVQModel: differentiable IVF + codes, scored exactly as the exported index
    query_encoding.py            what embeds a model's queries: its own trained query encoder, or the document encoder
    sampling.py                  exact search, candidate mining, data-derived temperature and learning rates
    losses.py                    ranking / embedding-matching losses and DistillVQLoss, the combined objective
    evaluation.py                recall vs exact, label metrics, QPS, tables
    data.py                      corpus / queries / qrels loading (BEIR, files, Hub) and the retrieval task
    model_card.py                card data filled by a TrainerCallback, rendered from model_cards/
    trainer.py                   DistillVQTrainer, DistillVQTrainingArguments, the RQ code cache
    output_folder.py, hub.py     the command's output folder; Hub push and download
    retriever.py                 Retriever: text in, documents out, over an output folder
    query_generation.py          doc2query-style training queries from documents
    pipeline.py                  load -> encode -> initialise -> distil -> export -> evaluate -> write
    cli.py                       the `distill-vq` command: flags and printing over the pipeline
"""

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# Public name -> the module that defines it, imported on first use (PEP 562) so that `import distill_vq` and the
# command's `--help` load no torch. Importing the configuration and model modules registers them with
# `AutoConfig` / `AutoModel`: `from distill_vq import DistillVQModel` makes `AutoModel.from_pretrained` work.
_EXPORTS = {
    "DistillVQConfig": "configuration_distill_vq",
    "DistillVQModel": "modeling_distill_vq",
    "DistillVQOutput": "modeling_distill_vq",
    "DistillVQTrainer": "trainer",
    "DistillVQTrainingArguments": "trainer",
}

if TYPE_CHECKING:
    from .configuration_distill_vq import DistillVQConfig
    from .modeling_distill_vq import DistillVQModel, DistillVQOutput
    from .trainer import DistillVQTrainer, DistillVQTrainingArguments


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = ["DistillVQConfig", "DistillVQModel", "DistillVQOutput", "DistillVQTrainer", "DistillVQTrainingArguments"]
