"""The README's Python snippets run as written, in order, in one namespace (the way vector-quantize-pytorch tests its
README), offline on the packaged data; the usage snippet of a real run's model card runs too; and every `distill-vq`
line of the README's shell blocks parses with the command's parser.

The snippets share a temporary working folder that holds `distill-vq-output`, a copy of `packaged_run` (what the
README's `distill-vq train` makes). So that the file runs in well under a minute, while the module's tests run:
- `TextEncoder.encode` of the packaged corpus or queries returns their stored all-MiniLM-L6-v2 embeddings
  (tests/data/default_data_embeddings), checked first against a real encoding of the first CHECKED_ROWS texts;
  other texts are encoded for real;
- CUTS rewrite the snippets: `max_steps=300` and `max_steps=1000` become `max_steps=2`, and the residual quantizer
  `num_codebooks=16` becomes `num_codebooks=2, beam_size=1`;
- faiss trains with FAST_TRAINING's iterations (OPQ, its first PQ, the IVF and PQ k-means, each RQ codebook's
  k-means): 13 s -> 2 s for the OPQ16,IVF128,PQ16x8 index;
- the snippets that push (`push_to_hub`, `push_output_dir`) talk to the local Hub of tests/local_hub.py.
"""

import re
import shlex
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import pytest
from conftest import DATA
from huggingface_hub import HfApi, hf_hub_download
from local_hub import local_hub  # noqa: F401  (the fixture)

from distill_vq import DistillVQModel
from distill_vq.cli import build_parser
from distill_vq.data import default_data_path, load_beir
from distill_vq.encoding import TextEncoder
from distill_vq.hub import push_output_dir

README = Path(__file__).parents[1] / "README.md"
CUTS = {"max_steps=300": "max_steps=2", "max_steps=1000": "max_steps=2",
        "num_codebooks=16": "num_codebooks=2, beam_size=1"}
CHECKED_ROWS = 8
FAST_TRAINING = {"opq": 1, "opq_first_pq": 4, "ivf": 5, "pq": 5, "rq": 2}  # faiss: 50, 40, 10, 25, 25
PUSHES = ("push_to_hub(", "push_output_dir(")
CARD_REPO = "local-user/debian-ivf16"


@dataclass
class Block:
    """A fenced code block of the README: the heading above it, the line its code starts on, its code."""

    heading: str
    line: int
    code: str


