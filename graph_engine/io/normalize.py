"""Mapping source column types onto the few storage dtypes relfm keeps.

Sources disagree on types (int32 in Parquet, int64 in Delta, strings in CSV, tz-aware timestamps from one
warehouse and naive ones from another). Everything is normalised once, here, so the builders, the label
engine and the model see one representation: int64, float64, bool, string, timestamp[ns] (UTC-naive:
tz-aware values are converted to UTC and the zone dropped; naive values are taken to be UTC already),
list<string> and list<float>.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from graph_engine.errors import DataError
from graph_engine.schema import DType

TIMESTAMP = pa.timestamp("ns")


def storage_dtype(t: pa.DataType) -> DType | None:
    """The storage family of an Arrow type, or None when relfm cannot use the column."""
    if pa.types.is_dictionary(t):
        return storage_dtype(t.value_type)
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t):
        return "int64"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "float64"
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        inner = storage_dtype(t.value_type)
        if inner == "string":
            return "list_string"
        if inner in ("float64", "int64"):
            return "list_float"
        return None
    if pa.types.is_time(t) or pa.types.is_null(t):
        return "string"
    return None


def normalize_column(
    table: str, column: str, arr: pa.ChunkedArray | pa.Array, as_time: bool = False
) -> pa.ChunkedArray:
    """Casts one column to its storage dtype; `as_time` forces timestamp parsing (time columns)."""
    chunked = arr if isinstance(arr, pa.ChunkedArray) else pa.chunked_array([arr])
    t = chunked.type
    if pa.types.is_dictionary(t):
        chunked = chunked.cast(t.value_type)
        t = chunked.type
    fam = storage_dtype(t)
    if as_time or fam == "timestamp":
        return to_timestamp(table, column, chunked)
    if fam is None:
        raise DataError(f"table '{table}' column '{column}': unsupported type {t}")
    if fam == "int64":
        return chunked.cast(pa.int64())
    if fam == "float64":
        return chunked.cast(pa.float64())
    if fam == "bool":
        return chunked
    if fam == "string":
        return chunked.cast(pa.large_string())
    if fam == "list_string":
        return chunked.cast(pa.large_list(pa.large_string()))
    return chunked.cast(pa.large_list(pa.float32()))


def to_timestamp(table: str, column: str, arr: pa.ChunkedArray) -> pa.ChunkedArray:
    """Any date/time representation → timestamp[ns] UTC-naive, or a one-line error naming the bad value."""
    t = arr.type
    if pa.types.is_timestamp(t):
        return _check_range(table, column, arr, lambda a: a.cast(TIMESTAMP))
    if pa.types.is_date(t):
        return _check_range(table, column, arr, lambda a: a.cast(pa.timestamp("ms")).cast(TIMESTAMP))
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _parse_strings(table, column, arr)
    raise DataError(
        f"table '{table}' column '{column}': a time column must hold timestamps, dates or ISO-8601 strings, not {t}"
    )


def _check_range(table: str, column: str, arr: pa.ChunkedArray, cast: object) -> pa.ChunkedArray:
    try:
        return cast(arr)  # type: ignore[operator, no-any-return]
    except (pa.ArrowInvalid, OverflowError):
        # Out of the nanosecond range (years before 1677 or after 2262): name the first offender.
        values = arr.to_pylist()
        for i, v in enumerate(values):
            if v is None:
                continue
            try:
                pa.array([v]).cast(arr.type).cast(TIMESTAMP)
            except (pa.ArrowInvalid, OverflowError):
                raise DataError(
                    f"table '{table}' column '{column}': timestamp '{v}' at row {i} is outside 1677-2262"
                ) from None
        raise DataError(f"table '{table}' column '{column}': timestamps outside 1677-2262") from None


def _parse_strings(table: str, column: str, arr: pa.ChunkedArray) -> pa.ChunkedArray:
    s = pd.Series(arr.to_pandas(), dtype="object")
    present = s.notna() & (s.astype(str).str.strip() != "")
    parsed = pd.Series(pd.NaT, index=s.index, dtype="datetime64[ns, UTC]")
    if present.any():
        vals = s[present].astype(str).str.strip()
        try:
            parsed_vals = pd.to_datetime(vals, utc=True, format="ISO8601", errors="coerce")
        except (ValueError, OverflowError):
            parsed_vals = pd.to_datetime(vals, utc=True, format="mixed", errors="coerce")
        bad = parsed_vals.isna()
        if bad.any():
            # ISO-8601 failed for some values: try the general parser before calling them unparseable.
            retry = pd.to_datetime(vals[bad], utc=True, format="mixed", errors="coerce")
            parsed_vals[bad] = retry
            bad = parsed_vals.isna()
        if bad.any():
            idx = int(np.flatnonzero(bad.to_numpy())[0])
            row = int(vals.index[idx])
            raise DataError(
                f"table '{table}' column '{column}': unparseable timestamp '{vals.iloc[idx]}' at row {row}"
                f" ({int(bad.sum())} such values)"
            )
        parsed[present] = parsed_vals
    naive = parsed.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
    return pa.chunked_array([pa.array(naive, type=TIMESTAMP, from_pandas=True)])


def timestamps_ns(arr: pa.ChunkedArray) -> np.ndarray:
    """Timestamp column → int64 nanoseconds, nulls as int64 max (a row with unknown time is never visible)."""
    filled = pc.fill_null(arr.cast(TIMESTAMP), pa.scalar(np.iinfo(np.int64).max, type=TIMESTAMP))
    return np.asarray(filled.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
