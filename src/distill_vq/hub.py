"""Sharing saved folders on the Hugging Face Hub: one commit with the quantizer, its card and (optionally) the corpus
index, and fetching them back. A model in memory uses the standard `DistillVQModel.push_to_hub`.

The command gives every Hub request a time-out (`set_hub_timeouts`) and turns a Hub that does not answer, cannot be
reached or answers junk into one line naming the endpoint (`hub_error_message`).
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Iterator
from pathlib import Path

import faiss
import huggingface_hub
from huggingface_hub import (
    CommitOperationAdd, HfApi, ModelCard, constants, get_token, hf_hub_download, set_client_factory, snapshot_download,
)
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RevisionNotFoundError
from huggingface_hub.utils import validate_repo_id
from huggingface_hub.utils._http import default_client_factory  # the client huggingface_hub builds by default

from .configuration_distill_vq import DistillVQConfig
from .model_card import CARD_DATA_FILE, CARD_FILE, DistillVQModelCardData
from .output_folder import (
    DOC_IDS_FILE, INDEX_CONFIG_FILE, INDEX_FILE, TOKENIZER_FILES, read_config, read_index_files,
)

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUTS = {"HF_HUB_ETAG_TIMEOUT": 10, "HF_HUB_DOWNLOAD_TIMEOUT": 60}  # seconds, unless set in the environment
UNREADABLE_ANSWER_ERRORS = (json.JSONDecodeError, KeyError, TypeError, AttributeError, IndexError)
_HUB_CLIENT_FOLDER = Path(huggingface_hub.__file__).parent

MODEL_FILES = ["config.json", "model.safetensors", CARD_FILE, CARD_DATA_FILE, "results.json", "results.md",
               "recall.png"]
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
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = repo_url.repo_id
    _check_repository_model_type(repo_id, revision, token)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    names = MODEL_FILES + (list(TOKENIZER_FILES) if config.query_encoder_config is not None else []) + (
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
    `evaluate`): the quantizer (with its query encoder's tokenizer, when it has one) and the index files."""
    return _download(repo_id, ["config.json", "model.safetensors", *TOKENIZER_FILES, *INDEX_FILES], revision, token)


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


def _check_repository_model_type(repo_id: str, revision: str | None, token: str) -> None:
    """Refuse to push into a repository that already holds another kind of model."""
    try:
        existing = hf_hub_download(repo_id, "config.json", revision=revision, token=token)
    except (EntryNotFoundError, RevisionNotFoundError):  # an empty repository or a new branch
        return
    read_config(Path(existing).parent, f"The repository {repo_id}")


def set_hub_timeouts() -> None:
    """Give every Hub request of this process a time-out (the command calls it; a library user keeps their own).

    `huggingface_hub` reads HF_HUB_ETAG_TIMEOUT (metadata) and HF_HUB_DOWNLOAD_TIMEOUT (downloads) from the
    environment, but its shared HTTP client has no time-out and many calls pass `timeout=None`, so an endpoint that
    never answers hangs them. Unless set in the environment they become 10 s and 60 s, and every request's connect
    and read time-outs are capped at them (`_cap_timeouts`).
    """
    for name, seconds in DEFAULT_TIMEOUTS.items():
        if name not in os.environ:
            setattr(constants, name, seconds)
    set_client_factory(_client_with_timeouts)


def hub_error_message(error: BaseException) -> str | None:
    """One line for an error that came from talking to the Hub at `HF_ENDPOINT`: no answer within the time-out, no
    connection, or an answer that `huggingface_hub` could not read (junk or malformed JSON); None for other errors."""
    endpoint = constants.ENDPOINT
    for cause in _causes(error):
        if any(base.__name__ == "TransportError" for base in type(cause).__mro__):  # httpx: no answer, no connection
            kind = type(cause).__name__
            if "Timeout" in kind:
                return (f"The Hub at {endpoint} did not answer in time ({kind}); check the network and HF_ENDPOINT, "
                        "or raise HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT (seconds).")
            return (f"Cannot reach the Hub at {endpoint} ({kind}: {cause}); check the network, HF_ENDPOINT and the "
                    "proxy settings.")
    frames = traceback.extract_tb(error.__traceback__)
    if isinstance(error, UNREADABLE_ANSWER_ERRORS) and any(
            Path(frame.filename).is_relative_to(_HUB_CLIENT_FOLDER) for frame in frames):
        return (f"The Hub at {endpoint} sent an answer that huggingface_hub cannot read ({type(error).__name__}: "
                f"{error}); check HF_ENDPOINT, or try again later.")
    return None


def _client_with_timeouts():
    client = default_client_factory()
    client.event_hooks = {**client.event_hooks, "request": [*client.event_hooks["request"], _cap_timeouts]}
    return client


def _cap_timeouts(request) -> None:
    """An httpx request hook: no step of a request waits longer than HF_HUB_ETAG_TIMEOUT to connect, nor, to read
    or write, longer than HF_HUB_ETAG_TIMEOUT for a metadata (HEAD) request or HF_HUB_DOWNLOAD_TIMEOUT otherwise."""
    limit = constants.HF_HUB_ETAG_TIMEOUT if request.method == "HEAD" else constants.HF_HUB_DOWNLOAD_TIMEOUT
    limits = {"connect": constants.HF_HUB_ETAG_TIMEOUT, "read": limit, "write": limit, "pool": limit}
    given = request.extensions.get("timeout", {})
    request.extensions["timeout"] = {step: min(given.get(step) or cap, cap) for step, cap in limits.items()}


def _causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and the errors it was raised from or while handling (as its traceback would show them)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)


__all__ = ["download_output_dir", "hub_error_message", "load_index", "push_output_dir", "set_hub_timeouts"]
