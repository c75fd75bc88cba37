"""Baselines the model must beat, for any (entity, anchor) task on any graph: benchmark-only code.

- Own history: the mean of the entity's own per-event target values over a past window (for rel-f1, the
  share of its results that did not finish in the year before the anchor), falling back to the training
  mean. RelBench's entity tables are dominated by this signal, so it is the bar a foundation model that
  claims to read history must clear.
- LightGBM on aggregate features generated from the schema alone: the entity's static columns; for every
  table that links to the entity (one hop) and for the parents of those rows, over several windows before
  the anchor, the count of rows, mean/min/max of every numerical column, counts of the most frequent
  values of every low-cardinality categorical, the last value and the days since the last row. Nothing
  is written per task, and only rows with time <= anchor are read (the CSR children are sorted by time,
  so every window is two binary searches).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from graph_engine.shards.reader import Graph
from graph_engine.spec import SemanticType

DAY_NS = 86_400 * 10**9


# ---------------------------------------------------------------------------------------------- columns
def decoded_column(graph: Graph, table: str, column: str) -> np.ndarray:
    """A numerical, timestamp or categorical column as float64 values (NaN where null); categories are
    decoded to their values when those are numbers (rel-f1's statusId), else kept as codes."""
    col = graph.table(table).column(column)
    assert col.value is not None
    valid = np.asarray(col.valid, dtype=bool)
    if col.stype == SemanticType.categorical:
        codes = np.asarray(col.value, dtype=np.int64)
        vocab = col.vocab or []
        try:
            lookup = np.array([float(v) for v in vocab] + [np.nan], dtype=np.float64)
        except (TypeError, ValueError):
            lookup = np.append(np.arange(len(vocab), dtype=np.float64), np.nan)
        return np.where(valid & (codes >= 0), lookup[np.where(codes >= 0, codes, len(vocab))], np.nan)
    return np.where(valid, np.asarray(col.value, dtype=np.float64), np.nan)


def window_positions(
    graph: Graph,
    parent: str,
    child: str,
    fk: str,
    rows: np.ndarray,
    anchors: np.ndarray,
    windows_ns: list[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions in the parent→child CSR: `hi` [n] (end of the children with time <= anchor), `lo` [n, w]
    (start of those with time > anchor - window) and the segment start [n]."""
    csr = graph.table(parent).csr(child, fk)
    start = np.asarray(csr.start, dtype=np.int64)[rows]
    count = np.asarray(csr.count, dtype=np.int64)[rows]
    times = np.asarray(csr.time, dtype=np.int64)
    bounds = np.array([-w for w in windows_ns] + [0], dtype=np.int64)
    lo = np.empty((len(rows), len(windows_ns)), dtype=np.int64)
    hi = np.empty(len(rows), dtype=np.int64)
    for i in range(len(rows)):
        s, c = int(start[i]), int(count[i])
        pos = np.searchsorted(times[s : s + c], anchors[i] + bounds, side="right") + s
        lo[i] = pos[:-1]
        hi[i] = pos[-1]
    return lo, hi, start


class RangeStats:
    """count / sum / min / max of one value array (in CSR order) over many [lo, hi) ranges."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = np.append(np.asarray(values, dtype=np.float64), np.nan)  # sentinel for reduceat
        ok = np.isfinite(self.values[:-1])
        self.n = np.concatenate([[0], np.cumsum(ok)])
        self.s = np.concatenate([[0.0], np.cumsum(np.where(ok, self.values[:-1], 0.0))])

    def count(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return (self.n[hi] - self.n[lo]).astype(np.float64)

    def sum(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        return np.asarray(self.s[hi] - self.s[lo], dtype=np.float64)

    def mean(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        c = self.count(lo, hi)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(c > 0, (self.s[hi] - self.s[lo]) / c, np.nan)

    def extreme(self, lo: np.ndarray, hi: np.ndarray, ufunc: Any) -> np.ndarray:
        if len(lo) == 0:
            return np.zeros(0)
        idx = np.empty(2 * len(lo), dtype=np.int64)
        idx[0::2], idx[1::2] = lo, hi
        out = ufunc.reduceat(self.values, idx)[0::2]
        return np.where(self.count(lo, hi) > 0, out, np.nan)


# ------------------------------------------------------------------------------------------ own history
@dataclass(frozen=True)
class EventTarget:
    """The per-event value a task's label aggregates: `table.column`, optionally compared (`op value`)."""

    table: str
    fk: str
    column: str
    op: str | None = None
    value: float | None = None

    def values(self, graph: Graph) -> np.ndarray:
        v = decoded_column(graph, self.table, self.column)
        if self.op is None:
            return v
        assert self.value is not None
        ops = {
            "!=": np.not_equal,
            "==": np.equal,
            "<=": np.less_equal,
            "<": np.less,
            ">": np.greater,
            ">=": np.greater_equal,
        }
        return np.where(np.isfinite(v), ops[self.op](v, self.value).astype(np.float64), np.nan)


def own_history(
    graph: Graph,
    entity: str,
    target: EventTarget,
    rows: np.ndarray,
    anchors: np.ndarray,
    fallback: float,
    window_days: int = 365,
) -> np.ndarray:
    """Mean of the entity's own per-event values over (anchor - window, anchor]; `fallback` without any."""
    per_row = target.values(graph)
    csr = graph.table(entity).csr(target.table, target.fk)
    stats = RangeStats(per_row[np.asarray(csr.child, dtype=np.int64)])
    lo, hi, _ = window_positions(
        graph, entity, target.table, target.fk, rows, anchors, [window_days * DAY_NS]
    )
    m = stats.mean(lo[:, 0], hi)
    return np.where(np.isfinite(m), m, fallback)


# ----------------------------------------------------------------------------------- aggregate features
@dataclass(frozen=True)
class AggregateConfig:
    windows_days: tuple[int, ...] = (30, 90, 365, 3650)
    top_values: int = 5  # per low-cardinality categorical: counts of its most frequent values
    max_categories: int = 64  # categoricals with more values are skipped (static ones: frequency-encoded)
    # which values of child-table categoricals to count is chosen from rows up to this time (ns), so
    # that not even the choice of features looks past the training period; None: all rows
    fit_until: int | None = None


@dataclass
class _ValueSource:
    """One per-child-row value array (the child's column, or a parent's column read through a link)."""

    name: str
    values: np.ndarray  # per child row
    categories: list[float] = field(default_factory=list)  # top values of a categorical, else numeric


class AggregateFeatures:
    """Schema-generated, time-safe aggregate features of (entity row, anchor) pairs."""

    def __init__(self, graph: Graph, entity: str, cfg: AggregateConfig | None = None) -> None:
        self.graph = graph
        self.entity = entity
        self.cfg = cfg or AggregateConfig()
        self.windows_ns = [d * DAY_NS for d in self.cfg.windows_days]
        self.children: list[tuple[str, str, list[_ValueSource]]] = []
        self._fit_rows = np.zeros(0, dtype=bool)  # child rows whose values may choose features
        for child, fk, parent in graph.schema.edges():
            if parent != entity or graph.table(child).time is None:
                continue
            times = np.asarray(graph.table(child).time, dtype=np.int64)
            until = self.cfg.fit_until
            self._fit_rows = np.ones(len(times), dtype=bool) if until is None else times <= until
            sources = self._sources(child, child, np.arange(graph.table(child).num_rows))
            for cfk, cparent in ((f, p) for c, f, p in graph.schema.edges() if c == child and p != entity):
                link = np.asarray(graph.table(child).fk(cfk), dtype=np.int64)
                sources += self._sources(cparent, f"{child}.{cfk}->{cparent}", link)
            self.children.append((child, fk, sources))

    def _sources(self, table: str, prefix: str, link: np.ndarray) -> list[_ValueSource]:
        """Numerical and low-cardinality categorical columns of `table`, per child row through `link`
        (the identity for the child itself; -1 = no parent row)."""
        out = []
        tv = self.graph.table(table)
        for col in tv.info.feature_columns:
            stype = tv.info.columns[col].stype
            if stype not in (SemanticType.numerical, SemanticType.categorical):
                continue
            v = decoded_column(self.graph, table, col)
            per_child = (
                np.where(link >= 0, v[np.maximum(link, 0)], np.nan) if len(v) else np.full(len(link), np.nan)
            )
            cats: list[float] = []
            if stype == SemanticType.categorical:
                seen = per_child[np.isfinite(per_child) & self._fit_rows]
                vals, counts = np.unique(seen, return_counts=True)
                if len(vals) == 0 or len(vals) > self.cfg.max_categories:
                    continue
                cats = vals[np.argsort(-counts, kind="stable")][: self.cfg.top_values].tolist()
            out.append(_ValueSource(f"{prefix}.{col}", per_child, cats))
        return out

    def transform(self, rows: np.ndarray, anchors: np.ndarray) -> pd.DataFrame:
        rows = np.asarray(rows, dtype=np.int64)
        anchors = np.asarray(anchors, dtype=np.int64)
        cols: dict[str, np.ndarray] = {}
        self._static(rows, anchors, cols)
        for child, fk, sources in self.children:
            csr = self.graph.table(self.entity).csr(child, fk)
            order = np.asarray(csr.child, dtype=np.int64)
            times = np.asarray(csr.time, dtype=np.int64)
            lo, hi, start = window_positions(
                self.graph, self.entity, child, fk, rows, anchors, self.windows_ns
            )
            has = hi > start
            last = np.maximum(hi - 1, 0)
            cols[f"{child}.days_since_last"] = np.where(has, (anchors - times[last]) / DAY_NS, np.nan)
            for wi, days in enumerate(self.cfg.windows_days):
                cols[f"{child}.count_{days}d"] = (hi - lo[:, wi]).astype(np.float64)
            for src in sources:
                in_order = src.values[order]
                if src.categories:
                    for cat in src.categories:
                        stats = RangeStats((in_order == cat).astype(np.float64))
                        for wi, days in enumerate(self.cfg.windows_days):
                            cols[f"{src.name}={cat:g}.count_{days}d"] = stats.sum(lo[:, wi], hi)
                    continue
                stats = RangeStats(in_order)
                cols[f"{src.name}.last"] = np.where(has, in_order[last], np.nan)
                for wi, days in enumerate(self.cfg.windows_days):
                    a = lo[:, wi]
                    cols[f"{src.name}.mean_{days}d"] = stats.mean(a, hi)
                    cols[f"{src.name}.min_{days}d"] = stats.extreme(a, hi, np.fmin)
                    cols[f"{src.name}.max_{days}d"] = stats.extreme(a, hi, np.fmax)
        return pd.DataFrame(cols)

    def _static(self, rows: np.ndarray, anchors: np.ndarray, cols: dict[str, np.ndarray]) -> None:
        tv = self.graph.table(self.entity)
        for col in tv.info.feature_columns:
            stype = tv.info.columns[col].stype
            if stype == SemanticType.numerical:
                cols[f"{self.entity}.{col}"] = decoded_column(self.graph, self.entity, col)[rows]
            elif stype == SemanticType.timestamp:
                v = decoded_column(self.graph, self.entity, col)[rows]
                cols[f"{self.entity}.{col}.age_days"] = (anchors - v) / DAY_NS
            elif stype == SemanticType.categorical:
                c = tv.column(col)
                codes = np.where(np.asarray(c.valid, dtype=bool), np.asarray(c.value, dtype=np.int64), -1)
                freq = np.bincount(codes[codes >= 0], minlength=len(c.vocab or [])).astype(np.float64)
                r = codes[rows]
                cols[f"{self.entity}.{col}.frequency"] = np.where(r >= 0, freq[np.maximum(r, 0)], np.nan)
                if len(c.vocab or []) <= self.cfg.max_categories:
                    cols[f"{self.entity}.{col}.code"] = np.where(r >= 0, r, np.nan)


# ---------------------------------------------------------------------------------------------- LightGBM
@dataclass(frozen=True)
class LightGBMConfig:
    learning_rate: float = 0.03
    num_leaves: int = 31
    min_data_in_leaf: int = 20
    feature_fraction: float = 0.7
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    max_rounds: int = 3000
    early_stopping: int = 100
    holdout: float = 0.15  # the latest share of training anchors used for early stopping
    threads: int = 2
    seed: int = 0


@dataclass
class LightGBMResult:
    predictions: list[np.ndarray]
    best_rounds: int
    holdout_score: float
    seconds: float
    num_features: int


def train_lightgbm(
    task_type: str,
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    train_anchors: np.ndarray,
    x_eval: list[pd.DataFrame],
    cfg: LightGBMConfig | None = None,
) -> LightGBMResult:
    """Early-stops on the latest `holdout` share of training anchors (never on evaluation rows), then
    refits on the whole training table for the best number of rounds and predicts each `x_eval`."""
    import lightgbm as lgb

    cfg = cfg or LightGBMConfig()
    t0 = time.perf_counter()
    binary = task_type == "binary"
    params: dict[str, Any] = {
        "objective": "binary" if binary else "l1",
        "metric": "auc" if binary else "l1",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves,
        "min_data_in_leaf": cfg.min_data_in_leaf,
        "feature_fraction": cfg.feature_fraction,
        "bagging_fraction": cfg.bagging_fraction,
        "bagging_freq": 1,
        "lambda_l2": cfg.lambda_l2,
        "num_threads": cfg.threads,
        "seed": cfg.seed,
        "verbose": -1,
    }
    uniq = np.unique(train_anchors)
    cut = uniq[max(int(len(uniq) * (1 - cfg.holdout)), 1) - 1]
    fit, hold = train_anchors <= cut, train_anchors > cut
    cats = [c for c in x_train.columns if c.endswith(".code")]
    dfit = lgb.Dataset(x_train[fit], y_train[fit], categorical_feature=cats, free_raw_data=False)
    dhold = lgb.Dataset(x_train[hold], y_train[hold], reference=dfit, categorical_feature=cats)
    booster = lgb.train(
        params,
        dfit,
        num_boost_round=cfg.max_rounds,
        valid_sets=[dhold],
        callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)],
    )
    best = max(int(booster.best_iteration or cfg.max_rounds), 1)
    score = float(next(iter(booster.best_score["valid_0"].values())))
    full = lgb.train(params, lgb.Dataset(x_train, y_train, categorical_feature=cats), num_boost_round=best)
    preds = [np.asarray(full.predict(x), dtype=np.float64) for x in x_eval]
    return LightGBMResult(preds, best, score, time.perf_counter() - t0, x_train.shape[1])
