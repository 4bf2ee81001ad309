"""Damaged or odd input files (corpus, queries, qrels, embeddings) give one clear error naming the file and the fix."""

import gzip
import json
import logging

import datasets
import numpy as np
import pytest
import torch
from conftest import DATA

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.cli import main
from distill_vq.data import DataError, load_beir, load_corpus, load_qrels
from distill_vq.validation import check_embeddings

ROWS = [{"_id": f"d{i}", "text": f"document number {i}"} for i in range(1, 5)]
QRELS_HEADER = "query-id\tcorpus-id\tscore\n"


def jsonl_bytes(rows) -> bytes:
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


def corpus_file(tmp_path, content: bytes, name: str = "corpus.jsonl"):
    path = tmp_path / name
    path.write_bytes(content)
    return path


def save(path, array):
    np.save(path, array)
    return path


# Corpus and query files


def test_a_cut_off_last_line_names_the_file_and_the_line(tmp_path):
    corpus_file(tmp_path, jsonl_bytes(ROWS[:3]) + b'{"_id": "d4", "text": "docu')
    with pytest.raises(DataError, match=r"corpus\.jsonl, line 4: not valid JSON \(Unterminated string .*cut off"):
        load_beir(tmp_path)


@pytest.mark.parametrize("bad_line, problem", [
    (b"{not json}", r"not valid JSON \(Expecting property name enclosed in double quotes at column 2\)"),
    (b'"just a text"', r'"just a text" is not a JSON object'),
], ids=["not-json", "not-an-object"])
def test_a_bad_json_line_inside_the_file_is_named_without_blaming_truncation(tmp_path, bad_line, problem):
    path = corpus_file(tmp_path, jsonl_bytes(ROWS[:1]) + bad_line + b"\n" + jsonl_bytes(ROWS[1:]))
    with pytest.raises(DataError, match=rf"corpus\.jsonl, line 2: {problem}") as error:
        load_corpus(path)
    assert "cut off" not in str(error.value)


