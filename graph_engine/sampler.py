"""Temporal subgraph sampling: the neighbourhood of each (seed row, anchor time), never seeing the future.

For each hop, every node of the previous hop adds
  * its parents through each foreign key (skipped when the link is missing or the parent's time is after
    the anchor), and
  * through each foreign key pointing at its table, its most recent `k` children with time <= anchor
    (one binary search on the time-sorted CSR), or `k` uniformly random ones among those.
Nodes are deduplicated per seed. Static rows (tables without time) are always visible.

One compiled numba call samples a whole batch, seed by seed: each seed's nodes are written straight in
their final order and deduplicated in a small per-seed hash set that stays in L1 cache, and while one seed
is walked the next seeds' walks are started in stages, each stage a few seeds ahead of the walk and using
what the stage before it prefetched (a walk is a chain of dependent random reads, which the CPU cannot
overlap by itself). The per-seed kernels get their arrays as borrowed views: numba would otherwise
reference-count every array argument atomically on every call. Random choices come from a counter-based
hash of (seed row, anchor, hop, edge, node, draw), so a seed's subgraph does not depend on which other seeds
share its batch or how many workers split the work: the output is identical for a given `random_seed`
whatever the batching.

Most of a walk's time is the address translation of its random reads (a page each, as a rule), so reads
left out count for more than instructions saved:
  * a node's foreign key back to the parent it was reached from is not read (that parent is in the set
    already; on users -> orders -> items this was a third of the random reads);
  * a node reached through a CSR reads its other foreign keys where the graph stores them beside the
    CSR's children (format version 2): one line per eight children instead of one page per child;
  * a CSR row's range ends where the next row's begins, usually on the same cache line; its count is read
    only at a shard's last row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

from graph_engine.errors import RelfmError
from graph_engine.shards.format import TIME_NULL, TIME_STATIC
from graph_engine.shards.mapping import ALIGN
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
    take: int | np.int64,
    m: int | np.int64,
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
    child row, rel time). The sampler inlines the same steps; this standalone form serves the tests and
    the benchmark's replay of what a walk reads."""
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


_FIB = np.uint64(0x9E3779B97F4A7C15)

# Columns of the plan's `edges`, one row per edge type: its kind (0 to parent, 1 to children), its
# destination table, its arrays' addresses (foreign key and parent time; or the CSR's start, count, child
# and time), the rows of its first array, and 1 where it leads to a parent that has a time. The kernels
# read an edge type from its row: through tables of offsets and addresses each use took dependent loads,
# repeated after every store, as numba cannot tell that the stores do not change them.
_ED_KIND, _ED_DST, _ED_A0, _ED_A1, _ED_A2, _ED_A3, _ED_ROWS, _ED_TIMED = range(8)
_ED_COLS = _ED_TIMED + 1


# The kernel reads the graph's arrays through their addresses: a numba tuple of arrays indexed at run
# time is copied whole on every access (measured: ~25 ns each, more than the read it serves), and a
# typed list is slower still. The arrays are all int64 and kept alive by the sampler's _Plan.
@intrinsic  # type: ignore[misc]
def _load_llvm(typingctx: Any, addr: Any, idx: Any) -> Any:
    """The int64 at addr + 8 * idx."""
    if not isinstance(addr, types.Integer) or not isinstance(idx, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i64 = ir.IntType(64)
        base = context.cast(builder, args[0], signature.args[0], types.int64)
        off = context.cast(builder, args[1], signature.args[1], types.int64)
        return builder.load(builder.gep(builder.inttoptr(base, i64.as_pointer()), [off]))

    return types.int64(addr, idx), codegen


@intrinsic  # type: ignore[misc]
def _prefetch_llvm(typingctx: Any, addr: Any, idx: Any) -> Any:
    """Asks the CPU to start loading the int64 at addr + 8 * idx into cache (a hint: never faults)."""
    if not isinstance(addr, types.Integer) or not isinstance(idx, types.Integer):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        i8p, i32, i64 = ir.IntType(8).as_pointer(), ir.IntType(32), ir.IntType(64)
        base = context.cast(builder, args[0], signature.args[0], types.int64)
        off = context.cast(builder, args[1], signature.args[1], types.int64)
        ptr = builder.bitcast(builder.gep(builder.inttoptr(base, i64.as_pointer()), [off]), i8p)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]), "llvm.prefetch.p0"
        )
        builder.call(fn, [ptr, i32(0), i32(3), i32(1)])  # read, keep in all cache levels, data
        return context.get_dummy_value()

    return types.void(addr, idx), codegen


