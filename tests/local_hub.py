"""A local, in-memory stand-in for the parts of the Hugging Face Hub HTTP API that `huggingface_hub` uses.

Covers `create_repo`, `create_branch`, `upload_folder` / `create_commit` (preupload, NDJSON commit, LFS batch +
basic upload), `repo_info` / `model_info`, `list_repo_files` / `list_repo_tree`, `hf_hub_download` and
`snapshot_download`. Each commit is a full snapshot of the repo's files, so `revision=` works with a branch name or
a (possibly abbreviated) commit sha. Two listeners run on 127.0.0.1: the Hub API itself (`endpoint`) and a "CDN"
(`cdn`) that serves and receives LFS blobs, the way the real Hub redirects LFS downloads off-host.

Usage: the `local_hub` pytest fixture (in-process and for subprocesses, through environment variables), or
`with LocalHub() as hub: ...` and point `HF_ENDPOINT` at `hub.endpoint` yourself.

Faults, for testing clients against a broken Hub: set `hub.fault` to `"hang"` (every request waits, unanswered, until
the fault is cleared or the hub stops), `"junk"` (every answer is `200` with a body that is not JSON) or
`"wrong-json"` (every answer is `200` with a JSON list where the Hub sends objects); `None` answers normally.
"""

import base64
import datetime
import fnmatch
import hashlib
import json
import re
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

TOKEN = "test-token"
DEFAULT_NAMESPACE = "local-user"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.bin filter=lfs diff=lfs merge=lfs -text\n"
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
_COMMIT_OID = re.compile(r"[0-9a-f]{7,40}")
FAULT_BODIES = {"junk": b"<html>Bad gateway</html>", "wrong-json": b'["not", "an", "object"]'}


class HubError(Exception):
    """An error answered as `{"error": message}` with the Hub's `X-Error-Code` / `X-Error-Message` headers."""

    def __init__(self, status: int, message: str, code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message = status, message
        ascii_message = message.encode("ascii", "replace").decode()  # HTTP headers are latin-1 at best
        self.headers = {**({"X-Error-Code": code} if code else {}), "X-Error-Message": ascii_message, **(headers or {})}


class File:
    """A file's content; LFS files are also described by their git-lfs pointer, as git stores them."""

    def __init__(self, data: bytes, lfs: bool):
        self.data, self.lfs = data, lfs
        self.sha256 = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {len(data)}\n"
        self.pointer = pointer.encode() if lfs else None
        stored = self.pointer or data
        self.blob_id = hashlib.sha1(b"blob %d\0" % len(stored) + stored).hexdigest()  # git blob oid

    def tree_entry(self, path: str) -> dict:
        """The `/tree` (and `siblings`) description of this file."""
        entry = {"type": "file", "path": path, "size": len(self.data), "oid": self.blob_id}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data), "pointerSize": len(self.pointer)}
        return entry


