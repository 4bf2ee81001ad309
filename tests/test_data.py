"""Loading corpora, queries and qrels from every supported source; embedding them with `TextEncoder` and its cache."""

import gzip
import json
import shutil
from contextlib import contextmanager

import datasets
import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Pooling, Transformer
from tqdm.auto import tqdm
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel

from distill_vq import data, encoding
from distill_vq.data import DataError, check_qrels, load_beir, load_corpus, load_qrels, load_queries, load_task
from distill_vq.encoding import TextEncoder, default_encoder_path, encode_dataset_cached, pool_tokens, resolve_encoder

from conftest import DATA, DEFAULT_DATA

CORPUS = [
    {"_id": "d1", "title": "Alpha", "text": "the first document"},
    {"_id": "d2", "title": "", "text": "the second document"},
    {"_id": "d3", "title": "Gamma", "text": "the third document"},
]
QUERIES = [{"_id": "q1", "text": "first?"}, {"_id": "q2", "text": "third?"}]
EXPECTED_CORPUS = [
    {"_id": "d1", "text": "Alpha the first document"},
    {"_id": "d2", "text": "the second document"},
    {"_id": "d3", "text": "Gamma the third document"},
]


def write_jsonl(path, rows, gzipped=False):
    opener = gzip.open if gzipped else open
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    return path


