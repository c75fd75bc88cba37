"""The sampler's outputs are exactly those of its previous, hop-by-hop batched implementation (kept
here as the reference): the same arrays in the same order for both strategies, any node budget and any
batching. The fused per-seed kernel that replaced it (for speed) must not change a single sample."""

from __future__ import annotations

from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sampler_graphs import GraphPlan, RandomGraph, TablePlan, graph_plans, name
from test_sampler import BIG, _build, make_query

from graph_engine.errors import RelfmError
from graph_engine.sampler import (
    NO_TIME,
    SamplerConfig,
    Subgraph,
    TemporalSampler,
    _children,
    _mix,
)
from graph_engine.shards.format import TIME_NULL, TIME_STATIC

pytestmark = pytest.mark.unit


# ------------------------------------------------------------------------- the previous implementation
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


def reference_sample(
    s: TemporalSampler, seed_table: str, seed_rows: np.ndarray, anchors: np.ndarray
) -> Subgraph:
    """TemporalSampler.sample as it was: per (hop, table, edge type) kernels over the whole batch, a
    batch-wide (seed, node) hash set, then a counting sort by seed."""
    rows0 = np.ascontiguousarray(seed_rows, dtype=np.int64)
    anchors = np.asarray(anchors)
    if anchors.dtype.kind == "M":
        anchors = anchors.astype("datetime64[ns]").view(np.int64)
    anchors = np.ascontiguousarray(anchors, dtype=np.int64)
    b = len(rows0)
    if len(anchors) != b:
        raise RelfmError(f"sampler: {b} seed rows but {len(anchors)} anchor times")
    tab = s.graph.table(seed_table)
    if b and (rows0.min() < 0 or rows0.max() >= tab.num_rows):
        raise RelfmError(f"sampler: seed rows out of range for table '{seed_table}' ({tab.num_rows} rows)")
    cfg = s.cfg
    bt = _Batch(b, cfg.max_nodes)
    sid = s.table_id[seed_table]
    bseed, btable, brow, bhop, bparent, bedge, brel = bt.nodes
    bseed[:b] = np.arange(b)
    btable[:b], brow[:b], bhop[:b], bparent[:b], bedge[:b] = sid, rows0, 0, -1, -1
    brel[:b] = NO_TIME
    stime = s._time(seed_table)
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
        for table in s.table_names:
            front = hop_start + np.flatnonzero(tables == s.table_id[table])
            if not len(front):
                continue
            fs, fr = bt.nodes[0][front], bt.nodes[2][front]
            fa = anchors[fs]
            every = np.arange(len(front))
            for e in s._out_edges[table]:
                if e.to_parent:
                    cand, rel = _parents(s.graph.table(e.child).fk(e.fk), s._time(e.parent), fr, fa)
                    src = every
                else:
                    k = s.fanout(e, hop)
                    if k <= 0:
                        continue
                    csr = s.graph.table(e.parent).csr(e.child, e.fk)
                    salt = np.uint64((cfg.random_seed * 1_000_003 + hop * 7919 + e.index) & 0xFFFFFFFFFFFF)
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
                    s.table_id[e.dst],
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
        table_names=s.table_names,
        edge_types=s.edge_types,
    )


# ------------------------------------------------------------------------------------------------ tests
def _arrays(sub: Subgraph) -> list[np.ndarray]:
    return [sub.seed_ptr, sub.table, sub.row, sub.hop, sub.parent, sub.edge, sub.rel_time, sub.anchor]


def assert_same(got: Subgraph, want: Subgraph) -> None:
    for g, w in zip(_arrays(got), _arrays(want), strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        assert np.array_equal(g, w)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    plan=graph_plans(),
    qseed=st.integers(0, 2**32 - 1),
    strategy=st.sampled_from(["recent", "uniform"]),
    max_nodes=st.sampled_from([0, 1, 3, 8, 512, 10**6]),
)
@example(plan=BIG, qseed=7, strategy="recent", max_nodes=10**6)
@example(plan=BIG, qseed=7, strategy="uniform", max_nodes=40)
def test_same_subgraphs_as_the_previous_implementation(
    plan: GraphPlan, qseed: int, strategy: str, max_nodes: int
) -> None:
    rg, tmp = _build(plan)
    with tmp:
        q = make_query(rg, qseed, max_seeds=40)
        cfg = SamplerConfig(q.fanouts, q.edge_fanouts, strategy, max_nodes, q.random_seed)  # type: ignore[arg-type]
        s = TemporalSampler(rg.graph, cfg)
        t = name(q.table)
        assert_same(s.sample(t, q.rows, q.anchors), reference_sample(s, t, q.rows, q.anchors))
        # a second batch on the same sampler (its output buffers are sized from the first)
        rows, anchors = np.tile(q.rows, 3), np.tile(q.anchors, 3)
        assert_same(s.sample(t, rows, anchors), reference_sample(s, t, rows, anchors))


