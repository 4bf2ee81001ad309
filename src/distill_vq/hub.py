"""Sharing saved folders on the Hugging Face Hub: one commit with the quantizer, its card and (optionally) the corpus
index, and fetching them back. A model in memory uses the standard `DistillVQModel.push_to_hub`."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import faiss
from huggingface_hub import CommitOperationAdd, HfApi, ModelCard, get_token, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RevisionNotFoundError
from huggingface_hub.utils import validate_repo_id

from .configuration_distill_vq import DistillVQConfig
from .model_card import CARD_DATA_FILE, CARD_FILE, DistillVQModelCardData
from .output_folder import DOC_IDS_FILE, INDEX_CONFIG_FILE, INDEX_FILE, read_index_files

logger = logging.getLogger(__name__)

MODEL_FILES = ["config.json", "model.safetensors", CARD_FILE, CARD_DATA_FILE, "results.json", "results.md",
               "recall.png"]
ENCODER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]
INDEX_FILES = [INDEX_FILE, DOC_IDS_FILE, INDEX_CONFIG_FILE]


def push_output_dir(output_dir, repo_id: str, private: bool = False, include_index: bool = False,
                    token: str | None = None, revision: str | None = None, commit_message: str | None = None):
    """Upload a saved model folder (`save_pretrained` output or a `distill-vq train` folder) in a single commit.

    Pushes `config.json`, `model.safetensors`, the model card `README.md` (rendered again from the folder's
    `model_card_data.json`, when there is one, so that its usage snippet names `repo_id`), the results, the query
    encoder's tokenizer files when present, and `index.faiss`, `doc_ids.json` and `index_config.json` when
    `include_index`. The encoder's weights are not copied unless the model trained its own: the card and config name
    it (`encoder_name_or_path`). Returns the `CommitInfo`. Everything is checked before the repository is created,
    and the files go in one commit: an error leaves no partial upload (at most an empty repository or branch).
    """
    folder = Path(output_dir)
    config = _read_distill_vq_config(folder / "config.json", str(folder))
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"Invalid repository id {repo_id!r}: {error}. Use 'namespace/name'.") from None
    token = token or get_token()
    if token is None:
        raise ValueError("Pushing needs a Hugging Face token with write access: run `hf auth login` or set HF_TOKEN.")
    missing = [name for name in INDEX_FILES if not (folder / name).is_file()]
    if include_index and missing:
        raise ValueError(f"{folder} has no {', '.join(missing)} to include; run `distill-vq train` (or write them "
                         "with output_folder.write_index_files), or drop include_index.")
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = repo_url.repo_id
    _check_repository_model_type(repo_id, revision, token)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    names = MODEL_FILES + (ENCODER_FILES if config.query_encoder_config is not None else []) + (
        INDEX_FILES if include_index else [])
    operations = [CommitOperationAdd(name, str(folder / name)) for name in names if (folder / name).is_file()]
    card = _card_for(folder, config, repo_id)
    if card is not None:
        operations = [op for op in operations if op.path_in_repo != CARD_FILE] + [CommitOperationAdd(CARD_FILE, card)]
    message = commit_message or f"Upload distill-vq quantizer ({config.index_factory_string})"
    return api.create_commit(repo_id, operations, commit_message=message, revision=revision)


def load_index(repo_id_or_path, nprobe: int | None = None, revision: str | None = None,
               token: str | None = None) -> tuple[faiss.Index, list[str], dict]:
    """`(index, doc_ids, index_config)` of a folder, or of a repository pushed with `include_index=True` (its three
    index files are downloaded only when called); see `output_folder.read_index_files`."""
    folder = Path(repo_id_or_path)
    if not folder.is_dir():
        folder = _download(str(repo_id_or_path), INDEX_FILES, revision, token)
        if not (folder / INDEX_FILE).is_file():
            raise FileNotFoundError(f"{repo_id_or_path} holds no corpus index; push it with include_index=True "
                                    "(distill-vq push --include-index).")
    return read_index_files(folder, nprobe)


def download_output_dir(repo_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """The local copy of a repository pushed from a `distill-vq train` folder with its index (for `search` and
    `evaluate`): the quantizer and the index files."""
    return _download(repo_id, ["config.json", "model.safetensors", *INDEX_FILES], revision, token)


def _download(repo_id: str, names: list[str], revision: str | None, token: str | None) -> Path:
    """The snapshot folder holding those of `names` that `repo_id` has."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise FileNotFoundError(f"{repo_id} is neither a folder nor a Hub repository id ('namespace/name').") from None
    return Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=names))


def _card_for(folder: Path, config: DistillVQConfig, repo_id: str) -> bytes | None:
    """The folder's model card rendered again for `repo_id` from its `model_card_data.json`; None when it has none
    or rendering fails (logged: the folder's README.md is pushed as it is)."""
    if not (folder / CARD_DATA_FILE).is_file():
        return None
    try:
        card_data = DistillVQModelCardData.from_json_file(folder / CARD_DATA_FILE)
        card_data.model_id = repo_id
        card_data.set_index(config)
        existing = ModelCard.load(folder / CARD_FILE) if (folder / CARD_FILE).is_file() else None
        return str(card_data.to_model_card(existing)).encode()
    except Exception as error:  # noqa: BLE001 - a card never fails a push
        logger.warning(f"The model card of {folder} was not rendered for {repo_id}: {type(error).__name__}: {error}")
        return None


def _read_distill_vq_config(path: Path, where: str) -> DistillVQConfig:
    if not path.exists():
        raise FileNotFoundError(f"{where} has no config.json; save the model with save_pretrained first.")
    model_type = json.loads(path.read_text()).get("model_type")
    if model_type != DistillVQConfig.model_type:
        raise ValueError(f"{where} holds a {model_type!r} model, not a distill_vq quantizer.")
    return DistillVQConfig.from_json_file(path)


def _check_repository_model_type(repo_id: str, revision: str | None, token: str) -> None:
    """Refuse to push into a repository that already holds another kind of model."""
    try:
        existing = hf_hub_download(repo_id, "config.json", revision=revision, token=token)
    except (EntryNotFoundError, RevisionNotFoundError):  # an empty repository or a new branch
        return
    _read_distill_vq_config(Path(existing), f"The repository {repo_id}")


__all__ = ["download_output_dir", "load_index", "push_output_dir"]
