"""Input checks shared by the model, the trainer and the command: each error names the problem and the fix."""

import numpy as np


def check_embeddings(embeddings, name: str, expected_dim: int | None = None, min_rows: int = 1) -> np.ndarray:
    """Return `embeddings` as a C-contiguous float32 `(num_rows, dim)` array, or raise `ValueError`.

    Memory-mapped float32 input is returned without a copy, so large corpora stay on disk.
    """
    array = np.asarray(embeddings.detach().cpu() if hasattr(embeddings, "detach") else embeddings)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a 2-d array (num_rows, dim); got shape {array.shape}.")
    if array.shape[0] < min_rows:
        raise ValueError(f"{name} has {array.shape[0]} rows; at least {min_rows} are needed.")
    if expected_dim is not None and array.shape[1] != expected_dim:
        raise ValueError(
            f"{name} has dimension {array.shape[1]} but the model expects {expected_dim}; "
            "embed with the encoder the model was built for, or build a model with embedding_dim="
            f"{array.shape[1]}."
        )
    array = np.ascontiguousarray(array, dtype=np.float32)
    chunk = 1 << 16
    for start in range(0, array.shape[0], chunk):
        finite = np.isfinite(array[start : start + chunk]).all(axis=1)
        if not finite.all():
            row = start + int(np.argmin(finite))
            raise ValueError(
                f"{name} contains NaN or inf (first at row {row}); re-embed those rows or drop them."
            )
    return array
