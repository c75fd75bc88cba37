"""Compiled window searches and reductions over the time-sorted CSR.

Each entity's children sit contiguously in the CSR, sorted by (time, child row), with their times beside
them. A window (lo, hi] is therefore one contiguous run [a, b) found by two binary searches, and every
aggregation is a reduction over that run. The reductions read per-row arrays either laid out in CSR order
(`idx` empty: contiguous reads) or in row order through the CSR's child ids (`idx` = child: no layout to
build first). `ok` marks the rows that count (the aggregation's WHERE is true and the value is not null);
an empty `ok` means all do.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np


@numba.njit(cache=True, inline="always")
def _upper(times: Any, lo: int, hi: int, x: int) -> int:
    """First position in [lo, hi) whose time is > x (hi when none)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if times[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, inline="always")
def _at(idx: Any, j: int) -> int:
    """Where CSR position j's row lives: j itself in arrays laid out in CSR order (`idx` empty), or
    idx[j] (the child row) in arrays in row order."""
    return idx[j] if idx.shape[0] > 0 else j


@numba.njit(cache=True)
def window_positions(rows: Any, lo: Any, hi: Any, seg_start: Any, seg_count: Any, times: Any) -> Any:
    """[a, b) of CSR positions with lo < time <= hi among each row's children."""
    n = rows.shape[0]
    a = np.empty(n, dtype=np.int64)
    b = np.empty(n, dtype=np.int64)
    for i in range(n):
        p = rows[i]
        s = seg_start[p]
        e = s + seg_count[p]
        x = _upper(times, s, e, lo[i])
        a[i] = x
        h = hi[i]
        if h <= lo[i]:
            b[i] = x
            continue
        # Windows are usually short: walk a few rows before falling back to a binary search.
        y = x
        stop = min(e, x + 8)
        while y < stop and times[y] <= h:
            y += 1
        b[i] = y if y < stop or y == e else _upper(times, y, e, h)
    return a, b


@numba.njit(cache=True)
def count_ok(a: Any, b: Any, ok: Any, idx: Any) -> Any:
    """Counted rows of each run (runs are short; the prefix sums of a gathered `ok` are faster still)."""
    n = a.shape[0]
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        c = 0
        for j in range(a[i], b[i]):
            c += ok[_at(idx, j)]
        out[i] = c
    return out


@numba.njit(cache=True)
def sum_ok(a: Any, b: Any, ok: Any, val: Any, skip_nan: bool, idx: Any) -> Any:
    """Sum and count of the counted values in each run (with `skip_nan`, NaN marks a row that does
    not count: float values and their `ok` fused into one array)."""
    n = a.shape[0]
    all_ok = ok.shape[0] == 0
    total = np.zeros(n, dtype=np.float64)
    count = np.zeros(n, dtype=np.int64)
    for i in range(n):
        s = 0.0
        c = 0
        for j in range(a[i], b[i]):
            k = _at(idx, j)
            v = val[k]
            if (all_ok or ok[k]) and (not skip_nan or v == v):
                s += v
                c += 1
        total[i] = s
        count[i] = c
    return total, count


@numba.njit(cache=True)
def extreme_ok(a: Any, b: Any, ok: Any, val: Any, want_max: bool, skip_nan: bool, idx: Any) -> Any:
    """Minimum (or maximum) of the counted values in each run, and whether there was one."""
    n = a.shape[0]
    all_ok = ok.shape[0] == 0
    out = np.zeros(n, dtype=val.dtype)
    found = np.zeros(n, dtype=np.bool_)
    for i in range(n):
        have = False
        best = out[i]
        for j in range(a[i], b[i]):
            k = _at(idx, j)
            v = val[k]
            counted = (all_ok or ok[k]) and (not skip_nan or v == v)
            if counted and (not have or (v > best if want_max else v < best)):
                best = v
                have = True
        if have:
            out[i] = best
            found[i] = True
    return out, found