@intrinsic  # type: ignore[misc]
def _borrow_llvm(typingctx: Any, arr: Any) -> Any:
    """The same array without its owner (null meminfo): passing it to an inlined kernel costs no atomic
    reference counting (numba increfs every array argument on each call, measured at 20% of the walk).
    The caller keeps the original alive."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        src = cgutils.create_struct_proxy(arr)(context, builder, value=args[0])
        dst = cgutils.create_struct_proxy(arr)(context, builder)
        for f in ("data", "shape", "strides", "itemsize", "nitems"):
            setattr(dst, f, getattr(src, f))
        dst.meminfo = cgutils.get_null_value(dst.meminfo.type)
        dst.parent = cgutils.get_null_value(dst.parent.type)
        return dst._getvalue()

    return arr(arr), codegen


# as the kernels call them
_load = cast("Callable[[Any, Any], np.int64]", _load_llvm)
_prefetch = cast("Callable[[Any, Any], None]", _prefetch_llvm)
_borrow = cast("Callable[[np.ndarray], np.ndarray]", _borrow_llvm)


@numba.njit(cache=True, inline="always")
def _visible_end_at(ctime: np.int64, lo: np.int64, hi: np.int64, anchor: np.int64) -> np.int64:
    """_visible_end over the time array at address `ctime`."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if _load(ctime, mid) <= anchor:
            lo = mid + 1
        else:
            hi = mid
    return lo


_SHARD_ROWS_MASK = ALIGN - 1  # rows_per_shard is a multiple of ALIGN (a power of two)


@numba.njit(cache=True, inline="always")
def _segment(start: np.int64, count: np.int64, nrows: np.int64, r: np.int64) -> tuple[np.int64, np.int64]:
    """[lo, hi) of row r's children in the CSR at addresses (start, count). Within a shard the segments
    are back to back, so hi is the next row's start, on the same cache line as r's seven times in
    eight; only a shard's last row reads its count (shards are padded apart)."""
    lo = _load(start, r)
    if ((r + 1) & _SHARD_ROWS_MASK) != 0 and r + 1 < nrows:
        return lo, _load(start, r + 1)
    return lo, lo + _load(count, r)


@numba.njit(cache=True, inline="always")
def _next_on_new_line(a: np.int64) -> bool:
    """Whether the int64 after the one at address `a` starts a new cache line: then _segment's read of
    start[r + 1] needs a line of its own (the count of a shard's last row is left to the rare case)."""
    return ((a + 8) & 63) == 0


@numba.njit(cache=True, inline="always")
def _prefetch_segment(start: np.int64, r: np.int64) -> None:
    """Prefetches what _segment reads: start[r], and start[r + 1] where it is on the next line."""
    _prefetch(start, r)
    if _next_on_new_line(start + 8 * r):
        _prefetch(start, r + 1)


@numba.njit(cache=True, inline="always")
def _want(buf: np.ndarray, k: int, base: np.int64, idx: np.int64) -> int:
    """Queues a prefetch of the int64 at base + 8 * idx (see _pipeline: queued ones are issued together)."""
    buf[_u(k)] = base + 8 * idx
    return k + 1


@numba.njit(cache=True, inline="always")
def _want_lines(buf: np.ndarray, k: int, base: np.int64, lo: np.int64, hi: np.int64) -> int:
    """Queues the int64s [lo, hi) at address `base`, one request per 64-byte line."""
    if hi > lo:
        for line in range((base + 8 * lo) >> 6, ((base + 8 * hi - 1) >> 6) + 1):
            buf[_u(k)] = line << 6
            k += 1
    return k


_NEXT_CSR = 1  # tags a next read at the row that is a CSR's start (see _Plan.next_reads)


@numba.njit(cache=True, inline="always")
def _want_next(buf: np.ndarray, k: int, nh_ptr: int, nh: int, e: int, row: np.int64) -> int:
    """Queues the first read at its row of each edge type that a node reached through edge type e (a seed
    of table t: e = number of edge types + t) follows at the next hop. The plan lists them (by address,
    as are the lists) in nh[nh_ptr[e] : nh_ptr[e + 1]], array addresses tagged in their low bits (see
    _Plan.next_reads)."""
    for j in range(_load(nh_ptr, e), _load(nh_ptr, e + 1)):
        x = _load(nh, j)
        if x & _NEXT_CSR:
            a = x - _NEXT_CSR + 8 * row
            buf[_u(k)] = a
            k += 1
            if _next_on_new_line(a):
                buf[_u(k)] = a + 8
                k += 1
        else:
            buf[_u(k)] = x + 8 * row
            k += 1
    return k


@numba.njit(cache=True, inline="always")
def _want_beside(buf: np.ndarray, k: int, bes: np.ndarray, e: int, lo: np.int64, hi: np.int64) -> int:
    """Queues the lines of CSR positions [lo, hi) of each foreign key stored beside the children of edge
    type e's CSR (its row of the plan's `beside`; 0 where a key is not stored there)."""
    for j in range(bes.shape[1]):
        x = bes[_u(e), _u(j)]
        if x != 0:
            k = _want_lines(buf, k, x, lo, hi)
    return k


# The seed table's edge types as _pipeline reads them, one row each (see _seed_edges): the edge type's
# row of the plan's `edges` (see _ED_KIND), its index, and its fan-out at hop 0.
_SED_EDGE, _SED_FAN = _ED_COLS, _ED_COLS + 1


@numba.njit(cache=True, inline="always")
def _seed_edges(
    seed_tid: int, tab_ptr: np.ndarray, tab_edges: np.ndarray, ed: np.ndarray, fan: np.ndarray
) -> np.ndarray:
    eb, ee = tab_ptr[seed_tid], tab_ptr[seed_tid + 1]
    sed = np.zeros((ee - eb, _ED_COLS + 2), np.int64)
    for j in range(ee - eb):
        e = tab_edges[eb + j]
        sed[j, :_ED_COLS] = ed[e]
        sed[j, _SED_EDGE] = e
        sed[j, _SED_FAN] = fan[0, e] if fan.shape[0] > 0 else 0
    return sed


