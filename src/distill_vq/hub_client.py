"""The command's connection to the Hugging Face Hub: a time-out on every request (`set_hub_timeouts`), and one line
naming the endpoint for a Hub that does not answer, cannot be reached or answers junk (`hub_error_message`).

Imports `huggingface_hub` alone, so that the command can set these up, and report a Hub failure, before it loads
torch or transformers.
"""

from __future__ import annotations

import json
import os
import traceback
from collections.abc import Iterator
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants, set_client_factory
from huggingface_hub.utils._http import default_client_factory  # the client huggingface_hub builds by default

DEFAULT_TIMEOUTS = {"HF_HUB_ETAG_TIMEOUT": 10, "HF_HUB_DOWNLOAD_TIMEOUT": 60}  # seconds, unless set in the environment
UNREADABLE_ANSWER_ERRORS = (json.JSONDecodeError, KeyError, TypeError, AttributeError, IndexError)
_HUB_CLIENT_FOLDER = Path(huggingface_hub.__file__).parent


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
