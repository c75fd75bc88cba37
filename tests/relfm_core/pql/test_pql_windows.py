"""Window bounds: `t + start < time <= t + end`, calendar months as pandas DateOffset, -INF, NaT."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from relfm_core.pql import QueryError, TimeUnit, shift, window_bounds
from relfm_core.pql.windows import INT64_MIN, UNIT_NS

pytestmark = pytest.mark.unit

LO_NS = int(pd.Timestamp("1750-01-01").value)
HI_NS = int(pd.Timestamp("2200-01-01").value)
anchors_strategy = hnp.arrays(np.int64, st.integers(1, 40), elements=st.integers(LO_NS, HI_NS))


def _pandas_shift(t: np.ndarray, n: int, unit: TimeUnit) -> np.ndarray:
    index = pd.DatetimeIndex(t.view("datetime64[ns]"))
    offset = pd.DateOffset(months=n) if unit is TimeUnit.MONTHS else pd.Timedelta(n * UNIT_NS[unit], "ns")
    return np.asarray((index + offset).asi8)


@settings(max_examples=150, deadline=None)
@given(anchors_strategy, st.integers(-400, 400), st.sampled_from(list(TimeUnit)))
def test_shift_matches_pandas(t: np.ndarray, n: int, unit: TimeUnit) -> None:
    np.testing.assert_array_equal(shift(t, n, unit), _pandas_shift(t, n, unit))


@settings(max_examples=100, deadline=None)
@given(
    anchors_strategy,
    st.integers(-60, 59),
    st.integers(1, 60),
    st.sampled_from(list(TimeUnit)),
    hnp.arrays(np.int64, 50, elements=st.integers(LO_NS - 10**17, HI_NS + 10**17)),
)
def test_window_membership_is_start_exclusive_end_inclusive(
    t: np.ndarray, start: int, length: int, unit: TimeUnit, times: np.ndarray
) -> None:
    end = start + length
    lo, hi = window_bounds(t.view("datetime64[ns]"), start, end, unit)
    expect_lo, expect_hi = _pandas_shift(t, start, unit), _pandas_shift(t, end, unit)
    inside = (lo[:, None] < times[None, :]) & (times[None, :] <= hi[:, None])
    expected = (expect_lo[:, None] < times[None, :]) & (times[None, :] <= expect_hi[:, None])
    np.testing.assert_array_equal(inside, expected)
    # the bounds themselves: the end is in, the start is out
    assert ((lo < hi) | (lo == hi)).all()


def test_calendar_months_clamp_to_month_end() -> None:
    t = np.array(
        ["2020-01-31", "2019-01-31", "2020-03-31T08:00", "1969-12-31T23:59:59.5"], dtype="datetime64[ns]"
    )
    got = shift(t, 1, TimeUnit.MONTHS).view("datetime64[ns]")
    expected = np.array(
        ["2020-02-29", "2019-02-28", "2020-04-30T08:00", "1970-01-31T23:59:59.5"], dtype="datetime64[ns]"
    )
    np.testing.assert_array_equal(got, expected)
    back = shift(np.array(["2020-03-31"], dtype="datetime64[ns]"), -1, TimeUnit.MONTHS)
    assert back.view("datetime64[ns]")[0] == np.datetime64("2020-02-29")


def test_minus_inf_start_and_nat_anchors() -> None:
    t = np.array(["2020-01-01", "NaT"], dtype="datetime64[ns]")
    lo, hi = window_bounds(t, float("-inf"), 0, TimeUnit.DAYS)
    assert (lo == INT64_MIN).all()
    assert hi[0] == t.view(np.int64)[0]
    assert hi[1] == INT64_MIN  # NaT anchor: empty window (nothing is > int64 min and <= it)
    lo, hi = window_bounds(t, 0, 7, TimeUnit.MONTHS)
    assert lo[1] == INT64_MIN and hi[1] == INT64_MIN


def test_int64_view_and_other_datetime_units_are_accepted() -> None:
    days = np.array(["2020-01-01"], dtype="datetime64[D]")
    lo, hi = window_bounds(days, 0, 1, TimeUnit.DAYS)
    assert hi[0] - lo[0] == UNIT_NS[TimeUnit.DAYS]
    lo2, hi2 = window_bounds(days.astype("datetime64[ns]").view(np.int64), 0, 1, TimeUnit.DAYS)
    assert (lo2 == lo).all() and (hi2 == hi).all()


@pytest.mark.parametrize(
    ("n", "unit"), [(10**6, TimeUnit.WEEKS), (10**7, TimeUnit.MONTHS), (-(10**6), TimeUnit.DAYS)]
)
def test_overflow_is_a_query_error(n: int, unit: TimeUnit) -> None:
    with pytest.raises(QueryError, match="overflows the timestamp range"):
        shift(np.array(["2020-01-01"], dtype="datetime64[ns]"), n, unit)


def test_bad_anchor_dtype_and_plus_inf() -> None:
    with pytest.raises(QueryError, match="datetime64"):
        window_bounds(np.array([1.5]), 0, 1, TimeUnit.DAYS)
    with pytest.raises(QueryError, match="INF"):
        window_bounds(np.array([0], dtype=np.int64), float("inf"), 1, TimeUnit.DAYS)