# How many seeds ahead each stage of _pipeline works: far enough for a load from memory to arrive before
# the next stage (or the walk itself) needs it. The walk reads the seed's visible child ranges from the
# ring, which holds the last _RING seeds' (more than _AHEAD_SEGMENT).
_AHEAD_ROW, _AHEAD_SEGMENT, _AHEAD_SEARCH, _AHEAD_CHILDREN = 12, 6, 3, 1
_RING = 8
_SHORT = 32  # time segments up to this long are prefetched whole (a few cache lines)


@numba.njit(cache=True, inline="always")
def _pipeline(
    s: int,
    s0: int,
    rows0: np.ndarray,
    anchors: np.ndarray,
    stime_addr: np.int64,
    seed_list: int,
    sed: np.ndarray,
    hops: int,
    uniform: bool,
    ring: np.ndarray,
    bes: np.ndarray,
    nh_ptr: int,
    nh: int,
    buf: np.ndarray,
) -> None:
    """Software pipelining across seeds: the walk of one seed is a chain of dependent reads (row ->
    CSR segment -> children -> their foreign keys) that the CPU cannot overlap by itself, so while seed
    s is walked, each later link of the chains of the next seeds is requested, one stage per link, each
    stage a few seeds behind the one whose loads it consumes. The binary searches for the seed's own
    child ranges are done here once (stage 3) and kept in the ring for the walk; everything else is
    prefetches and reads that do not change the output. The seed table's edge types come as one row
    each of `sed` (see _seed_edges), so that no stage looks them up through the plan's tables.

    The prefetches are queued in `buf` and issued together at the end: on a page the TLB does not hold,
    a prefetch holds up retirement until its page walk is done, so prefetches spread among other
    instructions overlap only as far as the reorder window reaches, while back to back they all do."""
    k = 0
    b = len(rows0)
    ne = sed.shape[0]
    # 1: the seed's time and first reads of each of its edge types
    t = s + _AHEAD_ROW
    if s0 <= t < b:
        r = rows0[_u(t)]
        if stime_addr != 0:
            k = _want(buf, k, stime_addr, r)
        k = _want_next(buf, k, nh_ptr, nh, seed_list, r)
    # 2: the parent's time, or the child segment's times (whole when short, else the first probes)
    t = s + _AHEAD_SEGMENT
    if s0 <= t < b:
        r = rows0[_u(t)]
        for j in range(ne):
            d = sed[_u(j)]
            if d[_ED_KIND] == 0:
                p = _load(d[_ED_A0], r)
                if p >= 0 and d[_ED_TIMED] != 0:
                    k = _want(buf, k, d[_ED_A1], p)
            else:
                lo, hi = _segment(d[_ED_A0], d[_ED_A1], d[_ED_ROWS], r)
                c = hi - lo
                slot = _u((t & (_RING - 1)) * ne + j)
                ring[0, slot], ring[1, slot] = lo, hi
                ctime = d[_ED_A3]
                if c <= _SHORT:
                    k = _want_lines(buf, k, ctime, lo, lo + c)
                else:
                    for probe in (lo + c // 2, lo + c // 4, lo + 3 * c // 4):
                        k = _want(buf, k, ctime, probe)
    # 3: the visible end of each child segment, and the children the walk will take
    t = s + _AHEAD_SEARCH
    if s0 <= t < b:
        a = anchors[_u(t)]
        for j in range(ne):
            d = sed[_u(j)]
            if d[_ED_KIND] == 0:
                continue
            slot = _u((t & (_RING - 1)) * ne + j)
            lo = ring[0, slot]
            end = _visible_end_at(d[_ED_A3], lo, ring[1, slot], a)
            ring[1, slot] = end
            if not uniform and hops > 0 and d[_SED_FAN] > 0 and end > lo:
                k = _want_lines(buf, k, d[_ED_A2], max(lo, end - d[_SED_FAN]), end)
    # 4: the first reads of the seed's parents' and taken children's own edge types (for the next hop)
    t = s + _AHEAD_CHILDREN
    if not uniform and hops > 1 and s0 <= t < b:
        for j in range(ne):
            d = sed[_u(j)]
            e = d[_SED_EDGE]
            if d[_ED_KIND] == 0:
                p = _load(d[_ED_A0], rows0[_u(t)])
                if p >= 0:
                    k = _want_next(buf, k, nh_ptr, nh, e, p)
                continue
            if d[_SED_FAN] <= 0:
                continue
            slot = _u((t & (_RING - 1)) * ne + j)
            lo, end = ring[0, slot], ring[1, slot]
            first = max(lo, end - d[_SED_FAN])
            k = _want_beside(buf, k, bes, e, first, end)
            if _load(nh_ptr, e) < _load(nh_ptr, e + 1):  # reads at the children's rows
                child = d[_ED_A2]
                for q in range(first, end):
                    k = _want_next(buf, k, nh_ptr, nh, e, _load(child, q))
    for j in range(k):
        _prefetch(buf[j], 0)


@numba.njit(cache=True, inline="always")
def _u(i: int | np.int64) -> np.uint64:
    """An index numba does not check for wrap-around: it adds the length to every signed index that is
    negative, three instructions and a reload of the length on each access of the walk's inner loops."""
    return np.uint64(i)


@numba.njit(cache=True, inline="always")
def _insert(seen: np.ndarray, shift: np.uint64, mask: np.int64, stamp: np.int64, key: np.int64) -> bool:
    """Adds `key` to the current seed's set: True where it was not there. `seen` interleaves (stamp, key)
    slots, so one probe reads one cache line; a slot belongs to the current seed only if it carries the
    seed's stamp, so moving to the next seed resets the set at no cost."""
    h = np.int64((np.uint64(key) * _FIB) >> shift)
    while True:
        j = 2 * h
        if seen[_u(j)] != stamp:
            seen[_u(j)] = stamp
            seen[_u(j + 1)] = key
            return True
        if seen[_u(j + 1)] == key:
            return False
        h = (h + 1) & mask


@numba.njit(cache=True, inline="always")
def _beside(bes: np.ndarray, src: int, j: int) -> int:
    """Address of the j-th edge type's foreign key as stored beside the children of the CSR a node was
    reached through (edge type `src`), or 0 where it was not reached through a CSR (src < 0: a seed) or
    the graph does not store that key there (see _Plan.beside)."""
    return 0 if src < 0 else bes[_u(src), _u(j)]


_NO_ROOM, _SET_FULL = -1, -2  # what _walk_seed returns when the seed does not fit
_BAD_ROW = -3  # what _sample_part stops with when a seed row is out of range


@numba.njit(cache=True, inline="always")
def _walk_seed(
    s: int,
    n: int,
    rows0: np.ndarray,
    anchors: np.ndarray,
    stime: np.ndarray,
    seed_tid: int,
    tab_ptr: np.ndarray,
    tab_edges: np.ndarray,
    ed: np.ndarray,
    bes: np.ndarray,
    fan: np.ndarray,
    salts: np.ndarray,
    uniform: bool,
    max_nodes: int,
    ahead: bool,
    otable: np.ndarray,
    orow: np.ndarray,
    ohop: np.ndarray,
    opar: np.ndarray,
    oedge: np.ndarray,
    orel: np.ndarray,
    seen: np.ndarray,
    bits: int,
    stamp: np.int64,
    via_set: np.ndarray,
    ring: np.ndarray,
    scratch: np.ndarray,
) -> int:
    """Writes seed s's nodes from position n on, in their final order (hop, then table, then edge type,
    then frontier node, then child) with parent slots local to the seed; returns the new node count, or
    _NO_ROOM / _SET_FULL when the output arrays or the seed's set could overflow (the caller grows them
    and walks the seed again: the walk is deterministic). Nodes that edge type e adds at hop h go through
    the seed's set only where via_set[h, e] (see TemporalSampler._via_set)."""
    cap = len(orow)
    # seen's tail: the CSR position of each of the seed's nodes reached through a CSR (by local index),
    # where the foreign keys stored beside the children are read
    spos = seen[2 << bits :]
    shift = np.uint64(64 - bits)
    mask = np.int64((1 << bits) - 1)
    hops = fan.shape[0]
    ntab = len(tab_ptr) - 1
    if n + 1 > cap:
        return _NO_ROOM
    base = n
    a = anchors[s]
    r0 = rows0[s]
    rel0 = NO_TIME
    if len(stime) > 0:
        t0 = stime[r0]
        if t0 != TIME_STATIC and t0 != TIME_NULL:
            rel0 = a - t0
    otable[n], orow[n], ohop[n], opar[n], oedge[n], orel[n] = seed_tid, r0, 0, -1, -1, rel0
    n += 1
    _insert(seen, shift, mask, stamp, (np.int64(seed_tid) << np.int64(48)) | r0)
    # the frontier as runs of nodes reached through one edge type (one run per edge type that added
    # nodes at the last hop), so that each edge type visits only its own table's nodes; two halves of
    # `stride` runs
    stride = ed.shape[0] + 1
    run_lo, run_hi, run_tab, run_edge, chosen = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4]
    cur, nr = 0, 1
    run_lo[0], run_hi[0], run_tab[0], run_edge[0] = base, n, seed_tid, -1
    for hop in range(hops):
        if n - base >= max_nodes:
            break
        if ahead and (hop > 1 or (hop == 1 and uniform)):
            # the frontier's first reads of every edge type, all requested before any is needed (those
            # of the seed and, for "recent", of the nodes of hop 1 were, by _pipeline)
            for g in range(run_lo[cur], run_hi[cur + nr - 1]):
                t, r, src = otable[g], orow[g], oedge[g]
                for ei in range(tab_ptr[t], tab_ptr[t + 1]):
                    e = tab_edges[ei]
                    if ed[e, _ED_KIND] == 1:
                        _prefetch_segment(ed[e, _ED_A0], r)
                    elif e != src ^ 1:  # the link back is never read (below)
                        beside = _beside(bes, src, ei - tab_ptr[t])
                        if beside != 0:
                            _prefetch(beside, spos[_u(g - base)])
                        else:
                            _prefetch(ed[e, _ED_A0], r)
        nxt, made = stride - cur, 0
        for t in range(ntab):
            if tab_ptr[t] == tab_ptr[t + 1]:
                continue
            in_front = 0
            for q in range(cur, cur + nr):
                if run_tab[q] == t:
                    in_front += run_hi[q] - run_lo[q]
            if in_front == 0:
                continue
            for ei in range(tab_ptr[t], tab_ptr[t + 1]):
                e = tab_edges[ei]
                kind, dst = ed[e, _ED_KIND], ed[e, _ED_DST]
                key_hi = dst << np.int64(48)
                dedup = via_set[hop, e] != 0
                # at most this many new nodes: one per frontier node (parents) or k (children), and
                # no more than the seed's budget has room for
                need = in_front if kind == 0 else fan[hop, e] * in_front
                need = min(need, max_nodes - (n - base))
                if need <= 0:
                    continue
                if n + need > cap:
                    return _NO_ROOM
                if 2 * (n - base + need) > (1 << bits):  # the set stays at most half full
                    return _SET_FULL
                first = n
                if kind == 0:
                    fk, ptime = ed[e, _ED_A0], ed[e, _ED_A1]
                    has_time = ed[e, _ED_TIMED] != 0
                    for q in range(cur, cur + nr):
                        # nodes reached from their parent through this foreign key (edge e ^ 1) link
                        # back to that parent, which is among the seed's nodes already: not read
                        if run_tab[q] != t or run_edge[q] == e ^ 1:
                            continue
                        # nodes reached through a CSR that stores this key beside its children
                        src = run_edge[q]
                        beside = _beside(bes, src, ei - tab_ptr[t])
                        for g in range(run_lo[q], run_hi[q]):
                            p = _load(beside, spos[_u(g - base)]) if beside != 0 else _load(fk, orow[_u(g)])
                            if p < 0:
                                continue
                            rel = NO_TIME
                            if has_time:
                                tp = _load(ptime, p)
                                if tp != TIME_STATIC:
                                    if tp > a:  # a later parent, or one with a null time
                                        continue
                                    rel = a - tp
                            if n - base >= max_nodes:
                                break
                            if not dedup or _insert(seen, shift, mask, stamp, key_hi | p):
                                u = _u(n)
                                otable[u], orow[u], ohop[u] = dst, p, hop + 1
                                opar[u], oedge[u], orel[u] = g - base, e, rel
                                n += 1
                else:
                    k = fan[hop, e]
                    salt = salts[hop, e]
                    start, count, child, ctime = ed[e, _ED_A0], ed[e, _ED_A1], ed[e, _ED_A2], ed[e, _ED_A3]
                    nrows = ed[e, _ED_ROWS]
                    for qq in range(cur, cur + nr):
                        if run_tab[qq] != t:
                            continue
                        for g in range(run_lo[qq], run_hi[qq]):
                            r = orow[_u(g)]
                            if ahead and hop == 0:  # found by _pipeline
                                slot = (s & (_RING - 1)) * (tab_ptr[t + 1] - tab_ptr[t]) + (ei - tab_ptr[t])
                                lo, end = ring[0, slot], ring[1, slot]
                            else:
                                lo, hi = _segment(start, count, nrows, r)
                                end = _visible_end_at(ctime, lo, hi, a)
                            m = end - lo
                            take = min(k, m)
                            if take <= 0:
                                continue
                            if uniform:
                                _pick(chosen, take, m, uniform, r0, a, r, salt)
                            for q in range(take):
                                if n - base >= max_nodes:
                                    break
                                pos = end - 1 - (chosen[q] if uniform else q)
                                c = _load(child, pos)
                                if not dedup or _insert(seen, shift, mask, stamp, key_hi | c):
                                    tc = _load(ctime, pos)
                                    u = _u(n)
                                    spos[_u(n - base)] = pos
                                    otable[u], orow[u], ohop[u] = dst, c, hop + 1
                                    opar[u], oedge[u] = g - base, e
                                    orel[u] = NO_TIME if tc == TIME_STATIC else a - tc
                                    n += 1
                if n > first:
                    run_lo[nxt + made], run_hi[nxt + made] = first, n
                    run_tab[nxt + made], run_edge[nxt + made] = dst, e
                    made += 1
        cur, nr = nxt, made
        if nr == 0:
            break
    return n


