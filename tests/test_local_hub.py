"""The real `huggingface_hub` client, end to end against the in-process `LocalHub` (no request leaves 127.0.0.1)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from local_hub import local_hub  # noqa: F401  (the fixture)
from safetensors.torch import load_file, save_file

REPO = "local-user/tiny-model"


def _make_folder(folder: Path, version: int) -> dict[str, bytes]:
    """A folder with a text file, a nested one and a `model.safetensors`; returns `{path_in_repo: bytes}`."""
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(f'{{"version": {version}}}')
    (folder / "sub" / "notes.txt").write_text("nested\n")
    save_file({"weight": torch.full((3, 4), float(version))}, folder / "model.safetensors")
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def uploaded(local_hub, tmp_path):  # noqa: F811
    """`REPO`, created private, with one commit holding `_make_folder`'s files: `(api, files, commit_info)`."""
    api = HfApi()
    api.create_repo(REPO, private=True)
    files = _make_folder(tmp_path / "v1", version=1)
    return api, files, api.upload_folder(repo_id=REPO, folder_path=tmp_path / "v1", commit_message="v1")


def test_upload_folder_then_download_bit_exact(uploaded):
    api, files, commit = uploaded
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO
    assert sorted(api.list_repo_files(REPO)) == sorted([".gitattributes", *files])
    info = api.model_info(REPO, files_metadata=True)
    assert info.sha == commit.oid and info.private is True
    lfs = {s.rfilename: s.lfs for s in info.siblings}
    assert lfs["model.safetensors"] is not None and lfs["config.json"] is None  # safetensors went through LFS

    for name, content in files.items():
        assert Path(hf_hub_download(REPO, name)).read_bytes() == content
    snapshot = Path(snapshot_download(REPO))
    assert {name: (snapshot / name).read_bytes() for name in files} == files
    assert torch.equal(load_file(snapshot / "model.safetensors")["weight"], torch.full((3, 4), 1.0))


def test_revision_returns_old_content(uploaded, tmp_path):
    api, old, v1 = uploaded
    new = _make_folder(tmp_path / "v2", version=2)
    v2 = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "v2", commit_message="v2")
    assert v2.oid != v1.oid and api.repo_info(REPO).sha == v2.oid
    api.create_branch(REPO, branch="release/v1", revision=v1.oid)

    assert Path(hf_hub_download(REPO, "config.json")).read_bytes() == new["config.json"]
    for revision in (v1.oid, v1.oid[:10], "release/v1"):
        assert api.model_info(REPO, revision=revision).sha == v1.oid
        assert Path(hf_hub_download(REPO, "config.json", revision=revision)).read_bytes() == old["config.json"]
        snapshot = Path(snapshot_download(REPO, revision=revision, cache_dir=tmp_path / revision.replace("/", "-")))
        assert (snapshot / "model.safetensors").read_bytes() == old["model.safetensors"]


def test_download_in_a_fresh_subprocess_uses_the_environment(uploaded):
    _, files, commit = uploaded
    code = "import huggingface_hub as h; print(h.hf_hub_download(%r, 'model.safetensors'))" % REPO
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ), capture_output=True, text=True, check=True)
    path = Path(out.stdout.strip())
    assert path.read_bytes() == files["model.safetensors"]
    assert path.is_relative_to(os.environ["HF_HUB_CACHE"]) and commit.oid in path.parts


def test_missing_repo_revision_and_file_raise_the_client_errors(uploaded):
    api, _, _ = uploaded
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("local-user/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("local-user/does-not-exist", "config.json")
    with pytest.raises(RepositoryNotFoundError):  # private, asked for without a token
        hf_hub_download(REPO, "config.json", token=False)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "missing.json")


def test_writes_without_a_token_get_401(uploaded):
    anonymous = HfApi(token=False)
    for write in (
        lambda: anonymous.create_repo("local-user/other"),
        lambda: anonymous.upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=REPO),
    ):
        with pytest.raises(HfHubHTTPError) as error:
            write()
        assert error.value.response.status_code == 401


@pytest.mark.parametrize(("failure", "status"), [("delete a missing file", 404), ("stale parent commit", 412)])
def test_failed_commit_leaves_the_repo_unchanged(uploaded, failure, status):
    api, files, v1 = uploaded
    operations = [
        CommitOperationAdd(path_in_repo="added.txt", path_or_fileobj=b"must not land"),
        CommitOperationAdd(path_in_repo="model.safetensors", path_or_fileobj=b"\0binary: LFS, uploaded first"),
    ]
    parent = v1.oid
    if failure == "delete a missing file":
        operations.append(CommitOperationDelete("missing.txt"))
    else:
        api.upload_file(path_or_fileobj=b"moved on", path_in_repo="other.txt", repo_id=REPO)
    head = api.repo_info(REPO).sha
    with pytest.raises(HfHubHTTPError) as error:
        api.create_commit(REPO, operations, commit_message="doomed", parent_commit=parent)
    assert error.value.response.status_code == status
    assert api.repo_info(REPO).sha == head
    assert "added.txt" not in api.list_repo_files(REPO)
    assert Path(hf_hub_download(REPO, "model.safetensors")).read_bytes() == files["model.safetensors"]
