"""Sharing on the Hub against a local Hub on 127.0.0.1 (the real huggingface_hub client, end to end): the standard
`push_to_hub` with the model card, `push_output_dir` for saved folders, `load_index`; which names are Hub ids; and
the core model importing nothing of the distribution modules."""

import ast
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard
from conftest import fast_opq
from local_hub import local_hub  # noqa: F401  (fixture)
from transformers import AutoTokenizer, BertConfig

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq import modeling_distill_vq
from distill_vq.encoding import default_encoder_path
from distill_vq.hub import load_index, push_output_dir
from distill_vq.io_utils import is_hub_id
from distill_vq.model_card import CARD_DATA_FILE, DistillVQModelCardData
from distill_vq.output_folder import write_index_files

CONFIG = {"embedding_dim": 32, "num_lists": 16, "num_subvectors": 8, "bits_per_subvector": 5, "use_rotation": True}
CARD = ModelCard("---\nlibrary_name: distill-vq\ntags:\n- faiss\n---\n# test quantizer\n")
ROWS = [{"index": "faiss IVF16,PQ8x5", "recall_vs_exact@10": 0.5}, {"index": "distill-vq", "recall_vs_exact@10": 0.6}]

LOAD_IN_FRESH_PROCESS = """
import sys, numpy as np, transformers
had_jinja2 = "jinja2" in sys.modules  # transformers' chat templates
from distill_vq import DistillVQModel  # registers the Auto classes (`import distill_vq` alone loads nothing)
from transformers import AutoModel
from distill_vq.hub import load_index
repo, revision, out = sys.argv[1], sys.argv[2] or None, sys.argv[3]
model = AutoModel.from_pretrained(repo, revision=revision)
index, doc_ids, index_config = load_index(repo, revision=revision)
queries = np.load(out + ".queries.npy")
scores, rows = index.search(queries, 10)
np.savez(out, scores=scores, rows=rows, **{name: t.numpy() for name, t in model.state_dict().items()})
import distill_vq.pipeline  # every module of the library: none imports a plotting or templating library at import
assert "matplotlib" not in sys.modules and (had_jinja2 or "jinja2" not in sys.modules)
"""


@pytest.fixture(scope="module")
def model(random_embeddings):
    with fast_opq():  # a rotation faiss trains, in 4 OPQ iterations
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
    write_index_files(folder, index, [f"d{row}" for row in range(len(docs))], {"nprobe": 4})
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


def test_standard_push_to_hub_carries_the_card_and_loads_bit_exact(local_hub, model, tmp_path):
    model.model_card_data = DistillVQModelCardData(license="apache-2.0")
    model.model_card_data.set_evaluation(ROWS)
    try:
        first = model.push_to_hub("org/versions")  # transformers' PushToHubMixin.push_to_hub, no override
    finally:
        card_data, model.model_card_data = model.model_card_data, None
    assert {"config.json", "model.safetensors", "README.md", CARD_DATA_FILE} <= set(HfApi().list_repo_files("org/versions"))
    card = ModelCard.load("org/versions")
    assert card.data.library_name == "distill-vq" and card.data.license == "apache-2.0"
    assert "**5 bytes per vector**" in card.text and 'DistillVQModel.from_pretrained("org/versions")' in card.text
    assert [result.metric_value for result in card.data.eval_results] == [0.6] and card_data.model_id == "org/versions"
    loaded = DistillVQModel.from_pretrained("org/versions")
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name

    changed = DistillVQModel(model.config)
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.codebooks.add_(1.0)
    changed.push_to_hub("org/versions")  # no card data: the repository keeps its card
    assert "index.faiss" not in HfApi().list_repo_files("org/versions")  # the index only when asked
    assert 'DistillVQModel.from_pretrained("org/versions")' in ModelCard.load("org/versions").text
    old = DistillVQModel.from_pretrained("org/versions", revision=first.oid)
    new = DistillVQModel.from_pretrained("org/versions")
    assert torch.equal(old.codebooks, model.codebooks)
    assert torch.equal(new.codebooks, changed.codebooks)
    with pytest.raises(FileNotFoundError, match="holds no corpus index"):
        load_index("org/versions")


def test_push_to_hub_updates_a_repositorys_own_card(local_hub, model, tmp_path):
    HfApi().create_repo("org/own-card")
    HfApi().upload_file(path_or_fileobj=b"---\nlicense: mit\n---\n# Our notes\n\nKeep them.\n", path_in_repo="README.md",
                        repo_id="org/own-card")
    model.model_card_data = DistillVQModelCardData()
    try:
        model.push_to_hub("org/own-card")
    finally:
        model.model_card_data = None
    card = ModelCard.load("org/own-card")
    assert card.text.startswith("# Our notes\n\nKeep them.\n") and "\n- distill-vq " in card.text
    assert card.data.license == "mit" and card.data.library_name == "distill-vq" and "faiss" in card.data.tags


def test_pushed_folder_card_names_the_repository(local_hub, model, random_embeddings, tmp_path):
    model.model_card_data = DistillVQModelCardData()
    try:
        model.save_pretrained(tmp_path / "out")
    finally:
        model.model_card_data = None
    assert f'DistillVQModel.from_pretrained("{tmp_path / "out"}")' in (tmp_path / "out" / "README.md").read_text()
    write_index_files(tmp_path / "out", model.to_faiss(random_embeddings[0]), ["a"] * 2000, {"nprobe": 3})
    push_output_dir(tmp_path / "out", "org/folder", include_index=True)
    assert 'DistillVQModel.from_pretrained("org/folder")' in ModelCard.load("org/folder").text
    assert str(tmp_path) not in ModelCard.load("org/folder").text
    index, doc_ids, index_config = load_index("org/folder", nprobe=5)
    assert (index.ntotal, len(doc_ids), index_config["nprobe"], faiss.extract_index_ivf(index).nprobe) == (
        2000, 2000, 3, 5)
    assert set(index_config["sha256"]) == {"index.faiss", "doc_ids.json"}  # verified on every load
    assert faiss.extract_index_ivf(load_index(tmp_path / "out")[0]).nprobe == 3  # a folder, at its stored nprobe


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
    with pytest.raises(ValueError, match="no index.faiss, doc_ids.json, index_config.json to include"):
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


def test_hub_ids_and_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_hub_id("bert-base-uncased") and is_hub_id("sentence-transformers/all-MiniLM-L6-v2")
    (tmp_path / "bert-base-uncased").mkdir()
    assert not is_hub_id("bert-base-uncased")  # a path that exists here is a path
    assert not any(map(is_hub_id, ["/models/encoder", "./encoder", "~/encoder", "a/b/c", "my encoder", "BeIR/x:corpus"]))


def test_the_core_model_imports_nothing_of_the_distribution_modules():
    tree = ast.parse(Path(modeling_distill_vq.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not imported & {"hub", "model_card", "output_folder", "evaluation", "pipeline", "cli", "matplotlib"}
    assert "push_to_hub" not in vars(DistillVQModel)  # the standard PushToHubMixin.push_to_hub
