"""Files and names: atomic writes (a temporary sibling, then renamed into place), and whether a name is a Hub id."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id


def _read_umask() -> int:
    """The process's umask (only readable by setting it; done once, at import, not around every write)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


@contextmanager
def atomic_path(path):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp's file is private; give it a normal file's permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, data) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def is_hub_id(name_or_path: str | os.PathLike) -> bool:
    """Whether `name_or_path` names a Hub repository rather than a local path: a path that exists here is a path;
    otherwise it is a Hub id when `huggingface_hub` accepts it as one (`bert-base-uncased`, `owner/name`; not
    `/abs/path`, `./folder` or `a/b/c`); strip a dataset source's `:config` first."""
    if Path(name_or_path).expanduser().exists():
        return False
    try:
        validate_repo_id(str(name_or_path))
    except HFValidationError:
        return False
    return True


__all__ = ["atomic_path", "is_hub_id", "write_json", "write_text"]
