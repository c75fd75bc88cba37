"""The query's own quantities in the entity's past, at several time scales.

A binary label such as `MIN(qualifying.position, 0, 30, days) <= 3` throws away what matters most for
predicting it: the driver's best recent positions. Every aggregation in the target and in ASSUMING is
re-evaluated over backward windows of 1, 4, 16 and 64 target windows ending at the anchor
(`t - k*W < time <= t`, so never a row after the anchor). That is the own-history signal both
references found strongest, at several horizons, for any schema and any query; the model reads it
beside the lagged labels.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import numpy.typing as npt

from relfm_core.labels.aggregate import ListResult
from relfm_core.labels.engine import LabelEngine
from relfm_core.labels.values import Kind
from relfm_core.pql import AggFunc, Aggregation, iter_aggregations

SCALES = (1, 4, 16, 64)
MAX_AGGREGATIONS = 3


def history_aggregations(engine: LabelEngine) -> list[Aggregation]:
    """Distinct numeric aggregations of the target and ASSUMING (at most MAX_AGGREGATIONS)."""
    q = engine.query
    found: list[Aggregation] = []
    seen: set[Aggregation] = set()
    for root in (q.target, q.assuming):
        if root is None:
            continue
        for agg in iter_aggregations(root):
            if agg.func is AggFunc.LIST_DISTINCT:
                continue
            key = dataclasses.replace(agg, start=0, end=1)
            if key in seen:
                continue
            seen.add(key)
            found.append(agg)
    return found[:MAX_AGGREGATIONS]


def history(
    engine: LabelEngine, entity_rows: npt.ArrayLike, anchors: npt.ArrayLike, scales: tuple[int, ...] = SCALES
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """[n, MAX_AGGREGATIONS * len(scales)] values (0 where null or absent) and validity."""
    rows = np.asarray(entity_rows, dtype=np.int64)
    n = len(rows)
    width = MAX_AGGREGATIONS * len(scales)
    values = np.zeros((n, width), dtype=np.float64)
    valid = np.zeros((n, width), dtype=bool)
    for ai, agg in enumerate(history_aggregations(engine)):
        length = agg.end - (0 if agg.start == -np.inf else int(agg.start))
        for si, k in enumerate(scales):
            past = dataclasses.replace(agg, start=-k * max(int(length), 1), end=0)
            out = engine.aggregate(past, rows, anchors)
            if isinstance(out, ListResult):
                continue
            col = ai * len(scales) + si
            if out.kind is Kind.CODE:
                # a category has no magnitude: keep only whether one was seen
                valid[:, col] = out.valid
                continue
            values[:, col] = np.where(out.valid, out.numbers(), 0.0)
            valid[:, col] = out.valid
    return values, valid