def test_large_fanouts_grow_the_buffers_and_the_seed_set(tmp_path: object) -> None:
    """Seeds with hundreds of nodes: the per-seed set and the output arrays grow mid-batch."""
    rg = RandomGraph(BIG, tmp_path)  # type: ignore[arg-type]
    rows = np.arange(0, 300, 3)
    anchors = np.full(len(rows), 5_000 * 10**9)
    for fanouts in ((40, 20), (64,), ()):
        for strategy in ("recent", "uniform"):
            cfg = SamplerConfig(fanouts, strategy=strategy, max_nodes=10**6)  # type: ignore[arg-type]
            s = TemporalSampler(rg.graph, cfg)
            s._nodes_per_seed = 1.0  # start from buffers far too small
            got = s.sample(name(0), rows, anchors)
            assert_same(got, reference_sample(s, name(0), rows, anchors))
            s._ahead = False  # without the prefetching, which must not change anything either
            assert_same(s.sample(name(0), rows, anchors), got)
    assert got.num_nodes == len(rows)  # no hops: the seeds alone


def test_child_ranges_at_a_shard_boundary_of_the_parent(tmp_path: Path) -> None:
    """A parent table of two shards: the walk reads a row's child range as [start of the row, start of
    the next row) except at a shard's last row and the table's last row, where the segments are padded
    apart or there is no next row, and reads the count there."""
    plan = GraphPlan(
        (TablePlan(70_000, False, True, ()), TablePlan(200_000, False, True, (0,))),
        seed=5,
        time_span=5_000,
        null_time_pct=10,
        missing_pct=10,
    )
    rg = RandomGraph(plan, tmp_path)
    parent = rg.graph[name(0)]
    csr = parent.csr(name(1), "fk0")
    assert len(parent.meta["arrays"][f"rev.{name(1)}.fk0.start"]["files"]) == 2
    edge_rows = [65_534, 65_535, 65_536, 69_999]
    assert all(csr.count[r] > 0 for r in edge_rows)
    assert csr.start[65_536] > csr.start[65_535] + csr.count[65_535]  # padded apart
    rows = np.array(edge_rows * 2 + list(range(65_500, 65_600)), np.int64)
    anchors = np.full(len(rows), 5_000 * 10**9)
    for table, seeds in ((name(0), rows), (name(1), np.arange(0, 200_000, 997))):
        for strategy in ("recent", "uniform"):
            cfg = SamplerConfig((4, 3), strategy=strategy, max_nodes=10**6)  # type: ignore[arg-type]
            s = TemporalSampler(rg.graph, cfg)
            a = np.resize(anchors, len(seeds))
            got = s.sample(table, seeds, a)
            assert_same(got, reference_sample(s, table, seeds, a))
            s._ahead = False
            assert_same(s.sample(table, seeds, a), got)


def test_graphs_without_foreign_keys_beside_the_children(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Graphs of format version 1 do not store the child's other foreign keys beside a CSR's children:
    the walk then reads them at the child's row, with the same result."""
    from graph_engine.shards.reader import TableView

    rg = RandomGraph(BIG, tmp_path)
    rows = np.arange(0, 300, 7)
    anchors = np.full(len(rows), 4_000 * 10**9)
    cfg = SamplerConfig((4, 3, 2), max_nodes=10**6)
    want = TemporalSampler(rg.graph, cfg).sample(name(0), rows, anchors)
    assert rg.graph[name(0)].csr_fk(name(1), "fk0", "fk1") is not None
    monkeypatch.setattr(TableView, "csr_fk", lambda self, child, fk, other: None)
    assert_same(TemporalSampler(rg.graph, cfg).sample(name(0), rows, anchors), want)


@pytest.mark.parametrize(
    ("fks", "want"),
    [
        # t0 <- t1.fk0, t1.fk1 -> t2: the seed's children (t1) are never reached again; their parents are
        ((0, 2), {(0, "t0<-t1.fk0"): 0, (1, "t1.fk1->t2"): 1, (1, "t1.fk0->t0"): 1}),
        # two foreign keys of t1 into t0: one t1 row can be the seed's child through both
        ((0, 0), {(0, "t0<-t1.fk0"): 1, (0, "t0<-t1.fk1"): 1}),
    ],
)
def test_children_skip_the_seed_set_only_where_no_duplicate_can_arise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fks: tuple[int, ...], want: dict[tuple[int, str], int]
) -> None:
    plan = GraphPlan(
        (TablePlan(30, False, True, ()), TablePlan(200, False, True, fks), TablePlan(20, False, False, ())),
        seed=3,
        time_span=1000,
        null_time_pct=0,
        missing_pct=0,
    )
    rg = RandomGraph(plan, tmp_path)
    cfg = SamplerConfig((8, 4), max_nodes=10**6)
    s = TemporalSampler(rg.graph, cfg)
    rows = np.arange(30)
    anchors = np.full(30, 900 * 10**9)
    got = s.sample(name(0), rows, anchors)
    via = s._via_set(name(0))
    names = [e.name for e in s.edge_types]
    for (hop, edge), v in want.items():
        assert via[hop, names.index(edge)] == v, (hop, edge)
    monkeypatch.setattr(TemporalSampler, "_via_set", lambda self, table: np.ones_like(via))
    assert_same(TemporalSampler(rg.graph, cfg).sample(name(0), rows, anchors), got)
    assert_same(got, reference_sample(s, name(0), rows, anchors))
