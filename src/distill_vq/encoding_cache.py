"""The training documents' IVF lists (and search-found codes) as encoded at an earlier step, reused for a while.

Assigning a step's ~10k candidate documents to their lists scores each against every IVF centroid, a large share of
a step's time, and RQ's beam search is slower still; both change little from one step to the next. A step encodes
only the candidates it has not encoded within the last `refresh_steps` steps (on the 59k-document Debian set about
a tenth of them at 50 steps), never the whole corpus, so it costs at most what encoding every candidate did.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .data import DataError
from .io_utils import atomic_path

ENCODING_CACHE_FILE = "document_encodings.safetensors"  # in each checkpoint, so that a resumed run is bit-identical
NEVER = -1  # `encoded_at` of a document not encoded yet


class EncodingCache:
    """Each document's IVF list and, for code families whose encoding is a search (`cached_codes`), its codes,
    with the step that encoded them.

    Args:
        num_docs: rows of the training documents.
        num_codes: 8-bit codes per document to keep, or None to keep lists only (PQ recomputes its codes every
            step, exactly and cheaply, in the soft assignment that its gradient needs anyway).
        refresh_steps: a document encoded this many steps ago or more is encoded again when next a candidate.
    """

    def __init__(self, num_docs: int, num_codes: int | None, refresh_steps: int):
        self.refresh_steps = refresh_steps
        self.list_ids = torch.zeros(num_docs, dtype=torch.int32)
        self.codes = None if num_codes is None else torch.zeros(num_docs, num_codes, dtype=torch.uint8)
        self.encoded_at = torch.full((num_docs,), NEVER, dtype=torch.int32)

    def clear(self) -> None:
        """Forget every encoding (a new training run)."""
        self.encoded_at.fill_(NEVER)

    @torch.no_grad()
    def lookup(self, model, rows: torch.Tensor, doc_embeddings: torch.Tensor, step: int
               ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The lists `(U,)` and codes `(U, num_codes)` (None without codes) of documents `rows (U,)` whose
        embeddings are `doc_embeddings (U, dim)`, encoding with `model`'s current weights those not encoded within
        `refresh_steps` steps of `step`."""
        rows = rows.cpu()
        encoded_at = self.encoded_at[rows]
        stale = (encoded_at == NEVER) | (step - encoded_at >= self.refresh_steps)
        if stale.any():
            stale_rows = rows[stale]
            list_ids, codes = model.encode_batch(doc_embeddings[stale.to(doc_embeddings.device)],
                                                 with_codes=self.codes is not None)
            self.list_ids[stale_rows] = list_ids.to("cpu", torch.int32)
            if codes is not None:
                self.codes[stale_rows] = codes.to("cpu", torch.uint8)
            self.encoded_at[stale_rows] = step
        device = doc_embeddings.device
        codes = None if self.codes is None else self.codes[rows].to(device, torch.long)
        return self.list_ids[rows].to(device, torch.long), codes

    def save(self, folder) -> None:
        """Write the cache into checkpoint `folder` (atomically)."""
        tensors = {"list_ids": self.list_ids, "encoded_at": self.encoded_at}
        if self.codes is not None:
            tensors["codes"] = self.codes
        with atomic_path(Path(folder) / ENCODING_CACHE_FILE) as tmp:
            save_file(tensors, str(tmp))

    def load(self, folder) -> None:
        """Read the cache a checkpoint `folder` saved; a checkpoint without one leaves the cache empty."""
        path = Path(folder) / ENCODING_CACHE_FILE
        if not path.exists():
            return
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise DataError(f"{path} is damaged ({error}); delete it to resume from this checkpoint with the "
                            "documents encoded afresh.") from None
        expected = {"list_ids": self.list_ids, "encoded_at": self.encoded_at, "codes": self.codes}
        for name, tensor in expected.items():
            saved, wanted = (None if t is None else (tuple(t.shape), str(t.dtype).removeprefix("torch."))
                             for t in (tensors.get(name), tensor))
            if saved != wanted:
                raise DataError(f"{path} does not fit this run ({name}: {_describe(saved)} saved, "
                                f"{_describe(wanted)} expected); resume with the documents and index settings of "
                                "the checkpoint's run, or delete the file.")
        self.list_ids, self.encoded_at, self.codes = tensors["list_ids"], tensors["encoded_at"], tensors.get("codes")


def _describe(shape_and_dtype: tuple | None) -> str:
    """`((10, 4), "uint8")` -> `"(10, 4) uint8"`; None -> `"None"`."""
    return "None" if shape_and_dtype is None else f"{shape_and_dtype[0]} {shape_and_dtype[1]}"
