"""Temporal sampler benchmark: prints one JSON document.

On a synthetic e-commerce graph (users <- orders -> items, reviews) of about `--edges` foreign-key links
(10M by default; `--edges 100000000` for the big one), generated and built once into
`.relfm/bench/sampler/edges-<N>-seed<S>/` and reused:

  * open time and RSS after `Graph.open` (lazy: only the manifest is read);
  * 2-hop sampling, fan-outs (16, 8), strategy `recent`, seeded at random users and anchor times:
    seeds/s and sampled nodes/s with 1 and 2 processes (each opens the graph itself), peak RSS per process
    (getrusage; plus the anonymous part, i.e. what is not the page cache's mapped graph pages), and read
    throughput: bytes of graph arrays the walk touches / time;
  * the machine's limits on the same mmapped arrays: a sequential scan of the CSR arrays (GB/s) and
    independent random gathers from the child/time arrays (numba loop), with 1 and 2 processes;
  * peers on the same seeds: (a) a straightforward vectorised NumPy implementation over the same CSR
    arrays (bisection per hop, dedup with np.unique), checked to sample the same node sets as ours;
    (b) Kumo's compiled local sampler from the `kumoai` wheel (`pip install kumoai`; it is a
    benchmark-only peer, not a dependency), built from the same Parquet sources in memory.

Every measurement runs a first pass over its seeds (which maps the pages it touches into the fresh
process; the graph's files are in the page cache after the first run), then `--repeat` more passes of
which the fastest counts. The machine is shared: the JSON records the load average before and after;
re-run when it was high.

    .venv/bin/python benchmarks/sampler.py [--edges 100000000] [--seeds 100000] [--no-kumo]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numba
import numpy as np

from graph_engine.sampler import EdgeType, SamplerConfig, Subgraph, TemporalSampler, _children
from graph_engine.shards.reader import Graph

CACHE = Path(".relfm/bench/sampler")
SEED_TABLE = "users"
LINKS = {"user_id": "users", "item_id": "items"}
KEY_COLUMNS = {  # what Kumo's sampler needs of each table: primary key, time, foreign keys (see LINKS)
    "users": ("user_id", "signup_time", ()),
    "items": ("item_id", None, ()),
    "orders": ("order_id", "order_time", ("user_id", "item_id")),
    "reviews": ("review_id", "review_time", ("user_id", "item_id")),
}


@dataclass(frozen=True)
class Options:
    graph: str
    data: str
    fanouts: tuple[int, ...]
    batch: int
    warmup: int
    repeat: int


# ---------------------------------------------------------------------------------------------- memory
def _status_mb() -> dict[str, float]:
    """Current RSS split into anonymous and file-backed (mapped graph pages) parts, in MB (Linux)."""
    out: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(rest.split()[0]) / 1024
    except OSError:
        import psutil

        out["VmRSS"] = psutil.Process().memory_info().rss / 2**20
    return out


def _peak_rss_mb() -> float:
    """Peak RSS of this process. VmHWM, not getrusage's ru_maxrss where /proc has it: Linux carries
    ru_maxrss over fork and exec, so a spawned worker would report its parent's peak."""
    return _status_mb().get("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------------------------------------- data
def prepare(edges: int, seed: int) -> tuple[Path, dict[str, Any]]:
    """Generates and builds the graph once; later runs reuse it (the cache records how long it took)."""
    from graph_engine.shards.format import FORMAT_VERSION
    from graph_engine.shards.local_builder import build_local
    from graph_engine.spec import GraphSpec
    from graph_engine.synthetic import default_config, generate

    root = CACHE / f"edges-{edges}-seed{seed}"
    info_file = root / "prepare.json"
    manifest = root / "graph" / "manifest.json"
    if info_file.exists() and manifest.exists():
        if json.loads(manifest.read_text()).get("format_version") == FORMAT_VERSION:
            return root, {**json.loads(info_file.read_text()), "cached": True}
        shutil.rmtree(root / "graph")  # built by an older format: built again from the same data
    info: dict[str, Any] = json.loads(info_file.read_text()) if info_file.exists() else {}
    t = time.perf_counter()
    if not (root / "data" / "graph.yaml").exists():
        # default_config counts event rows; every event (order, review) carries two foreign keys
        generate(default_config(max(edges // 2, 1000), seed), root / "data", "parquet")
        info["generate_s"] = round(time.perf_counter() - t, 1)
    t = time.perf_counter()
    build_local(GraphSpec.from_yaml(root / "data" / "graph.yaml"), root / "graph")
    info["build_s"] = round(time.perf_counter() - t, 1)
    info_file.write_text(json.dumps(info))
    info["cached"] = False
    return root, info


def draw_seeds(graph: Graph, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random users at random anchor times in the middle 80% of the graph's time range (whole seconds,
    so Kumo, which works in seconds, sees the same anchors)."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, graph[SEED_TABLE].num_rows, size=n)
    lo, hi = graph.min_time(), graph.max_time()
    span = hi - lo
    anchors = rng.integers(lo + span // 10, hi - span // 10, size=n)
    return rows.astype(np.int64), (anchors // 10**9 * 10**9).astype(np.int64)


# ---------------------------------------------------------------------------------------------- peers
class NumpySampler:
    """The same walk written the straightforward way: per hop and edge type, vectorised NumPy over the
    same CSR arrays (a vectorised bisection for "children before t", np.repeat for the k most recent),
    and per-seed dedup with np.unique on (seed, table, row) keys."""

    def __init__(self, graph: Graph, fanouts: tuple[int, ...]) -> None:
        self.graph = graph
        self.fanouts = fanouts
        self.table_names = list(graph.table_names)
        self.edges: dict[str, list[EdgeType]] = {t: [] for t in self.table_names}
        for i, (child, fk, parent) in enumerate(graph.schema.edges()):
            self.edges[child].append(EdgeType(2 * i, child, fk, parent, True))
            self.edges[parent].append(EdgeType(2 * i + 1, child, fk, parent, False))

    def _children(
        self, e: EdgeType, rows: np.ndarray, anchors: np.ndarray, k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        csr = self.graph[e.parent].csr(e.child, e.fk)
        start = csr.start[rows]
        lo, hi = start.copy(), start + csr.count[rows]
        last = max(len(csr.time) - 1, 0)
        for _ in range(int(np.max(hi - lo, initial=0)).bit_length()):
            go = lo < hi
            mid = (lo + hi) >> 1
            le = go & (csr.time[np.minimum(mid, last)] <= anchors)
            lo = np.where(le, mid + 1, lo)
            hi = np.where(go & ~le, mid, hi)
        take = np.minimum(k, lo - start)
        idx = np.repeat(np.arange(len(rows)), take)
        q = np.arange(len(idx)) - np.repeat(np.cumsum(take) - take, take)
        return idx, csr.child[lo[idx] - 1 - q]

    def sample(self, seed_table: str, rows: np.ndarray, anchors: np.ndarray) -> np.ndarray:
        """Sorted unique int64 keys seed << 44 | table << 40 | row of every sampled node."""
        tid = {t: i for i, t in enumerate(self.table_names)}
        seeds = np.arange(len(rows), dtype=np.int64)
        seen = np.unique((seeds << 44) | (tid[seed_table] << 40) | rows)
        frontier = {seed_table: (seeds, rows)}
        for hop, k in enumerate(self.fanouts):
            found: list[np.ndarray] = []
            for table, (fs, fr) in frontier.items():
                fa = anchors[fs]
                for e in self.edges[table]:
                    if e.to_parent:
                        p = self.graph[e.child].fk(e.fk)[fr]
                        ok = p >= 0
                        ptime = self.graph[e.parent].time
                        if ptime is not None:
                            ok &= ptime[np.maximum(p, 0)] <= fa
                        s, r = fs[ok], p[ok]
                    else:
                        idx, r = self._children(e, fr, fa, k)
                        s = fs[idx]
                    found.append((s << 44) | (tid[e.dst] << 40) | r)
            cand = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
            new = cand[~np.isin(cand, seen, assume_unique=True)]
            if not len(new):
                break
            seen = np.union1d(seen, new)
            t_of = (new >> 40) & 0xF
            frontier = {
                t: (new[t_of == i] >> 44, new[t_of == i] & ((1 << 40) - 1))
                for i, t in enumerate(self.table_names)
                if hop + 1 < len(self.fanouts) and (t_of == i).any()
            }
        return seen


def subgraph_keys(sub: Subgraph) -> np.ndarray:
    return np.sort((sub.seed_of_node().astype(np.int64) << 44) | (sub.table.astype(np.int64) << 40) | sub.row)


# ---------------------------------------------------------------------------------------------- kernels
@numba.njit(cache=True, nogil=True)
def _scan(a: np.ndarray) -> int:
    acc = 0
    for i in range(len(a)):
        acc ^= a[i]
    return acc


@numba.njit(cache=True, nogil=True)
def _random_gathers(child: np.ndarray, ctime: np.ndarray, n: int, seed: int) -> int:
    """n independent random reads of (child[i], time[i]): the memory system's limit for this walk. The
    index is the top half of an LCG step scaled to the length by a multiply and a shift: a modulo (a 64-bit
    division per gather) held the loop about 8% below that limit."""
    x = np.uint64(seed) | np.uint64(1)
    m = np.uint64(len(child))
    small = m < np.uint64(1 << 32)
    acc = 0
    for _ in range(n):
        x = x * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
        if small:
            i = np.int64(((x >> np.uint64(32)) * m) >> np.uint64(32))
        else:
            i = np.int64((x >> np.uint64(17)) % m)
        acc ^= child[i] ^ ctime[i]
    return acc


def _csr_arrays(graph: Graph) -> list[tuple[str, np.ndarray, np.ndarray]]:
    out = []
    for child, fk, parent in graph.schema.edges():
        csr = graph[parent].csr(child, fk)
        out.append((f"{parent}<-{child}.{fk}", csr.child, csr.time))
    return out


def _lines(first: np.ndarray, last: np.ndarray) -> np.ndarray:
    """64-byte cache lines spanned by int64 elements first..last (inclusive; 0 where last < first)."""
    return np.where(last >= first, (last * 8) // 64 - (first * 8) // 64 + 1, 0)


def touched_bytes(graph: Graph, sampler: TemporalSampler, sub: Subgraph) -> tuple[int, int]:
    """(bytes, random reads) of graph arrays one sampled batch reads. Bytes: per expanded node and edge
    type, the foreign key and parent time (parents; not read for a node reached from its parent through
    the same foreign key), or the segment bounds (start of the row and of the next row), the binary
    search's probes and the taken children with their times (children). Random reads: reads at
    data-dependent positions counted once per 64-byte line (fk, parent time; the start line or two, the
    lines the binary search probes and the lines holding the taken children and their times), whether or
    not the line is cached. Replayed with the sampler's own kernel, outside the timed loop."""
    total = 0
    reads = 0
    expanded = sub.hop < sampler.cfg.hops
    seed_of = sub.seed_of_node()
    anchors = sub.anchor[seed_of]
    plan = sampler._get_plan()
    for ti, table in enumerate(sub.table_names):
        m = expanded & (sub.table == ti)
        rows, a = sub.row[m], anchors[m]
        hops, via, seeds = sub.hop[m], sub.edge[m], seed_of[m]
        for e in sampler._out_edges[table]:
            if e.to_parent:
                keep = via != (e.index ^ 1)
                # nodes reached through a CSR that stores this key beside its children read it there
                # (where the sampler's plan has its address): about one line per eight of one seed's
                # children
                j = sampler._out_edges[table].index(e)
                beside = [
                    x.index
                    for x in sampler.edge_types
                    if not x.to_parent and x.child == table and plan.beside[x.index, j] != 0
                ]
                bes = keep & np.isin(via, beside)
                timed = graph[e.parent].time is not None
                linked = int((graph[e.child].fk(e.fk)[rows[keep]] >= 0).sum())
                total += 8 * int(keep.sum()) + (8 * linked if timed else 0)
                _, per_run = np.unique(seeds[bes] * len(sampler.edge_types) + via[bes], return_counts=True)
                reads += int((keep & ~bes).sum()) + int((per_run // 8 + 1).sum()) + (linked if timed else 0)
                continue
            csr = graph[e.parent].csr(e.child, e.fk)
            count = csr.count[rows]
            start = csr.start[rows]
            total += 16 * len(rows) + 8 * int(np.ceil(np.log2(count + 1)).sum())
            # the search halves the segment's lines until one is left: about log2(lines) + 1 of them
            seg_lines = _lines(start, start + count - 1)
            reads += int(_lines(rows, rows + 1).sum()) + int(np.ceil(np.log2(seg_lines + 1)).sum())
            for h in np.unique(hops):
                sel = hops == h
                src, _, _ = _children(
                    csr.start,
                    csr.count,
                    csr.child,
                    csr.time,
                    rows[sel],
                    a[sel],
                    rows[sel],
                    sampler.fanout(e, int(h)),
                    False,
                    np.uint64(0),
                )
                total += 16 * len(src)
                # "recent" takes a run of positions ending at the visible end of each segment
                take = np.bincount(src, minlength=int(sel.sum()))
                end = np.array(
                    [
                        int(np.searchsorted(csr.time[s : s + c], t, side="right")) + s
                        for s, c, t in zip(
                            start[sel].tolist(), count[sel].tolist(), a[sel].tolist(), strict=True
                        )
                    ],
                    dtype=np.int64,
                )
                reads += 2 * int(_lines(end - take, end - 1).sum())
    return total, reads


# ---------------------------------------------------------------------------------------------- workers
def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def worker(task: str, opt: Options, rows: np.ndarray, anchors: np.ndarray, barrier: Any, queue: Any) -> None:
    """One process: opens the graph itself, warms up (numba cache, first pages), waits for its peers, runs."""
    os.dup2(2, 1)  # stdout carries the one JSON document: whatever a peer prints goes to stderr
    try:
        queue.put(_run_task(task, opt, rows, anchors, barrier))
    except Exception as e:  # reported in the JSON rather than lost in a child process
        queue.put({"error": f"{type(e).__name__}: {e}"})
        barrier.abort()


def _run_task(task: str, opt: Options, rows: np.ndarray, anchors: np.ndarray, barrier: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    before = _status_mb()["VmRSS"]
    t = time.perf_counter()
    if task == "kumo":
        sample, built = _kumo(opt)
        res.update(built)
    else:
        graph = Graph.open(opt.graph)
        cfg = SamplerConfig(fanouts=opt.fanouts, strategy="recent")
        ours = TemporalSampler(graph, cfg)
    res["open_s"] = time.perf_counter() - t
    res["rss_before_open_mb"] = before
    res["rss_after_open_mb"] = _status_mb()["VmRSS"]
    if task == "ours":
        sample = ours.sample
    elif task == "numpy":
        sample = NumpySampler(graph, opt.fanouts).sample
    elif task == "limit":
        arrays = _csr_arrays(graph)
        _random_gathers(arrays[0][1], arrays[0][2], 1000, 1)
        n = 4_000_000
        barrier.wait()
        times = []
        for _ in range(1 + opt.repeat):  # as for the samplers: a first pass that maps pages, then the best
            t = time.perf_counter()
            for i, (_, child, ctime) in enumerate(arrays):
                _random_gathers(child, ctime, n, i + 1 + os.getpid())
            times.append(time.perf_counter() - t)
        return {
            "gathers": n * len(arrays),
            "seconds_first_pass": times[0],
            "seconds": min(times[1:]),
            **_memory(res),
        }
    elif task == "paired":
        return _paired(ours, graph, opt, rows, anchors, barrier, res)
    elif task == "scan":
        scanned = [a for _, c, tt in _csr_arrays(graph) for a in (c, tt)]
        out = {}
        for rnd in ("first", "second"):
            t = time.perf_counter()
            for a in scanned:
                _scan(a)
            dt = time.perf_counter() - t
            out[rnd] = {"gb": sum(a.nbytes for a in scanned) / 1e9, "seconds": dt}
        return {**out, **_memory(res)}
    warm = slice(0, opt.warmup)
    sample(SEED_TABLE, rows[warm], anchors[warm])
    res["rss_after_warmup_mb"] = _status_mb()["VmRSS"]
    barrier.wait()
    # Passes over the same seeds: the first maps each page it touches into this process (minor faults,
    # the page cache being warm); the others run on mapped pages (steady state) and the fastest counts,
    # the machine being shared. Anonymous memory is read after every batch of the first pass only:
    # reading /proc/self/status takes about 0.1 ms, a sixth of one of our batches, and the timed passes
    # sample the same batches (the peak of all memory is the kernel's VmHWM, which needs no polling).
    anon_peak = 0.0
    times = []
    for npass in range(1 + opt.repeat):
        nodes = 0
        t = time.perf_counter()
        for sl in _batches(len(rows), opt.batch):
            out = sample(SEED_TABLE, rows[sl], anchors[sl])
            nodes += (
                out if isinstance(out, int) else (out.num_nodes if isinstance(out, Subgraph) else len(out))
            )
            if npass == 0:
                anon_peak = max(anon_peak, _status_mb().get("RssAnon", 0.0))
        times.append(time.perf_counter() - t)
    res["seconds_first_pass"], res["seconds"] = times[0], min(times[1:])
    res["seeds"] = len(rows)
    res["nodes"] = int(nodes)
    res["peak_anon_mb"] = anon_peak
    if task == "ours":
        # bytes touched, from a replay of the first batches (outside the timed loop)
        n_replay = min(len(rows), 20 * opt.batch)
        touched = reads = nodes_replay = 0
        for sl in _batches(n_replay, opt.batch):
            sub = ours.sample(SEED_TABLE, rows[sl], anchors[sl])
            b, r = touched_bytes(graph, ours, sub)
            touched, reads, nodes_replay = touched + b, reads + r, nodes_replay + sub.num_nodes
        res["touched_bytes_per_seed"] = touched / n_replay
        res["random_reads_per_node"] = reads / max(nodes_replay, 1)
        res["cache_resident_nodes_per_s"] = _cache_resident(ours, rows[: opt.batch], anchors[: opt.batch])
    return {**res, **_memory(res)}


def _paired(
    ours: TemporalSampler,
    graph: Graph,
    opt: Options,
    rows: np.ndarray,
    anchors: np.ndarray,
    barrier: Any,
    res: dict[str, Any],
) -> dict[str, Any]:
    """Our sampling passes and the gather limit's passes alternated in one process, so that each ratio
    compares two measurements taken a fraction of a second apart: on a shared machine the two rates move
    together with the load, and separate runs can land in different conditions."""
    arrays = _csr_arrays(graph)
    _random_gathers(arrays[0][1], arrays[0][2], 1000, 1)
    batches = _batches(len(rows), opt.batch)
    for sl in batches:  # maps the pages the passes touch
        ours.sample(SEED_TABLE, rows[sl], anchors[sl])
    barrier.wait()
    n = 1_000_000
    nodes_per_s, gathers_per_s = [], []
    for rnd in range(1 + opt.repeat):
        nodes, t = 0, time.perf_counter()
        for sl in batches:
            nodes += ours.sample(SEED_TABLE, rows[sl], anchors[sl]).num_nodes
        nodes_per_s.append(nodes / (time.perf_counter() - t))
        t = time.perf_counter()
        for i, (_, child, ctime) in enumerate(arrays):
            _random_gathers(child, ctime, n, rnd * len(arrays) + i + 1)
        gathers_per_s.append(n * len(arrays) / (time.perf_counter() - t))
    return {"nodes_per_s": nodes_per_s, "gathers_per_s": gathers_per_s, **_memory(res)}


def _cache_resident(ours: TemporalSampler, rows: np.ndarray, anchors: np.ndarray) -> float:
    """Nodes/s re-sampling one batch over and over: its graph lines stay in the CPU caches, so this is what
    the walk costs in instructions alone, the ceiling that hiding memory latency could reach."""
    best = 0.0
    for _ in range(3):
        nodes, t = 0, time.perf_counter()
        for _ in range(100):
            nodes += ours.sample(SEED_TABLE, rows, anchors).num_nodes
        best = max(best, nodes / (time.perf_counter() - t))
    return best


def _memory(res: dict[str, Any]) -> dict[str, Any]:
    st = _status_mb()
    return {
        "peak_rss_mb": _peak_rss_mb(),
        "rss_end_mb": st.get("VmRSS"),
        "rss_end_file_mb": st.get("RssFile"),
        "rss_end_anon_mb": st.get("RssAnon"),
    }


def _kumo(opt: Options) -> tuple[Any, dict[str, Any]]:
    """Kumo's local sampler over the same sources; returns a `sample(table, rows, anchors)` that maps our
    row ids to its node ids and our ns anchors to its seconds, and calls its compiled NeighborSampler."""
    import pandas as pd
    import pyarrow.parquet as pq

    try:
        import kumoai.rfm as rfm
        from kumoai.rfm.backend.local.sampler import LocalSampler
    except ImportError as e:
        raise RuntimeError(
            f"kumoai is not installed ({e}); `pip install kumoai` to compare with it"
        ) from None
    t = time.perf_counter()
    frames: dict[str, pd.DataFrame] = {}
    for name, (pk, tcol, fks) in KEY_COLUMNS.items():
        cols = [pk, *fks, *([tcol] if tcol else [])]
        frames[name] = pq.read_table(Path(opt.data) / f"{name}.parquet", columns=cols).to_pandas()
        if tcol:  # Kumo reads times as datetime64[ns] (other units silently empty every window)
            frames[name][tcol] = frames[name][tcol].astype("datetime64[ns]")
    tables = [
        rfm.LocalTable(frames[n], name=n, primary_key=pk, time_column=tc)
        for n, (pk, tc, _) in KEY_COLUMNS.items()
    ]
    edges = [(n, fk, LINKS[fk]) for n, (_, _, fks) in KEY_COLUMNS.items() for fk in fks]
    sampler = LocalSampler(rfm.Graph(tables, edges=edges), verbose=False)
    built = {"build_s": time.perf_counter() - t}
    graph = Graph.open(opt.graph)
    users = graph[SEED_TABLE]
    # our row id → Kumo's node id, once (outside the timed loop: only the sampling call is compared)
    pkey_map = sampler._graph_store.pkey_map_dict[SEED_TABLE]["arange"]
    node_id = pkey_map.loc[users.key_values(np.arange(users.num_rows))].to_numpy().astype(np.int64)
    built["rss_after_build_mb"] = _status_mb()["VmRSS"]
    num_neighbors = {"__".join(e): list(opt.fanouts) for e in sampler.edge_types}
    keep_alive = (frames, tables, sampler)  # its NeighborSampler holds raw pointers into these

    def sample(table: str, rows: np.ndarray, anchors: np.ndarray) -> int:
        out = sampler._graph_sampler.sample(num_neighbors, {}, table, node_id[rows], anchors // 10**9)
        assert keep_alive
        return sum(len(v) for v in out[2].values())

    return sample, built


def run_procs(task: str, opt: Options, rows: np.ndarray, anchors: np.ndarray, procs: int) -> dict[str, Any]:
    """Runs `task` in `procs` fresh processes on disjoint halves of the seeds, started together."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(procs)
    queue = ctx.Queue()
    parts = np.array_split(np.arange(len(rows)), procs)
    ps = [ctx.Process(target=worker, args=(task, opt, rows[p], anchors[p], barrier, queue)) for p in parts]
    for p in ps:
        p.start()
    results = [queue.get() for _ in ps]
    for p in ps:
        p.join()
    errors = [r["error"] for r in results if "error" in r]
    if errors:
        return {"error": errors[0]}
    return {"procs": procs, "per_process": results}


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    if "error" in run:
        return run
    per = run["per_process"]
    wall = max(r["seconds"] for r in per)
    seeds = sum(r["seeds"] for r in per)
    nodes = sum(r["nodes"] for r in per)
    out = {
        "procs": run["procs"],
        "seeds": seeds,
        "seconds": round(wall, 3),
        "seeds_per_s": round(seeds / wall),
        "seeds_per_s_first_pass": round(seeds / max(r["seconds_first_pass"] for r in per)),
        "nodes_per_s": round(nodes / wall),
        "nodes_per_seed": round(nodes / seeds, 2),
        "peak_rss_mb_per_process": [round(r["peak_rss_mb"], 1) for r in per],
        "peak_anon_mb_per_process": [round(r["peak_anon_mb"], 1) for r in per],
        "rss_end_file_mb_per_process": [round(r["rss_end_file_mb"] or 0, 1) for r in per],
    }
    if "touched_bytes_per_seed" in per[0]:
        b = float(np.mean([r["touched_bytes_per_seed"] for r in per]))
        out["touched_bytes_per_seed"] = round(b)
        out["touched_gb_per_s"] = round(b * seeds / wall / 1e9, 3)
        out["random_reads_per_node"] = round(float(np.mean([r["random_reads_per_node"] for r in per])), 2)
        out["cache_resident_nodes_per_s_per_process"] = [round(r["cache_resident_nodes_per_s"]) for r in per]
    if "build_s" in per[0]:
        out["build_s"] = round(per[0]["build_s"], 1)
        out["rss_after_build_mb"] = round(per[0]["rss_after_build_mb"], 1)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edges", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=100_000, help="seed (user, anchor) pairs per measurement")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--procs", default="1,2")
    ap.add_argument("--repeat", type=int, default=10, help="timed passes after the first; the fastest counts")
    ap.add_argument("--no-kumo", action="store_true")
    ap.add_argument("--no-numpy", action="store_true")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()
    root, prep = prepare(args.edges, args.seed)
    graph_path = root / "graph"
    t = time.perf_counter()
    graph = Graph.open(graph_path)
    manifest = graph.manifest
    rows, anchors = draw_seeds(graph, args.seeds, args.seed)
    opt = Options(
        str(graph_path),
        str(root / "data"),
        (16, 8),
        args.batch,
        warmup=min(2048, args.seeds),
        repeat=max(args.repeat, 1),
    )
    procs = [int(p) for p in args.procs.split(",")]
    doc: dict[str, Any] = {
        "benchmark": "sampler",
        "command": " ".join([".venv/bin/python", "benchmarks/sampler.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in load_start]},
        "graph": {
            "path": str(root),
            "edges": manifest["counts"]["edges"],
            "rows": {t: manifest["tables"][t]["rows"] for t in graph.table_names},
            "array_gb": round(
                sum(
                    f["bytes"]
                    for tm in manifest["tables"].values()
                    for a in tm["arrays"].values()
                    for f in a["files"]
                )
                / 1e9,
                3,
            ),
            **prep,
        },
        "config": {
            "fanouts": list(opt.fanouts),
            "strategy": "recent",
            "seed_table": SEED_TABLE,
            "seeds": args.seeds,
            "batch": args.batch,
            "timing": f"fastest of {max(args.repeat, 1)} passes after a first (page-mapping) pass",
        },
    }
    del graph
    # open: in a fresh process (the parent has touched the graph while drawing seeds)
    first = run_procs("ours", opt, rows[: opt.warmup + 1], anchors[: opt.warmup + 1], 1)
    if "error" in first:
        doc["open"] = first
    else:
        r = first["per_process"][0]
        doc["open"] = {
            "seconds": round(r["open_s"], 4),
            "rss_before_open_mb": round(r["rss_before_open_mb"], 1),
            "rss_after_open_mb": round(r["rss_after_open_mb"], 1),
            "rss_after_first_batch_mb": round(r["rss_after_warmup_mb"], 1),
        }
    doc["ours"] = {str(p): summarize(run_procs("ours", opt, rows, anchors, p)) for p in procs}
    limit = {str(p): run_procs("limit", opt, rows, anchors, p) for p in procs}
    doc["random_gather_limit"] = {
        p: (
            v
            if "error" in v
            else {
                "gathers_per_s": round(
                    sum(r["gathers"] for r in v["per_process"]) / max(r["seconds"] for r in v["per_process"])
                ),
                "gathers_per_s_first_pass": round(
                    sum(r["gathers"] for r in v["per_process"])
                    / max(r["seconds_first_pass"] for r in v["per_process"])
                ),
                "note": "independent random reads of (child[i], time[i]) from the mmapped CSR arrays",
            }
        )
        for p, v in limit.items()
    }
    paired = run_procs("paired", opt, rows, anchors, 1)
    if "error" in paired:
        doc["paired_1p"] = paired
    else:
        pr = paired["per_process"][0]
        ratio = [g / o for o, g in zip(pr["nodes_per_s"], pr["gathers_per_s"], strict=True)]
        doc["paired_1p"] = {
            "rounds": len(ratio),
            "nodes_per_s": [round(x) for x in pr["nodes_per_s"]],
            "gathers_per_s": [round(x) for x in pr["gathers_per_s"]],
            "limit_over_ours_per_round": [round(x, 2) for x in ratio],
            "limit_over_ours_median": round(float(np.median(ratio)), 2),
            "best_limit_over_best_ours": round(max(pr["gathers_per_s"]) / max(pr["nodes_per_s"]), 2),
            "note": "each round: one pass of our sampler over all seeds, then 1M random gathers from each "
            "CSR (child, time) pair, in the same process",
        }
    scan = run_procs("scan", opt, rows, anchors, 1)
    if "error" in scan:
        doc["sequential_scan"] = scan
    else:
        s = scan["per_process"][0]
        doc["sequential_scan"] = {
            "gb": round(s["second"]["gb"], 3),
            "gb_per_s_first": round(s["first"]["gb"] / s["first"]["seconds"], 2),
            "gb_per_s": round(s["second"]["gb"] / s["second"]["seconds"], 2),
        }
    if not args.no_numpy:
        doc["peer_numpy"] = summarize(run_procs("numpy", opt, rows, anchors, 1))
        doc["peer_numpy"]["same_node_sets_as_ours"] = _same_sets(opt, rows, anchors)
    if not args.no_kumo:
        doc["peer_kumo"] = _kumo_memory_check(manifest) or summarize(run_procs("kumo", opt, rows, anchors, 1))
        if "error" in doc["peer_kumo"] and "not installed" in doc["peer_kumo"]["error"]:
            doc["peer_kumo"]["hint"] = "pip install kumoai"
    doc["ratios"] = _ratios(doc, procs)
    doc["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    doc["seconds"] = round(time.perf_counter() - t, 1)
    result_file = CACHE / f"result-edges-{args.edges}.json"
    _compare_sizes(doc, args.edges)
    result_file.write_text(json.dumps(doc, indent=1))
    return doc


def _kumo_memory_check(manifest: dict[str, Any]) -> dict[str, Any] | None:
    """Kumo holds the whole graph in memory (~190 bytes per row measured at 10M edges): skip it, saying
    why, rather than push a shared machine into swapping or the OOM killer."""
    import psutil

    need = 190 * manifest["counts"]["rows"] * 1.5
    avail = psutil.virtual_memory().available
    if need > avail:
        return {"error": f"skipped: needs ~{need / 1e9:.1f} GB in memory, {avail / 1e9:.1f} GB available"}
    return None


def _same_sets(opt: Options, rows: np.ndarray, anchors: np.ndarray) -> bool:
    graph = Graph.open(opt.graph)
    ours = TemporalSampler(graph, SamplerConfig(fanouts=opt.fanouts))
    peer = NumpySampler(graph, opt.fanouts)
    sl = slice(0, min(len(rows), 4 * opt.batch))
    want = subgraph_keys(ours.sample(SEED_TABLE, rows[sl], anchors[sl]))
    return bool(np.array_equal(want, peer.sample(SEED_TABLE, rows[sl], anchors[sl])))


def _ratios(doc: dict[str, Any], procs: list[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for p in map(str, procs):
        ours, lim = doc["ours"].get(p, {}), doc["random_gather_limit"].get(p, {})
        if "nodes_per_s" in ours and "gathers_per_s" in lim:
            out[f"random_gather_limit_over_our_nodes_per_s_{p}p"] = round(
                lim["gathers_per_s"] / ours["nodes_per_s"], 2
            )
            if ours.get("random_reads_per_node"):
                out[f"random_read_limit_over_our_random_reads_per_s_{p}p"] = round(
                    2 * lim["gathers_per_s"] / (ours["nodes_per_s"] * ours["random_reads_per_node"]), 2
                )
                out["note_random_reads"] = (
                    "random_read_limit_over_our_random_reads_per_s: the limit's reads/s (2 per gather: "
                    "child[i] and time[i]) over ours (nodes/s x random_reads_per_node, the data-dependent "
                    "64-byte lines the walk reads per sampled node, cached or not); the ratios above "
                    "compare one gather with one sampled node"
                )
    one = doc["ours"].get("1", {})
    if "nodes_per_s" in one:
        for peer in ("peer_numpy", "peer_kumo"):
            if "nodes_per_s" in doc.get(peer, {}):
                out[f"ours_over_{peer[5:]}_seeds_per_s"] = round(
                    one["seeds_per_s"] / doc[peer]["seeds_per_s"], 2
                )
                out[f"ours_over_{peer[5:]}_nodes_per_s"] = round(
                    one["nodes_per_s"] / doc[peer]["nodes_per_s"], 2
                )
                out[f"{peer[5:]}_over_ours_peak_rss"] = round(
                    doc[peer]["peak_rss_mb_per_process"][0] / one["peak_rss_mb_per_process"][0], 2
                )
    if one.get("cache_resident_nodes_per_s_per_process") and "gathers_per_s" in doc[
        "random_gather_limit"
    ].get("1", {}):
        out["random_gather_limit_over_cache_resident_nodes_per_s_1p"] = round(
            doc["random_gather_limit"]["1"]["gathers_per_s"]
            / one["cache_resident_nodes_per_s_per_process"][0],
            2,
        )
        out["note_cache_resident"] = (
            "the same batch re-sampled with its lines in the CPU caches: the walk's instruction cost alone; "
            "the sampler cannot get nearer the gather limit than this without fewer instructions per node"
        )
    two = doc["ours"].get("2", {})
    if "seeds_per_s" in one and "seeds_per_s" in two:
        out["speedup_2p_over_1p"] = round(two["seeds_per_s"] / one["seeds_per_s"], 2)
    return out


def _compare_sizes(doc: dict[str, Any], edges: int) -> None:
    """RSS while sampling against the other benchmark size's last result, when there is one."""
    for other in CACHE.glob("result-edges-*.json"):
        n = int(other.stem.split("-")[-1])
        if n == edges:
            continue
        prev = json.loads(other.read_text())
        if "1" not in prev.get("ours", {}) or "peak_anon_mb_per_process" not in doc["ours"].get("1", {}):
            continue
        key = f"vs_edges_{n}"
        doc.setdefault("rss_by_graph_size", {})[key] = {
            "edges": [prev["graph"]["edges"], doc["graph"]["edges"]],
            "peak_rss_mb_1p": [
                prev["ours"]["1"]["peak_rss_mb_per_process"][0],
                doc["ours"]["1"]["peak_rss_mb_per_process"][0],
            ],
            "peak_anon_mb_1p": [
                prev["ours"]["1"]["peak_anon_mb_per_process"][0],
                doc["ours"]["1"]["peak_anon_mb_per_process"][0],
            ],
            "nodes_per_s_1p": [prev["ours"]["1"]["nodes_per_s"], doc["ours"]["1"]["nodes_per_s"]],
        }


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