@numba.njit(cache=True)
def edge_position(a: Any, b: Any, ok: Any, last: bool, idx: Any) -> Any:
    """CSR position of the first (or last) counted row of each run, -1 when there is none."""
    n = a.shape[0]
    all_ok = ok.shape[0] == 0
    out = np.full(n, -1, dtype=np.int64)
    for i in range(n):
        if last:
            for j in range(b[i] - 1, a[i] - 1, -1):
                if all_ok or ok[_at(idx, j)]:
                    out[i] = j
                    break
        else:
            for j in range(a[i], b[i]):
                if all_ok or ok[_at(idx, j)]:
                    out[i] = j
                    break
    return out


@numba.njit(cache=True, inline="always")
def _sort_small(buf: Any, m: int) -> None:
    if m > 32:
        buf[:m].sort()
        return
    for i in range(1, m):
        x = buf[i]
        j = i - 1
        while j >= 0 and buf[j] > x:
            buf[j + 1] = buf[j]
            j -= 1
        buf[j + 1] = x


@numba.njit(cache=True)
def distinct_ok(a: Any, b: Any, ok: Any, keys: Any, keep_items: bool, idx: Any) -> Any:
    """Distinct counted keys of each run: their number, and (keep_items) the sorted keys themselves as
    lists (ptr, items)."""
    n = a.shape[0]
    all_ok = ok.shape[0] == 0
    width = 0
    total = 0
    for i in range(n):
        w = b[i] - a[i]
        total += w
        if w > width:
            width = w
    buf = np.empty(width, dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    ptr = np.zeros(n + 1, dtype=np.int64)
    items = np.empty(total if keep_items else 0, dtype=np.int64)
    k = 0
    for i in range(n):
        m = 0
        for j in range(a[i], b[i]):
            r = _at(idx, j)
            if all_ok or ok[r]:
                buf[m] = keys[r]
                m += 1
        _sort_small(buf, m)
        d = 0
        for j in range(m):
            if j == 0 or buf[j] != buf[j - 1]:
                if keep_items:
                    items[k] = buf[j]
                    k += 1
                d += 1
        counts[i] = d
        ptr[i + 1] = k
    return counts, ptr, items[:k]


@numba.njit(cache=True)
def gather_csr(child: Any, ok_rows: Any, values: Any) -> Any:
    """`ok_rows[child]` and `values[child]` in one pass (each empty when its input is): the per-row
    arrays laid out in CSR order, so window reductions read contiguous memory."""
    m = child.shape[0]
    has_ok = ok_rows.shape[0] > 0
    has_val = values.shape[0] > 0
    ok = np.empty(m if has_ok else 0, dtype=np.bool_)
    val = np.empty(m if has_val else 0, dtype=values.dtype)
    for j in range(m):
        c = child[j]
        if has_ok:
            ok[j] = ok_rows[c]
        if has_val:
            val[j] = values[c]
    return ok, val


@numba.njit(cache=True)
def sort_pairs(rows: Any, anchors: Any, n_rows: int) -> Any:
    """Pairs sorted by entity row (a stable counting sort): the sorted rows and anchors, and for each
    original pair its position in the sorted order. Pairs of one entity become adjacent, so their
    binary searches and reductions run on a CSR segment already in cache."""
    n = rows.shape[0]
    start = np.zeros(n_rows + 1, dtype=np.int64)
    for i in range(n):
        start[rows[i] + 1] += 1
    for r in range(n_rows):
        start[r + 1] += start[r]
    rows_out = np.empty(n, dtype=np.int64)
    anchors_out = np.empty(n, dtype=np.int64)
    position = np.empty(n, dtype=np.int64)
    for i in range(n):
        r = rows[i]
        k = start[r]
        start[r] = k + 1
        rows_out[k] = r
        anchors_out[k] = anchors[i]
        position[i] = k
    return rows_out, anchors_out, position