def code_blocks(text: str, language: str) -> list[Block]:
    blocks = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```", text, re.S | re.M):
        before = text[: match.start()]
        blocks.append(Block(re.findall(r"^#+ (.+)$", before, re.M)[-1], before.count("\n") + 2, match.group(1)))
    return blocks


PYTHON_BLOCKS = code_blocks(README.read_text(encoding="utf-8"), "python")
COMMAND_LINES = [line for block in code_blocks(README.read_text(encoding="utf-8"), "bash")
                 for line in block.code.splitlines() if line.startswith("distill-vq ")]


@contextmanager
def fast_training():
    """faiss's indexes trained with FAST_TRAINING's iterations while in the block (patches `faiss.index_factory`, which
    distill_vq builds every index with, like conftest's `fast_opq`)."""
    index_factory = faiss.index_factory

    def factory_with_fast_training(*args, **kwargs):
        index = index_factory(*args, **kwargs)
        chain = index.chain if isinstance(index, faiss.IndexPreTransform) else None
        for position in range(0 if chain is None else chain.size()):
            transform = faiss.downcast_VectorTransform(chain.at(position))
            if isinstance(transform, faiss.OPQMatrix):
                transform.niter, transform.niter_pq_0 = FAST_TRAINING["opq"], FAST_TRAINING["opq_first_pq"]
        ivf = faiss.try_extract_index_ivf(index)
        ivf = None if ivf is None else faiss.downcast_index(ivf)
        if ivf is not None:
            ivf.cp.niter = FAST_TRAINING["ivf"]
        if isinstance(ivf, faiss.IndexIVFPQ):
            ivf.pq.cp.niter = FAST_TRAINING["pq"]
        elif isinstance(ivf, faiss.IndexIVFResidualQuantizer):
            ivf.rq.cp.niter = FAST_TRAINING["rq"]
        return index

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(faiss, "index_factory", factory_with_fast_training)
        yield


@dataclass
class ReadmeRun:
    """The snippets' working folder and namespace, and the blocks run so far."""

    folder: Path
    namespace: dict = field(default_factory=dict)
    started: set = field(default_factory=set)


@pytest.fixture(scope="module")
def readme_run(tmp_path_factory, packaged_run):
    """A `ReadmeRun` with the module docstring's stand-ins in force while the module's tests run."""
    code = "".join(block.code for block in PYTHON_BLOCKS)
    assert all(cut in code for cut in CUTS), f"a cut no longer matches the README: {[c for c in CUTS if c not in code]}"
    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(packaged_run, folder / "distill-vq-output")
    data = load_beir(default_data_path())
    embeddings = DATA / "default_data_embeddings"
    stored = {tuple(data.corpus["text"]): np.load(embeddings / "docs.npy"),
              tuple(data.queries["text"]): np.load(embeddings / "queries.npy")}
    encode = TextEncoder.encode

    def encode_or_look_up(self, texts, *args, **kwargs):
        texts = list(texts)
        if tuple(texts) not in stored:
            return encode(self, texts, *args, **kwargs)
        rows = stored[tuple(texts)].astype(np.float32)
        np.testing.assert_allclose(encode(self, texts[:CHECKED_ROWS], *args, **kwargs), rows[:CHECKED_ROWS], atol=1e-3)
        return rows

    with pytest.MonkeyPatch.context() as patch, fast_training():
        patch.setattr(TextEncoder, "encode", encode_or_look_up)
        yield ReadmeRun(folder)


def check_use_it_from_python(ns: dict, folder: Path) -> None:
    docs, queries = ns["doc_embeddings"], ns["query_embeddings"]
    assert docs.shape == (5000, 384) and queries.shape == (4890, 384) and ns["num_lists"] == 128
    np.testing.assert_array_equal(np.load(folder / "docs.npy"), docs)
    assert ns["index"].ntotal == 5000 and ns["doc_rows"].shape == (4890, 10)
    exact_top = (queries @ docs.T).argmax(axis=1)
    assert (ns["doc_rows"] == exact_top[:, None]).any(axis=1).mean() > 0.7  # the index finds exact search's best
    assert ns["model"].config.index_factory_string == "OPQ16,IVF128,PQ16x8"


def check_datasets_index(ns: dict, folder: Path) -> None:
    assert ns["corpus"].get_index("embedding").faiss_index.ntotal == 5000
    _, rows = ns["model"].to_faiss(ns["doc_embeddings"], nprobe=32).search(ns["query_embeddings"][:1], 3)
    assert ns["found"]["_id"] == [ns["data"].corpus[int(row)]["_id"] for row in rows[0]]  # the same index's answer


def check_residual_quantization(ns: dict, folder: Path) -> None:
    assert ns["rq_model"].config.quantizer == "rq" and ns["rq_index"].ntotal == 5000


def check_train_from_python(ns: dict, folder: Path) -> None:
    assert ns["trainer"].state.global_step == 2 and ns["index"].ntotal == 5000


def check_share_on_the_hub(ns: dict, folder: Path) -> None:
    assert {"config.json", "model.safetensors", "README.md"} <= set(HfApi().list_repo_files("my-org/debian-opq16"))
    assert isinstance(ns["model"], DistillVQModel)
    assert ns["index"].ntotal == len(ns["doc_ids"]) == 5000


def check_query_side(ns: dict, folder: Path) -> None:
    assert ns["trainer"].state.global_step == 2 and (folder / "student" / "tokenizer.json").is_file()
    assert DistillVQModel.from_pretrained(folder / "student").config.query_encoder_layers == [0, 2, 4]


CHECKS = [check_use_it_from_python, check_datasets_index, check_residual_quantization, check_train_from_python, check_share_on_the_hub,
          check_query_side]


def test_every_python_block_has_its_check():
    assert len(PYTHON_BLOCKS) == len(CHECKS), [block.heading for block in PYTHON_BLOCKS]


@pytest.mark.parametrize("position", range(len(PYTHON_BLOCKS)), ids=[block.heading for block in PYTHON_BLOCKS])
def test_python_block_runs(position, readme_run, request, monkeypatch):
    """Runs the block, after the earlier blocks not run yet (a test chosen alone runs what it builds on)."""
    monkeypatch.chdir(readme_run.folder)
    to_run = [number for number in range(position + 1) if number not in readme_run.started]
    if any(push in PYTHON_BLOCKS[number].code for number in to_run for push in PUSHES):
        request.getfixturevalue("local_hub")
    for number in to_run:
        readme_run.started.add(number)
        code = PYTHON_BLOCKS[number].code
        for old, new in CUTS.items():
            code = code.replace(old, new)
        exec(compile(code, f"{README}:{PYTHON_BLOCKS[number].line}", "exec"), readme_run.namespace)
    CHECKS[position](readme_run.namespace, readme_run.folder)


@pytest.mark.parametrize("where", ["folder", "hub"])
def test_model_card_snippet_finds_the_answer(where, packaged_run, request, tmp_path, monkeypatch):
    """The usage snippet of a real run's card (`packaged_run`, whose encoder is the packaged all-MiniLM-L6-v2) loads
    the model from the id the card names, the run's folder, or the repository the folder was pushed to, for which
    `push_output_dir` renders the card again."""
    model_id = str(packaged_run)
    card = (packaged_run / "README.md").read_text(encoding="utf-8")
    if where == "hub":
        request.getfixturevalue("local_hub")
        push_output_dir(packaged_run, CARD_REPO)
        model_id, card = CARD_REPO, Path(hf_hub_download(CARD_REPO, "README.md")).read_text(encoding="utf-8")
    code = code_blocks(card, "python")[0].code
    assert f'DistillVQModel.from_pretrained("{model_id}")' in code
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(code, namespace)
    assert namespace["rows"][0, 0] == 1  # "gzip: compress or expand files" answers "compress a file"


@pytest.mark.parametrize("line", COMMAND_LINES)
def test_command_line_parses(line):
    """Every flag of the line is one of the command's own (none left to pass through to `TrainingArguments`)."""
    words = shlex.split(line, comments=True)
    args, unknown = build_parser().parse_known_args(words[1:])
    assert unknown == [] and args.command == words[1]
