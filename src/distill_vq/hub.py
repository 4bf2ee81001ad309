"""Sharing on the Hugging Face Hub: one commit with the quantizer, its card and (optionally) the corpus index."""

import json
from pathlib import Path

import faiss
from huggingface_hub import CommitOperationAdd, HfApi, get_token, hf_hub_download, snapshot_download
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, RevisionNotFoundError
from huggingface_hub.utils import validate_repo_id

from .configuration_distill_vq import DistillVQConfig
from .model_card import card_facts_from_results, render_model_card
from .output_folder import DOC_IDS_FILE, INDEX_CONFIG_FILE, INDEX_FILE

MODEL_FILES = ["config.json", "model.safetensors", "README.md", "results.json", "results.md", "recall.png"]
ENCODER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]
INDEX_FILES = [INDEX_FILE, DOC_IDS_FILE]


def push_output_dir(output_dir, repo_id: str, private: bool = False, include_index: bool = False,
                    token: str | None = None, revision: str | None = None, commit_message: str | None = None):
    """Upload a saved model folder (`save_pretrained` output or a `distill-vq train` folder) in a single commit.

    Pushes `config.json`, `model.safetensors`, the model card `README.md` (a train folder's card is rendered again
    from its `results.json` so that its usage snippet names `repo_id`), the results, the query encoder's
    tokenizer files when present, and `index.faiss` + `doc_ids.json` when `include_index`. The encoder's weights
    are not copied unless the model trained its own: the card and config name it (`encoder_name_or_path`).
    Returns the `CommitInfo`. Everything is checked before the repository is created, and the files go in one
    commit: an error leaves no partial upload (at most an empty repository or branch).
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
    if include_index and not (folder / "index.faiss").exists():
        raise ValueError(f"{folder} has no index.faiss to include; run `distill-vq train` or drop include_index.")
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = repo_url.repo_id
    _check_repository_model_type(repo_id, revision, token)
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    names = MODEL_FILES + (ENCODER_FILES if config.query_encoder_config is not None else []) + (
        INDEX_FILES + [INDEX_CONFIG_FILE] if include_index else [])
    operations = [CommitOperationAdd(name, str(folder / name)) for name in names if (folder / name).is_file()]
    if (folder / "results.json").is_file():  # a `distill-vq train` folder: its card, for the model at `repo_id`
        facts = card_facts_from_results(json.loads((folder / "results.json").read_text()), repo_id)
        card = str(render_model_card(facts)).encode()
        operations = [op for op in operations if op.path_in_repo != "README.md"] + [CommitOperationAdd("README.md", card)]
    message = commit_message or f"Upload distill-vq quantizer ({config.index_factory_string})"
    return api.create_commit(repo_id, operations, commit_message=message, revision=revision)


def load_index(repo_id_or_path, revision: str | None = None, token: str | None = None) -> tuple[faiss.Index, list[str]]:
    """The corpus index pushed with `include_index=True` (or saved in a local folder) and its document ids by row.

    Downloads `index.faiss` and `doc_ids.json` only when called.
    """
    folder = Path(repo_id_or_path)
    if folder.is_dir():
        paths = [folder / name for name in INDEX_FILES]
        missing = [path.name for path in paths if not path.exists()]
        if missing:
            raise FileNotFoundError(f"{folder} has no {', '.join(missing)}; train with `distill-vq train` first.")
    else:
        try:
            paths = [Path(hf_hub_download(str(repo_id_or_path), name, revision=revision, token=token))
                     for name in INDEX_FILES]
        except EntryNotFoundError:
            raise FileNotFoundError(
                f"{repo_id_or_path} holds no corpus index; push it with include_index=True (distill-vq push "
                "--include-index).") from None
    return faiss.read_index(str(paths[0])), json.loads(paths[1].read_text())


def download_output_dir(repo_id: str, revision: str | None = None, token: str | None = None) -> Path:
    """The local copy of a repository pushed from a `distill-vq train` folder with its index (for `search` and
    `evaluate`): the quantizer and the index files."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise FileNotFoundError(f"{repo_id} is neither a folder nor a Hub repository id ('namespace/name').") from None
    names = ["config.json", "model.safetensors", *INDEX_FILES, INDEX_CONFIG_FILE]
    return Path(snapshot_download(repo_id, revision=revision, token=token, allow_patterns=names))


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

