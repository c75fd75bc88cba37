"""Link prediction inputs: candidate destination rows and (entity, candidate) pair features.

For `LIST_DISTINCT(results.raceId->races.circuitId, 0, 365, days) RANK TOP 10`, what predicts which
circuits a driver will race at is, above all, where he raced before and where everyone races now. Both
come from the query itself, for any schema: the target's LIST_DISTINCT re-evaluated over backward windows
of 1, 4, 16 and 64 target windows (membership of each candidate in the entity's past lists) and over all
entities (each candidate's current popularity). Candidates are the entity's past destinations plus the
most popular ones, so the true future items are usually among them (recall is reported by training).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from graph_engine.errors import RelfmError
from relfm_core.labels.aggregate import ListResult
from relfm_core.labels.engine import LabelEngine
from relfm_core.labels.result import Labels
from relfm_core.pql import AggFunc, Aggregation

SCALES = (1, 4, 16, 64)
PAIR_FEATS = 8


@dataclass
class LinkInputs:
    """Per pair, up to K candidates (row ids of the destination table, -1 = padding)."""

    candidates: npt.NDArray[np.int64]  # [n, K]
    pair: npt.NDArray[np.float32]  # [n, K, PAIR_FEATS]
    mask: npt.NDArray[np.bool_]  # [n, K]
    target: npt.NDArray[np.bool_] | None = None  # [n, K]: in the future list (training)
    destination: str = ""


def link_aggregation(engine: LabelEngine) -> Aggregation:
    target = engine.query.target
    if not isinstance(target, Aggregation) or target.func is not AggFunc.LIST_DISTINCT:
        raise RelfmError("link prediction needs a LIST_DISTINCT target over a foreign key")
    return target


def _past_lists(
    engine: LabelEngine, agg: Aggregation, rows: np.ndarray, anchors: np.ndarray
) -> list[ListResult]:
    pairs = engine._pairs(rows, anchors)
    length = max(int(agg.end - agg.start), 1)
    out = []
    for k in SCALES:
        res = engine._operand(dataclasses.replace(agg, start=-k * length, end=0), pairs)
        assert isinstance(res, ListResult)
        if pairs.inverse is not None:
            lab = Labels(
                engine.task_type, res.lengths.astype(np.float64), res.valid, None, res.ptr, res.items
            )
            sub = lab.subset(pairs.inverse)
            assert sub.ptr is not None and sub.items is not None
            res = ListResult(sub.ptr, sub.items, res.vocab, res.target_table)
        out.append(res)
    return out


def popularity(engine: LabelEngine, anchor: int, scale: int, n_dest: int) -> npt.NDArray[np.float64]:
    """How many entities had each destination in their list over the last `scale` windows before `anchor`."""
    agg = link_aggregation(engine)
    rows = np.arange(engine.num_entities, dtype=np.int64)
    length = max(int(agg.end - agg.start), 1)
    res = engine.aggregate(
        dataclasses.replace(agg, start=-scale * length, end=0),
        rows,
        np.full(len(rows), anchor, dtype=np.int64),
    )
    assert isinstance(res, ListResult)
    return np.bincount(res.items, minlength=n_dest).astype(np.float64)


def link_inputs(
    engine: LabelEngine,
    rows: npt.ArrayLike,
    anchors: npt.ArrayLike,
    max_candidates: int = 48,
    popular: int = 24,
    labels: Labels | None = None,
) -> LinkInputs:
    agg = link_aggregation(engine)
    dest = engine.query.link_target_table
    if dest is None:
        raise RelfmError("link prediction needs a LIST_DISTINCT over a foreign key (a destination table)")
    rows = np.asarray(rows, dtype=np.int64)
    anchors = np.asarray(anchors, dtype=np.int64)
    n = len(rows)
    n_dest = engine.graph.table(dest).num_rows
    past = _past_lists(engine, agg, rows, anchors)
    pop_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    cand = np.full((n, max_candidates), -1, dtype=np.int64)
    pair = np.zeros((n, max_candidates, PAIR_FEATS), dtype=np.float32)
    target = np.zeros((n, max_candidates), dtype=bool) if labels is not None else None
    future = labels.lists() if labels is not None else None
    for i in range(n):
        a = int(anchors[i])
        if a not in pop_cache:
            p1 = popularity(engine, a, 1, n_dest)
            p4 = popularity(engine, a, 4, n_dest)
            rank = np.empty(n_dest)
            rank[np.argsort(p4, kind="stable")] = np.arange(n_dest) / max(n_dest - 1, 1)
            pop_cache[a] = (p1, p4, rank)
        p1, p4, rank = pop_cache[a]
        member = []
        for res in past:
            s, e = int(res.ptr[i]), int(res.ptr[i + 1])
            member.append(set(res.items[s:e].tolist()))
        # the entity's own past destinations first (most recent scale first), then the popular ones
        chosen: list[int] = []
        for m in member:
            for x in sorted(m, key=lambda x: -p4[x]):
                if x not in chosen:
                    chosen.append(x)
        top = np.argsort(-p4, kind="stable")[:popular]
        for x in top.tolist():
            if p4[x] > 0 and x not in chosen:
                chosen.append(x)
        chosen = chosen[:max_candidates]
        k = len(chosen)
        if k == 0:
            continue
        c = np.array(chosen, dtype=np.int64)
        cand[i, :k] = c
        for si, m in enumerate(member):
            pair[i, :k, si] = [x in m for x in chosen]
        pair[i, :k, 4] = np.log1p(p1[c]) / max(np.log1p(p1.max()), 1e-9)
        pair[i, :k, 5] = np.log1p(p4[c]) / max(np.log1p(p4.max()), 1e-9)
        pair[i, :k, 6] = rank[c]
        pair[i, :k, 7] = np.isin(c, top)
        if target is not None and future is not None:
            fut = set(future[i])
            target[i, :k] = [x in fut for x in chosen]
    return LinkInputs(cand, pair, cand >= 0, target, dest)
