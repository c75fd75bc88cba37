"""The label engine: a validated PQL query evaluated on the graph shards for (entity, anchor) pairs.

Work is split by what it depends on. Per child row, once per query: aggregation WHERE conditions and
column values (vectorised over the whole table, cached). Per pair: window bounds (vectorised), two binary
searches on the entity's time-sorted children and a compiled reduction (`aggregate`, `kernels`). Per
distinct value, once: string operators on categorical and text columns (`values`). Python never loops
over entities or pairs.

Time rules (DESIGN.md): the target and ASSUMING see rows with `t + start < time <= t + end`; the entity
filter sees backward windows only (validated); an entity whose own time is after the anchor does not
exist yet at that anchor (`entity_rows`). Static columns (and parent paths) are read whatever the time.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from graph_engine.errors import RelfmError
from graph_engine.shards.format import TIME_NULL
from graph_engine.shards.reader import Graph
from graph_engine.spec import SemanticType
from relfm_core.labels import kernels
from relfm_core.labels.aggregate import ListResult, Prepared
from relfm_core.labels.columns import ColumnReader
from relfm_core.labels.result import Labels, Window
from relfm_core.labels.values import BoolArray, Int64Array, Kind, Truth, Vec, compare
from relfm_core.pql import (
    Aggregation,
    BoolOp,
    BoolOpKind,
    ColumnRef,
    Comparison,
    Condition,
    EntityMode,
    Not,
    Operand,
    Query,
    TaskType,
    TimeUnit,
    iter_aggregations,
    iter_nodes,
    shift,
    validate,
    window_bounds,
)
from relfm_core.pql.errors import QueryError
from relfm_core.pql.windows import INT64_MIN, UNIT_NS

STATIC_STRIDE = Window(0, 1, TimeUnit.DAYS)  # anchor stride of static targets (no window of their own)


class _Pairs:
    """(entity row, anchor) pairs of one call, with the window bounds and CSR runs computed so far.

    Given `n_entities`, the pairs are processed sorted by entity row (a stable counting sort), so that
    all pairs of an entity search and reduce the same CSR segment while it is in cache; `restore` puts
    per-pair results back in the caller's order.
    """

    def __init__(self, rows: Int64Array, anchors: Int64Array, n_entities: int | None = None) -> None:
        self.inverse: Int64Array | None = None
        if n_entities is not None and len(rows) > 1 and not bool(np.all(rows[1:] >= rows[:-1])):
            if n_entities <= 4 * len(rows) + 4096:
                rows, anchors, self.inverse = kernels.sort_pairs(rows, anchors, n_entities)
            else:
                order = np.argsort(rows, kind="stable").astype(np.int64)
                rows, anchors = rows[order], anchors[order]
                self.inverse = np.empty_like(order)
                self.inverse[order] = np.arange(len(order), dtype=np.int64)
        self.rows = rows
        self.anchors = anchors
        self._bounds: dict[tuple[int | float, int, TimeUnit], tuple[Int64Array, Int64Array]] = {}
        self._runs: dict[
            tuple[str, str | None, int | float, int, TimeUnit], tuple[Int64Array, Int64Array]
        ] = {}

    def bounds(self, start: int | float, end: int, unit: TimeUnit) -> tuple[Int64Array, Int64Array]:
        key = (start, end, unit)
        if key not in self._bounds:
            if unit is TimeUnit.MONTHS and len(self.anchors) > 64:
                # Calendar arithmetic is the slow part: do it once per distinct anchor.
                uniq, inverse = np.unique(self.anchors, return_inverse=True)
                lo, hi = window_bounds(uniq, start, end, unit)
                self._bounds[key] = (lo[inverse], hi[inverse])
            else:
                self._bounds[key] = window_bounds(self.anchors, start, end, unit)
        return self._bounds[key]

    def restore(self, values: np.ndarray) -> np.ndarray:
        """Per-pair results (first axis) back in the order the pairs were given."""
        return values if self.inverse is None else values[self.inverse]

    def runs(self, prep: Prepared, agg: Aggregation) -> tuple[Int64Array, Int64Array]:
        """CSR runs [a, b) of `agg`'s window (shared by aggregations over the same link and window)."""
        key = (agg.table, agg.link_fk, agg.start, agg.end, agg.unit)
        if key not in self._runs:
            lo, hi = self.bounds(agg.start, agg.end, agg.unit)
            self._runs[key] = prep.positions(self.rows, lo, hi)
        return self._runs[key]


