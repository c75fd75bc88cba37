"""Temporal subgraph sampling: the neighbourhood of each (seed row, anchor time), never seeing the future.

For each hop, every node of the previous hop adds
  * its parents through each foreign key (skipped when the link is missing or the parent's time is after
    the anchor), and
  * through each foreign key pointing at its table, its most recent `k` children with time <= anchor
    (one binary search on the time-sorted CSR), or `k` uniformly random ones among those.
Nodes are deduplicated per seed. Static rows (tables without time) are always visible.

The loops are compiled with numba and batched over seeds; Python only iterates over (hop, table, edge
type). Random choices come from a counter-based hash of (seed row, anchor, hop, edge, node, draw), so a seed's
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


@numba.njit(cache=True, inline="always")
def _slot(s: np.int64, key: np.int64, mask: int) -> np.int64:
    return np.int64(_mix(np.uint64(key) ^ _mix(np.uint64(s))) & np.uint64(mask))


@numba.njit(cache=True, inline="always")
def _add(
    slot_seed: np.ndarray,
    slot_node: np.ndarray,
    counts: np.ndarray,
    max_nodes: int,
    s: np.int64,
    key: np.int64,
) -> bool:
    """Adds (seed, table<<48|row) to the batch's hash set: True where new and the seed has room."""
    if counts[s] >= max_nodes:
        return False
    mask = len(slot_seed) - 1
    h = _slot(s, key, mask)
    while True:
        k = slot_seed[h]
        if k == -1:
            slot_seed[h] = s
            slot_node[h] = key
            counts[s] += 1
            return True
        if k == s and slot_node[h] == key:
            return False
        h = (h + 1) & mask