@numba.njit(cache=True)
def _keep_alive(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, e: np.ndarray) -> None:
    pass


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _sample_part(
    s0: int,
    n_off: int,
    rows0: np.ndarray,
    anchors: np.ndarray,
    stime: np.ndarray,
    seed_tid: int,
    tab_ptr: np.ndarray,
    tab_edges: np.ndarray,
    ed: np.ndarray,
    bes: np.ndarray,
    fan: np.ndarray,
    salts: np.ndarray,
    uniform: bool,
    max_nodes: int,
    ahead: bool,
    kmax: int,
    cap: int,
    bits: int,
    nrows: int,
    nh_ptr: int,
    nh: int,
    via_set: np.ndarray,
) -> tuple[int, int, int, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Walks seeds s0, s0 + 1, ... of the batch (see _walk_seed) into new arrays for `cap` nodes, until
    done or a seed does not fit. Returns (next seed, nodes written, 0 or why it stopped, seed pointers
    from n_off on, table, row, hop, parent, edge, rel); the caller calls again for the rest with larger
    arrays. The arrays are allocated here and never reassigned: numba then knows they alias nothing
    (measured: 1.5x faster than passing them in, or growing them in the loop).

    Edge type e reads the arrays whose addresses are in its row of `ed` (see _ED_KIND): (fk, parent time)
    to a parent, (start, count, child, time) of the CSR to children."""
    b = len(rows0)
    for s in range(s0, b):  # checked here: two NumPy reductions cost more than the loop
        if rows0[s] < 0 or rows0[s] >= nrows:
            e64 = np.empty(0, np.int64)
            e16, e8, e32 = np.empty(0, np.int16), np.empty(0, np.int8), np.empty(0, np.int32)
            return s, 0, _BAD_ROW, e64, e16, e64, e8, e32, e16, e64
    ptr = np.empty(b - s0 + 1, dtype=np.int64)
    ptr[0] = n_off
    otable, orow, ohop = np.empty(cap, np.int16), np.empty(cap, np.int64), np.empty(cap, np.int8)
    opar, oedge, orel = np.empty(cap, np.int32), np.empty(cap, np.int16), np.empty(cap, np.int64)
    seen = np.zeros(3 << bits, dtype=np.int64)  # the seed's set, then its nodes' CSR positions
    ne = tab_ptr[seed_tid + 1] - tab_ptr[seed_tid]
    ring = np.empty((2, _RING * ne), np.int64)  # lo and visible end of the seeds' child ranges
    # lo, hi, table, edge of the frontier's runs, and the positions a uniform draw takes
    scratch = np.empty((5, max(2 * ed.shape[0] + 2, kmax)), np.int64)
    stime_addr = np.int64(stime.ctypes.data) if len(stime) > 0 else np.int64(0)
    # the per-seed kernels get borrowed views (see _borrow); the arrays above keep the memory alive
    rows0, anchors, stime, tab_ptr, tab_edges = (
        _borrow(rows0),
        _borrow(anchors),
        _borrow(stime),
        _borrow(tab_ptr),
        _borrow(tab_edges),
    )
    ed, bes, fan, salts = _borrow(ed), _borrow(bes), _borrow(fan), _borrow(salts)
    vtable, vrow, vhop, vpar, vedge, vrel = (
        _borrow(otable),
        _borrow(orow),
        _borrow(ohop),
        _borrow(opar),
        _borrow(oedge),
        _borrow(orel),
    )
    vseen, vring, vscratch, vvia = _borrow(seen), _borrow(ring), _borrow(scratch), _borrow(via_set)
    # queued prefetches of one _pipeline step, per edge type of the seed's table: stage 1 at most 2 (a
    # CSR's start may span two lines) and the seed's time, stage 2 at most 5 lines, stage 3 the lines of
    # up to kmax children, stage 4 at most 2 per edge type of the parent or of each of kmax children
    nall = ed.shape[0]
    sed = _seed_edges(seed_tid, tab_ptr, tab_edges, ed, fan)
    vsed = _borrow(sed)
    buf = np.empty(1 + ne * (2 + 5 + (kmax // 8 + 2) + 2 * nall * (kmax + 1)), np.int64)
    vbuf = _borrow(buf)
    n, s_end, stop = 0, b, 0
    for s in range(s0 - _AHEAD_ROW if ahead else s0, b):  # the first steps only fill the pipeline
        if ahead:
            _pipeline(
                s,
                s0,
                rows0,
                anchors,
                stime_addr,
                nall + seed_tid,
                vsed,
                fan.shape[0],
                uniform,
                vring,
                bes,
                nh_ptr,
                nh,
                vbuf,
            )
        if s < s0:
            continue
        got = _walk_seed(
            s,
            n,
            rows0,
            anchors,
            stime,
            seed_tid,
            tab_ptr,
            tab_edges,
            ed,
            bes,
            fan,
            salts,
            uniform,
            max_nodes,
            ahead,
            vtable,
            vrow,
            vhop,
            vpar,
            vedge,
            vrel,
            vseen,
            bits,
            np.int64(s + 1),  # a fresh, empty set for each seed
            vvia,
            vring,
            vscratch,
        )
        if got < 0:
            s_end, stop = s, got
            break
        n = got
        ptr[s - s0 + 1] = n_off + n
    # the scratch arrays were used only through borrowed views: numba would free them after their last
    # use, so they are used once more here
    _keep_alive(seen, ring, scratch, buf, sed)
    if cap - n > n // 2 + 64:  # copies, rather than views keeping much unused memory alive
        return (
            s_end,
            n,
            stop,
            ptr[: s_end - s0 + 1],
            otable[:n].copy(),
            orow[:n].copy(),
            ohop[:n].copy(),
            opar[:n].copy(),
            oedge[:n].copy(),
            orel[:n].copy(),
        )
    return (
        s_end,
        n,
        stop,
        ptr[: s_end - s0 + 1],
        otable[:n],
        orow[:n],
        ohop[:n],
        opar[:n],
        oedge[:n],
        orel[:n],
    )


def _readonly_i64(a: np.ndarray) -> np.ndarray:
    """A read-only, C-contiguous int64 view (a copy only if the layout or dtype differs): the kernel
    reads it by address, as a plain int64 array."""
    v = np.ascontiguousarray(a, dtype=np.int64).view(np.ndarray)
    v.flags.writeable = False
    return v


@dataclass(frozen=True)
class _Plan:
    """What the kernel needs of the graph and config, built once per sampler."""

    tab_ptr: np.ndarray
    tab_edges: np.ndarray
    edges: np.ndarray  # [edge type, _ED_COLS] (see _ED_KIND)
    # [edge type to children, j]: the address of the j-th foreign key of the child table (in its list of
    # edge types) as stored beside the CSR's children, 0 where it is not (see _walk_seed)
    beside: np.ndarray
    fan: np.ndarray
    salts: np.ndarray
    arrs: tuple[np.ndarray, ...]  # keeps alive the arrays that edges, beside and next_reads point into
    kmax: int
    # per edge type e, then per seed table: the arrays whose first read at its row a node reached through
    # e (or a seed) needs at the next hop, by address, tagged in their low bits (0 a foreign key,
    # _NEXT_CSR a CSR's start); left out are the link back to the node's parent through the same foreign
    # key (see _walk_seed) and the keys the node reads beside the children of its CSR (see `beside`)
    next_ptr: np.ndarray
    next_reads: np.ndarray
    next_addr: tuple[int, int]  # their addresses (`.ctypes.data` takes 2 µs, per call of the kernel)
    times: dict[str, np.ndarray]  # row times of each table (empty: static), as plain int64 arrays


# ---------------------------------------------------------------------------------------------- driver
class TemporalSampler:
    """Samples temporal subgraphs from one opened graph (open once per process, reuse for many batches)."""

    def __init__(self, graph: Graph, config: SamplerConfig | None = None) -> None:
        self.graph = graph
        self.cfg = config or SamplerConfig()
        self.table_names = list(graph.table_names)
        self.table_id = {t: i for i, t in enumerate(self.table_names)}
        self.edge_types: list[EdgeType] = []
        # in pairs, 2i to the parent and 2i + 1 back: the kernel finds an edge type's reverse as e ^ 1
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
        self._plan: _Plan | None = None
        self._nodes_per_seed = 16.0  # sizes the next batch's output arrays
        self._ahead = True  # prefetch (see _pipeline); off only to test that it changes nothing
        self._via_sets: dict[str, np.ndarray] = {}

    def fanout(self, e: EdgeType, hop: int) -> int:
        custom = self.cfg.edge_fanouts.get(f"{e.child}.{e.fk}")
        return int(custom[hop] if custom else self.cfg.fanouts[hop])

    def _time(self, table: str) -> np.ndarray:
        t = self.graph.table(table).time
        return _EMPTY_I64 if t is None else t

    def _get_plan(self) -> _Plan:
        """Maps the arrays the walk may read (address space only: pages load as they are touched)."""
        if self._plan is not None:
            return self._plan
        cfg = self.cfg
        arrs: list[np.ndarray | None] = []
        kind, dst, off = [], [], []
        for e in self.edge_types:
            off.append(len(arrs))
            dst.append(self.table_id[e.dst])
            if e.to_parent:
                kind.append(0)
                arrs += [self.graph.table(e.child).fk(e.fk), self._time(e.parent)]
            else:
                kind.append(1)
                csr = self.graph.table(e.parent).csr(e.child, e.fk)
                arrs += [csr.start, csr.count, csr.child, csr.time]
                # then, per edge type of the child table, its parent rows stored beside the children
                # (format version 2), where it is another foreign key: read at the CSR position
                arrs += [
                    self.graph.table(e.parent).csr_fk(e.child, e.fk, x.fk)
                    if x.to_parent and x.index != e.index ^ 1
                    else None
                    for x in self._out_edges[e.child]
                ]
        tab_edges = [e.index for t in self.table_names for e in self._out_edges[t]]
        tab_ptr = np.cumsum([0] + [len(self._out_edges[t]) for t in self.table_names])
        ne = len(self.edge_types)
        fan = np.array([[self.fanout(e, h) for e in self.edge_types] for h in range(cfg.hops)], np.int64)
        salts = np.array(
            [
                [(cfg.random_seed * 1_000_003 + h * 7919 + e.index) & 0xFFFFFFFFFFFF for e in self.edge_types]
                for h in range(cfg.hops)
            ],
            dtype=np.uint64,
        )
        ro = [_EMPTY_I64 if a is None else _readonly_i64(a) for a in arrs]
        addr = np.array([0 if a is None else r.ctypes.data for a, r in zip(arrs, ro, strict=True)], np.int64)
        assert not (addr & 7).any()  # int64 arrays: the low bits are free for the read's kind
        # the next reads at the row, tagged by their low bits: 0 a foreign key, _NEXT_CSR a CSR's start
        first_read = [int(addr[off[e.index]]) | (0 if e.to_parent else _NEXT_CSR) for e in self.edge_types]
        lists = [
            [
                first_read[x.index]
                for j, x in enumerate(self._out_edges[e.dst])
                if not (x.to_parent and x.index == e.index ^ 1)
                and not (not e.to_parent and addr[off[e.index] + 4 + j])  # read beside the children
            ]
            for e in self.edge_types
        ] + [[first_read[x.index] for x in self._out_edges[t]] for t in self.table_names]
        next_ptr = np.cumsum([0] + [len(x) for x in lists]).astype(np.int64)
        next_reads = np.array([x for lst in lists for x in lst] + [0], np.int64)
        alen = [len(a) for a in ro]
        edges = np.zeros((ne, _ED_COLS), np.int64)
        width = max((len(self._out_edges[e.child]) for e in self.edge_types), default=1)
        beside_at = np.zeros((ne, width), np.int64)
        for e in self.edge_types:
            o, row = off[e.index], edges[e.index]
            row[_ED_KIND], row[_ED_DST] = kind[e.index], dst[e.index]
            row[_ED_A0], row[_ED_A1], row[_ED_ROWS] = addr[o], addr[o + 1], alen[o]
            if e.to_parent:
                row[_ED_TIMED] = alen[o + 1] > 0
            else:
                row[_ED_A2], row[_ED_A3] = addr[o + 2], addr[o + 3]
                n_beside = len(self._out_edges[e.child])
                beside_at[e.index, :n_beside] = addr[o + 4 : o + 4 + n_beside]
        self._plan = _Plan(
            tab_ptr=tab_ptr.astype(np.int64),
            tab_edges=np.array(tab_edges, np.int64),
            edges=edges,
            beside=beside_at,
            fan=fan.reshape(cfg.hops, ne),
            salts=salts.reshape(cfg.hops, ne),
            arrs=tuple(ro),
            kmax=max(int(fan.max(initial=1)), 1),
            next_ptr=next_ptr,
            next_reads=next_reads,
            next_addr=(next_ptr.ctypes.data, next_reads.ctypes.data),
            times={t: _readonly_i64(self._time(t)) for t in self.table_names},
        )
        return self._plan

    def _via_set(self, seed_table: str) -> np.ndarray:
        """[hop, edge type]: 1 where the nodes an edge type adds at a hop go through the seed's set
        (uint8). Children through one CSR are distinct rows (a child has one parent through a foreign
        key, and the frontier's nodes are distinct), so they need the set only where nodes of their table
        may be there already (the seed's table, or added earlier in the walk's order) or may be added
        later; parents always do, as several nodes may share one. On users -> orders -> items the
        seed's orders and reviews skip the set, half of all the nodes."""
        if seed_table in self._via_sets:
            return self._via_sets[seed_table]
        plan = self._get_plan()
        hops = self.cfg.hops
        # the walk's order: per hop, per table of the frontier (by index), per edge type of the table
        events: list[tuple[int, EdgeType]] = []
        front = {self.table_id[seed_table]}
        for h in range(hops):
            nxt: set[int] = set()
            for t in sorted(front):
                for e in self._out_edges[self.table_names[t]]:
                    if e.to_parent or plan.fan[h, e.index] > 0:
                        events.append((h, e))
                        nxt.add(self.table_id[e.dst])
            front = nxt
        via = np.ones((hops, len(self.edge_types)), np.uint8)  # edge types that never add nodes: 1
        present = {seed_table}
        for i, (h, e) in enumerate(events):
            later = any(x.dst == e.dst for _, x in events[i + 1 :])
            via[h, e.index] = e.to_parent or e.dst in present or later
            present.add(e.dst)
        self._via_sets[seed_table] = via
        return via

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
        tab = self.graph.table(seed_table)  # an unknown table: a one-line error
        plan = self._get_plan()
        cap = int(b * self._nodes_per_seed * 1.25) + 64
        bits = 8
        s = n = 0
        ptrs: list[np.ndarray] = []
        parts: list[list[np.ndarray]] = []
        while True:
            s_next, got, stop, ptr, *arrays = _sample_part(
                s,
                n,
                rows0,
                anchors,
                plan.times[seed_table],
                self.table_id[seed_table],
                plan.tab_ptr,
                plan.tab_edges,
                plan.edges,
                plan.beside,
                plan.fan,
                plan.salts,
                self.cfg.strategy == "uniform",
                self.cfg.max_nodes,
                self._ahead,
                plan.kmax,
                cap,
                bits,
                tab.num_rows,
                plan.next_addr[0],
                plan.next_addr[1],
                self._via_set(seed_table),
            )
            if stop == _BAD_ROW:
                raise RelfmError(
                    f"sampler: seed row {rows0[s_next]} (batch position {s_next}) is out of range for "
                    f"table '{seed_table}' ({tab.num_rows} rows)"
                )
            ptrs.append(ptr if not ptrs else ptr[1:])
            parts.append(arrays)
            n += got
            if stop == 0:
                break
            # seed s_next did not fit: the rest of the batch goes into larger arrays or a larger set
            if stop == _NO_ROOM:
                cap = 2 * cap
            else:
                bits += 1
            s = s_next
        seed_ptr = ptrs[0] if len(ptrs) == 1 else np.concatenate(ptrs)
        nodes = parts[0] if len(parts) == 1 else [np.concatenate(c) for c in zip(*parts, strict=True)]
        if b:
            self._nodes_per_seed = max(n / b, 1.0)
        table, row, hop, parent, edge, rel = nodes
        return Subgraph(
            seed_ptr=seed_ptr,
            table=table,
            row=row,
            hop=hop,
            parent=parent,
            edge=edge,
            rel_time=rel,
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
