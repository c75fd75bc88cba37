"""Context and training data with Ray: labels, lag features and sampled subgraphs for many (entity,
anchor) pairs, computed by actors that each open the graph once.

The pairs are cut into fixed-size chunks (the chunking never depends on how many actors there are), the
chunks go to the least busy actor with a bounded number in flight (`ray.wait` is the backpressure: no
more than `max_in_flight` results wait in the object store), and results come back in chunk order.
Labels are a pure function of the pair and the sampler draws its random choices from the seed row and
anchor (graph_engine.sampler), so the output is identical for a given seed whatever the number of
actors. Results are dicts of NumPy arrays: Ray stores them once and readers map them without copying.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from graph_engine.sampler import SamplerConfig, Subgraph, TemporalSampler
from graph_engine.shards.reader import Graph
from pipelines import ray_cluster
from relfm_core.labels import LabelEngine

Batch = dict[str, np.ndarray]
SUBGRAPH_FIELDS = ("table", "row", "hop", "parent", "edge", "rel_time")


@dataclass(frozen=True)
class ContextSpec:
    """What each actor computes for its chunks."""

    graph: str  # a built graph folder, opened by every actor (mmap: shared pages, no copy)
    query: str
    lags: int = 8
    subgraphs: bool = False
    sampler: SamplerConfig = field(default_factory=lambda: SamplerConfig(fanouts=(8, 4), max_nodes=48))


class SampleActor:
    """Opens the graph and the query's label engine once; `run` serves one chunk."""

    def __init__(self, spec: ContextSpec, env: dict[str, str] | None = None) -> None:
        ray_cluster.apply_env(env or {})
        self.spec = spec
        self.graph = Graph.open(spec.graph)
        self.engine = LabelEngine(self.graph, spec.query)
        self.sampler = TemporalSampler(self.graph, spec.sampler) if spec.subgraphs else None

    def run(self, rows: np.ndarray, anchors: np.ndarray) -> Batch:
        return compute_chunk(self.engine, self.sampler, self.spec, rows, anchors)


def compute_chunk(
    engine: LabelEngine,
    sampler: TemporalSampler | None,
    spec: ContextSpec,
    rows: np.ndarray,
    anchors: np.ndarray,
) -> Batch:
    """Labels + lags (+ subgraph) of one chunk; shared by actors and the in-process path."""
    rows = np.asarray(rows, dtype=np.int64)
    anchors = np.asarray(anchors, dtype=np.int64)
    labels = engine.evaluate(rows, anchors)
    out: Batch = {
        "entity_row": rows,
        "anchor": anchors,
        "label": np.asarray(labels.values, dtype=np.float64),
        "label_valid": np.asarray(labels.valid, dtype=bool),
    }
    if spec.lags:
        values, valid, activity = engine.lagged(rows, anchors, spec.lags)
        out["lag_value"] = np.asarray(values, dtype=np.float64)
        out["lag_valid"] = np.asarray(valid, dtype=bool)
        out["lag_activity"] = np.asarray(activity, dtype=np.int64)
    if sampler is not None:
        sub = sampler.sample(engine.entity_table, rows, anchors)
        out["seed_ptr"] = np.asarray(sub.seed_ptr, dtype=np.int64)
        for name in SUBGRAPH_FIELDS:
            out[name] = np.asarray(getattr(sub, name))
    return out