@numba.njit(cache=True)
def _rehash(slot_seed: np.ndarray, slot_node: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    new_seed = np.full(cap, -1, dtype=np.int64)
    new_node = np.empty(cap, dtype=np.int64)
    mask = cap - 1
    for j in range(len(slot_seed)):
        s = slot_seed[j]
        if s == -1:
            continue
        key = slot_node[j]
        h = _slot(s, key, mask)
        while new_seed[h] != -1:
            h = (h + 1) & mask
        new_seed[h] = s
        new_node[h] = key
    return new_seed, new_node


@numba.njit(cache=True, inline="always")
def _visible_end(ctime: np.ndarray, lo: np.int64, hi: np.int64, anchor: np.int64) -> np.int64:
    """First position in the time-sorted segment [lo, hi) with time > anchor (binary search)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if ctime[mid] <= anchor:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(cache=True, inline="always")
def _pick(
    chosen: np.ndarray,
    take: int,
    m: int,
    uniform: bool,
    seed_row: np.int64,
    anchor: np.int64,
    row: np.int64,
    salt: np.uint64,
) -> None:
    """Fills chosen[:take] with offsets back from the newest eligible child (0 = newest): the most recent
    ones, or `take` distinct uniform ones in increasing offset order."""
    if not uniform or take == m:
        for q in range(take):
            chosen[q] = q
        return
    # rejection from a hash counter (k is small, so rejections are rare); the frontier row is part of
    # the counter, or every node of a seed would pick the same positions
    base = _mix(np.uint64(seed_row) ^ _mix(np.uint64(anchor) ^ _mix(np.uint64(row) ^ salt)))
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
    chosen[:take].sort()


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
    """Up to k children with time <= anchor per frontier node, before deduplication: (frontier index,
    child row, rel time)."""
    n = len(rows)
    ends = np.empty(n, dtype=np.int64)
    total = 0
    for i in range(n):
        lo = start[rows[i]]
        ends[i] = _visible_end(ctime, lo, lo + count[rows[i]], anchors[i])
        total += min(k, ends[i] - lo)
    src = np.empty(total, dtype=np.int64)
    out = np.empty(total, dtype=np.int64)
    rel = np.empty(total, dtype=np.int64)
    chosen = np.empty(max(k, 1), dtype=np.int64)
    j = 0
    for i in range(n):
        e = ends[i]
        m = e - start[rows[i]]
        take = min(k, m)
        _pick(chosen, take, m, uniform, seed_rows[i], anchors[i], rows[i], salt)
        for q in range(take):
            pos = e - 1 - chosen[q]
            src[j] = i
            out[j] = child[pos]
            t = ctime[pos]
            rel[j] = NO_TIME if t == TIME_STATIC else anchors[i] - t
            j += 1
    return src, out, rel


@numba.njit(cache=True)
def _add_seeds(
    rows: np.ndarray,
    table_id: int,
    slot_seed: np.ndarray,
    slot_node: np.ndarray,
    counts: np.ndarray,
    max_nodes: int,
) -> None:
    """Each seed is a node of its own subgraph (seeds sharing a row stay separate subgraphs)."""
    key_hi = np.int64(table_id) << np.int64(48)
    for s in range(len(rows)):
        _add(slot_seed, slot_node, counts, max_nodes, np.int64(s), key_hi | rows[s])


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
def _append(
    front: np.ndarray,
    src: np.ndarray,
    cand: np.ndarray,
    rel: np.ndarray,
    nodes: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    n: int,
    slot_seed: np.ndarray,
    slot_node: np.ndarray,
    counts: np.ndarray,
    max_nodes: int,
    table_id: int,
    edge_id: int,
    hop: int,
) -> int:
    """Appends the candidates (reached from frontier node front[src[i]]; skipped where cand < 0) that
    their seed has not sampled yet and has room for. Kept apart from the kernels that find candidates:
    their loops of independent random reads overlap in the memory system, which the branchy hash
    probing here would prevent. The caller has made room for len(cand) nodes."""
    bseed, btable, brow, bhop, bparent, bedge, brel = nodes
    key_hi = np.int64(table_id) << np.int64(48)
    for i in range(len(cand)):
        c = cand[i]
        if c < 0:
            continue
        g = front[src[i]]
        s = bseed[g]
        if _add(slot_seed, slot_node, counts, max_nodes, s, key_hi | c):
            bseed[n], btable[n], brow[n], bhop[n] = s, table_id, c, hop
            bparent[n], bedge[n], brel[n] = g, edge_id, rel[i]
            n += 1
    return n


@numba.njit(cache=True)
def _by_seed(bseed: np.ndarray, bparent: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stable counting sort of the nodes by seed: (order, seed_ptr, parent slot local to the seed)."""
    n = len(bseed)
    ptr = np.zeros(b + 1, dtype=np.int64)
    for i in range(n):
        ptr[bseed[i] + 1] += 1
    for i in range(b):
        ptr[i + 1] += ptr[i]
    pos = ptr[:-1].copy()
    order = np.empty(n, dtype=np.int64)
    new_pos = np.empty(n, dtype=np.int64)
    for i in range(n):
        s = bseed[i]
        order[pos[s]] = i
        new_pos[i] = pos[s]
        pos[s] += 1
    parent = np.empty(n, dtype=np.int32)
    for q in range(n):
        g = bparent[order[q]]
        parent[q] = -1 if g < 0 else new_pos[g] - ptr[bseed[g]]
    return order, ptr, parent


class _Batch:
    """The nodes of one batch in discovery order (hop by hop, seeds interleaved) and their hash set;
    both grow by doubling before each append."""

    def __init__(self, b: int, max_nodes: int) -> None:
        cap = max(16, 8 * b)
        self.n = 0
        self.nodes = _buffers(cap)
        self.counts = np.zeros(b, dtype=np.int64)
        self.max_nodes = max_nodes
        self.slot_seed = np.full(1 << (2 * cap).bit_length(), -1, dtype=np.int64)
        self.slot_node = np.empty(len(self.slot_seed), dtype=np.int64)

    def grow(self, extra: int) -> None:
        """Makes room for `extra` more nodes."""
        need = self.n + extra
        if need > len(self.nodes[0]):
            cap = max(need, 2 * len(self.nodes[0]))
            new = _buffers(cap)
            for old, arr in zip(self.nodes, new, strict=True):
                arr[: self.n] = old[: self.n]
            self.nodes = new
        if 2 * need > len(self.slot_seed):
            self.slot_seed, self.slot_node = _rehash(
                self.slot_seed, self.slot_node, 1 << (4 * need).bit_length()
            )


def _buffers(
    cap: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """seed, table, row, hop, parent (global index), edge, rel time."""
    return (
        np.empty(cap, dtype=np.int64),
        np.empty(cap, dtype=np.int16),
        np.empty(cap, dtype=np.int64),
        np.empty(cap, dtype=np.int8),
        np.empty(cap, dtype=np.int64),
        np.empty(cap, dtype=np.int16),
        np.empty(cap, dtype=np.int64),
    )


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
        """Anchors are int64 ns or datetime64 (any unit; converted to ns, as the graph's times are)."""
        rows0 = np.ascontiguousarray(seed_rows, dtype=np.int64)
        anchors = np.asarray(anchors)
        if anchors.dtype.kind == "M":
            anchors = anchors.astype("datetime64[ns]").view(np.int64)
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
        bt = _Batch(b, cfg.max_nodes)
        sid = self.table_id[seed_table]
        bseed, btable, brow, bhop, bparent, bedge, brel = bt.nodes
        bseed[:b] = np.arange(b)
        btable[:b], brow[:b], bhop[:b], bparent[:b], bedge[:b] = sid, rows0, 0, -1, -1
        brel[:b] = NO_TIME
        stime = self._time(seed_table)
        if len(stime):
            st = stime[rows0]
            ok = (st != TIME_STATIC) & (st != TIME_NULL)
            brel[:b][ok] = anchors[ok] - st[ok]
        bt.n = b
        _add_seeds(rows0, sid, bt.slot_seed, bt.slot_node, bt.counts, cfg.max_nodes)
        hop_start, hop_end = 0, b
        uniform = cfg.strategy == "uniform"
        for hop in range(cfg.hops):
            # Frontier tables in table order, and within a table in discovery order: the order of
            # expansion decides each seed's parent slots and what the node budget cuts, so it must not
            # depend on which other seeds share the batch.
            tables = bt.nodes[1][hop_start:hop_end]
            for table in self.table_names:
                front = hop_start + np.flatnonzero(tables == self.table_id[table])
                if not len(front):
                    continue
                fs, fr = bt.nodes[0][front], bt.nodes[2][front]
                fa = anchors[fs]
                every = np.arange(len(front))
                for e in self._out_edges[table]:
                    if e.to_parent:
                        cand, rel = _parents(self.graph.table(e.child).fk(e.fk), self._time(e.parent), fr, fa)
                        src = every
                    else:
                        k = self.fanout(e, hop)
                        if k <= 0:
                            continue
                        csr = self.graph.table(e.parent).csr(e.child, e.fk)
                        salt = np.uint64(
                            (cfg.random_seed * 1_000_003 + hop * 7919 + e.index) & 0xFFFFFFFFFFFF
                        )
                        src, cand, rel = _children(
                            csr.start, csr.count, csr.child, csr.time, fr, fa, rows0[fs], k, uniform, salt
                        )
                    bt.grow(len(cand))
                    bt.n = _append(
                        front,
                        src,
                        cand,
                        rel,
                        bt.nodes,
                        bt.n,
                        bt.slot_seed,
                        bt.slot_node,
                        bt.counts,
                        cfg.max_nodes,
                        self.table_id[e.dst],
                        e.index,
                        hop + 1,
                    )
            hop_start, hop_end = hop_end, bt.n
            if hop_start == hop_end:
                break
        n = bt.n
        bseed, btable, brow, bhop, bparent, bedge, brel = (a[:n] for a in bt.nodes)
        order, ptr, parent = _by_seed(bseed, bparent, b)
        return Subgraph(
            seed_ptr=ptr,
            table=btable[order],
            row=brow[order],
            hop=bhop[order],
            parent=parent,
            edge=bedge[order],
            rel_time=brel[order],
            anchor=anchors,
            table_names=self.table_names,
            edge_types=self.edge_types,
        )


def gather(graph: Graph, sub: Subgraph, table: str, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(node indices, values, valid) of one scalar column for every sampled node of `table`."""
    view = graph.table(table)  # unknown table: a one-line error with a suggestion
    tid = sub.table_names.index(table)
    nodes = np.flatnonzero(sub.table == tid)
    col = view.column(column)
    rows = sub.row[nodes]
    if col.value is None:
        raise RelfmError(f"column '{table}.{column}' is not a scalar column")
    return nodes, col.value[rows], col.valid[rows]
