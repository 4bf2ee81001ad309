"""A repository that carries its document encoder (`distill-vq push --include-encoder`, automatic for an encoder that
is a local folder): pushed to the local Hub on 127.0.0.1, the local encoder deleted, then searched, evaluated and
used through the card's snippet from another folder with the same results as the output folder (test_hub.py loads
a repository in a fresh process); the packaged default encoder is uploaded only when asked."""

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import HfApi, ModelCard, hf_hub_download
from local_hub import local_hub  # noqa: F401  (fixture)
from transformers import BertConfig, BertModel

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.cli import main
from distill_vq.data import DataError
from distill_vq.encoding import default_encoder_path
from distill_vq.hub import ENCODER_DIR, download_output_dir, encoder_location, push_output_dir
from distill_vq.model_card import DistillVQModelCardData
from distill_vq.output_folder import read_config
from distill_vq.retriever import Retriever
from distill_vq.settings import DEFAULT_ENCODER_NAME

QUERY = "compress an archive"
WORDS = ["kernel", "archive", "font", "python", "editor", "compress", "network", "audio", "image", "shell", "mail"]
SMALL = {"embedding_dim": 32, "num_lists": 4, "num_subvectors": 8, "bits_per_subvector": 4}

def tiny_sentence_transformer(folder: Path) -> Path:
    """A sentence-transformers folder of a seeded random 1-layer, 16-d BERT with the packaged model's tokenizer,
    modules (mean pooling, normalisation) and settings."""
    shutil.copytree(default_encoder_path(), folder, ignore=shutil.ignore_patterns("model.safetensors", "README.md"))
    torch.manual_seed(0)
    config = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    BertModel(config).save_pretrained(folder)
    pooling = folder / "1_Pooling" / "config.json"
    pooling.write_text(json.dumps({**json.loads(pooling.read_text()), "word_embedding_dimension": 16}))
    return folder


def text_files(folder: Path, num_docs: int = 700, num_queries: int = 80) -> list[str]:
    """Corpus and query files of random word sequences; the `train` data flags for them."""
    rng = np.random.default_rng(0)
    folder.mkdir()
    for name, prefix, count, length in (("corpus", "d", num_docs, 6), ("queries", "q", num_queries, 2)):
        rows = [{"_id": f"{prefix}{i}", "text": " ".join(rng.choice(WORDS, length))} for i in range(count)]
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return ["--corpus", str(folder / "corpus.jsonl"), "--queries", str(folder / "queries.jsonl")]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def saved_model(folder: Path, encoder: str | None) -> Path:
    """A `save_pretrained` folder, with its card, of an untrained quantizer whose documents `encoder` embeds."""
    model = DistillVQModel(DistillVQConfig(encoder_name_or_path=encoder, **SMALL))
    model.model_card_data = DistillVQModelCardData()
    model.save_pretrained(folder)
    return folder


def test_a_local_encoder_travels_with_the_repository(local_hub, tmp_path, capsys, monkeypatch):  # noqa: F811
    encoder = tiny_sentence_transformer(tmp_path / "my-encoder")
    out, cache = tmp_path / "out", str(tmp_path / "cache")
    assert main(["train", *text_files(tmp_path / "data"), "--encoder", str(encoder), "--num-lists", "4",
                 "--num-subvectors", "4", "--bits-per-subvector", "4", "--no-rotation", "--max-steps", "2",
                 "--disable-tqdm", "true", "--cache-dir", cache, "--output-dir", str(out)]) == 0
    capsys.readouterr()
    assert main(["search", str(out), QUERY, "-k", "5"]) == 0
    local_search = capsys.readouterr().out
    assert main(["evaluate", str(out), "--cache-dir", cache, "--results-dir", str(tmp_path / "evaluation")]) == 0
    local_results = json.loads((tmp_path / "evaluation" / "results.json").read_text())["results"]
    retriever = Retriever.from_folder(out)
    local_hits = retriever.search(QUERY, 5)[0]
    local_query = retriever.encoder.encode(["compress a file"], show_progress=False)

    assert main(["push", str(out), "me/own-encoder", "--include-index"]) == 0  # the encoder is a folder: included
    files = set(HfApi().list_repo_files("me/own-encoder"))
    assert {f"{ENCODER_DIR}/{name}" for name in ("modules.json", "1_Pooling/config.json", "config.json",
                                                 "model.safetensors", "tokenizer.json")} <= files
    assert not any(name.startswith(f"{ENCODER_DIR}/.") for name in files)  # no .gitattributes of the folder
    pushed = json.loads(Path(hf_hub_download("me/own-encoder", "config.json")).read_text())
    assert pushed["encoder_subfolder"] == ENCODER_DIR and pushed["encoder_name_or_path"] == str(encoder)
    assert json.loads((out / "config.json").read_text())["encoder_subfolder"] is None  # the folder is left as it was
    card = ModelCard.load("me/own-encoder").text
    assert 'TextEncoder(encoder_location("me/own-encoder"))' in card and "carries in `encoder/`" in card

    shutil.rmtree(encoder)  # as on another machine: only the repository has the encoder
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    monkeypatch.chdir(fresh)
    capsys.readouterr()
    assert main(["search", "me/own-encoder", QUERY, "-k", "5"]) == 0
    assert capsys.readouterr().out == local_search and len(local_search.splitlines()) == 6  # a header and 5 hits
    assert main(["evaluate", "me/own-encoder", "--cache-dir", str(fresh / "cache"), "--results-dir",
                 str(fresh / "evaluation")]) == 0  # an empty cache: the documents embedded by the encoder/ copy
    assert Retriever.from_folder(download_output_dir("me/own-encoder")).search(QUERY, 5)[0] == local_hits
    namespace = {}
    exec(ModelCard.load("me/own-encoder").text.split("```python\n")[1].split("```")[0], namespace)  # the snippet
    np.testing.assert_allclose(namespace["query_embeddings"], local_query, rtol=0, atol=1e-6)
    fresh_results = json.loads((fresh / "evaluation" / "results.json").read_text())["results"]
    assert [{k: v for k, v in row.items() if k != "qps"} for row in fresh_results] == [
        {k: v for k, v in row.items() if k != "qps"} for row in local_results]


