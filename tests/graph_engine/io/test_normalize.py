"""Type normalisation: one representation per storage family, timestamps UTC-naive nanoseconds."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from graph_engine.errors import DataError
from graph_engine.io.normalize import TIMESTAMP, normalize_column, storage_dtype, timestamps_ns

pytestmark = pytest.mark.unit


def _ts(col: pa.ChunkedArray) -> list[str | None]:
    return [None if v is None else str(v) for v in col.to_pylist()]


def test_tz_aware_values_become_utc_naive() -> None:
    berlin = pd.Series(pd.to_datetime(["2024-01-01T12:00:00+02:00", None], utc=True)).dt.tz_convert(
        "Europe/Berlin"
    )
    out = normalize_column("t", "c", pa.array(berlin))
    assert out.type == TIMESTAMP
    assert _ts(out) == ["2024-01-01 10:00:00", None]  # +02:00 → 2 hours earlier


def test_naive_values_are_taken_as_utc_and_units_become_ns() -> None:
    for unit in ("s", "ms", "us", "ns"):
        arr = pa.array([dt.datetime(2024, 1, 1, 12)], pa.timestamp(unit))
        out = normalize_column("t", "c", arr)
        assert out.type == TIMESTAMP and _ts(out) == ["2024-01-01 12:00:00"]
    # tz-aware and naive sources of the same instant agree.
    aware = pa.array([dt.datetime(2024, 1, 1, 10)], pa.timestamp("us", tz="UTC"))
    naive = pa.array([dt.datetime(2024, 1, 1, 10)], pa.timestamp("us"))
    assert normalize_column("t", "c", aware).equals(normalize_column("t", "c", naive))


def test_dates_become_midnight_timestamps() -> None:
    out = normalize_column("t", "c", pa.array([dt.date(2020, 2, 29)], pa.date32()))
    assert out.type == TIMESTAMP and _ts(out) == ["2020-02-29 00:00:00"]


def test_string_timestamps_are_parsed() -> None:
    arr = pa.array(
        ["2024-01-01T12:00:00+02:00", "2024-01-01 10:00", "2024-01-01T10:00:00Z", "2024-01-02", None, ""]
    )
    out = normalize_column("t", "c", arr, as_time=True)
    assert out.type == TIMESTAMP
    assert _ts(out) == [
        "2024-01-01 10:00:00",
        "2024-01-01 10:00:00",
        "2024-01-01 10:00:00",
        "2024-01-02 00:00:00",
        None,
        None,
    ]


def test_unparseable_timestamp_names_table_column_value_and_row() -> None:
    arr = pa.array(["2024-01-01", "2024-01-02", "not a date", "2024-13-45"])
    with pytest.raises(DataError) as e:
        normalize_column("orders", "ts", arr, as_time=True)
    assert (
        str(e.value)
        == "table 'orders' column 'ts': unparseable timestamp 'not a date' at row 2 (2 such values)"
    )


def test_numbers_are_not_time_columns() -> None:
    with pytest.raises(DataError) as e:
        normalize_column("orders", "year", pa.array([2020, 2021]), as_time=True)
    assert str(e.value) == (
        "table 'orders' column 'year': a time column must hold timestamps, dates or ISO-8601 strings, not int64"
    )


def test_timestamps_outside_the_ns_range() -> None:
    arr = pa.array([dt.datetime(2000, 1, 1), dt.datetime(2300, 1, 1)], pa.timestamp("us"))
    with pytest.raises(DataError) as e:
        normalize_column("events", "at", arr)
    assert (
        str(e.value)
        == "table 'events' column 'at': timestamp '2300-01-01 00:00:00' at row 1 is outside 1677-2262"
    )


def test_storage_families() -> None:
    assert normalize_column("t", "c", pa.array([1, 2], pa.int32())).type == pa.int64()
    assert normalize_column("t", "c", pa.array([1.5], pa.float32())).type == pa.float64()
    assert normalize_column("t", "c", pa.array(["a", "b", "a"]).dictionary_encode()).type == pa.large_string()
    assert normalize_column("t", "c", pa.array([["a"], ["b", "c"]])).type == pa.large_list(pa.large_string())
    assert normalize_column("t", "c", pa.array([[1, 2], [3, 4]])).type == pa.large_list(pa.float32())
    assert normalize_column("t", "c", pa.array([True, None])).type == pa.bool_()
    assert storage_dtype(pa.decimal128(10, 2)) == "float64"
    assert storage_dtype(pa.struct([("a", pa.int64())])) is None
    with pytest.raises(DataError) as e:
        normalize_column("t", "c", pa.array([{"a": 1}]))
    assert str(e.value) == "table 't' column 'c': unsupported type struct<a: int64>"


def test_timestamps_ns_marks_nulls_as_never_visible() -> None:
    col = normalize_column("t", "c", pa.array([dt.datetime(1970, 1, 1, 0, 0, 1), None], pa.timestamp("s")))
    out = timestamps_ns(col)
    assert out.tolist() == [1_000_000_000, np.iinfo(np.int64).max]
