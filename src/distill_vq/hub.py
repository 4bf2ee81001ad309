"""Sharing saved folders on the Hugging Face Hub: one commit with the quantizer, its card and (optionally) the corpus
index and the document encoder, and fetching them back. A model in memory uses the standard
`DistillVQModel.push_to_hub`.

A repository names its document encoder by id (`encoder_name_or_path`), or carries it: the encoder's
sentence-transformers folder in `encoder/`, which the pushed config points at (`encoder_subfolder`), so that a
repository whose encoder was a local folder still works for anyone (`encoder_location`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import faiss
from huggingface_hub import (
    CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard, get_token, hf_hub_download, snapshot_download,
)
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RevisionNotFoundError
from huggingface_hub.utils import validate_repo_id
from transformers.utils import CONFIG_NAME

from .configuration_distill_vq import DistillVQConfig
from .encoding import resolve_encoder
from .io_utils import is_hub_id
from .model_card import CARD_DATA_FILE, CARD_FILE, DistillVQModelCardData
from .output_folder import (
    BASELINE_INDEX_FILE, DOC_IDS_FILE, ENCODER_SUBFOLDER_KEY, INDEX_CONFIG_FILE, INDEX_FILE, TOKENIZER_FILES,
    read_config, read_index_files,
)

logger = logging.getLogger(__name__)

ENCODER_DIR = "encoder"  # where a repository carries its document encoder
ENCODER_MARKERS = ("modules.json", CONFIG_NAME)  # a sentence-transformers folder has the first, any model the second
OTHER_FRAMEWORK_FILES = ["*.h5", "*.msgpack", "*.ot", "*.onnx", "onnx/*", "openvino/*"]  # not copied from a Hub encoder
MODEL_FILES = [CONFIG_NAME, "model.safetensors", CARD_FILE, CARD_DATA_FILE, "results.json", "results.md",
               "recall.png"]
INDEX_FILES = [INDEX_FILE, DOC_IDS_FILE, INDEX_CONFIG_FILE]  # BASELINE_INDEX_FILE goes with them when there is one


def push_output_dir(output_dir, repo_id: str, private: bool = False, include_index: bool = False,
                    include_encoder: bool | None = None, token: str | None = None, revision: str | None = None,
                    commit_message: str | None = None):
    """Upload a saved model folder (`save_pretrained` output or a `distill-vq train` folder) in a single commit.

    Pushes `config.json`, `model.safetensors`, the model card `README.md` (rendered again from the folder's
    `model_card_data.json`, when there is one, so that its usage snippet names `repo_id`), the results, the query
    encoder's tokenizer files when present, and `index.faiss`, `doc_ids.json`, `index_config.json` and the faiss
    baseline `baseline.faiss` (when the folder has it) when `include_index`.

    The document encoder is named by id in the config (`encoder_name_or_path`, the card's `base_model`). With
    `include_encoder`, its folder (the packaged all-MiniLM-L6-v2, a local folder, or a Hub model downloaded here) is
    uploaded into `encoder/` as well, and the pushed config records `encoder_subfolder="encoder"`, so that loading
    the repository (`encoder_location`, `distill-vq search` / `evaluate`) embeds with that copy. `None` (the default)
    includes it when the encoder is not a Hub id (a local folder, which nobody else has); the packaged default
    counts as the Hub id `sentence-transformers/all-MiniLM-L6-v2`. An `encoder/` left by an earlier push that the
    new config does not point at is deleted, and so is an earlier `baseline.faiss` that the new index files lack.

    Returns the `CommitInfo`. Everything is checked before the repository is created, and the files go in one
    commit: an error leaves no partial upload (at most an empty repository or branch).
    """
    folder = Path(output_dir)
    config = read_config(folder)
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
    if include_index:
        read_index_files(folder)  # refuses damaged or inconsistent index files before anything is uploaded
    encoder_folder = _encoder_folder(config, include_encoder, token)
    pushed_config = _pushed_config(folder, encoder_folder is not None)  # config.json's values
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = repo_url.repo_id
    _check_repository_model_type(repo_id, revision, token)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    names = MODEL_FILES + (list(TOKENIZER_FILES) if config.query_encoder_config is not None else []) + (
        [*INDEX_FILES, BASELINE_INDEX_FILE] if include_index else [])
    operations = [CommitOperationAdd(name, str(folder / name)) for name in names if (folder / name).is_file()]
    generated = {CONFIG_NAME: (json.dumps(pushed_config, indent=2, sort_keys=True) + "\n").encode(),
                 CARD_FILE: _card_for(folder, DistillVQConfig.from_dict(pushed_config), repo_id)}
    generated = {name: data for name, data in generated.items() if data is not None}
    operations = [op for op in operations if op.path_in_repo not in generated] + [
        CommitOperationAdd(name, data) for name, data in generated.items()]
    if encoder_folder is not None:
        operations += [CommitOperationAdd(f"{ENCODER_DIR}/{name}", str(encoder_folder / name))
                       for name in _encoder_files(encoder_folder)]
    added = {op.path_in_repo for op in operations}
    stale = [name for name in api.list_repo_files(repo_id, revision=revision) if name not in added and (
        name.startswith(f"{ENCODER_DIR}/") or (include_index and name == BASELINE_INDEX_FILE))]
    operations += [CommitOperationDelete(name) for name in stale]
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
    `evaluate`): the quantizer (with its query encoder's tokenizer, when it has one), the index files, and the
    document encoder when the repository carries it."""
    names = [CONFIG_NAME, "model.safetensors", *TOKENIZER_FILES, *INDEX_FILES, BASELINE_INDEX_FILE,
             f"{ENCODER_DIR}/*"]
    return _download(repo_id, names, revision, token)


def encoder_location(repo_id_or_path, revision: str | None = None, token: str | None = None) -> str | None:
    """Where to load the document encoder of a saved model (a folder or a repository) from, for `TextEncoder` or
    `SentenceTransformer`: the local copy of the `encoder/` folder the repository carries (downloaded here), else
    the Hub id or path its config names (at `encoder_revision`); None when it names none (the packaged default)."""
    folder = Path(repo_id_or_path)
    if not folder.is_dir():
        folder = _download(str(repo_id_or_path), [CONFIG_NAME, f"{ENCODER_DIR}/*"], revision, token)
    return read_config(folder).encoder_name_or_path


def _download(repo_id: str, names: list[str], revision: str | None, token: str | None) -> Path:
    """The snapshot folder holding those of `names` that `repo_id` has."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise FileNotFoundError(f"{repo_id} is neither a folder nor a Hub repository id ('namespace/name').") from None
    return Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=names))


def _encoder_folder(config: DistillVQConfig, include_encoder: bool | None, token: str | None) -> Path | None:
    """The folder of the document encoder to upload into `encoder/`, or None (see `push_output_dir`)."""
    name = config.encoder_name_or_path
    if include_encoder is None:
        include_encoder = name is not None and not is_hub_id(name)
    if not include_encoder:
        return None
    if name is None:
        raise ValueError("config.json names no document encoder (encoder_name_or_path) to include; set it to the "
                         "encoder that embedded the documents, or drop include_encoder (--include-encoder).")
    location = resolve_encoder(name)[1]  # the packaged all-MiniLM-L6-v2 is a folder here
    if is_hub_id(location):
        return Path(snapshot_download(location, revision=config.encoder_revision, token=token,
                                      ignore_patterns=OTHER_FRAMEWORK_FILES))
    folder = Path(location)
    if not folder.is_dir():
        raise ValueError(f"The document encoder {name} that config.json names is not a folder here, so it cannot be "
                         "uploaded, and a repository without it is unusable by others; push from the machine that "
                         "has it, or pass include_encoder=False (--no-include-encoder) to push its name only.")
    if not any((folder / marker).is_file() for marker in ENCODER_MARKERS):
        raise ValueError(f"The document encoder folder {folder} holds neither {' nor '.join(ENCODER_MARKERS)}: it is "
                         "not a sentence-transformers or transformers model; point encoder_name_or_path at the "
                         "model's folder.")
    return folder


def _encoder_files(folder: Path) -> list[str]:
    """The encoder's files, relative to its folder (POSIX), without hidden ones (`.gitattributes`, `.cache/`)."""
    names = [path.relative_to(folder) for path in folder.rglob("*") if path.is_file()]
    return sorted(name.as_posix() for name in names if not any(part.startswith(".") for part in name.parts))


def _pushed_config(folder: Path, carries_encoder: bool) -> dict:
    """The values of the folder's `config.json` as pushed: `encoder_subfolder` points at the repository's `encoder/`
    when it carries the encoder, and is left out otherwise (`encoder_name_or_path` stays as written, the record of
    where the encoder came from)."""
    values = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))  # read_config checked it
    values.pop(ENCODER_SUBFOLDER_KEY, None)
    return {**values, ENCODER_SUBFOLDER_KEY: ENCODER_DIR} if carries_encoder else values


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


def _check_repository_model_type(repo_id: str, revision: str | None, token: str) -> None:
    """Refuse to push into a repository that already holds another kind of model."""
    try:
        existing = hf_hub_download(repo_id, "config.json", revision=revision, token=token)
    except (EntryNotFoundError, RevisionNotFoundError):  # an empty repository or a new branch
        return
    read_config(Path(existing).parent, f"The repository {repo_id}")


__all__ = [
    "ENCODER_DIR", "download_output_dir", "encoder_location", "load_index", "push_output_dir"]