def chunks(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of fixed size: the same for any number of actors."""
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def iter_context(
    spec: ContextSpec,
    rows: np.ndarray,
    anchors: np.ndarray,
    actors: int = 2,
    chunk_size: int = 4096,
    max_in_flight: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    ray_address: str | None = None,
) -> Iterator[Batch]:
    """Chunk results in chunk order, computed by `actors` Ray actors with at most `max_in_flight`
    (default 2 per actor) results pending at any time."""
    ray = ray_cluster.connect(ray_address)
    rows = np.asarray(rows, dtype=np.int64)
    anchors = np.asarray(anchors, dtype=np.int64)
    ranges = chunks(len(rows), chunk_size)
    limit = max(max_in_flight or 2 * actors, 1)
    remote_cls = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(SampleActor)
    pool = [remote_cls.remote(spec, ray_cluster.worker_env()) for _ in range(max(actors, 1))]
    busy = dict.fromkeys(range(len(pool)), 0)
    pending: dict[Any, tuple[int, int]] = {}  # ref -> (chunk index, actor)
    ready: dict[int, Any] = {}
    next_submit = next_yield = done_rows = 0
    try:
        while next_yield < len(ranges):
            # submit while the window of unconsumed chunks has room (backpressure)
            while next_submit < len(ranges) and next_submit - next_yield < limit:
                a = min(busy, key=lambda i: (busy[i], i))
                s, e = ranges[next_submit]
                ref = pool[a].run.remote(rows[s:e], anchors[s:e])
                pending[ref] = (next_submit, a)
                busy[a] += 1
                next_submit += 1
            if next_yield not in ready:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    idx, a = pending.pop(ref)
                    busy[a] -= 1
                    ready[idx] = ref
                continue
            batch = ray.get(ready.pop(next_yield))
            s, e = ranges[next_yield]
            next_yield += 1
            done_rows += e - s
            if progress is not None:
                progress(done_rows, len(rows))
            yield batch
    finally:
        for actor in pool:
            ray.kill(actor)


def generate(
    spec: ContextSpec,
    rows: np.ndarray,
    anchors: np.ndarray,
    actors: int = 2,
    chunk_size: int = 4096,
    **kw: Any,
) -> Batch:
    """All chunks of `iter_context`, concatenated."""
    return concat(list(iter_context(spec, rows, anchors, actors=actors, chunk_size=chunk_size, **kw)))


def concat(batches: list[Batch]) -> Batch:
    """Chunk results joined; subgraph offsets (`seed_ptr`) shifted so they index the joined arrays."""
    if not batches:
        return {}
    out: Batch = {}
    for k in batches[0]:
        if k == "seed_ptr":
            parts, base = [np.zeros(1, dtype=np.int64)], 0
            for b in batches:
                parts.append(b[k][1:] + base)
                base += int(b[k][-1])
            out[k] = np.concatenate(parts)
        else:
            out[k] = np.concatenate([b[k] for b in batches])
    return out


def subgraph(batch: Batch, graph: Graph, sampler: SamplerConfig) -> Subgraph:
    """The sampled subgraph arrays of a batch as a graph_engine Subgraph (for featurisation)."""
    probe = TemporalSampler(graph, sampler)
    return Subgraph(
        seed_ptr=batch["seed_ptr"],
        table=batch["table"],
        row=batch["row"],
        hop=batch["hop"],
        parent=batch["parent"],
        edge=batch["edge"],
        rel_time=batch["rel_time"],
        anchor=batch["anchor"],
        table_names=list(probe.table_names),
        edge_types=list(probe.edge_types),
    )


def to_arrow(batch: Batch) -> pa.Table:
    """The per-pair columns of a batch as Arrow (lags as fixed-size lists), for Parquet or Ray Data."""
    n = len(batch["entity_row"])
    cols: dict[str, pa.Array] = {
        "entity_row": pa.array(batch["entity_row"]),
        "anchor_time": pa.array(batch["anchor"].astype("datetime64[ns]")),
        "label": pa.array(batch["label"], mask=~batch["label_valid"]),
    }
    for k in ("lag_value", "lag_valid", "lag_activity"):
        if k in batch:
            width = batch[k].shape[1] if batch[k].ndim == 2 else 0
            flat = pa.array(batch[k].reshape(-1))
            cols[k] = (
                pa.FixedSizeListArray.from_arrays(flat, width)
                if n
                else pa.array([], pa.list_(flat.type, width))
            )
    return pa.table(cols)