def test_a_cut_off_gzip_file(tmp_path):
    compressed = gzip.compress(jsonl_bytes(ROWS * 50))
    path = corpus_file(tmp_path, compressed[: len(compressed) // 2], "corpus.jsonl.gz")
    with pytest.raises(DataError, match=r"corpus\.jsonl\.gz is not a complete gzip file"):
        load_corpus(path)


def test_a_damaged_parquet_file(tmp_path):
    path = tmp_path / "corpus.parquet"
    datasets.Dataset.from_list(ROWS).to_parquet(path)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(DataError, match=r"corpus\.parquet cannot be read as corpus \(ArrowInvalid: .*export it again"):
        load_corpus(path)


def test_ids_mixing_numbers_and_strings_are_read_as_strings(tmp_path):
    corpus_file(tmp_path, jsonl_bytes([{"_id": 1, "text": "one"}, {"_id": "x", "text": "ex"}]))
    corpus_file(tmp_path, jsonl_bytes([{"_id": "q", "text": "one?"}]), "queries.jsonl")
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text(QRELS_HEADER + "q\t1\t1\n")
    retrieval_data = load_beir(tmp_path)
    assert retrieval_data.corpus.to_list() == [{"_id": "1", "text": "one"}, {"_id": "x", "text": "ex"}]
    assert retrieval_data.qrels == {"test": {"q": {"1": 1}}}


def test_a_number_and_a_string_with_the_same_text_are_one_id(tmp_path):
    path = corpus_file(tmp_path, jsonl_bytes([{"_id": 1, "text": "one"}, {"_id": "1", "text": "uno"}]))
    with pytest.raises(DataError, match="id '1' appears 2 times"):
        load_corpus(path)


@pytest.mark.parametrize("second_row", [{"_id": None, "text": "b"}, {"text": "b"}, {"_id": " ", "text": "b"}],
                         ids=["null", "missing", "blank"])
def test_a_row_without_an_id_is_named(tmp_path, second_row):
    path = corpus_file(tmp_path, jsonl_bytes([{"_id": "a", "text": "a"}, second_row, {"_id": "c", "text": "c"}]))
    with pytest.raises(DataError, match=r"corpus\.jsonl: corpus row 2 has no '_id' \(it is null, empty or missing\)"):
        load_corpus(path)


def test_csv_ids_are_not_read_as_numbers(tmp_path):
    path = corpus_file(tmp_path, b"_id,text\n007,seven\n8,eight\n", "corpus.csv")
    assert load_corpus(path)["_id"] == ["007", "8"]


@pytest.mark.parametrize("name, content, line, byte", [
    ("corpus.jsonl", jsonl_bytes(ROWS) + '{"_id": "d5", "text": "café"}\n'.encode("latin-1"), 5, 27),
    ("corpus.csv", "_id,text\nd1,one\nd2,café\n".encode("latin-1"), 3, 7),
], ids=["jsonl", "csv"])
def test_a_byte_that_is_not_utf8_names_the_file_and_the_line(tmp_path, name, content, line, byte):
    path = corpus_file(tmp_path, content, name)
    with pytest.raises(DataError, match=rf"{name}, line {line}: byte {byte} \(0xe9\) is not UTF-8; save the file as"):
        load_corpus(path)


# Qrels


def test_qrels_with_a_byte_order_mark_are_read(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_bytes(("\ufeff" + QRELS_HEADER + "q1\td1\t1\nq1\td2\t0\n").encode())
    assert load_qrels(path) == {"q1": {"d1": 1, "d2": 0}}


def test_qrels_with_a_byte_that_is_not_utf8(tmp_path):
    path = tmp_path / "test.tsv"
    path.write_bytes((QRELS_HEADER + "q1\td1\t1\nq2\tcafé\t1\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"test\.tsv, line 3: byte 7 \(0xe9\) is not UTF-8"):
        load_qrels(path)


# Embeddings


@pytest.mark.parametrize("embeddings, dtype", [
    (np.ones((4, 8), np.complex64), "complex64"),
    (np.ones((4, 8), bool), "bool"),
    (np.full((4, 8), "1.5"), "<U3"),
    (np.ones((4, 8)).astype(object), "object"),
    (torch.ones(4, 8, dtype=torch.bool), "bool"),
])
def test_embeddings_that_are_not_real_numbers_are_refused(embeddings, dtype):
    with pytest.raises(ValueError, match=rf"doc_embeddings has dtype {dtype}; embeddings must be real numbers"):
        check_embeddings(embeddings, "doc_embeddings")


@pytest.mark.parametrize("embeddings", [np.arange(32, dtype=np.int16).reshape(4, 8),
                                        torch.arange(32, dtype=torch.bfloat16).reshape(4, 8)])
def test_integer_and_bfloat16_embeddings_become_float32(embeddings):
    array = check_embeddings(embeddings, "doc_embeddings")
    assert array.dtype == np.float32 and np.array_equal(array, np.arange(32, dtype=np.float32).reshape(4, 8))


def test_all_zero_embeddings_are_refused_and_a_few_zero_rows_warn(caplog):
    embeddings = np.ones((20, 8), np.float32)
    embeddings[[3, 11]] = 0
    with caplog.at_level(logging.WARNING, logger="distill_vq.validation"):
        assert check_embeddings(embeddings, "doc_embeddings") is embeddings
    assert "doc_embeddings: 2 of 20 rows are zero vectors (first at row 3)" in caplog.text
    with pytest.raises(ValueError, match="doc_embeddings: all 20 rows are zero vectors"):
        check_embeddings(np.zeros((20, 8), np.float16), "doc_embeddings")
    caplog.clear()
    assert not check_embeddings(np.zeros((20, 8)), "a batch", check_zero_rows=False).any() and not caplog.text


def test_a_model_is_not_built_from_all_zero_embeddings():
    config = DistillVQConfig(embedding_dim=8, num_lists=2, num_subvectors=2, bits_per_subvector=2)
    with pytest.raises(ValueError, match="all 64 rows are zero vectors"):
        DistillVQModel.from_embeddings(np.zeros((64, 8), np.float32), config)


# The command: one line, exit 2


@pytest.mark.parametrize("make_flags, message", [
    (lambda tmp_path: ["--corpus", str(corpus_file(tmp_path, jsonl_bytes(ROWS) + b'{"_id"'))],
     "corpus.jsonl, line 5: not valid JSON"),
    (lambda tmp_path: ["--doc-embeddings", str(save(tmp_path / "docs.npy", np.zeros((5000, 384), np.float16)))],
     "doc embeddings: all 5000 rows are zero vectors"),
    (lambda tmp_path: ["--doc-embeddings", str(save(tmp_path / "docs.npy", np.ones((5000, 384), np.complex64)))],
     "doc embeddings has dtype complex64"),
], ids=["cut-off-corpus", "zero-embeddings", "complex-embeddings"])
def test_the_command_prints_one_line(tmp_path, capsys, caplog, make_flags, message):
    queries = ["--query-embeddings", str(DATA / "default_data_embeddings" / "queries.npy")]
    assert main(["train", *make_flags(tmp_path), *queries, "--output-dir", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.splitlines()[-1].startswith("distill-vq: error: ") and message in error.splitlines()[-1]
    assert "Traceback" not in error
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]  # no reader's error log
