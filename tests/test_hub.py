"""push_to_hub / from_pretrained against a local Hub on 127.0.0.1: the real huggingface_hub client, end to end."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from local_hub import local_hub  # noqa: F401  (fixture)
from transformers import AutoTokenizer, BertConfig

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.encoding import default_encoder_path
from distill_vq.hub import load_index, push_output_dir

CONFIG = {"embedding_dim": 32, "num_lists": 16, "num_subvectors": 8, "bits_per_subvector": 5, "use_rotation": True}
CARD = ModelCard("---\nlibrary_name: distill-vq\ntags:\n- faiss\n---\n# test quantizer\n")

LOAD_IN_FRESH_PROCESS = """
import sys, numpy as np, distill_vq
from transformers import AutoModel
from distill_vq.hub import load_index
repo, revision, out = sys.argv[1], sys.argv[2] or None, sys.argv[3]
model = AutoModel.from_pretrained(repo, revision=revision)
index, doc_ids = load_index(repo, revision=revision)
queries = np.load(out + ".queries.npy")
scores, rows = index.search(queries, 10)
np.savez(out, scores=scores, rows=rows, **{name: t.numpy() for name, t in model.state_dict().items()})
"""


@pytest.fixture(scope="module")
def model(random_embeddings):
    return DistillVQModel.from_embeddings(random_embeddings[0], DistillVQConfig(**CONFIG))


def load_in_fresh_process(repo_id, revision, tmp_path, queries):
    out = str(tmp_path / "loaded.npz")
    np.save(out + ".queries.npy", queries)
    subprocess.run([sys.executable, "-c", LOAD_IN_FRESH_PROCESS, repo_id, revision or "", out], check=True)
    return np.load(out)


def save_output_dir(model, docs, folder):
    model.save_pretrained(folder)
    CARD.save(folder / "README.md")
    index = model.to_faiss(docs, nprobe=4)
    from distill_vq.faiss_bridge import write_index

    write_index(index, folder / "index.faiss")
    (folder / "doc_ids.json").write_text(json.dumps([f"d{row}" for row in range(len(docs))]))
    return index


def test_push_then_load_in_a_fresh_process_bit_exact(local_hub, model, random_embeddings, tmp_path):
    docs, queries = random_embeddings
    index = save_output_dir(model, docs, tmp_path / "out")
    commit = push_output_dir(tmp_path / "out", "org/quantizer", include_index=True)
    files = set(HfApi().list_repo_files("org/quantizer"))
    assert {"config.json", "model.safetensors", "README.md", "index.faiss", "doc_ids.json"} <= files
    assert commit.oid

    loaded = load_in_fresh_process("org/quantizer", None, tmp_path, queries)
    for name, tensor in model.state_dict().items():
        np.testing.assert_array_equal(loaded[name], tensor.numpy())
    expected_scores, expected_rows = index.search(queries, 10)
    np.testing.assert_array_equal(loaded["rows"], expected_rows)
    np.testing.assert_array_equal(loaded["scores"], expected_scores)


def test_model_push_to_hub_and_revisions(local_hub, model, random_embeddings, tmp_path):
    first = model.push_to_hub("org/versions", model_card=CARD)
    changed = DistillVQModel(model.config)
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.pq_codebooks.add_(1.0)
    changed.push_to_hub("org/versions")  # the default card, rendered from the config
    assert "index.faiss" not in HfApi().list_repo_files("org/versions")  # the index only when asked
    card = ModelCard.load("org/versions")
    assert card.data.library_name == "distill-vq" and "**5 bytes per vector**" in card.text
    assert 'DistillVQModel.from_pretrained("org/versions")' in card.text and "## Training" not in card.text
    old = DistillVQModel.from_pretrained("org/versions", revision=first.oid)
    new = DistillVQModel.from_pretrained("org/versions")
    assert torch.equal(old.pq_codebooks, model.pq_codebooks)
    assert torch.equal(new.pq_codebooks, changed.pq_codebooks)
    with pytest.raises(FileNotFoundError, match="holds no corpus index"):
        load_index("org/versions")


def test_invalid_repo_id(local_hub, model, tmp_path):
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="Invalid repository id 'not a valid id'"):
        push_output_dir(tmp_path, "not a valid id")


def test_missing_token(local_hub, model, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr("distill_vq.hub.get_token", lambda: None)
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="needs a Hugging Face token"):
        push_output_dir(tmp_path, "org/private", private=True)


def test_repository_of_another_model_type_is_left_alone(local_hub, model, tmp_path):
    api = HfApi()
    api.create_repo("org/bert")
    (tmp_path / "bert").mkdir()
    BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8).save_pretrained(tmp_path / "bert")
    api.upload_folder(repo_id="org/bert", folder_path=tmp_path / "bert")
    commits_before = api.repo_info("org/bert").sha
    model.save_pretrained(tmp_path / "ours")
    with pytest.raises(ValueError, match="holds a 'bert' model, not a distill_vq quantizer"):
        push_output_dir(tmp_path / "ours", "org/bert")
    assert api.repo_info("org/bert").sha == commits_before
    with pytest.raises(ValueError, match="holds a 'bert' model"):
        DistillVQModel.from_pretrained("org/bert")


def test_include_index_without_index_pushes_nothing(local_hub, model, tmp_path):
    model.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="no index.faiss to include"):
        push_output_dir(tmp_path, "org/nothing", include_index=True)
    assert not HfApi().repo_exists("org/nothing")


def test_student_query_encoder_travels_with_its_tokenizer(local_hub, tmp_path):
    encoder_config = {"model_type": "bert", "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                      "intermediate_size": 32, "vocab_size": 30522}
    model = DistillVQModel(DistillVQConfig(query_encoder_config=encoder_config, **CONFIG)).eval()
    model.save_pretrained(tmp_path / "student")
    AutoTokenizer.from_pretrained(default_encoder_path()).save_pretrained(tmp_path / "student")
    push_output_dir(tmp_path / "student", "org/student")
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(HfApi().list_repo_files("org/student"))

    loaded, tokenizer = DistillVQModel.from_pretrained("org/student").eval(), AutoTokenizer.from_pretrained("org/student")
    batch = tokenizer(["command line tool to compress files", "font"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_queries(**batch), model.encode_queries(**batch), rtol=0, atol=0)
