"""Temporal subgraph sampling: the neighbourhood of each (seed row, anchor time), never seeing the future.

For each hop, every node of the previous hop adds
  * its parents through each foreign key (skipped when the link is missing or the parent's time is after
    the anchor), and
  * through each foreign key pointing at its table, its most recent `k` children with time <= anchor
    (one binary search on the time-sorted CSR), or `k` uniformly random ones among those.
Nodes are deduplicated per seed. Static rows (tables without time) are always visible.

The loops are compiled with numba and batched over seeds; Python only iterates over (hop, table, edge
type). Random choices come from a counter-based hash of (seed row, anchor, hop, edge, draw), so a seed's
subgraph does not depend on which other seeds share its batch or how many workers split the work: the
output is identical for a given `random_seed` whatever the batching.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numba
import numpy as np

from graph_engine.errors import RelfmError
from graph_engine.shards.format import TIME_NULL, TIME_STATIC
from graph_engine.shards.reader import Graph

NO_TIME = np.iinfo(np.int64).min  # rel_time of rows without a time (static tables)
_EMPTY_I64 = np.empty(0, dtype=np.int64)


@dataclass(frozen=True)
class EdgeType:
    """One direction of one foreign key: `child.fk -> parent` (to_parent) or its reverse."""

    index: int
    child: str
    fk: str
    parent: str
    to_parent: bool

    @property
    def src(self) -> str:
        return self.child if self.to_parent else self.parent

    @property
    def dst(self) -> str:
        return self.parent if self.to_parent else self.child

    @property
    def name(self) -> str:
        return (
            f"{self.child}.{self.fk}->{self.parent}"
            if self.to_parent
            else f"{self.parent}<-{self.child}.{self.fk}"
        )


@dataclass(frozen=True)
class SamplerConfig:
    """Fan-outs per hop (children per node per edge type); `edge_fanouts` overrides them per edge type,
    keyed by `child.fk` (e.g. `results.driverId`), with one number per hop."""

    fanouts: tuple[int, ...] = (16, 8)
    edge_fanouts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    strategy: Literal["recent", "uniform"] = "recent"
    max_nodes: int = 512
    random_seed: int = 0

    @property
    def hops(self) -> int:
        return len(self.fanouts)


@dataclass
class Subgraph:
    """Sampled nodes of a batch, grouped by seed: nodes of seed i are [seed_ptr[i], seed_ptr[i+1]);
    the first node of each seed is the seed itself (hop 0, parent -1)."""

    seed_ptr: np.ndarray  # int64 [B + 1]
    table: np.ndarray  # int16 [N] index into table_names
    row: np.ndarray  # int64 [N]
    hop: np.ndarray  # int8 [N]
    parent: (
        np.ndarray
    )  # int32 [N] local index (within the seed) of the node it was reached from; -1 for seeds
    edge: np.ndarray  # int16 [N] edge type it was reached through; -1 for seeds
    rel_time: np.ndarray  # int64 [N] anchor - row time in ns; NO_TIME for static rows
    anchor: np.ndarray  # int64 [B]
    table_names: list[str]
    edge_types: list[EdgeType]

    @property
    def num_seeds(self) -> int:
        return len(self.seed_ptr) - 1

    @property
    def num_nodes(self) -> int:
        return len(self.row)

    def seed_of_node(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_seeds), np.diff(self.seed_ptr))

    def nodes_of(self, i: int) -> slice:
        return slice(int(self.seed_ptr[i]), int(self.seed_ptr[i + 1]))


# ---------------------------------------------------------------------------------------------- kernels
@numba.njit(cache=True, inline="always")
def _mix(x: np.uint64) -> np.uint64:
    # splitmix64 finaliser: a counter-based random number, reproducible without RNG state.
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True)
def _insert(
    keys: np.ndarray,
    cap: int,
    seeds: np.ndarray,
    table_id: int,
    rows: np.ndarray,
    counts: np.ndarray,
    max_nodes: int,
) -> np.ndarray:
    """Inserts (table, row) into each seed's hash set; True where new and the seed has room."""
    keep = np.zeros(len(rows), dtype=np.bool_)
    mask = cap - 1
    for i in range(len(rows)):
        s = seeds[i]
        if counts[s] >= max_nodes:
            continue
        key = (np.int64(table_id) << np.int64(48)) | rows[i]
        h = np.int64(_mix(np.uint64(key)) & np.uint64(mask))
        base = s * cap
        while True:
            k = keys[base + h]
            if k == -1:
                keys[base + h] = key
                keep[i] = True
                counts[s] += 1
                break
            if k == key:
                break
            h = (h + 1) & mask
    return keep


