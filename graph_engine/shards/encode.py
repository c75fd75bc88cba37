"""Turning normalised Arrow columns into the typed arrays of the shard format.

Both builders (local and Spark) call exactly these functions on the same values in the same row order,
which is what makes their output byte-identical; keep them pure and deterministic (nulls get fixed fill
values, vocabularies are sorted).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graph_engine.errors import DataError
from graph_engine.shards.format import TIME_NULL
from graph_engine.spec import SemanticType


def valid_mask(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return np.asarray(pc.is_valid(arr).to_numpy(zero_copy_only=False), dtype=np.uint8)


def encode_numerical(arr: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """float64 values (0.0 where null or NaN) and the validity mask."""
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.int8())
    if pa.types.is_timestamp(arr.type):
        arr = arr.cast(pa.int64())
    f = arr.cast(pa.float64())
    values = np.asarray(pc.fill_null(f, 0.0).to_numpy(zero_copy_only=False), dtype=np.float64).copy()
    valid = valid_mask(f)
    nan = np.isnan(values)
    if nan.any():
        values[nan] = 0.0
        valid[nan] = 0
    return values, valid


def encode_timestamp(arr: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(
        pc.fill_null(arr.cast(pa.timestamp("ns")).cast(pa.int64()), 0).to_numpy(zero_copy_only=False),
        dtype=np.int64,
    )
    return values, valid_mask(arr)


def time_values(arr: pa.ChunkedArray | pa.Array | None, n: int) -> np.ndarray:
    """A table's time column as int64 ns; a null time is TIME_NULL (the row is never visible)."""
    if arr is None:
        return np.full(n, TIME_NULL, dtype=np.int64)
    filled = pc.fill_null(arr.cast(pa.timestamp("ns")).cast(pa.int64()), int(TIME_NULL))
    return np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.int64)


def vocab_key(v: Any) -> Any:
    return v


def categorical_vocab(arr: pa.ChunkedArray | pa.Array) -> list[Any]:
    """Sorted distinct non-null values: codes follow value order, so `<` on codes is `<` on values."""
    uniq = pc.unique(arr.drop_null() if isinstance(arr, pa.Array) else arr.combine_chunks().drop_null())
    values = uniq.to_pylist()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        return sorted(values, key=lambda s: s.encode("utf-8"))
    if pa.types.is_floating(arr.type):
        # NaN compares false and -0.0 equals 0.0, so a plain sort would depend on the order values were
        # met in, which differs between builders: NaN last, -0.0 before 0.0.
        return sorted(values, key=_float_order)
    return sorted(values)


def _float_order(v: float) -> tuple[bool, float, float]:
    nan = math.isnan(v)
    return (nan, 0.0 if nan else v, math.copysign(1.0, v))


def encode_categorical(arr: pa.ChunkedArray | pa.Array, vocab: list[Any]) -> tuple[np.ndarray, np.ndarray]:
    """int32 codes into `vocab` (-1 for null) and the validity mask."""
    value_set = pa.array(vocab, type=arr.type) if vocab else pa.array([], type=arr.type)
    idx = pc.index_in(arr, value_set=value_set)
    codes = np.asarray(pc.fill_null(idx, -1).to_numpy(zero_copy_only=False), dtype=np.int32)
    valid = valid_mask(arr)
    if ((codes < 0) & (valid == 1)).any():
        raise DataError("categorical value missing from its vocabulary (internal error)")
    return codes, valid


def encode_text(arr: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row byte counts, the concatenated UTF-8 bytes, and the validity mask (null = empty)."""
    a = arr.cast(pa.large_string())
    a = a.combine_chunks() if isinstance(a, pa.ChunkedArray) else a
    filled = pc.fill_null(a, "")
    counts = np.asarray(pc.binary_length(filled).to_numpy(zero_copy_only=False), dtype=np.int64)
    buffers = filled.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64)[filled.offset : filled.offset + len(filled) + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.empty(0, np.uint8)
    raw = data[offsets[0] : offsets[-1]].copy() if len(offsets) else np.empty(0, np.uint8)
    return counts, raw, valid_mask(a)


def multicat_vocab(arr: pa.ChunkedArray | pa.Array) -> list[Any]:
    flat = pc.list_flatten(arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr)
    return categorical_vocab(flat)


def encode_multicategorical(
    arr: pa.ChunkedArray | pa.Array, vocab: list[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row code counts, concatenated int32 codes (null elements dropped), and the validity mask."""
    a = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    valid = valid_mask(a)
    filled = pc.fill_null(a, pa.scalar([], type=a.type))
    flat = pc.list_flatten(filled)
    parents = np.asarray(pc.list_parent_indices(filled).to_numpy(zero_copy_only=False), dtype=np.int64)
    value_set = pa.array(vocab, type=flat.type)
    codes = np.asarray(
        pc.fill_null(pc.index_in(flat, value_set=value_set), -1).to_numpy(zero_copy_only=False)
    )
    keep = codes >= 0
    codes, parents = codes[keep].astype(np.int32), parents[keep]
    counts = np.bincount(parents, minlength=len(a)).astype(np.int64)
    return counts, codes, valid


def encode_embedding(
    table: str, column: str, arr: pa.ChunkedArray | pa.Array
) -> tuple[np.ndarray, np.ndarray]:
    """float32 [n, d] (zeros where null) and the validity mask; every present vector must have length d."""
    a = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    valid = valid_mask(a)
    lengths = np.asarray(pc.fill_null(pc.list_value_length(a), 0).to_numpy(zero_copy_only=False))
    present = lengths[valid == 1]
    dims = np.unique(present)
    if len(dims) > 1:
        raise DataError(
            f"table '{table}' column '{column}': embeddings of different lengths {dims[:3].tolist()}"
        )
    d = int(dims[0]) if len(dims) else 0
    out = np.zeros((len(a), d), dtype=np.float32)
    if d:
        flat = np.asarray(
            pc.list_flatten(a).cast(pa.float32()).to_numpy(zero_copy_only=False), dtype=np.float32
        )
        out[valid == 1] = flat.reshape(-1, d)
    return out, valid


def encode_keys(arr: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Key values as a searchable NumPy array: int64, or fixed-width UTF-8 bytes for string keys."""
    if pa.types.is_integer(arr.type):
        return np.asarray(arr.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    values = arr.cast(pa.large_string()).to_pylist()
    return np.array([v.encode("utf-8") for v in values], dtype=bytes) if values else np.empty(0, dtype="S1")


def is_sequence_stype(stype: SemanticType) -> bool:
    return stype in (SemanticType.text, SemanticType.multicategorical)
