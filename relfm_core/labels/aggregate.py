"""Aggregations over time windows, evaluated for many (entity, anchor) pairs at once.

Per aggregation, the work that does not depend on the pairs is done once and cached: the WHERE condition
and the column's validity are evaluated once per child row (vectorised) into `ok`, and the values the
reduction reads are prepared beside it (see `Prepared` for how they are laid out). Per pair, a window is
then two binary searches and a reduction over a run of CSR positions (see `kernels`).

Semantics (SQL, with Kumo's empty-window rule): rows whose WHERE is false or unknown do not count, null
values are skipped; COUNT, COUNT_DISTINCT and SUM of no values are 0; AVG, MIN, MAX, FIRST and LAST of no
values are null; LIST_DISTINCT of no values is null (SQL's `array_agg` over no rows), otherwise the
distinct values in ascending order (codes, or parent row ids for a foreign key). FIRST / LAST take the
earliest / latest counted row by (time, child row id): among rows with the same time, FIRST takes the
lowest row id and LAST the highest (row ids follow the child table's primary-key order).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from graph_engine.shards.reader import Graph
from relfm_core.labels import kernels
from relfm_core.labels.columns import ColumnReader
from relfm_core.labels.result import take_lists
from relfm_core.labels.values import BoolArray, Int64Array, Kind, Truth, Vec, Vocab
from relfm_core.pql import AggFunc, Aggregation


@dataclass(frozen=True)
class ListResult:
    """LIST_DISTINCT per pair: items[ptr[i] : ptr[i + 1]], sorted ascending; an empty list is null."""

    ptr: Int64Array
    items: Int64Array
    vocab: Vocab | None  # categorical codes index it; None: items are rows of `target_table`
    target_table: str | None

    @property
    def lengths(self) -> Int64Array:
        return np.diff(self.ptr)

    @property
    def valid(self) -> BoolArray:
        return np.asarray(self.lengths > 0)

    def subset(self, idx: Int64Array) -> ListResult:
        ptr, items = take_lists(self.ptr, self.items, idx)
        return ListResult(ptr, items, self.vocab, self.target_table)


_NO_OK = np.empty(0, dtype=bool)
_NO_IDX = np.empty(0, dtype=np.int64)
_NO_VALUES = np.empty(0, dtype=np.float64)
ValueKind = str  # "fused" (floats, NaN where not counted) | "raw" (MIN/MAX of ints) | "keys" (distinct)


class Prepared:
    """One aggregation's pair-independent arrays, whatever its window (`agg` has a placeholder one).

    Reductions first read the per-row arrays through the CSR's child ids (random reads, but only of
    rows inside some window). Once the calls on this aggregation have touched as many rows as the table
    has, the arrays are laid out in CSR order (one gather of the whole table, after which every window
    is a contiguous read): a first call never pays for rows it does not read, and repeated calls (lag
    features, context tables) converge to contiguous reads, at most doubling the total work.
    """

    def __init__(self, graph: Graph, reader: ColumnReader, agg: Aggregation, entity: str, keep: Truth | None):
        assert agg.link_fk is not None
        csr = graph.table(entity).csr(agg.table, agg.link_fk)
        self.agg = agg
        self.seg_start: Int64Array = np.asarray(csr.start, dtype=np.int64)
        self.seg_count: Int64Array = np.asarray(csr.count, dtype=np.int64)
        self.times: Int64Array = np.asarray(csr.time, dtype=np.int64)
        self.child: Int64Array = np.asarray(csr.child, dtype=np.int64)
        self.vec: Vec | None = None if agg.is_star else reader.ref(agg.table, agg.path, agg.column)
        ok_rows: BoolArray | None = None if keep is None else keep.true
        if self.vec is not None and not self.vec.valid.all():
            ok_rows = self.vec.valid if ok_rows is None else ok_rows & self.vec.valid
        self.ok_rows = ok_rows
        self.list_table: str | None = graph.schema.tables[agg.final_table].foreign_keys.get(agg.column)
        self.touched = 0
        self.laid_out = False
        self._row_values: dict[ValueKind, npt.NDArray[np.generic]] = {}
        self._csr_values: dict[ValueKind, npt.NDArray[np.generic]] = {}

    # ------------------------------------------------------------------ inputs of the reductions
    def row_values(self, kind: ValueKind) -> npt.NDArray[np.generic]:
        """Per-row values a reduction reads, in row order."""
        if kind not in self._row_values:
            vec = self.vec
            assert vec is not None
            if kind == "fused":
                # Float values with NaN where the row does not count: one array to read instead of two
                # (NaN is never a value: the graph stores NaN as null).
                values = np.asarray(vec.numbers(), dtype=np.float64)
                if self.ok_rows is not None:
                    values = np.where(self.ok_rows, values, np.nan)
                self._row_values[kind] = values
            elif kind == "raw":
                self._row_values[kind] = vec.value
            else:
                self._row_values[kind] = vec.distinct_keys()
        return self._row_values[kind]

    def _laid(self, kind: ValueKind | None) -> npt.NDArray[np.generic]:
        """A row-order array (`ok` for kind None) laid out in CSR order, gathered once."""
        key = kind or "ok"
        if key not in self._csr_values:
            source = self.ok_rows if kind is None else self.row_values(kind)
            assert source is not None
            if len(source) == 0:
                self._csr_values[key] = np.zeros(len(self.child), dtype=source.dtype)
            elif kind is None:
                self._csr_values[key], _ = kernels.gather_csr(self.child, source, _NO_VALUES)
            else:
                _, self._csr_values[key] = kernels.gather_csr(self.child, _NO_OK, source)
        return self._csr_values[key]

    def inputs(
        self, a: Int64Array, b: Int64Array, kind: ValueKind | None
    ) -> tuple[BoolArray, npt.NDArray[np.generic], Int64Array]:
        """(ok, values, idx) for reducing the runs [a, b) (see `kernels`)."""
        if not self.laid_out:
            self.touched += int(np.sum(b - a))
            self.laid_out = self.touched >= len(self.child)
        use_ok = self.ok_rows is not None and kind != "fused"
        if self.laid_out:
            ok = np.asarray(self._laid(None), dtype=bool) if use_ok else _NO_OK
            values = self._laid(kind) if kind is not None else _NO_VALUES
            return ok, values, _NO_IDX
        ok = self.ok_rows if use_ok and self.ok_rows is not None else _NO_OK
        values = self.row_values(kind) if kind is not None else _NO_VALUES
        return ok, values, self.child

    @cached_property
    def cum(self) -> Int64Array:
        """Counted rows before each CSR position (laid out): COUNT of a run is two lookups."""
        ok = self._laid(None)
        out = np.zeros(len(ok) + 1, dtype=np.int64)
        np.cumsum(ok, out=out[1:])
        return out

    # ------------------------------------------------------------------ per pair
    def positions(self, rows: Int64Array, lo: Int64Array, hi: Int64Array) -> tuple[Int64Array, Int64Array]:
        a, b = kernels.window_positions(rows, lo, hi, self.seg_start, self.seg_count, self.times)
        return np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)

    def reduce(self, a: Int64Array, b: Int64Array) -> Vec | ListResult:
        """The aggregation's value for each run [a, b)."""
        func = self.agg.func
        n = len(a)
        every = np.ones(n, dtype=bool)
        if func is AggFunc.COUNT:
            if self.ok_rows is None:
                counts = b - a
            else:
                ok, _, idx = self.inputs(a, b, None)
                counts = self.cum[b] - self.cum[a] if len(idx) == 0 else kernels.count_ok(a, b, ok, idx)
            return Vec(Kind.NUM, np.asarray(counts).astype(np.float64), every)
        vec = self.vec
        assert vec is not None
        if func in (AggFunc.SUM, AggFunc.AVG):
            ok, values, idx = self.inputs(a, b, "fused")
            total, count = kernels.sum_ok(a, b, ok, values, True, idx)
            if func is AggFunc.SUM:
                return Vec(Kind.NUM, np.asarray(total, dtype=np.float64), every)
            has = np.asarray(count > 0)
            avg = np.where(has, total / np.maximum(count, 1), 0.0)
            return Vec(Kind.NUM, avg.astype(np.float64), has)
        if func in (AggFunc.MIN, AggFunc.MAX):
            numeric = vec.kind is Kind.NUM  # floats: fused; int64 times and codes: exact, with `ok`
            ok, values, idx = self.inputs(a, b, "fused" if numeric else "raw")
            value, found = kernels.extreme_ok(a, b, ok, values, func is AggFunc.MAX, numeric, idx)
            return Vec(vec.kind, np.asarray(value), np.asarray(found, dtype=bool), vec.vocab, vec.multi)
        if func in (AggFunc.FIRST, AggFunc.LAST):
            ok, _, idx = self.inputs(a, b, None)
            pos = np.asarray(kernels.edge_position(a, b, ok, func is AggFunc.LAST, idx), dtype=np.int64)
            rows = np.where(pos >= 0, self.child[np.maximum(pos, 0)] if len(self.child) else -1, -1)
            return vec.take(np.asarray(rows, dtype=np.int64))
        keep_items = func is AggFunc.LIST_DISTINCT
        ok, keys, idx = self.inputs(a, b, "keys")
        counts, ptr, items = kernels.distinct_ok(a, b, ok, keys, keep_items, idx)
        if func is AggFunc.COUNT_DISTINCT:
            return Vec(Kind.NUM, np.asarray(counts, dtype=np.float64), every)
        return ListResult(
            np.asarray(ptr, dtype=np.int64),
            np.asarray(items, dtype=np.int64),
            None if self.list_table is not None else vec.vocab,
            self.list_table,
        )