def write_qrels(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("query-id\tcorpus-id\tscore\n" + "".join("\t".join(map(str, line)) + "\n" for line in lines))
    return path


def make_beir_folder(folder, gzipped=False, qrels=(("q1", "d1", 1), ("q2", "d3", 2))):
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".jsonl.gz" if gzipped else ".jsonl"
    write_jsonl(folder / f"corpus{suffix}", CORPUS, gzipped)
    write_jsonl(folder / f"queries{suffix}", QUERIES, gzipped)
    write_qrels(folder / "qrels" / "test.tsv", qrels)
    write_qrels(folder / "qrels" / "dev.tsv", [("q2", "d2", 1)])
    return folder


@pytest.fixture
def no_hub(monkeypatch):
    """Fail the test if anything reaches for the Hub."""

    def fail(*args, **kwargs):
        raise AssertionError(f"the Hub was tried with {args}")

    monkeypatch.setattr(data, "_load_hub", fail)


# Sources


@pytest.mark.parametrize("gzipped", [False, True])
def test_beir_folder(tmp_path, gzipped):
    retrieval_data = load_beir(make_beir_folder(tmp_path / "beir", gzipped))
    assert retrieval_data.corpus.column_names == ["_id", "text"]
    assert retrieval_data.corpus.to_list() == EXPECTED_CORPUS
    assert retrieval_data.queries.to_list() == QUERIES
    assert retrieval_data.qrels == {"test": {"q1": {"d1": 1}, "q2": {"d3": 2}}, "dev": {"q2": {"d2": 1}}}


def test_beir_folder_selected_splits_and_optional_parts(tmp_path):
    folder = make_beir_folder(tmp_path / "beir")
    assert list(load_beir(folder, splits=["dev"]).qrels) == ["dev"]
    with pytest.raises(DataError, match=r"no qrels split \['train'\]; available: \['dev', 'test'\]"):
        load_beir(folder, splits=["train"])
    (folder / "queries.jsonl").unlink()
    shutil.rmtree(folder / "qrels")
    unlabelled = load_beir(folder)
    assert unlabelled.queries is None and unlabelled.qrels == {}


def test_the_train_split_labels_the_training_queries_by_corpus_row():
    task = load_task()  # the packaged data: qrels train / dev / test, evaluated on test
    train_rows = task.split_queries(seed=0)[0]
    positives = task.positive_rows(train_rows)
    query_ids = task.queries.select(train_rows)["_id"][:]
    judged = [(query_id, rows) for query_id, rows in zip(query_ids, positives) if query_id in task.train_qrels]
    assert len(judged) > 1000 and all(rows for _, rows in judged)
    for query_id, rows in judged[:50]:
        relevant = {doc_id for doc_id, score in task.train_qrels[query_id].items() if score > 0}
        assert {task.doc_ids[row] for row in rows} == relevant
    assert not set(task.train_qrels) & set(task.eval_qrels)
    assert load_task(qrels="train").train_qrels is None  # evaluated on train: no labels left to train on


def test_jsonl_file_with_integer_id_column(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": 7, "text": "seven"}, {"id": 8, "text": "eight"}])
    assert load_corpus(path).to_list() == [{"_id": "7", "text": "seven"}, {"_id": "8", "text": "eight"}]


def test_csv_file(tmp_path):
    path = tmp_path / "docs.csv"
    datasets.Dataset.from_list(CORPUS).to_csv(path, index=False)  # d2's empty title reads back as null
    assert load_corpus(path).to_list() == EXPECTED_CORPUS


def test_parquet_file(tmp_path):
    path = tmp_path / "queries.parquet"
    datasets.Dataset.from_list(QUERIES).to_parquet(path)
    assert load_queries(path).to_list() == QUERIES


@pytest.mark.parametrize("streaming", [False, True])
def test_reading_a_local_file_sends_no_request(tmp_path, monkeypatch, streaming):
    """`load_dataset("json", ...)` would send a download-count request to the Hub for its builder, online."""
    sessions = []
    monkeypatch.setattr(datasets.load, "get_session", lambda: sessions.append("a request") or pytest.fail())
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", True)
    assert list(load_queries(write_jsonl(tmp_path / "queries.jsonl", QUERIES), streaming=streaming)) == QUERIES
    assert sessions == [] and datasets.config.HF_UPDATE_DOWNLOAD_COUNTS  # and the setting is put back


@pytest.mark.parametrize("source", ["beir", "docs.csv"])
def test_streaming_yields_the_same_rows(tmp_path, source):
    make_beir_folder(tmp_path / "beir", gzipped=True)
    (tmp_path / "docs.csv").write_text("id,text\n1,one\n2,two\n")
    streamed = load_corpus(tmp_path / source, streaming=True)
    assert isinstance(streamed, datasets.IterableDataset)
    assert list(streamed) == load_corpus(tmp_path / source).to_list()


def test_streaming_beir_skips_the_full_scans(tmp_path):
    folder = make_beir_folder(tmp_path / "beir", qrels=[("q1", "d-unknown", 1)])
    with pytest.raises(DataError, match="not in the corpus"):
        load_beir(folder)
    assert load_beir(folder, streaming=True).qrels["test"] == {"q1": {"d-unknown": 1}}


def test_local_path_takes_priority_over_the_hub(tmp_path, monkeypatch, no_hub):
    make_beir_folder(tmp_path / "BeIR" / "scifact")
    monkeypatch.chdir(tmp_path)
    assert load_corpus("BeIR/scifact").to_list() == EXPECTED_CORPUS


@pytest.mark.parametrize("source", ["missing/corpus.jsonl", "./missing", "some/deep/folder", "queries.parquet"])
def test_missing_local_looking_path_is_not_sent_to_the_hub(tmp_path, monkeypatch, no_hub, source):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="no such file or folder"):
        load_corpus(source)


def test_hub_ids_load_the_beir_config_or_the_named_one(monkeypatch):
    calls = []

    def fake_load_dataset(repo_id, config, streaming):
        calls.append((repo_id, config))
        return datasets.DatasetDict({config: datasets.Dataset.from_list(QUERIES)})

    monkeypatch.setattr(data.datasets, "load_dataset", fake_load_dataset)
    assert load_queries("BeIR/scifact").to_list() == QUERIES
    load_corpus("owner/texts:passages")
    assert calls == [("BeIR/scifact", "queries"), ("owner/texts", "passages")]


def test_unreachable_hub_id_is_a_data_error(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'owner/name' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(data.datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="neither a local path nor a loadable Hub dataset"):
        load_corpus("owner/name")


# Errors


def test_folder_without_corpus(tmp_path):
    with pytest.raises(DataError, match=r"has no corpus.jsonl or corpus.jsonl.gz; point to a BEIR folder"):
        load_corpus(tmp_path)


def test_file_without_text_column(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"_id": "d1", "body": "x"}])
    with pytest.raises(DataError, match=r"no 'text' column \(columns: \['_id', 'body'\]\); rename"):
        load_corpus(path)


def test_file_without_id_column(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"doc": "d1", "text": "x"}])
    with pytest.raises(DataError, match=r"no '_id' or 'id' column \(columns: \['doc', 'text'\]\)"):
        load_corpus(path)


