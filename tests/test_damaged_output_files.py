"""Damaged or tampered files of an output folder give one line and exit status 2, never a traceback: each file is
checked (format, types, the sha256 recorded at training) and against the others before use."""

import json
import pickle
import shutil

import faiss
import numpy as np
import pytest

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.cli import main, printable
from distill_vq.output_folder import write_index_files

@pytest.fixture(scope="module")
def trained_dir(packaged_run):
    """A train run on the packaged data (IVF16,PQ8x8; conftest.py's, shared: the tests damage copies of it)."""
    return packaged_run


@pytest.fixture
def copy(trained_dir, tmp_path):
    folder = tmp_path / "copy"
    shutil.copytree(trained_dir, folder)
    return folder


def edit_json(path, change):
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


def without_sha256(folder):
    """An index_config.json as written before checksums were recorded: the files' own checks must hold alone."""
    edit_json(folder / "index_config.json", lambda config: {k: v for k, v in config.items() if k != "sha256"})


def cut(path, size=None):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if size is None else size])


def flat_index(folder):
    faiss.write_index(faiss.IndexFlatIP(384), str(folder / "index.faiss"))


def search_fails(folder, capsys) -> str:
    """Run `search` on `folder`; it must exit with 2 and one error line, which is returned."""
    assert main(["search", str(folder), "a command line tool"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert "Traceback" not in captured.err and len(lines) == 1 and lines[0].startswith("distill-vq: error: "), lines
    return lines[0]


@pytest.mark.parametrize("damage, message", [
    (lambda f: cut(f / "index.faiss"), "index.faiss does not match the sha256 recorded in index_config.json"),
    (lambda f: (f / "doc_ids.json").write_text('["d1"]'), "doc_ids.json does not match the sha256"),
    (lambda f: (without_sha256(f), cut(f / "index.faiss")), "index.faiss is not a readable faiss index (read error"),
    (lambda f: (without_sha256(f), cut(f / "index.faiss", 0)), "is not a readable faiss index"),
    (lambda f: (without_sha256(f), (f / "index.faiss").write_bytes(np.random.default_rng(0).bytes(4096))),
     "is not a readable faiss index (Index type"),
    (lambda f: (without_sha256(f), flat_index(f)), "index.faiss holds a faiss IndexFlatIP, not an IVF index"),
    (lambda f: (without_sha256(f), (f / "doc_ids.json").write_text('["d1", "d2"]')),
     "doc_ids.json holds 2 ids but index.faiss 5000 vectors"),
    (lambda f: (without_sha256(f), (f / "doc_ids.json").write_text('{"0": "d1"}')),
     "doc_ids.json holds a JSON object where an array belongs"),
    (lambda f: (without_sha256(f), edit_json(f / "doc_ids.json", lambda ids: list(range(len(ids))))),
     "doc_ids.json holds entries that are not id strings"),
    (lambda f: edit_json(f / "index_config.json", lambda c: {k: v for k, v in c.items() if k != "nprobe"}),
     "index_config.json: nprobe=None is not a number of lists between 1 and the index's 16"),
    (lambda f: edit_json(f / "index_config.json", lambda c: {**c, "nprobe": "8"}), "nprobe='8' is not a number"),
    (lambda f: edit_json(f / "index_config.json", lambda c: {**c, "nprobe": 99}), "nprobe=99 is not a number"),
    (lambda f: cut(f / "index_config.json"), "index_config.json is not valid JSON"),
    (lambda f: (f / "index_config.json").write_bytes(b"\xff\xfe{}"), "index_config.json is not valid JSON"),
    (lambda f: edit_json(f / "config.json", lambda c: {**c, "num_lists": "16"}),
     "config.json: num_lists='16' must be an integer, not str"),
    (lambda f: edit_json(f / "config.json", lambda c: {**c, "num_lists": 32}),
     "holds 384-d vectors in 16 lists but config.json describes 384-d ones in 32"),
    (lambda f: edit_json(f / "config.json", lambda c: {**c, "model_type": "bert"}), "holds a 'bert' model"),
    (lambda f: (f / "config.json").unlink(), "has no config.json, which names the quantizer's encoder"),
    (lambda f: (f / "index.faiss").unlink(), "lacks index.faiss"),
], ids=["index-cut-checksum", "doc-ids-changed-checksum", "index-cut", "index-empty", "index-random", "index-not-ivf",
        "doc-ids-short", "doc-ids-dict", "doc-ids-not-strings", "nprobe-missing", "nprobe-string", "nprobe-too-big",
        "index-config-cut", "index-config-not-utf8", "config-string-field", "config-other-lists",
        "config-other-model", "config-missing", "index-missing"])
def test_search_refuses_a_damaged_file_in_one_line(copy, capsys, damage, message):
    damage(copy)
    assert message in search_fails(copy, capsys)


@pytest.mark.parametrize("content", [
    lambda data: data[: len(data) // 2], lambda data: b"", lambda data: pickle.dumps({"weights": np.zeros(3)}),
], ids=["cut", "empty", "pickle"])
def test_damaged_weights_are_refused_and_never_unpickled(copy, capsys, tmp_path, content):
    weights = copy / "model.safetensors"
    weights.write_bytes(content(weights.read_bytes()))
    with pytest.raises(ValueError, match="model.safetensors is not a readable safetensors file"):
        DistillVQModel.from_pretrained(copy)
    # evaluate on another corpus loads the weights to index it
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"n{i}", "text": f"note {i}"}) + "\n"
                                                   for i in range(50)))
    np.save(tmp_path / "docs.npy", np.random.default_rng(0).standard_normal((50, 384), dtype=np.float32))
    assert main(["evaluate", str(copy), "--corpus", str(tmp_path / "corpus.jsonl"), "--doc-embeddings",
                 str(tmp_path / "docs.npy"), "--results-dir", str(tmp_path / "results")]) == 2
    assert "model.safetensors is not a readable safetensors file" in capsys.readouterr().err


def test_evaluate_refuses_an_index_config_without_its_corpus(copy, capsys):
    edit_json(copy / "index_config.json", lambda config: {k: v for k, v in config.items() if k != "corpus"})
    assert main(["evaluate", str(copy)]) == 2
    assert "does not record the corpus of the training" in capsys.readouterr().err


def test_search_prints_document_text_with_control_characters_escaped(debian_embeddings, tmp_path, capsys):
    docs = debian_embeddings[0][:512]
    doc_ids = [f"d{row}" for row in range(len(docs))]
    doc_ids[7] = "evil\x1b[2J\u202e"
    corpus = [{"_id": doc_id, "text": "a text \x1b[31mred\x07 and \u202ereversed"} for doc_id in doc_ids]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(row) + "\n" for row in corpus))
    model = DistillVQModel.from_embeddings(docs, DistillVQConfig(num_lists=2, num_subvectors=8, nprobe=2,
                                                                 encoder_name_or_path="all-MiniLM-L6-v2"))
    model.save_pretrained(tmp_path / "out")
    write_index_files(tmp_path / "out", model.to_faiss(docs), doc_ids,
                      {"nprobe": 2, "corpus": str(tmp_path / "corpus.jsonl")})
    assert main(["search", str(tmp_path / "out"), "a text", "-k", "512"]) == 0
    output = capsys.readouterr().out
    assert "\x1b" not in output and "\u202e" not in output and "\x07" not in output
    assert "evil\\x1b[2J\\u202e" in output and "a text \\x1b[31mred\\x07 and \\u202ereversed" in output
    assert printable("tab\there é ✓") == "tab\\there é ✓"
