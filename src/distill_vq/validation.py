"""Input checks shared by the model, the trainer and the command: each error names the problem and the fix."""

from __future__ import annotations

import logging
import mmap
import os

import numpy as np

logger = logging.getLogger(__name__)

CHECK_CHUNK_ROWS = 1 << 16
# A memory-mapped array that is not C-contiguous float32 is converted (copied whole) only up to this size; a larger
# one is refused, since its copy is what memory-mapping was meant to avoid (exact search reads blocks of it instead).
MAX_MEMMAP_COPY_BYTES = 1 << 30


def check_embeddings(
    embeddings, name: str, expected_dim: int | None = None, min_rows: int = 1, check_zero_rows: bool = True
) -> np.ndarray:
    """Return `embeddings` as a C-contiguous float32 `(num_rows, dim)` array, or raise `ValueError`.

    Floating-point and integer inputs are accepted; bool, complex, string and object arrays are refused, as is
    NaN or inf. With `check_zero_rows`, embeddings whose rows are all zero vectors are refused and a few zero rows
    log a warning; pass False when `embeddings` is a slice of a larger array (a batch may be all zero).
    Memory-mapped float32 input is returned without a copy, so large corpora stay on disk; a memory map that
    would be copied (another dtype, not C-contiguous) is refused above `MAX_MEMMAP_COPY_BYTES`, as is a memory map
    whose dtype and shape do not cover its file (it was opened with the wrong ones).
    """
    memory_map = _memory_map(embeddings)
    if memory_map is not None:
        _check_mapped_file(memory_map, name)
    if hasattr(embeddings, "detach"):  # torch: bfloat16 has no numpy dtype
        embeddings = embeddings.detach().cpu()
        embeddings = embeddings.float() if embeddings.is_floating_point() else embeddings
    array = np.asarray(embeddings)
    if array.dtype.kind not in "iuf":
        raise ValueError(
            f"{name} has dtype {array.dtype}; embeddings must be real numbers (float32, float16 or integers). "
            "Save them as float32 (e.g. np.save(path, embeddings.astype(np.float32)))."
        )
    if array.ndim != 2:
        hint = (" np.memmap without shape= reads a file as 1-d: give it shape=(num_rows, dim), or save a .npy and "
                "open it with np.load(path, mmap_mode='r').") if memory_map is not None else ""
        raise ValueError(f"{name} must be a 2-d array (num_rows, dim); got shape {array.shape}.{hint}")
    if array.shape[0] < min_rows:
        raise ValueError(f"{name} has {array.shape[0]} rows; at least {min_rows} are needed.")
    if expected_dim is not None and array.shape[1] != expected_dim:
        raise ValueError(
            f"{name} has dimension {array.shape[1]} but the model expects {expected_dim}; "
            "embed with the encoder the model was built for, or build a model with embedding_dim="
            f"{array.shape[1]}."
        )
    copy_bytes = array.size * np.dtype(np.float32).itemsize
    if memory_map is not None and copy_bytes > MAX_MEMMAP_COPY_BYTES and (
            array.dtype != np.float32 or not array.flags.c_contiguous):
        layout = array.dtype if array.dtype != np.float32 else "float32 but not C-contiguous"
        raise ValueError(
            f"{name} is a memory-mapped {array.shape} array of {layout}; using it would copy all of it into memory "
            f"as float32 ({copy_bytes / 2**30:.1f} GiB). Convert the file block by block to a C-contiguous float32 "
            ".npy (out = numpy.lib.format.open_memmap(path, 'w+', numpy.float32, shape); out[i:j] = embeddings[i:j]) "
            "and pass that, memory-mapped."
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    zero_rows = [np.empty(0, dtype=np.int64)]
    for start in range(0, array.shape[0], CHECK_CHUNK_ROWS):
        chunk = array[start : start + CHECK_CHUNK_ROWS]
        finite = np.isfinite(chunk).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise ValueError(f"{name} contains NaN or inf (first at row {row}); re-embed those rows or drop them.")
        zero_rows.append(start + np.flatnonzero(~chunk.any(axis=1)))
    if check_zero_rows:
        _check_zero_rows(np.concatenate(zero_rows), array.shape[0], name)
    return array


def _memory_map(embeddings) -> np.memmap | None:
    """The `np.memmap` that `embeddings` is or views (through `np.asarray` or slicing), else None."""
    while embeddings is not None and not isinstance(embeddings, np.memmap):
        embeddings = getattr(embeddings, "base", None)
    return embeddings


def _check_mapped_file(memory_map: np.memmap, name: str) -> None:
    """Refuse a memory map of a whole file (not a slice of one) that leaves bytes of the file unread: the dtype or
    shape it was opened with is not the one the file was written with."""
    if not isinstance(memory_map.base, mmap.mmap) or not memory_map.filename:
        return  # a slice of a mapping, or an anonymous one
    available = os.path.getsize(memory_map.filename) - memory_map.offset
    if available != memory_map.nbytes:
        raise ValueError(
            f"{name} maps {memory_map.filename} as {memory_map.dtype} of shape {memory_map.shape} "
            f"({memory_map.nbytes} bytes) but the file holds {available} bytes of data from offset "
            f"{memory_map.offset}: the dtype or shape is not the one it was written with. Open a .npy with "
            "np.load(path, mmap_mode='r'), which reads both from the file, or give np.memmap the right ones."
        )


def _check_zero_rows(zero_rows: np.ndarray, num_rows: int, name: str) -> None:
    """Refuse embeddings that are all zero vectors; warn about a few (they score 0 against every query)."""
    if num_rows and len(zero_rows) == num_rows:
        raise ValueError(
            f"{name}: all {num_rows} rows are zero vectors, so every score is 0 and nothing can be learned; "
            "the embeddings were not written (or the encoder failed): embed the texts again."
        )
    if len(zero_rows):
        logger.warning(
            f"{name}: {len(zero_rows)} of {num_rows} rows are zero vectors (first at row {zero_rows[0]}); they score "
            "0 against every query under inner product. Re-embed those rows or drop them."
        )


__all__ = ["check_embeddings"]