def combine_windows(aggs: Iterable[Aggregation]) -> Window | None:
    """One window covering several aggregations' windows (None when there are none).

    Same unit: (min start, max end). Different fixed units: in seconds. Months mixed with fixed units: in
    months, rounding outward (a month is 28 to 31 days), so the result still covers every window.
    """
    found = list(aggs)
    if not found:
        return None
    units = {a.unit for a in found}
    if len(units) == 1:
        unit = found[0].unit
        return Window(min(a.start for a in found), max(a.end for a in found), unit)
    if TimeUnit.MONTHS not in units:
        sec = UNIT_NS[TimeUnit.SECONDS]
        starts = [a.start * (UNIT_NS[a.unit] // sec) for a in found]
        ends = [a.end * (UNIT_NS[a.unit] // sec) for a in found]
        return Window(min(starts), int(max(ends)), TimeUnit.SECONDS)
    day = UNIT_NS[TimeUnit.DAYS]
    starts_m: list[int | float] = []
    ends_m: list[int] = []
    for a in found:
        if a.unit is TimeUnit.MONTHS:
            starts_m.append(a.start)
            ends_m.append(a.end)
            continue
        ns = UNIT_NS[a.unit]
        starts_m.append(a.start if math.isinf(a.start) else math.floor(a.start * ns / (31 * day)))
        ends_m.append(math.ceil(a.end * ns / (28 * day)))
    return Window(min(starts_m), max(ends_m), TimeUnit.MONTHS)


def as_anchor_array(anchors: npt.ArrayLike, n: int | None = None) -> Int64Array:
    """Anchors as int64 nanoseconds (from datetime64 or int64)."""
    arr = np.asarray(anchors)
    if arr.size == 0:
        arr = arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.datetime64):
        arr = arr.astype("datetime64[ns]").view(np.int64)
    if arr.dtype.kind not in "iu":
        raise RelfmError(f"anchor times must be datetime64 or int64 nanoseconds, got {arr.dtype}")
    out = np.ascontiguousarray(arr, dtype=np.int64).reshape(-1)
    if n is not None and len(out) != n:
        raise RelfmError(f"{n} entity rows but {len(out)} anchor times: give one anchor per entity row")
    return out


class LabelEngine:
    """Evaluates one query on one graph. Build it once per query: per-row work is cached on it."""

    def __init__(self, graph: Graph, query: str | Query) -> None:
        self.graph = graph
        self.query: Query = validate(query, graph.schema)
        self.entity_table: str = self.query.entity.table
        assert self.query.task_type is not None
        self.task_type: TaskType = self.query.task_type
        self.reader = ColumnReader(graph)
        self._prepared: dict[Aggregation, Prepared] = {}  # by window-free aggregation
        self._row_truths: dict[tuple[str, Condition], Truth] = {}
        self._classes: np.ndarray | None = None
        target_aggs = list(iter_aggregations(self.query.target))
        self.window: Window | None = combine_windows(target_aggs)
        self._activity_agg: Aggregation | None = target_aggs[0] if target_aggs else None
        # Everything that looks into the future after the anchor: the target and ASSUMING.
        self.horizon: Window | None = combine_windows([*target_aggs, *iter_aggregations(self.query.assuming)])
        self._check_stored()

    # ------------------------------------------------------------------ public API
    @property
    def num_entities(self) -> int:
        return self.graph.table(self.entity_table).num_rows

    def evaluate(self, entity_rows: npt.ArrayLike, anchors: npt.ArrayLike) -> Labels:
        """The target for each (entity row, anchor) pair."""
        pairs = self._pairs(entity_rows, anchors)
        labels = self._labels(pairs)
        return labels if pairs.inverse is None else labels.subset(pairs.inverse)

    def entity_rows(self, anchor: int | None = None) -> Int64Array:
        """The entities the query asks about at `anchor` (default: the graph's latest time, 'now'):
        FOR EACH / = v / IN (...), minus entities that do not exist yet, filtered by WHERE."""
        view = self.graph.table(self.entity_table)
        spec = self.query.entity
        if spec.mode is EntityMode.EACH:
            rows: Int64Array = np.arange(view.num_rows, dtype=np.int64)
        else:
            keys = [lit.value for lit in spec.values]
            found = np.asarray(view.lookup(np.array(keys, dtype=object)), dtype=np.int64)
            missing = [k for k, r in zip(keys, found.tolist(), strict=True) if r < 0]
            if missing:
                raise QueryError(f"unknown key {missing[0]!r} in '{self.entity_table}.{spec.key}'", spec.pos)
            _, first = np.unique(found, return_index=True)
            rows = found[np.sort(first)]
        t = self._default_anchor() if anchor is None else int(anchor)
        times = view.time
        if times is not None:
            rows = rows[np.asarray(times, dtype=np.int64)[rows] <= t] if t != TIME_NULL else rows
        if self.query.entity_filter is not None and len(rows):
            pairs = _Pairs(rows, np.full(len(rows), t, dtype=np.int64))
            rows = rows[self._condition(self.query.entity_filter, pairs).true]
        return rows

    def assuming(self, entity_rows: npt.ArrayLike, anchors: npt.ArrayLike) -> BoolArray:
        """Whether the ASSUMING condition holds (is true) for each pair; all True without one."""
        pairs = self._pairs(entity_rows, anchors)
        if self.query.assuming is None:
            return np.ones(len(pairs.rows), dtype=bool)
        return np.asarray(pairs.restore(self._condition(self.query.assuming, pairs).true), dtype=bool)

    def activity(self, entity_rows: npt.ArrayLike, anchors: npt.ArrayLike) -> Int64Array:
        """Rows of the target's (first) aggregated table linked to the entity in its window, WHERE or
        not; 0 for static targets."""
        pairs = self._pairs(entity_rows, anchors)
        return np.asarray(pairs.restore(self._activity(pairs)), dtype=np.int64)

    def lagged(
        self, entity_rows: npt.ArrayLike, anchors: npt.ArrayLike, lags: int
    ) -> tuple[npt.NDArray[np.float64], BoolArray, Int64Array]:
        """The target and activity at the `lags` previous windows, as [n, lags] arrays.

        Lag k (1-based) is evaluated at anchor t - end - (k - 1) * (end - start) (in the window's unit,
        calendar months for months), so its window is the k-th window of the target's length ending at
        or before t: they tile the past without overlap and never reach past t. For the usual start = 0
        this is t - k * window. Values: binary 0/1, regression the value, multiclass the class code, list
        targets the list length. Static targets repeat the static value (activity 0).
        """
        if lags < 0:
            raise RelfmError(f"lags must be >= 0, got {lags}")
        pairs = self._pairs(entity_rows, anchors)
        n = len(pairs.rows)
        if lags == 0:
            return np.zeros((n, 0)), np.zeros((n, 0), dtype=bool), np.zeros((n, 0), dtype=np.int64)
        w = self.window
        if w is None:
            lab = self._labels(pairs)
            values = np.repeat(np.asarray(lab.values, dtype=np.float64)[:, None], lags, axis=1)
            valid = np.repeat(lab.valid[:, None], lags, axis=1)
            return pairs.restore(values), pairs.restore(valid), np.zeros((n, lags), dtype=np.int64)
        shifted = np.empty((n, lags), dtype=np.int64)
        for k in range(1, lags + 1):
            shifted[:, k - 1] = shift(pairs.anchors, -(w.end + (k - 1) * w.length), w.unit)
        lag_pairs = _Pairs(np.repeat(pairs.rows, lags), shifted.reshape(-1))
        lab = self._labels(lag_pairs)
        values = np.asarray(lab.values, dtype=np.float64).reshape(n, lags)
        valid = lab.valid.reshape(n, lags)
        activity = self._activity(lag_pairs).reshape(n, lags)
        return pairs.restore(values), pairs.restore(valid), pairs.restore(activity)

    def aggregate(
        self, agg: Aggregation, entity_rows: npt.ArrayLike, anchors: npt.ArrayLike
    ) -> Vec | ListResult:
        """Any aggregation over a child of the entity table, per pair, in the given order: e.g. one of
        the query's own aggregations moved to past windows (`dataclasses.replace(agg, start=-90,
        end=0)`) as a feature. It shares the per-row work of the query's aggregations. Whether its
        window respects the time rules is the caller's business (a feature must end at or before 0)."""
        pairs = self._pairs(entity_rows, anchors)
        out = self._operand(agg, pairs)
        if pairs.inverse is None:
            return out
        if isinstance(out, ListResult):
            return out.subset(pairs.inverse)
        inv = pairs.inverse
        return Vec(out.kind, out.value[inv], out.valid[inv], out.vocab, out.multi)

    def latest_complete_anchor(self) -> int:
        """The latest anchor whose target (and ASSUMING) window ends at or before the graph's last event
        time; the last event time itself for static targets."""
        now = self._default_anchor()
        h = self.horizon
        if h is None:
            return now
        return int(shift(np.array([now], dtype=np.int64), -h.end, h.unit)[0])

    def window_end(self, anchor: int) -> int:
        """When the query's forward windows (target and ASSUMING) end for `anchor`: its label is known
        from then on, so it may serve as context for predictions at or after that time."""
        h = self.horizon
        if h is None:
            return int(anchor)
        return int(shift(np.array([anchor], dtype=np.int64), h.end, h.unit)[0])

    def step_back(self, anchor: int, k: int) -> int:
        """`anchor` moved back by k target windows (end - start in the window's unit; 1 day for static
        targets)."""
        w = self.window or STATIC_STRIDE
        return int(shift(np.array([anchor], dtype=np.int64), -k * w.length, w.unit)[0])

    # ------------------------------------------------------------------ pairs
    def _check_stored(self) -> None:
        """Fails at construction, not mid-evaluation, on columns the graph does not store (id columns that
        are neither keys nor links)."""
        q = self.query
        for root in (q.target, q.entity_filter, q.assuming):
            if root is None:
                continue
            for node in iter_nodes(root):
                if isinstance(node, ColumnRef | Aggregation) and node.column != "*":
                    info = self.graph.schema.tables[node.final_table]
                    structural = {
                        info.primary_key,
                        info.time_column,
                        info.end_time_column,
                        *info.foreign_keys,
                    }
                    if node.column not in structural and info.column(node.column).stype is SemanticType.id:
                        raise QueryError(
                            f"'{node.final_table}.{node.column}' is an id column, which the graph does not "
                            "store (only keys, links, times and feature columns)",
                            node.pos,
                        )

    def _default_anchor(self) -> int:
        tables = self.graph.manifest["tables"].values()
        if any(t.get("time_max") is not None for t in tables):
            return self.graph.max_time()
        return 0

    def _pairs(self, entity_rows: npt.ArrayLike, anchors: npt.ArrayLike) -> _Pairs:
        rows = np.asarray(entity_rows)
        if rows.size == 0:
            rows = rows.astype(np.int64)
        if rows.dtype.kind not in "iu":
            raise RelfmError(f"entity rows must be integers, got {rows.dtype}")
        rows = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
        n = self.num_entities
        if len(rows) and (int(rows.min()) < 0 or int(rows.max()) >= n):
            bad = int(rows[(rows < 0) | (rows >= n)][0])
            raise RelfmError(f"entity row {bad} is out of range for table '{self.entity_table}' ({n} rows)")
        times = as_anchor_array(anchors, len(rows))
        missing = np.flatnonzero(times == INT64_MIN)
        if len(missing):
            raise RelfmError(f"anchor time of pair {int(missing[0])} is missing (NaT)")
        return _Pairs(rows, times, n)

    # ------------------------------------------------------------------ evaluation
    def _prepare(self, agg: Aggregation) -> Prepared:
        """The pair-independent arrays of `agg`, shared by every window of the same aggregation (the
        target and its lags, or past windows of it, read the same rows)."""
        key = dataclasses.replace(agg, start=0, end=1, unit=TimeUnit.DAYS)
        if key not in self._prepared:
            keep = None if agg.where is None else self._row_truth(agg.table, agg.where)
            self._prepared[key] = Prepared(self.graph, self.reader, key, self.entity_table, keep)
        return self._prepared[key]

    def _row_truth(self, table: str, cond: Condition) -> Truth:
        """A condition over every row of `table` (an aggregation's WHERE), evaluated once."""
        key = (table, cond)
        if key not in self._row_truths:
            if isinstance(cond, Comparison):
                lhs = cond.lhs
                if not isinstance(lhs, ColumnRef):
                    raise QueryError("aggregations cannot be nested inside another aggregation's WHERE")
                truth = compare(self.reader.ref(table, lhs.path, lhs.column), cond.op, cond.values)
            elif isinstance(cond, BoolOp):
                parts = [self._row_truth(table, c) for c in cond.children]
                truth = functools.reduce(Truth.__and__ if cond.op is BoolOpKind.AND else Truth.__or__, parts)
            else:
                truth = ~self._row_truth(table, cond.child)
            self._row_truths[key] = truth
        return self._row_truths[key]

    def _operand(self, node: Operand, pairs: _Pairs) -> Vec | ListResult:
        if isinstance(node, Aggregation):
            prep = self._prepare(node)
            a, b = pairs.runs(prep, node)
            return prep.reduce(a, b)
        return self.reader.ref(self.entity_table, node.path, node.column).take(pairs.rows)

    def _condition(self, node: Condition, pairs: _Pairs) -> Truth:
        if isinstance(node, Comparison):
            value = self._operand(node.lhs, pairs)
            if isinstance(value, ListResult):
                raise QueryError("a LIST_DISTINCT cannot be compared", node.pos)
            return compare(value, node.op, node.values)
        if isinstance(node, BoolOp):
            parts = [self._condition(c, pairs) for c in node.children]
            return functools.reduce(Truth.__and__ if node.op is BoolOpKind.AND else Truth.__or__, parts)
        assert isinstance(node, Not)
        return ~self._condition(node.child, pairs)

    def _activity(self, pairs: _Pairs) -> Int64Array:
        agg = self._activity_agg
        if agg is None:
            return np.zeros(len(pairs.rows), dtype=np.int64)
        a, b = pairs.runs(self._prepare(agg), agg)
        return np.asarray(b - a, dtype=np.int64)

    def classes(self) -> np.ndarray | None:
        """Multiclass: the sorted class values codes index (the column's vocabulary, or for CLASSIFY over
        int64 values every distinct value of the column); multilabel: the listed column's vocabulary."""
        if self._classes is None:
            target = self.query.target
            if self.task_type not in (TaskType.MULTICLASS, TaskType.MULTILABEL):
                return None
            assert isinstance(target, Aggregation | ColumnRef)
            table = target.table
            vec = self.reader.ref(table, target.path, target.column)
            if vec.kind is Kind.CODE:
                assert vec.vocab is not None
                self._classes = np.asarray(vec.vocab.values)
            else:
                self._classes = self.reader.distinct_values(table, target.path, target.column)
        return self._classes

    def _labels(self, pairs: _Pairs) -> Labels:
        target = self.query.target
        tt = self.task_type
        if not isinstance(target, Aggregation | ColumnRef):
            truth = self._condition(target, pairs)
            return Labels(tt, truth.true.astype(np.float64), truth.known)
        out = self._operand(target, pairs)
        if isinstance(out, ListResult):
            lengths = out.lengths.astype(np.float64)
            return Labels(tt, lengths, out.valid, self.classes(), out.ptr, out.items)
        if tt is TaskType.MULTICLASS:
            classes = self.classes()
            assert classes is not None
            if out.kind is Kind.CODE:
                codes = np.asarray(out.value, dtype=np.int64)
            else:
                codes = np.searchsorted(classes, out.value).astype(np.int64)
            return Labels(tt, np.where(out.valid, codes, -1).astype(np.int64), out.valid, classes)
        values = np.where(out.valid, out.numbers(), 0.0).astype(np.float64)
        return Labels(tt, values, out.valid)