@numba.njit(cache=True)
def _parents(
    fk: np.ndarray, ptime: np.ndarray, rows: np.ndarray, anchors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Parent row of each frontier node, or -1 (missing link, or parent later than the anchor)."""
    out = np.full(len(rows), -1, dtype=np.int64)
    rel = np.empty(len(rows), dtype=np.int64)
    has_time = len(ptime) > 0
    for i in range(len(rows)):
        p = fk[rows[i]]
        if p < 0:
            continue
        if has_time:
            t = ptime[p]
            if t == TIME_STATIC:
                rel[i] = NO_TIME
            elif t > anchors[i]:
                continue
            else:
                rel[i] = anchors[i] - t
        else:
            rel[i] = NO_TIME
        out[i] = p
    return out, rel


@numba.njit(cache=True)
def _children(
    start: np.ndarray,
    count: np.ndarray,
    child: np.ndarray,
    ctime: np.ndarray,
    rows: np.ndarray,
    anchors: np.ndarray,
    seed_rows: np.ndarray,
    k: int,
    uniform: bool,
    salt: np.uint64,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to k children with time <= anchor per frontier node: (frontier index, child row, rel time)."""
    n = len(rows)
    lo_arr = np.empty(n, dtype=np.int64)
    hi_arr = np.empty(n, dtype=np.int64)
    total = 0
    for i in range(n):
        s = start[rows[i]]
        c = count[rows[i]]
        a = anchors[i]
        # first position with time > anchor, by binary search on the time-sorted segment
        lo, hi = s, s + c
        while lo < hi:
            mid = (lo + hi) >> 1
            if ctime[mid] <= a:
                lo = mid + 1
            else:
                hi = mid
        lo_arr[i] = s
        hi_arr[i] = lo
        total += min(k, lo - s)
    src = np.empty(total, dtype=np.int64)
    out = np.empty(total, dtype=np.int64)
    rel = np.empty(total, dtype=np.int64)
    j = 0
    for i in range(n):
        s, e = lo_arr[i], hi_arr[i]
        m = e - s
        take = min(k, m)
        if take == 0:
            continue
        if not uniform or take == m:
            # the most recent `take`, newest first
            for q in range(take):
                pos = e - 1 - q
                src[j] = i
                out[j] = child[pos]
                t = ctime[pos]
                rel[j] = NO_TIME if t == TIME_STATIC else anchors[i] - t
                j += 1
        else:
            # k distinct positions by rejection from a hash counter (k is small, so rejections are rare)
            base = _mix(np.uint64(seed_rows[i]) ^ _mix(np.uint64(anchors[i]) ^ salt))
            chosen = np.empty(take, dtype=np.int64)
            got = 0
            draw = np.uint64(0)
            while got < take:
                r = np.int64(_mix(base + draw) % np.uint64(m))
                draw += np.uint64(1)
                dup = False
                for q in range(got):
                    if chosen[q] == r:
                        dup = True
                        break
                if not dup:
                    chosen[got] = r
                    got += 1
            chosen.sort()
            for q in range(take):
                pos = e - 1 - chosen[q]
                src[j] = i
                out[j] = child[pos]
                t = ctime[pos]
                rel[j] = NO_TIME if t == TIME_STATIC else anchors[i] - t
                j += 1
    return src, out, rel


# ---------------------------------------------------------------------------------------------- driver
class TemporalSampler:
    """Samples temporal subgraphs from one opened graph (open once per process, reuse for many batches)."""

    def __init__(self, graph: Graph, config: SamplerConfig | None = None) -> None:
        self.graph = graph
        self.cfg = config or SamplerConfig()
        self.table_names = list(graph.table_names)
        self.table_id = {t: i for i, t in enumerate(self.table_names)}
        self.edge_types: list[EdgeType] = []
        for child, fk, parent in graph.schema.edges():
            self.edge_types.append(EdgeType(len(self.edge_types), child, fk, parent, True))
            self.edge_types.append(EdgeType(len(self.edge_types), child, fk, parent, False))
        for key, fan in self.cfg.edge_fanouts.items():
            if not any(f"{e.child}.{e.fk}" == key for e in self.edge_types):
                raise RelfmError(
                    f"sampler: edge_fanouts names unknown link '{key}' (use child_table.fk_column)"
                )
            if len(fan) != self.cfg.hops:
                raise RelfmError(f"sampler: edge_fanouts['{key}'] needs {self.cfg.hops} numbers, one per hop")
        self._out_edges: dict[str, list[EdgeType]] = {t: [] for t in self.table_names}
        for e in self.edge_types:
            self._out_edges[e.src].append(e)

    def fanout(self, e: EdgeType, hop: int) -> int:
        custom = self.cfg.edge_fanouts.get(f"{e.child}.{e.fk}")
        return int(custom[hop] if custom else self.cfg.fanouts[hop])

    def _time(self, table: str) -> np.ndarray:
        t = self.graph.table(table).time
        return _EMPTY_I64 if t is None else t

    def sample(self, seed_table: str, seed_rows: np.ndarray, anchors: np.ndarray) -> Subgraph:
        rows0 = np.ascontiguousarray(seed_rows, dtype=np.int64)
        anchors = np.ascontiguousarray(anchors, dtype=np.int64)
        b = len(rows0)
        if len(anchors) != b:
            raise RelfmError(f"sampler: {b} seed rows but {len(anchors)} anchor times")
        tab = self.graph.table(seed_table)
        if b and (rows0.min() < 0 or rows0.max() >= tab.num_rows):
            raise RelfmError(
                f"sampler: seed rows out of range for table '{seed_table}' ({tab.num_rows} rows)"
            )
        cfg = self.cfg
        cap = 1 << int(np.ceil(np.log2(max(2 * cfg.max_nodes, 2))))
        keys = np.full(b * cap, -1, dtype=np.int64)
        counts = np.zeros(b, dtype=np.int64)
        seed_ids = np.arange(b, dtype=np.int64)
        sid = self.table_id[seed_table]
        _insert(keys, cap, seed_ids, sid, rows0, counts, cfg.max_nodes)
        stime = self._time(seed_table)
        rel0 = np.full(b, NO_TIME, dtype=np.int64)
        if len(stime):
            st = stime[rows0]
            ok = (st != TIME_STATIC) & (st != TIME_NULL)
            rel0[ok] = anchors[ok] - st[ok]
        # global node lists (seed-interleaved), regrouped by seed at the end
        parts_seed = [seed_ids]
        parts_table = [np.full(b, sid, dtype=np.int16)]
        parts_row = [rows0]
        parts_hop = [np.zeros(b, dtype=np.int8)]
        parts_parent = [np.full(b, -1, dtype=np.int64)]
        parts_edge = [np.full(b, -1, dtype=np.int16)]
        parts_rel = [rel0]
        total = b
        frontier = {
            seed_table: (seed_ids, rows0, np.arange(b, dtype=np.int64))
        }  # seed idx, row, global node idx
        seed_rows_by_seed = rows0
        for hop in range(cfg.hops):
            nxt: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
            for table, (fs, fr, fg) in frontier.items():
                fa = anchors[fs]
                for e in self._out_edges[table]:
                    if e.to_parent:
                        prow, rel = _parents(self.graph.table(e.child).fk(e.fk), self._time(e.parent), fr, fa)
                        src = np.flatnonzero(prow >= 0)
                        new_rows, new_rel = prow[src], rel[src]
                    else:
                        k = self.fanout(e, hop)
                        if k <= 0:
                            continue
                        csr = self.graph.table(e.parent).csr(e.child, e.fk)
                        salt = np.uint64(
                            (cfg.random_seed * 1_000_003 + hop * 7919 + e.index) & 0xFFFFFFFFFFFF
                        )
                        src, new_rows, new_rel = _children(
                            csr.start,
                            csr.count,
                            csr.child,
                            csr.time,
                            fr,
                            fa,
                            seed_rows_by_seed[fs],
                            k,
                            cfg.strategy == "uniform",
                            salt,
                        )
                    if len(src) == 0:
                        continue
                    seeds = fs[src]
                    keep = _insert(keys, cap, seeds, self.table_id[e.dst], new_rows, counts, cfg.max_nodes)
                    if not keep.any():
                        continue
                    seeds, new_rows, new_rel, par = seeds[keep], new_rows[keep], new_rel[keep], fg[src][keep]
                    gidx = np.arange(total, total + len(seeds), dtype=np.int64)
                    total += len(seeds)
                    parts_seed.append(seeds)
                    parts_table.append(np.full(len(seeds), self.table_id[e.dst], dtype=np.int16))
                    parts_row.append(new_rows)
                    parts_hop.append(np.full(len(seeds), hop + 1, dtype=np.int8))
                    parts_parent.append(par)
                    parts_edge.append(np.full(len(seeds), e.index, dtype=np.int16))
                    parts_rel.append(new_rel)
                    nxt.setdefault(e.dst, []).append((seeds, new_rows, gidx))
            frontier = {
                t: (
                    np.concatenate([x[0] for x in v]),
                    np.concatenate([x[1] for x in v]),
                    np.concatenate([x[2] for x in v]),
                )
                for t, v in nxt.items()
            }
            if not frontier:
                break
        return self._group(
            b, anchors, parts_seed, parts_table, parts_row, parts_hop, parts_parent, parts_edge, parts_rel
        )

    def _group(
        self,
        b: int,
        anchors: np.ndarray,
        seed: list[np.ndarray],
        table: list[np.ndarray],
        row: list[np.ndarray],
        hop: list[np.ndarray],
        parent: list[np.ndarray],
        edge: list[np.ndarray],
        rel: list[np.ndarray],
    ) -> Subgraph:
        s = np.concatenate(seed)
        order = np.argsort(s, kind="stable")  # by seed, keeping hop/discovery order inside each seed
        ptr = np.zeros(b + 1, dtype=np.int64)
        np.cumsum(np.bincount(s, minlength=b), out=ptr[1:])
        new_pos = np.empty(len(order), dtype=np.int64)
        new_pos[order] = np.arange(len(order))
        par_global = np.concatenate(parent)[order]
        s_sorted = s[order]
        par_local = np.where(par_global >= 0, new_pos[np.maximum(par_global, 0)] - ptr[s_sorted], -1).astype(
            np.int32
        )
        return Subgraph(
            seed_ptr=ptr,
            table=np.concatenate(table)[order],
            row=np.concatenate(row)[order],
            hop=np.concatenate(hop)[order],
            parent=par_local,
            edge=np.concatenate(edge)[order],
            rel_time=np.concatenate(rel)[order],
            anchor=anchors,
            table_names=self.table_names,
            edge_types=self.edge_types,
        )


def gather(graph: Graph, sub: Subgraph, table: str, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(node indices, values, valid) of one scalar column for every sampled node of `table`."""
    tid = sub.table_names.index(table)
    nodes = np.flatnonzero(sub.table == tid)
    col = graph.table(table).column(column)
    rows = sub.row[nodes]
    if col.value is None:
        raise RelfmError(f"column '{table}.{column}' is not a scalar column")
    return nodes, col.value[rows], col.valid[rows]
