"""A Hub that never answers, answers junk, or cannot be reached gives one line naming the endpoint and exit status 2,
within the time-outs; never a hang or a traceback (tests/local_hub.py made faulty)."""

import socket
import subprocess
import sys
import time

import pytest
from huggingface_hub import constants, hf_api
from local_hub import local_hub  # noqa: F401  (fixture)

from distill_vq import DistillVQConfig, DistillVQModel
from distill_vq.cli import main
from distill_vq.hub import push_output_dir
from distill_vq.output_folder import write_index_files

CONFIG = {"embedding_dim": 32, "num_lists": 4, "num_subvectors": 8, "bits_per_subvector": 4}


@pytest.fixture
def output_dir(random_embeddings, tmp_path):
    docs = random_embeddings[0]
    model = DistillVQModel.from_embeddings(docs, DistillVQConfig(**CONFIG))
    folder = tmp_path / "out"
    model.save_pretrained(folder)
    write_index_files(folder, model.to_faiss(docs), [f"d{row}" for row in range(len(docs))], {"nprobe": 2})
    return folder


@pytest.fixture
def faulty_hub(local_hub, output_dir, monkeypatch):  # noqa: F811
    """The local Hub holding `me/index` (an output folder pushed with its index), with 1-second time-outs."""
    push_output_dir(output_dir, "me/index", include_index=True)
    for name in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.setenv(name, "1")  # the user's settings, which the command keeps
        monkeypatch.setattr(constants, name, 1)
    return local_hub


def one_line_error(argv, capsys, seconds=30) -> str:
    start = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < seconds
    error = capsys.readouterr().err.strip()
    assert error.startswith("distill-vq: error: ") and len(error.splitlines()) == 1, error
    return error


@pytest.mark.parametrize("command", [["search", "me/index", "a query"], ["evaluate", "me/index"], "push"])
def test_a_hub_that_never_answers_times_out_naming_the_endpoint(faulty_hub, output_dir, capsys, command):
    faulty_hub.fault = "hang"
    command = ["push", str(output_dir), "me/other"] if command == "push" else command
    error = one_line_error(command, capsys)
    assert f"The Hub at {faulty_hub.endpoint} did not answer in time (ReadTimeout)" in error
    assert "HF_HUB_ETAG_TIMEOUT / HF_HUB_DOWNLOAD_TIMEOUT" in error


@pytest.mark.parametrize("fault, what", [("junk", "JSONDecodeError"), ("wrong-json", "TypeError")])
@pytest.mark.parametrize("command", [["search", "me/index", "a query"], "push"])
def test_junk_from_the_hub_is_one_line_naming_the_endpoint(faulty_hub, output_dir, capsys, fault, what, command):
    faulty_hub.fault = fault
    command = ["push", str(output_dir), "me/other"] if command == "push" else command
    error = one_line_error(command, capsys)
    assert f"The Hub at {faulty_hub.endpoint} sent an answer that huggingface_hub cannot read ({what}" in error


@pytest.mark.parametrize("fault", ["junk", "wrong-json"])
def test_train_on_a_hub_corpus_answered_with_junk_is_one_line(faulty_hub, tmp_path, capsys, fault):
    faulty_hub.fault = fault
    assert main(["train", "--corpus", "me/data", "--output-dir", str(tmp_path / "work" / "run")]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("distill-vq: error: 'me/data' is neither a local path nor")
    assert not any((tmp_path / "work").iterdir())  # no lock or staging folder left


def test_the_command_times_out_a_hanging_hub_in_a_fresh_process(faulty_hub):
    faulty_hub.fault = "hang"  # the environment (HF_ENDPOINT, 1 s time-outs) goes to the child
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "distill_vq", "search", "me/index", "a query"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(f"distill-vq: error: The Hub at {faulty_hub.endpoint}")
    assert time.monotonic() - start < 60


def test_push_without_a_network_is_one_line(output_dir, capsys, monkeypatch):
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setenv("HF_TOKEN", "a-token")
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)  # what HF_ENDPOINT sets at import
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)  # `huggingface_hub.create_repo` & co. are bound to it
    assert one_line_error(["push", str(output_dir), "me/index"], capsys) == (
        f"distill-vq: error: Cannot reach the Hub at {endpoint} (ConnectError: [Errno 111] Connection refused); "
        "check the network, HF_ENDPOINT and the proxy settings.")