@dataclass
class Commit:
    sha: str
    message: str
    files: dict[str, File]
    date: str = field(default_factory=lambda: f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%dT%H:%M:%S.%fZ}")


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit:
        """The commit a branch name or a (possibly abbreviated) commit sha points to."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        matches = [sha for sha in self.commits if sha.startswith(revision)] if _COMMIT_OID.fullmatch(revision) else []
        if len(matches) != 1:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return self.commits[matches[0]]

    def add_commit(self, branch: str, message: str, files: dict[str, File]) -> Commit:
        """Record a new snapshot and move `branch` to it."""
        seed = f"{self.repo_id}\0{self.branches.get(branch)}\0{message}\0{len(self.commits)}\0{sorted(files)}"
        commit = Commit(hashlib.sha1(seed.encode()).hexdigest(), message, files)
        self.commits[commit.sha] = commit
        self.branches[branch] = commit.sha
        return commit


_REPO = r"(?P<repo>[^/]+/[^/]+)"
_API = r"/api/(?P<type>model|dataset|space)s/" + _REPO
_GIT = r"/(?:(?P<type>dataset|space)s/)?" + _REPO
ROUTES = [  # (methods, pattern matched on the still-quoted path, handler name)
    ({"POST"}, r"/api/repos/create", "create_repo"),
    ({"POST"}, r"/api/validate-yaml", "validate_yaml"),
    ({"GET"}, _API + r"(?:/revision/(?P<rev>[^/]+))?", "repo_info"),
    ({"GET"}, _API + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", "tree"),
    ({"POST"}, _API + r"/preupload/(?P<rev>[^/]+)", "preupload"),
    ({"POST"}, _API + r"/commit/(?P<rev>[^/]+)", "commit"),
    ({"POST"}, _API + r"/branch/(?P<branch>[^/]+)", "create_branch"),
    ({"POST"}, _GIT + r"\.git/info/lfs/objects/batch", "lfs_batch"),
    ({"GET", "HEAD"}, _GIT + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ({"PUT"}, r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "lfs_upload"),
    ({"GET", "HEAD"}, r"/lfs-objects/(?P<oid>[0-9a-f]{64})", "lfs_download"),
]


class _Handler(BaseHTTPRequestHandler):
    """Routes one request to a `route_<name>` method; its return value `(status, body, headers)` is sent back."""

    hub: "LocalHub"

    def do_GET(self):
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_GET

    def log_message(self, format, *args):  # keep pytest output quiet
        pass

    def _dispatch(self):
        url = urlsplit(self.path)
        self.query = parse_qs(url.query)
        self.body = self.rfile.read(int(self.headers.get("Content-Length", 0)))  # read first, even to answer an error
        if self.hub.fault == "hang":
            self.hub.answering.wait()
        if self.hub.fault in FAULT_BODIES:
            headers = {"Content-Type": "application/json", "X-Repo-Commit": "0" * 40}
            self._send(200, FAULT_BODIES[self.hub.fault], headers)
            return
        try:
            for methods, pattern, name in ROUTES:
                match = re.fullmatch(pattern, url.path)
                if match and self.command in methods:
                    params = {key: unquote(value) for key, value in match.groupdict().items() if value is not None}
                    with self.hub.lock:
                        self._send(*getattr(self, "route_" + name)(**params))
                    return
            raise HubError(404, f"Not found: {self.command} {url.path}")
        except HubError as error:
            self._send(error.status, {"error": error.message}, error.headers)
        except (KeyError, TypeError, ValueError) as error:  # malformed payloads
            self._send(400, {"error": f"Bad request: {error!r}"}, {"X-Error-Message": "Bad request"})

    def _send(self, status: int, body: dict | list | bytes = b"", headers: dict | None = None):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        headers = {"Content-Type": "application/octet-stream" if isinstance(body, bytes) else "application/json",
                   **(headers or {})}
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _json(self):
        return json.loads(self.body or b"{}")

    def _require_token(self, message: str = "Invalid username or password.", code: str | None = None) -> None:
        """Any non-empty bearer token is accepted."""
        auth = self.headers.get("Authorization", "")
        if not (auth.startswith("Bearer ") and auth[len("Bearer ") :].strip()):
            raise HubError(401, message, code)

    def _repo(self, type: str | None, repo: str, write: bool = False) -> Repo:
        """The repo, or the Hub's answer for a missing one (or a private one asked for without a token)."""
        if write:
            self._require_token()
        found = self.hub.repos.get((type or "model", repo))
        if found is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if found.private:
            self._require_token("Repository not found", "RepoNotFound")  # what the Hub answers, too
        return found

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.hub.endpoint}/{'' if repo.repo_type == 'model' else repo.repo_type + 's/'}{repo.repo_id}"

    # --- Hub API -------------------------------------------------------------------------------------------------

    def route_create_repo(self):
        self._require_token()
        payload = self._json()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or DEFAULT_NAMESPACE}/{payload['name']}"
        if (repo_type, repo_id) in self.hub.repos:
            url = self._repo_url(self.hub.repos[repo_type, repo_id])
            return 409, {"error": f"You already created this {repo_type} repo", "url": url}, {}
        private = payload.get("visibility", "private" if payload.get("private") else "public") == "private"
        repo = self.hub.repos[repo_type, repo_id] = Repo(repo_type, repo_id, private)
        repo.add_commit("main", "initial commit", {".gitattributes": File(GITATTRIBUTES, lfs=False)})
        return 200, {"url": self._repo_url(repo), "name": repo_id, "id": repo_id}, {}

    def route_validate_yaml(self):
        return 200, {"errors": [], "warnings": []}, {}

    def route_repo_info(self, type, repo, rev="main"):
        repo = self._repo(type, repo)
        commit = repo.resolve(rev)
        siblings = [
            {"rfilename": path, "size": len(f.data), "blobId": f.blob_id}
            | ({"lfs": {"size": len(f.data), "sha256": f.sha256, "pointerSize": len(f.pointer)}} if f.lfs else {})
            for path, f in sorted(commit.files.items())
        ]
        first = next(iter(repo.commits.values()))
        info = {"id": repo.repo_id, "author": repo.repo_id.split("/")[0], "sha": commit.sha, "private": repo.private}
        return 200, info | {"lastModified": commit.date, "createdAt": first.date, "tags": [], "siblings": siblings}, {}

    def route_tree(self, type, repo, rev, path=""):
        commit = self._repo(type, repo).resolve(rev)
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("true", "1")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        folders, files = set(), []
        for file_path, f in sorted(commit.files.items()):
            if not file_path.startswith(prefix):
                continue
            parts = file_path[len(prefix) :].split("/")
            depth = len(parts) if recursive else min(2, len(parts))  # the folders holding it (direct child only)
            folders.update(prefix + "/".join(parts[:i]) for i in range(1, depth))
            if recursive or len(parts) == 1:
                files.append(f.tree_entry(file_path))
        if prefix and not files and not folders:
            raise HubError(404, f"Path {path} not found at {rev}", "EntryNotFound", {"X-Repo-Commit": commit.sha})
        folder_entries = [
            {"type": "directory", "path": p, "size": 0, "oid": hashlib.sha1(p.encode()).hexdigest()}
            for p in sorted(folders)
        ]
        return 200, folder_entries + files, {}

    def route_preupload(self, type, repo, rev):
        commit = self._repo(type, repo, write=True).resolve(rev)
        attributes = commit.files.get(".gitattributes")
        lines = attributes.data.decode().splitlines() if attributes else []
        lfs_patterns = [line.split()[0] for line in lines if "filter=lfs" in line]
        answer = []
        for f in self._json()["files"]:
            lfs = (
                f["size"] >= LFS_SIZE_THRESHOLD
                or b"\0" in base64.b64decode(f["sample"])
                or any(fnmatch.fnmatch(f["path"].rsplit("/", 1)[-1], pattern) for pattern in lfs_patterns)
            )
            remote = commit.files.get(f["path"])
            oid = None if remote is None else (remote.sha256 if remote.lfs else remote.blob_id)
            mode = "lfs" if lfs else "regular"
            answer.append({"path": f["path"], "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        return 200, {"files": answer, "commitOid": commit.sha}, {}

    def route_commit(self, type, repo, rev):
        """Apply the NDJSON operations to a copy of the branch head: the branch moves only if all of them succeed."""
        repo = self._repo(type, repo, write=True)
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        if self.query.get("create_pr"):
            raise HubError(400, "LocalHub does not support pull requests")
        if rev not in repo.branches:
            raise HubError(404, f"Invalid rev id: {rev} (commits go to a branch)", "RevisionNotFound")
        head = repo.resolve(rev)
        if not lines or lines[0].get("key") != "header" or not lines[0]["value"].get("summary"):
            raise HubError(400, "The commit must start with a header holding a non-empty summary")
        parent = lines[0]["value"].get("parentCommit")
        if parent is not None and parent != head.sha:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(head.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            path = value.get("path", "")
            if key == "file" and value.get("encoding") == "base64":
                files[path] = File(base64.b64decode(value["content"], validate=True), lfs=False)
            elif key == "lfsFile":
                if value.get("oid") not in self.hub.blobs:
                    raise HubError(422, f"LFS object {value.get('oid')} for {path} was never uploaded")
                files[path] = self.hub.blobs[value["oid"]]
            elif key == "deletedFile" and path in files:
                del files[path]
            elif key == "deletedFolder" and any(p.startswith(path.rstrip("/") + "/") for p in files):
                files = {p: f for p, f in files.items() if not p.startswith(path.rstrip("/") + "/")}
            elif key in ("deletedFile", "deletedFolder"):
                raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
            else:
                raise HubError(400, f"Malformed commit operation: {line}")
        commit = repo.add_commit(rev, lines[0]["value"]["summary"], files)
        commit_url = f"{self._repo_url(repo)}/commit/{commit.sha}"
        return 200, {"success": True, "commitOid": commit.sha, "commitUrl": commit_url, "pullRequestUrl": None}, {}

    def route_create_branch(self, type, repo, branch):
        repo = self._repo(type, repo, write=True)
        start = repo.resolve(self._json().get("startingPoint") or "main")
        if branch in repo.branches:
            raise HubError(409, f"Reference refs/heads/{branch} already exists")
        repo.branches[branch] = start.sha
        return 200, {}, {}

    def route_lfs_batch(self, repo, type=None):
        self._repo(type, repo, write=True)
        objects = []
        for obj in self._json()["objects"]:
            if obj["oid"] not in self.hub.blobs:  # a known blob gets no `actions`: the client skips its upload
                href = f"{self.hub.cdn}/lfs-upload/{obj['oid']}"
                obj = obj | {"authenticated": True, "actions": {"upload": {"href": href}}}
            objects.append(obj)
        return 200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"}

    def route_resolve(self, repo, rev, path, type=None):
        """A regular file is served right away; an LFS file redirects to the CDN, its metadata in `X-Linked-*`."""
        commit = self._repo(type, repo).resolve(rev)
        headers = {"X-Repo-Commit": commit.sha}
        f = commit.files.get(path)
        if f is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", headers)
        if not f.lfs:
            return 200, f.data, headers | {"ETag": f'"{f.blob_id}"'}
        location = f"{self.hub.cdn}/lfs-objects/{f.sha256}"
        headers |= {"ETag": f'"{f.blob_id}"', "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": len(f.data)}
        return 302, b"", headers | {"Location": location}

    # --- CDN (no token, like a signed URL) -------------------------------------------------------------------------

    def route_lfs_upload(self, oid):
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise HubError(400, "Uploaded content does not match its sha256")
        self.hub.blobs[oid] = File(self.body, lfs=True)
        return 200, b"", {}

    def route_lfs_download(self, oid):
        if oid not in self.hub.blobs:
            raise HubError(404, "No such LFS object")
        return 200, self.hub.blobs[oid].data, {"ETag": f'"{oid}"'}


class LocalHub:
    """An in-memory Hub on 127.0.0.1: `repos` maps `(repo_type, repo_id)` to a `Repo`, `blobs` sha256 to LFS files."""

    def __init__(self):
        self.repos: dict[tuple[str, str], Repo] = {}
        self.blobs: dict[str, File] = {}
        self.lock = threading.Lock()  # requests are answered one at a time, which makes every commit atomic
        self._servers: list[ThreadingHTTPServer] = []
        self.endpoint = self.cdn = ""
        self._fault: str | None = None
        self.answering = threading.Event()  # cleared while the fault is "hang"
        self.answering.set()

    @property
    def fault(self) -> str | None:
        """None, `"hang"`, `"junk"` or `"wrong-json"` (see the module docstring)."""
        return self._fault

    @fault.setter
    def fault(self, fault: str | None) -> None:
        if fault not in (None, "hang", *FAULT_BODIES):
            raise ValueError(f"Unknown fault {fault!r}; use None, 'hang', {', '.join(map(repr, FAULT_BODIES))}.")
        self._fault = fault
        if fault == "hang":
            self.answering.clear()
        else:
            self.answering.set()

    def start(self) -> "LocalHub":
        handler = type("Handler", (_Handler,), {"hub": self})
        for _ in ("hub", "cdn"):
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
            self._servers.append(server)
        self.endpoint, self.cdn = (f"http://127.0.0.1:{server.server_address[1]}" for server in self._servers)
        return self

    def stop(self) -> None:
        self.fault = None  # lets hanging requests go before the servers shut down
        for server in self._servers:
            server.shutdown()
            server.server_close()
        self._servers.clear()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()


@pytest.fixture
def local_hub(tmp_path, monkeypatch):
    """A running `LocalHub` that `huggingface_hub` (in this process, and subprocesses through the env) talks to.

    Sets `HF_ENDPOINT`, `HF_HUB_CACHE` (a fresh folder under `tmp_path`), `HF_TOKEN=test-token` and
    `HF_HUB_DISABLE_XET=1`, unsets the offline switches, and patches the values `huggingface_hub` (and `datasets`
    and `transformers`, if imported) read from them at import time.
    """
    from huggingface_hub import constants, hf_api
    from huggingface_hub.utils import _cache_manager

    with LocalHub() as hub:
        cache = str(tmp_path / "hf-hub-cache")
        env = {"HF_ENDPOINT": hub.endpoint, "HF_HUB_CACHE": cache, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
            monkeypatch.delenv(key, raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        url_template = hub.endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url_template)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", cache)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # else uploads go through hf_xet's own protocol
        monkeypatch.setattr(hf_api.api, "endpoint", hub.endpoint)  # `huggingface_hub.create_repo` & co. are bound to it
        monkeypatch.setattr(_cache_manager, "HF_HUB_CACHE", cache)
        if "transformers.utils.hub" in sys.modules:  # its shared HfApi keeps the endpoint it was created with
            monkeypatch.setattr(sys.modules["transformers.utils.hub"], "_hf_api", None)
        if "datasets.config" in sys.modules:
            datasets_config = sys.modules["datasets.config"]
            monkeypatch.setattr(datasets_config, "HF_ENDPOINT", hub.endpoint)
            datasets_url = hub.endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"
            monkeypatch.setattr(datasets_config, "HUB_DATASETS_URL", datasets_url)
            monkeypatch.setattr(datasets_config, "HF_HUB_OFFLINE", False)
        yield hub