@pytest.mark.parametrize("streaming", [False, True])
def test_empty_text_names_the_first_offending_id(tmp_path, streaming):
    rows = [{"_id": "d1", "text": "x"}, {"_id": "d2", "text": "  "}, {"_id": "d3", "text": None}]
    path = write_jsonl(tmp_path / "docs.jsonl", rows)
    with pytest.raises(DataError, match="row with id 'd2' has empty text"):
        list(load_corpus(path, streaming=streaming))


def test_duplicate_ids(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"_id": "d1", "text": "x"}, {"_id": "d1", "text": "y"}])
    with pytest.raises(DataError, match="id 'd1' appears 2 times"):
        load_corpus(path)


@pytest.mark.parametrize("streaming", [False, True])
def test_empty_corpus(tmp_path, streaming):
    (tmp_path / "empty.jsonl").write_text("")
    datasets.Dataset.from_dict({"_id": [], "text": []}).to_parquet(tmp_path / "empty.parquet")
    for path in (tmp_path / "empty.jsonl", tmp_path / "empty.parquet"):
        with pytest.raises(DataError, match="is empty"):
            load_corpus(path, streaming=streaming)


def test_unsupported_file_type_and_a_file_given_as_beir_folder(tmp_path):
    (tmp_path / "docs.txt").write_text("hello\n")
    with pytest.raises(DataError, match=r"unsupported file type; use .jsonl\[.gz\]"):
        load_corpus(tmp_path / "docs.txt")
    path = write_jsonl(tmp_path / "docs.jsonl", CORPUS)
    with pytest.raises(DataError, match="is a file; pass a BEIR folder"):
        load_beir(path)


# Qrels


def test_load_qrels(tmp_path):
    path = write_qrels(tmp_path / "test.tsv", [("q1", "d1", 1), ("q1", "d2", 0), ("q2", "d3", 2)])
    assert load_qrels(path) == {"q1": {"d1": 1, "d2": 0}, "q2": {"d3": 2}}


