"""Labelled example tables: in-context examples, fine-tuning splits and backtests, all without leakage.

Examples are (entity, anchor t', label) at anchors t' = prediction_anchor - k * stride, k >= 1, keeping
only anchors whose every forward-looking window (the target's and ASSUMING's) ends at or before the
prediction anchor: `t' + end <= prediction_anchor`. A label therefore never uses a row the model could
not see at prediction time (DESIGN.md, time rules). At each t' the entities are those the query asks
about at t' (its WHERE evaluated at t', entities that exist by t'); examples whose label is null or whose
ASSUMING condition did not hold are left out. Sampling is seeded, so a table is a pure function of
(graph, query, prediction anchor, config).

Columns: entity_row, entity (the original key), anchor_time (datetime64[ns]) and label: float64 for
binary (0/1) and regression, int64 class codes for multiclass (`df.attrs['classes']` holds the class
values), and Python lists for link prediction (rows of `df.attrs['target_table']`) and multilabel (codes
into `df.attrs['classes']`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from graph_engine.errors import RelfmError
from relfm_core.labels.engine import STATIC_STRIDE, LabelEngine
from relfm_core.labels.result import Labels, Window
from relfm_core.pql import TaskType, TimeUnit, shift

_MAX_STEPS = 100_000  # strides tried before giving up on finding `num_anchors` leak-free ones


class TableConfig(BaseModel):
    """How many labelled examples to draw, at which anchors, and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rows: int = Field(default=10_000, gt=0, description="at most this many rows in a table")
    max_entities: int | None = Field(default=None, gt=0, description="at most this many entities per anchor")
    num_anchors: int = Field(default=8, gt=0, description="how many past anchors to label")
    stride: int | None = Field(
        default=None, gt=0, description="anchor spacing in stride_unit (default: the window)"
    )
    stride_unit: TimeUnit | None = Field(
        default=None, description="unit of stride (default: the window's unit)"
    )
    seed: int = 0
    balance: bool = Field(
        default=False, description="re-sample binary/multiclass labels to bound the class ratio"
    )
    balance_ratio: float = Field(
        default=3.0, ge=1.0, description="most / least frequent class after balancing"
    )
    require_assuming: bool = Field(default=True, description="keep only examples where ASSUMING held")
    val_anchors: int = Field(
        default=1, gt=0, description="training_table: the latest anchors form validation"
    )

    @classmethod
    def make(cls, **kwargs: object) -> TableConfig:
        """Like the constructor, with a one-line RelfmError on a bad value."""
        try:
            return cls.model_validate(kwargs)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise RelfmError(f"table config: {where}: {err['msg']}") from None


@dataclass(frozen=True)
class TrainingTables:
    train: pd.DataFrame
    val: pd.DataFrame


def _stride(engine: LabelEngine, cfg: TableConfig) -> Window:
    w = engine.window or STATIC_STRIDE
    unit = cfg.stride_unit or w.unit
    n = cfg.stride if cfg.stride is not None else (w.length if unit is w.unit else 1)
    return Window(0, n, unit)


def _ends_by(engine: LabelEngine, anchors: npt.NDArray[np.int64], limit: int) -> npt.NDArray[np.bool_]:
    """Whether every forward window of the query, at each anchor, ends at or before `limit`."""
    h = engine.horizon
    if h is None:
        return np.asarray(anchors <= limit)
    return np.asarray(shift(anchors, h.end, h.unit) <= limit)


def past_anchors(engine: LabelEngine, prediction_anchor: int, cfg: TableConfig) -> list[int]:
    """Up to `num_anchors` anchors t' = prediction_anchor - k * stride (k >= 1), latest first, whose
    windows end at or before the prediction anchor; none whose windows end before the graph's first
    event (they would label nothing)."""
    stride = _stride(engine, cfg)
    earliest = _earliest(engine)
    out: list[int] = []
    for k in range(1, _MAX_STEPS):
        t = _shift1(prediction_anchor, -k * stride.end, stride.unit)
        end = engine.window_end(t)
        if earliest is not None and end < earliest:
            break
        if end <= prediction_anchor:
            out.append(t)
            if len(out) == cfg.num_anchors:
                break
    return out


def _shift1(anchor: int, n: int, unit: TimeUnit) -> int:
    return int(shift(np.array([anchor], dtype=np.int64), n, unit)[0])


def _earliest(engine: LabelEngine) -> int | None:
    tables = engine.graph.manifest["tables"].values()
    if not any(t.get("time_min") is not None for t in tables):
        return None
    return engine.graph.min_time()


