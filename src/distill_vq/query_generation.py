"""Queries for distillation without labelled ones: doc2query-style generation, or documents as pseudo-queries.

`QueryGenerator` wraps any `transformers` seq2seq model (a Hub id or a local folder, e.g. a
doc2query T5 model) and writes `num_queries_per_document` queries per document, reproducibly for
a given seed. `add_generated_queries` turns a corpus into a queries dataset with the columns
`_id`, `text` and `source_doc_id`; without a generator each document's opening words serve as
its pseudo-query, which Distill-VQ and EmbedDistill accept as well.
"""

import copy
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm
from transformers import (
    MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING,
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    GenerationConfig,
)

DEFAULT_MAX_DOCUMENT_TOKENS = 512
PSEUDO_QUERY_WORDS = 64
QUERY_COLUMNS = ["_id", "text", "source_doc_id"]


class QueryGenerator:
    """Generate queries for documents with a seq2seq model (doc2query).

    Args:
        model_name_or_path: Hub id or local folder of an encoder-decoder model and its tokenizer.
        num_queries_per_document: queries written per document.
        max_new_tokens: the longest query, in tokens.
        batch_size: documents per `generate` call.
        do_sample: nucleus sampling with `top_p` (doc2query's choice); otherwise beam search with
            `num_queries_per_document` beams, returning the best beams.
        top_p: nucleus sampling threshold.
        seed: seeds the sampling; the same seed and documents give the same queries.
        device: where to run; CUDA when available by default.
        revision: the Hub revision to load.
    """

    def __init__(
        self,
        model_name_or_path: str | Path,
        num_queries_per_document: int = 1,
        max_new_tokens: int = 32,
        batch_size: int = 16,
        do_sample: bool = True,
        top_p: float = 0.95,
        seed: int = 0,
        device: str | torch.device | None = None,
        revision: str | None = None,
    ):
        if num_queries_per_document < 1:
            raise ValueError(f"num_queries_per_document={num_queries_per_document} must be at least 1.")
        self.model_name_or_path = str(model_name_or_path)
        self.num_queries_per_document = num_queries_per_document
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        config = AutoConfig.from_pretrained(model_name_or_path, revision=revision)
        if type(config) not in MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING:
            raise ValueError(
                f"{self.model_name_or_path} is a '{config.model_type}' model, not a sequence-to-sequence one; "
                "query generation needs an encoder-decoder such as a doc2query T5 model "
                "(e.g. 'doc2query/msmarco-t5-base-v1')."
            )
        self.tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, revision=revision)
        self.model = AutoModelForSeq2SeqLM.from_pretrained(model_name_or_path, revision=revision, config=config)
        self.model.eval().to(self.device)
        self.max_document_tokens = min(self.tokenizer.model_max_length, DEFAULT_MAX_DOCUMENT_TOKENS)
        self.generation_config = self._generation_config(max_new_tokens, do_sample, top_p)

    def _generation_config(self, max_new_tokens: int, do_sample: bool, top_p: float) -> GenerationConfig:
        """The model's own generation defaults, updated with this generator's settings."""
        generation_config = copy.deepcopy(self.model.generation_config)
        sampling = {"top_p": top_p, "num_beams": 1} if do_sample else {"num_beams": self.num_queries_per_document}
        generation_config.update(
            max_new_tokens=max_new_tokens,
            do_sample=do_sample,
            num_return_sequences=self.num_queries_per_document,
            **sampling,
        )
        generation_config.validate()
        return generation_config

    def generate(self, documents: list[str], show_progress: bool = True) -> list[list[str]]:
        """Per document, its `num_queries_per_document` generated queries (stripped strings).

        Documents longer than the tokenizer's maximum length (at most 512 tokens) are truncated.
        The random state is seeded with `seed` for the call and restored afterwards.
        """
        queries = []
        step = self.num_queries_per_document  # generate returns each document's queries consecutively
        batches = range(0, len(documents), self.batch_size)
        forked_devices = [] if self.device.type == "cpu" else [self.device]
        with torch.random.fork_rng(devices=forked_devices, device_type=self.device.type), torch.inference_mode():
            torch.manual_seed(self.seed)
            for start in tqdm(batches, desc="Generating queries", unit="batch", disable=not show_progress):
                tokens = self.tokenizer(
                    documents[start : start + self.batch_size],
                    padding=True,
                    truncation=True,
                    max_length=self.max_document_tokens,
                    return_token_type_ids=False,  # seq2seq models take none; BERT-style tokenizers make them
                    return_tensors="pt",
                ).to(self.device)
                output_ids = self.model.generate(**tokens, generation_config=self.generation_config)
                texts = [text.strip() for text in self.tokenizer.batch_decode(output_ids, skip_special_tokens=True)]
                queries.extend(texts[row : row + step] for row in range(0, len(texts), step))
        return queries


def add_generated_queries(
    corpus: datasets.Dataset,
    generator: QueryGenerator | None,
    text_column: str = "text",
    id_column: str = "_id",
) -> datasets.Dataset:
    """A queries dataset (`_id`, `text`, `source_doc_id`) made from `corpus`, in corpus order.

    With a `generator`, each document gets `num_queries_per_document` queries with ids
    `gen-{doc_id}-{n}`; with None, each document's first 64 words are its one pseudo-query,
    with id `pseudo-{doc_id}`.
    """
    missing = [column for column in (text_column, id_column) if column not in corpus.column_names]
    if missing:
        raise ValueError(f"The corpus has no column(s) {missing}; its columns are {corpus.column_names}.")
    if len(corpus) == 0:
        raise ValueError("The corpus is empty; there are no documents to make queries from.")

    def make_queries(batch: dict[str, list]) -> dict[str, list[str]]:
        doc_ids = [str(doc_id) for doc_id in batch[id_column]]
        if generator is None:
            texts = [" ".join(text.split()[:PSEUDO_QUERY_WORDS]) for text in batch[text_column]]
            return {"_id": [f"pseudo-{doc_id}" for doc_id in doc_ids], "text": texts, "source_doc_id": doc_ids}
        columns = {column: [] for column in QUERY_COLUMNS}
        for doc_id, queries in zip(doc_ids, generator.generate(batch[text_column], show_progress=False)):
            columns["_id"].extend(f"gen-{doc_id}-{n}" for n in range(len(queries)))
            columns["text"].extend(queries)
            columns["source_doc_id"].extend([doc_id] * len(queries))
        return columns

    return corpus.map(
        make_queries,
        batched=True,
        remove_columns=corpus.column_names,
        desc="Generating queries" if generator is not None else "Making pseudo-queries",
    )
