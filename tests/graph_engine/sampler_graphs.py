"""Random temporal graphs for the sampler's property tests, and a brute-force reference sampler.

A `GraphPlan` (a few small numbers hypothesis can shrink) expands, through a seeded NumPy generator, into
2-4 tables with int or string keys, timed or static, foreign keys to any table (several to one parent,
self-links) with null and dangling values, times with ties and nulls, and a numerical and a text column.
`RandomGraph` writes it to Parquet, builds it with `build_local`, and keeps a row-id view of the raw data
computed independently of the builder (key → row through `lookup` only), which the reference walks in
plain Python.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from graph_engine.shards.local_builder import BuildConfig, build_local
from graph_engine.shards.reader import Graph
from graph_engine.spec import GraphSpec

SECOND = 1_000_000_000  # times are whole seconds, stored as ns


@dataclass(frozen=True)
class TablePlan:
    n_rows: int
    str_keys: bool
    timed: bool
    fks: tuple[int, ...]  # parent table index of each foreign key column fk0, fk1, ...


@dataclass(frozen=True)
class GraphPlan:
    tables: tuple[TablePlan, ...]
    seed: int
    time_span: int  # distinct whole seconds: small spans force ties
    null_time_pct: int
    missing_pct: int  # share of null and of dangling foreign-key values (each)


@st.composite
def graph_plans(draw: st.DrawFn, max_rows: int = 40) -> GraphPlan:
    n = draw(st.integers(2, 4))
    tables = []
    for _ in range(n):
        fks = tuple(draw(st.lists(st.integers(0, n - 1), max_size=2)))
        tables.append(
            TablePlan(draw(st.integers(1, max_rows)), draw(st.booleans()), draw(st.booleans()), fks)
        )
    if not any(t.fks for t in tables):  # at least one link
        tables[-1] = TablePlan(tables[-1].n_rows, tables[-1].str_keys, tables[-1].timed, (0,))
    return GraphPlan(
        tuple(tables),
        seed=draw(st.integers(0, 2**31 - 1)),
        time_span=draw(st.sampled_from([3, 10, 1000])),
        null_time_pct=draw(st.sampled_from([0, 10, 30])),
        missing_pct=draw(st.sampled_from([0, 10, 25])),
    )


def name(i: int) -> str:
    return f"t{i}"


class RandomGraph:
    """A built random graph and the raw data by graph row id: times (None: static table; TIME_NULL-free,
    nulls as `null`), parent rows of every foreign key (-1 for null or dangling), feature values."""

    def __init__(self, plan: GraphPlan, root: Path, rows_per_shard: int = 65536) -> None:
        self.plan = plan
        rng = np.random.default_rng(plan.seed)
        keys: list[list[int] | list[str]] = []
        for t in plan.tables:
            ints = rng.choice(10 * t.n_rows + 10, size=t.n_rows, replace=False) - 5 * t.n_rows
            keys.append([f"k{v}" for v in ints] if t.str_keys else [int(v) for v in ints])
        specs: dict[str, dict[str, object]] = {}
        self.raw_time: list[np.ndarray | None] = []  # ns, source order
        self.raw_null: list[np.ndarray] = []
        self.raw_fk: list[dict[str, np.ndarray]] = []  # parent source index or -1
        self.raw_x: list[np.ndarray] = []
        self.raw_x_valid: list[np.ndarray] = []
        self.raw_note: list[list[str | None]] = []
        for i, t in enumerate(plan.tables):
            n = t.n_rows
            cols: dict[str, pa.Array] = {"id": pa.array(keys[i])}
            stypes = {"id": "id", "x": "numerical", "note": "text"}
            secs = rng.integers(0, plan.time_span, size=n)
            null = rng.random(n) * 100 < plan.null_time_pct if t.timed else np.zeros(n, bool)
            if t.timed:
                cols["at"] = pa.array(secs * 1_000_000, pa.timestamp("us"), mask=null)
                stypes["at"] = "timestamp"
            self.raw_time.append(secs * SECOND if t.timed else None)
            self.raw_null.append(null)
            fks: dict[str, str] = {}
            raw_fk: dict[str, np.ndarray] = {}
            for j, p in enumerate(t.fks):
                col = f"fk{j}"
                parent = plan.tables[p]
                idx = rng.integers(0, parent.n_rows, size=n)
                u = rng.random(n) * 100
                is_null = u < plan.missing_pct
                dangling = (u >= plan.missing_pct) & (u < 2 * plan.missing_pct)
                vals: list[int | str | None] = []
                for r in range(n):
                    if is_null[r]:
                        vals.append(None)
                    elif dangling[r]:
                        vals.append(f"zz{r}" if parent.str_keys else 10**9 + r)
                    else:
                        vals.append(keys[p][idx[r]])
                cols[col] = pa.array(vals, pa.string() if parent.str_keys else pa.int64())
                stypes[col] = "id"
                fks[col] = name(p)
                raw_fk[col] = np.where(is_null | dangling, -1, idx)
            self.raw_fk.append(raw_fk)
            x = rng.normal(size=n)
            x_valid = rng.random(n) > 0.2
            cols["x"] = pa.array(x, mask=~x_valid)
            note = [None if rng.random() < 0.2 else f"n{r}-é" * int(rng.integers(0, 3)) for r in range(n)]
            cols["note"] = pa.array(note, pa.string())
            self.raw_x.append(x)
            self.raw_x_valid.append(x_valid)
            self.raw_note.append(note)
            pq.write_table(pa.table(cols), root / f"{name(i)}.parquet")
            specs[name(i)] = {
                "source": f"{name(i)}.parquet",
                "primary_key": "id",
                "time_column": "at" if t.timed else None,
                "foreign_keys": fks,
                "semantic_types": stypes,
            }
        spec = GraphSpec.from_dict({"tables": specs}, base_dir=root)
        build_local(spec, root / "graph", BuildConfig(rows_per_shard=rows_per_shard))
        self.graph = Graph.open(root / "graph")
        # source index → graph row id, through the public key lookup only
        self.row_of = [self.graph[name(i)].lookup(keys[i]) for i in range(len(plan.tables))]
        self.keys = keys
        self._by_row()

    def _by_row(self) -> None:
        """Raw data re-indexed by graph row id (the reference never reads the builder's arrays)."""
        self.time: list[np.ndarray | None] = []  # ns by row; None for static tables
        self.visible_null: list[np.ndarray] = []
        self.fk: list[dict[str, np.ndarray]] = []
        for i, t in enumerate(self.plan.tables):
            order = self.row_of[i]
            assert sorted(order.tolist()) == list(range(t.n_rows))
            rt = self.raw_time[i]
            if rt is None:
                self.time.append(None)
            else:
                tt = np.empty(t.n_rows, np.int64)
                tt[order] = rt
                self.time.append(tt)
            nn = np.empty(t.n_rows, bool)
            nn[order] = self.raw_null[i]
            self.visible_null.append(nn)
            fk: dict[str, np.ndarray] = {}
            for col, p in zip(self.raw_fk[i], t.fks, strict=True):
                f = np.empty(t.n_rows, np.int64)
                raw = self.raw_fk[i][col]
                f[order] = np.where(raw >= 0, self.row_of[p][np.maximum(raw, 0)], -1)
                fk[col] = f
            self.fk.append(fk)
        # children lists: (child table, fk column) → parent row → child rows sorted by (time, row)
        self.children: dict[tuple[int, str], dict[int, list[int]]] = {}
        for i in range(len(self.plan.tables)):
            for col in self.fk[i]:
                lists: dict[int, list[int]] = {}
                for r, p in enumerate(self.fk[i][col].tolist()):
                    if p >= 0:
                        lists.setdefault(p, []).append(r)
                for rows in lists.values():
                    rows.sort(key=self._order_key(i))
                self.children[(i, col)] = lists
        self.parent_of = {(i, col): p for i in range(len(self.plan.tables)) for col, p in self._fks(i)}

    def _order_key(self, t: int) -> Callable[[int], tuple[float, int]]:
        """Children order within a parent: by time (static first, null last), then row."""
        return lambda r: (self.sort_time(t, r), r)

    def _fks(self, i: int) -> list[tuple[str, int]]:
        return [(f"fk{j}", p) for j, p in enumerate(self.plan.tables[i].fks)]

    def sort_time(self, t: int, r: int) -> float:
        tt = self.time[t]
        if tt is None:
            return -np.inf
        return np.inf if self.visible_null[t][r] else float(tt[r])

    def visible(self, t: int, r: int, anchor: int) -> bool:
        tt = self.time[t]
        if tt is None:
            return True
        return bool(not self.visible_null[t][r] and tt[r] <= anchor)

    def eligible(self, child: int, col: str, parent_row: int, anchor: int) -> list[int]:
        """Children of `parent_row` through child.col visible at `anchor`, oldest first."""
        return [r for r in self.children[(child, col)].get(parent_row, []) if self.visible(child, r, anchor)]

    def times(self) -> list[int]:
        return sorted({int(v) for t in self.time if t is not None for v in t.tolist()})

    def reference(
        self, seed_table: int, seed_row: int, anchor: int, fanout: dict[tuple[int, str], tuple[int, ...]]
    ) -> dict[tuple[int, int], int]:
        """Brute-force 'recent' sampling of one seed: {(table, row): hop}, unlimited node budget."""
        hops = len(next(iter(fanout.values()))) if fanout else 0
        seen = {(seed_table, seed_row): 0}
        frontier = [(seed_table, seed_row)]
        for h in range(hops):
            found: list[tuple[int, int]] = []
            for t, r in frontier:
                for col, p in self._fks(t):
                    pr = int(self.fk[t][col][r])
                    if pr >= 0 and self.visible(p, pr, anchor):
                        found.append((p, pr))
                for (c, col), p in self.parent_of.items():
                    if p != t:
                        continue
                    k = fanout[(c, col)][h]
                    if k > 0:
                        found += [(c, u) for u in self.eligible(c, col, r, anchor)[-k:]]
            frontier = []
            for node in found:
                if node not in seen:
                    seen[node] = h + 1
                    frontier.append(node)
        return seen