def test_the_default_encoder_is_uploaded_only_when_asked(local_hub, tmp_path):  # noqa: F811
    folder = saved_model(tmp_path / "model", DEFAULT_ENCODER_NAME)
    push_output_dir(folder, "me/default-encoder")
    assert not any(name.startswith(f"{ENCODER_DIR}/") for name in HfApi().list_repo_files("me/default-encoder"))
    assert "encoder_subfolder" not in json.loads(Path(hf_hub_download("me/default-encoder", "config.json")).read_text())
    assert encoder_location("me/default-encoder") == DEFAULT_ENCODER_NAME
    assert ModelCard.load("me/default-encoder").data.base_model == DEFAULT_ENCODER_NAME

    assert main(["push", str(folder), "me/default-encoder", "--include-encoder"]) == 0
    packaged = default_encoder_path()
    info = HfApi().model_info("me/default-encoder", files_metadata=True)
    carried = {sibling.rfilename[len(ENCODER_DIR) + 1:]: sibling for sibling in info.siblings
               if sibling.rfilename.startswith(f"{ENCODER_DIR}/")}
    assert set(carried) == {path.relative_to(packaged).as_posix() for path in packaged.rglob("*")
                            if path.is_file() and not path.name.startswith(".")}
    assert carried["model.safetensors"].lfs.sha256 == sha256(packaged / "model.safetensors")
    pushed = json.loads(Path(hf_hub_download("me/default-encoder", "config.json")).read_text())
    assert pushed["encoder_subfolder"] == ENCODER_DIR and pushed["encoder_name_or_path"] == DEFAULT_ENCODER_NAME
    assert ModelCard.load("me/default-encoder").data.base_model == DEFAULT_ENCODER_NAME  # still named by its id

    push_output_dir(folder, "me/default-encoder")  # the config no longer points at encoder/: it is deleted
    assert not any(name.startswith(f"{ENCODER_DIR}/") for name in HfApi().list_repo_files("me/default-encoder"))


def test_a_hub_encoder_is_fetched_and_carried_when_asked(local_hub, tmp_path):  # noqa: F811
    encoder = tiny_sentence_transformer(tmp_path / "tiny")
    HfApi().create_repo("org/tiny-encoder")
    HfApi().upload_folder(repo_id="org/tiny-encoder", folder_path=encoder)
    folder = saved_model(tmp_path / "model", "org/tiny-encoder")
    push_output_dir(folder, "me/hub-encoder")
    assert encoder_location("me/hub-encoder") == "org/tiny-encoder"  # a Hub id: named, not copied

    push_output_dir(folder, "me/hub-encoder", include_encoder=True)
    location = Path(encoder_location("me/hub-encoder"))
    assert location.name == ENCODER_DIR and location.is_relative_to(os.environ["HF_HUB_CACHE"])
    assert sha256(location / "model.safetensors") == sha256(encoder / "model.safetensors")
    assert (location / "1_Pooling" / "config.json").read_text() == (encoder / "1_Pooling" / "config.json").read_text()


def test_an_encoder_that_cannot_be_uploaded_stops_the_push_first(local_hub, tmp_path):  # noqa: F811
    gone = saved_model(tmp_path / "gone", str(tmp_path / "deleted-encoder"))
    with pytest.raises(ValueError, match="is not a folder here, so it cannot be uploaded.*--no-include-encoder"):
        push_output_dir(gone, "me/gone")
    (tmp_path / "not-a-model").mkdir()
    (tmp_path / "not-a-model" / "notes.txt").write_text("no model here\n")
    with pytest.raises(ValueError, match="holds neither modules.json nor config.json"):
        push_output_dir(saved_model(tmp_path / "odd", str(tmp_path / "not-a-model")), "me/odd")
    with pytest.raises(ValueError, match="names no document encoder"):
        push_output_dir(saved_model(tmp_path / "bare", None), "me/bare", include_encoder=True)
    assert not any(HfApi().repo_exists(repo) for repo in ("me/gone", "me/odd", "me/bare"))

    assert main(["push", str(gone), "me/gone", "--no-include-encoder"]) == 0  # the name only, when the user says so
    assert encoder_location("me/gone") == str(tmp_path / "deleted-encoder")


@pytest.mark.parametrize("subfolder", ["../elsewhere", "/abs/encoder", "", 3])
def test_a_config_pointing_outside_its_folder_is_refused(tmp_path, subfolder):
    folder = saved_model(tmp_path / "model", DEFAULT_ENCODER_NAME)
    values = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**values, "encoder_subfolder": subfolder}))
    with pytest.raises(DataError, match="must name a folder inside"):
        read_config(folder)