def _pairs_at(
    engine: LabelEngine, anchors: list[int], cfg: TableConfig
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    rows_out: list[npt.NDArray[np.int64]] = []
    times_out: list[npt.NDArray[np.int64]] = []
    for i, t in enumerate(anchors):
        rows = engine.entity_rows(t)
        if cfg.max_entities is not None and len(rows) > cfg.max_entities:
            rng = np.random.default_rng([cfg.seed, i, 1])
            rows = np.sort(rng.choice(rows, cfg.max_entities, replace=False))
        rows_out.append(rows)
        times_out.append(np.full(len(rows), t, dtype=np.int64))
    if not rows_out:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(rows_out), np.concatenate(times_out)


def _usable(
    engine: LabelEngine, rows: npt.NDArray[np.int64], times: npt.NDArray[np.int64], cfg: TableConfig
) -> tuple[Labels, npt.NDArray[np.int64]]:
    """Labels of all pairs (one batched call) and the positions of the pairs worth keeping."""
    labels = engine.evaluate(rows, times)
    keep = labels.valid.copy()
    if cfg.require_assuming and engine.query.assuming is not None and len(rows):
        keep &= engine.assuming(rows, times)
    return labels, np.flatnonzero(keep).astype(np.int64)


def _class_of(labels: Labels, idx: npt.NDArray[np.int64]) -> npt.NDArray[np.int64] | None:
    if labels.task_type is TaskType.BINARY:
        return np.asarray(labels.values[idx], dtype=np.int64)
    if labels.task_type is TaskType.MULTICLASS:
        return np.asarray(labels.values[idx], dtype=np.int64)
    return None


def _sample(
    labels: Labels, idx: npt.NDArray[np.int64], cfg: TableConfig, rng: np.random.Generator, balance: bool
) -> npt.NDArray[np.int64]:
    """At most max_rows of `idx`: uniformly, or per class so that the largest class is at most
    balance_ratio times the smallest (rare classes repeated, frequent ones subsampled)."""
    classes = _class_of(labels, idx) if balance else None
    if classes is None or len(idx) == 0:
        if len(idx) <= cfg.max_rows:
            return idx
        return np.sort(rng.choice(idx, cfg.max_rows, replace=False))
    uniq, inverse, counts = np.unique(classes, return_inverse=True, return_counts=True)
    floor = math.ceil(int(counts.max()) / cfg.balance_ratio)
    want = np.maximum(counts, floor)
    if want.sum() > cfg.max_rows:
        want = np.maximum(np.floor(want * (cfg.max_rows / want.sum())).astype(np.int64), 1)
    picked: list[npt.NDArray[np.int64]] = []
    for c in range(len(uniq)):
        members = idx[inverse == c]
        w = int(want[c])
        if w <= len(members):
            picked.append(rng.choice(members, w, replace=False))
        else:
            picked.append(np.concatenate([members, rng.choice(members, w - len(members), replace=True)]))
    out = np.concatenate(picked)
    if len(out) > cfg.max_rows:  # more classes than rows allowed: the cap wins over the ratio
        out = rng.choice(out, cfg.max_rows, replace=False)
    return np.sort(out)


def _frame(
    engine: LabelEngine,
    rows: npt.NDArray[np.int64],
    times: npt.NDArray[np.int64],
    labels: Labels,
    idx: npt.NDArray[np.int64],
) -> pd.DataFrame:
    # Most recent anchors first, then by entity row: the order does not depend on sampling internals.
    order = np.lexsort((rows[idx], -times[idx]))
    idx = idx[order]
    sub = labels.subset(idx)
    view = engine.graph.table(engine.entity_table)
    label: object
    if sub.is_list:
        label = sub.lists()
    elif labels.task_type is TaskType.MULTICLASS:
        label = np.asarray(sub.values, dtype=np.int64)
    else:
        label = np.asarray(sub.values, dtype=np.float64)
    df = pd.DataFrame(
        {
            "entity_row": rows[idx],
            "entity": view.key_values(rows[idx]) if len(idx) else np.array([], dtype=object),
            "anchor_time": times[idx].astype("datetime64[ns]"),
            "label": label,
        }
    )
    df.attrs["task_type"] = labels.task_type.value
    df.attrs["classes"] = None if labels.classes is None else list(np.asarray(labels.classes).tolist())
    df.attrs["target_table"] = engine.query.link_target_table
    return df


def context_table(
    engine: LabelEngine, prediction_anchor: int, cfg: TableConfig | None = None
) -> pd.DataFrame:
    """In-context examples for predicting at `prediction_anchor` (see the module docstring)."""
    cfg = cfg or TableConfig()
    anchors = past_anchors(engine, int(prediction_anchor), cfg)
    rows, times = _pairs_at(engine, anchors, cfg)
    labels, idx = _usable(engine, rows, times, cfg)
    rng = np.random.default_rng([cfg.seed, 2])
    return _frame(engine, rows, times, labels, _sample(labels, idx, cfg, rng, cfg.balance))


def training_table(
    engine: LabelEngine, prediction_anchor: int, cfg: TableConfig | None = None
) -> TrainingTables:
    """Fine-tuning examples split by time: the latest `val_anchors` anchors are validation, and training
    keeps only anchors whose windows end by the first validation anchor (no overlap between the two)."""
    cfg = cfg or TableConfig()
    anchors = past_anchors(engine, int(prediction_anchor), cfg)
    n_val = min(cfg.val_anchors, max(len(anchors) - 1, 0)) if len(anchors) > 1 else len(anchors)
    val_anchors = anchors[:n_val]
    first_val = min(val_anchors) if val_anchors else int(prediction_anchor)
    rest = np.array(anchors[n_val:], dtype=np.int64)
    train_anchors = rest[_ends_by(engine, rest, first_val)].tolist() if len(rest) else []
    rows, times = _pairs_at(engine, [*val_anchors, *train_anchors], cfg)
    labels, idx = _usable(engine, rows, times, cfg)
    is_val = np.isin(times[idx], np.array(val_anchors, dtype=np.int64))
    train_idx = _sample(labels, idx[~is_val], cfg, np.random.default_rng([cfg.seed, 3]), cfg.balance)
    val_idx = _sample(labels, idx[is_val], cfg, np.random.default_rng([cfg.seed, 4]), False)
    return TrainingTables(
        _frame(engine, rows, times, labels, train_idx), _frame(engine, rows, times, labels, val_idx)
    )


def backtest_table(
    engine: LabelEngine, anchor: int | None = None, require_assuming: bool = True
) -> pd.DataFrame:
    """Every labelled entity at `anchor` (default: the latest anchor whose windows are complete)."""
    t = engine.latest_complete_anchor() if anchor is None else int(anchor)
    rows, times = _pairs_at(engine, [t], TableConfig())
    cfg = TableConfig(require_assuming=require_assuming)
    labels, idx = _usable(engine, rows, times, cfg)
    return _frame(engine, rows, times, labels, idx)
