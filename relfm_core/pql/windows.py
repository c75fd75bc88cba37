"""Window arithmetic on anchor times: the one place the time rules turn into numbers.

For anchor t and window (start, end] in a unit, the aggregated rows are those with
`t + start < time <= t + end` (DESIGN.md, time rules). Fixed units are exact nanosecond offsets (a day
is 86,400 s: timestamps are naive, there are no DST days). Months are calendar months, clamped to the
month's end as pandas' `DateOffset(months=n)` does (Jan 31 + 1 month = Feb 28/29), because "the next
month" is what users mean and a 30-day approximation drifts across a year of anchors.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from relfm_core.pql.errors import QueryError
from relfm_core.pql.nodes import TimeUnit

INT64_MIN = -(2**63)  # also NaT as int64; the lower bound of -INF windows
INT64_MAX = 2**63 - 1
NS_PER_DAY = 86_400 * 10**9
UNIT_NS: dict[TimeUnit, int] = {
    TimeUnit.SECONDS: 10**9,
    TimeUnit.MINUTES: 60 * 10**9,
    TimeUnit.HOURS: 3_600 * 10**9,
    TimeUnit.DAYS: NS_PER_DAY,
    TimeUnit.WEEKS: 7 * NS_PER_DAY,
}
# Days whose every nanosecond fits in int64 (and stays clear of NaT).
_MIN_DAY = -(2**63) // NS_PER_DAY + 1
_MAX_DAY = (2**63 - 1) // NS_PER_DAY - 1

Int64Array = npt.NDArray[np.int64]


def _as_int64(anchors: npt.ArrayLike) -> Int64Array:
    arr = np.asarray(anchors)
    if np.issubdtype(arr.dtype, np.datetime64):
        arr = arr.astype("datetime64[ns]").view(np.int64)
    if arr.dtype != np.int64:
        raise QueryError(f"anchor times must be datetime64[ns] or int64 nanoseconds, got {arr.dtype}")
    return arr


def shift(anchors: npt.ArrayLike, n: int, unit: TimeUnit) -> Int64Array:
    """anchors + n units, as int64 nanoseconds (NaT stays NaT). Raises QueryError on overflow."""
    t = _as_int64(anchors)
    nat = t == INT64_MIN
    if unit is TimeUnit.MONTHS:
        out = _shift_months(t, nat, n)
    else:
        offset = n * UNIT_NS[unit]
        valid = t[~nat]
        if abs(offset) > INT64_MAX or (
            valid.size
            and (
                (offset > 0 and int(valid.max()) > INT64_MAX - offset)
                or (offset < 0 and int(valid.min()) <= INT64_MIN - offset)
            )
        ):
            raise QueryError(f"a window of {n} {unit.value} overflows the timestamp range")
        out = t + np.int64(offset)
    out[nat] = INT64_MIN
    return out


def _shift_months(t: Int64Array, nat: npt.NDArray[np.bool_], n: int) -> Int64Array:
    safe = np.where(nat, 0, t)
    days = np.floor_divide(safe, NS_PER_DAY)
    time_of_day = safe - days * NS_PER_DAY
    day = days.astype("datetime64[D]")
    month = day.astype("datetime64[M]")
    day_of_month = (day - month.astype("datetime64[D]")).astype(np.int64)  # 0-based
    if abs(n) > 12 * 100_000:
        raise QueryError(f"a window of {n} months overflows the timestamp range")
    target = month + np.timedelta64(n, "M")
    first = target.astype("datetime64[D]")
    month_len = ((target + np.timedelta64(1, "M")).astype("datetime64[D]") - first).astype(np.int64)
    new_days = first.astype(np.int64) + np.minimum(day_of_month, month_len - 1)
    live = new_days[~nat]
    if live.size and (int(live.min()) < _MIN_DAY or int(live.max()) > _MAX_DAY):
        raise QueryError(f"a window of {n} months overflows the timestamp range")
    out: Int64Array = np.where(nat, 0, new_days) * np.int64(NS_PER_DAY) + time_of_day
    return out.astype(np.int64)


def window_bounds(
    anchors: npt.ArrayLike, start: int | float, end: int, unit: TimeUnit
) -> tuple[Int64Array, Int64Array]:
    """(lo, hi) int64 nanosecond arrays: the window of anchor i holds rows with lo[i] < time <= hi[i].

    `anchors` are datetime64[ns] (or their int64 view). `start` may be -math.inf (lo = int64 min, i.e.
    everything up to hi). Anchors that are NaT give NaT (int64 min) bounds, an empty window.
    """
    t = _as_int64(anchors)
    if isinstance(start, float) and math.isinf(start):
        if start > 0:
            raise QueryError("a window start cannot be +INF")
        lo = np.full(t.shape, INT64_MIN, dtype=np.int64)
    else:
        lo = shift(t, int(start), unit)
    hi = shift(t, int(end), unit)
    return lo, hi