def test_qrels_format_errors(tmp_path):
    (tmp_path / "no_header.tsv").write_text("q1\td1\t1\n")
    with pytest.raises(DataError, match="not the header 'query-id<TAB>corpus-id<TAB>score'"):
        load_qrels(tmp_path / "no_header.tsv")
    (tmp_path / "bad.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    with pytest.raises(DataError, match="line 2: expected"):
        load_qrels(tmp_path / "bad.tsv")
    with pytest.raises(DataError, match="no such qrels file"):
        load_qrels(tmp_path / "missing.tsv")


def test_check_qrels():
    qrels = {"q1": {"d1": 1}, "q2": {"d3": 1, "d4": 1}, "q3": {"d5": 1}}
    check_qrels(qrels, ["d1", "d3", "d4", "d5"], ["q1", "q2", "q3"])
    with pytest.raises(DataError, match=r"qrels: 2 doc ids are not in the corpus \(e.g. 'd4'\); use the corpus"):
        check_qrels(qrels, ["d1", "d3"])
    with pytest.raises(DataError, match=r"1 of 3 query ids are not among the queries \(e.g. 'q3'\)"):
        check_qrels(qrels, ["d1", "d3", "d4", "d5"], ["q1", "q2"])


def test_beir_qrels_are_checked_against_queries_and_corpus(tmp_path):
    folder = make_beir_folder(tmp_path / "beir", qrels=[("q1", "d1", 1), ("q9", "d1", 1)])
    with pytest.raises(DataError, match=r"qrels 'test': 1 of 2 query ids are not among the queries \(e.g. 'q9'\)"):
        load_beir(folder)


# Encoding


@pytest.fixture(scope="module")
def encoder():
    """The packaged all-MiniLM-L6-v2, offline, on one CPU thread (faster for a few short texts)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield TextEncoder(device="cpu")
    torch.set_num_threads(threads)


def test_packaged_model_names_resolve_to_the_packaged_folder(tmp_path):
    for name in (None, "sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"):
        assert resolve_encoder(name) == ("sentence-transformers/all-MiniLM-L6-v2", str(default_encoder_path()))
    assert resolve_encoder(tmp_path) == (str(tmp_path), str(tmp_path))
    assert resolve_encoder("BAAI/bge-small-en-v1.5") == ("BAAI/bge-small-en-v1.5", "BAAI/bge-small-en-v1.5")


def test_encoder_runs_the_sentence_transformers_folder(encoder):
    assert [type(module).__name__ for module in encoder.model] == ["Transformer", "Pooling", "Normalize"]
    assert (encoder.model.max_seq_length, encoder.embedding_dim) == (256, 384)


def hand_pooled(folder, texts, pooling="mean", normalize=True):
    """The former hand-written encoding: `AutoModel` hidden states `(N, tokens, dim)` pooled -> `(N, dim)`."""
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()
    with torch.inference_mode():
        tokens = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        pooled = pool_tokens(model(**tokens).last_hidden_state, tokens["attention_mask"], pooling)
    return (torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled).numpy()


def test_packaged_encoder_gives_the_former_embeddings_and_the_stored_ones(encoder):
    """64 queries and the 4 longest of 1000 documents (cut at 256 tokens): the SentenceTransformer path equals the
    former hand-written mean pooling to 1e-5 (bitwise on this machine), and the stored float16 embeddings
    (tests/data, made by that path) are its vectors rounded: within half a float16 step (up to 6e-5) plus 1e-6."""
    queries = load_queries(DEFAULT_DATA)["text"][:64]
    corpus = load_corpus(DEFAULT_DATA)["text"][:1000]
    longest = sorted(np.argsort([-len(text) for text in corpus])[:4])
    for texts, stored in ((queries, np.load(DATA / "default_data_embeddings" / "queries.npy")[:64]),
                          ([corpus[row] for row in longest],
                           np.load(DATA / "default_data_embeddings" / "docs.npy")[longest])):
        embeddings = encoder.encode(texts, show_progress=False)
        assert np.abs(embeddings - hand_pooled(default_encoder_path(), texts)).max() < 1e-5
        assert (np.abs(embeddings - stored) <= np.spacing(np.abs(stored)) / 2 + 1e-6).all()


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A plain `transformers` folder (no modules.json): a seeded 2-layer, 32-d BERT with all-MiniLM-L6-v2's
    tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_encoder_path()).save_pretrained(folder)
    return folder


def test_plain_transformers_model_gets_mean_pooling_and_unit_length(tiny_bert):
    texts = ["short", "a considerably longer sentence about retrieval with many words"]
    plain = TextEncoder(tiny_bert, device="cpu")
    assert [type(module).__name__ for module in plain.model] == ["Transformer", "Pooling", "Normalize"]
    np.testing.assert_allclose(plain.encode(texts, show_progress=False), hand_pooled(tiny_bert, texts), atol=1e-6)


def test_every_module_and_the_prompts_of_the_folder_apply(tiny_bert, tmp_path):
    """CLS pooling and a Dense layer (which the former pooling dropped) run; `role` picks the folder's prompt,
    and the cache keeps the query and document embeddings of the same texts apart."""
    folder = tmp_path / "cls-dense"
    dense = Dense(32, 8)
    SentenceTransformer(modules=[Transformer(str(tiny_bert)), Pooling(32, "cls"), dense], device="cpu",
                        prompts={"query": "query: ", "document": "passage: "}).save(str(folder))
    texts = ["red apple", "a blue car on the road"]
    encoder = TextEncoder(folder, device="cpu")
    assert encoder.embedding_dim == 8
    weight, bias = dense.linear.weight.detach().numpy(), dense.linear.bias.detach().numpy()
    cls_states = hand_pooled(tiny_bert, texts, pooling="cls", normalize=False)
    np.testing.assert_allclose(encoder.encode(texts, show_progress=False), np.tanh(cls_states @ weight.T + bias),
                               atol=1e-5)
    for role, prompt in (("query", "query: "), ("document", "passage: ")):
        np.testing.assert_allclose(encoder.encode(texts, show_progress=False, role=role),
                                   encoder.encode([prompt + text for text in texts], show_progress=False), atol=1e-6)
    with pytest.raises(ValueError, match="role='queries' is unknown; pass one of"):
        encoder.encode(texts, role="queries")
    dataset = datasets.Dataset.from_dict({"text": texts})
    cached = {role: encode_dataset_cached(encoder, dataset, "text", tmp_path / "cache", show_progress=False, role=role)
              for role in ("query", "document")}
    assert len(list((tmp_path / "cache").iterdir())) == 2
    np.testing.assert_allclose(cached["query"], encoder.encode(texts, show_progress=False, role="query"), atol=1e-6)


def test_unit_embeddings_and_paraphrases_score_higher(encoder):
    texts = ["A man is eating food.", "Someone is having a meal.", "The stock market fell sharply today."]
    embeddings = encoder.encode(texts, show_progress=False)
    assert embeddings.shape == (3, 384) and embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert embeddings[0] @ embeddings[1] > embeddings[0] @ embeddings[2] + 0.3


def test_length_sorted_batches_keep_the_input_order(encoder):
    texts = ["short", "a considerably longer sentence about retrieval with many words", "mid length text"]
    batched = encoder.encode(texts, batch_size=2, show_progress=False)
    one_by_one = np.concatenate([encoder.encode([text], show_progress=False) for text in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)


def test_dataset_cache_round_trip(encoder, tmp_path, monkeypatch):
    dataset = datasets.Dataset.from_dict({"_id": ["a", "b", "c"], "text": ["red apple", "green pear", "a blue car"]})
    first = encode_dataset_cached(encoder, dataset, "text", tmp_path, show_progress=False)
    cache_files = list(tmp_path.iterdir())
    assert [path.suffix for path in cache_files] == [".npy"] and len(cache_files[0].stem) == 64
    np.testing.assert_allclose(first, encoder.encode(dataset["text"], show_progress=False), atol=1e-6)
    stored = np.load(cache_files[0], allow_pickle=False)
    assert stored.dtype == np.float32 and stored.shape == (3, 384)

    def fail(*args, **kwargs):
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(encoder, "encode", fail)
    second = encode_dataset_cached(encoder, dataset, "text", tmp_path)
    streamed = encode_dataset_cached(encoder, dataset.to_iterable_dataset(), "text", tmp_path)
    assert isinstance(second, np.memmap)
    np.testing.assert_array_equal(second, first)
    np.testing.assert_array_equal(streamed, first)
    with pytest.raises(AssertionError, match="the cache was not used"):
        encode_dataset_cached(encoder, dataset.select([0, 1]), "text", tmp_path)


@pytest.fixture
def encoding_bars(monkeypatch):
    """The tqdm bars `encoding` makes from now on, each keeping its updates in `steps`."""
    bars = []

    class RecordingBar(tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.steps = []
            bars.append(self)

        def update(self, n=1):
            self.steps.append(n)
            return super().update(n)

    monkeypatch.setattr(encoding, "tqdm", RecordingBar)
    return bars


def test_one_encoding_bar_advances_per_batch_across_cache_chunks(encoder, tmp_path, monkeypatch, encoding_bars):
    monkeypatch.setattr(encoding, "CACHE_CHUNK_ROWS", 4)
    dataset = datasets.Dataset.from_dict({"text": ["one", "two", "three", "four", "five"]})
    encode_dataset_cached(encoder, dataset, "text", tmp_path, batch_size=2)
    assert [(bar.desc, bar.total, bar.steps, bar.n) for bar in encoding_bars] == [("Encoding", 5, [2, 2, 1], 5)]


def test_sharded_encoding_gathers_the_shards_and_counts_them_on_the_main_bar(encoder, monkeypatch, encoding_bars):
    """The main process of two encodes the first half; `gather_object` brings the other process's half."""
    texts = ["one", "two", "three", "four", "five"]
    other_shard = encoder.encode(texts[3:], show_progress=False)

    class MainOfTwo:
        num_processes, is_main_process, device = 2, True, torch.device("cpu")

        @contextmanager
        def split_between_processes(self, items):
            yield items[:3]

    monkeypatch.setattr(encoding, "gather_object", lambda objects: objects + [other_shard])
    encoding_bars.clear()
    sharded = encoder.encode(texts, batch_size=2, accelerator=MainOfTwo())
    assert [(bar.total, bar.steps) for bar in encoding_bars] == [(5, [4, 1, 0])]
    np.testing.assert_allclose(sharded, encoder.encode(texts, show_progress=False), atol=1e-6)


def test_cache_writes_in_chunks(encoder, tmp_path, monkeypatch):
    monkeypatch.setattr(encoding, "CACHE_CHUNK_ROWS", 2)
    dataset = datasets.Dataset.from_dict({"text": ["one", "two", "three", "four", "five"]})
    chunked = encode_dataset_cached(encoder, dataset, "text", tmp_path, show_progress=False)
    np.testing.assert_allclose(chunked, encoder.encode(dataset["text"], show_progress=False), atol=1e-6)
