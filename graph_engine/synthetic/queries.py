"""PQL task templates that fit a generated schema (churn, activity, counts, values, ranks, links).

Pretraining samples tasks from these strings; they are only text here (the PQL parser lives in
relfm_core). Links named by more than one foreign key between the same two tables are skipped, since
such a query would have to name the link.
"""

from __future__ import annotations

import math

from graph_engine.synthetic.config import (
    ColumnConfig,
    DimensionTable,
    EntityTable,
    EventTable,
    OccasionTable,
    SyntheticConfig,
)
from graph_engine.synthetic.layout import by_name, foreign_keys


def _window(cfg: SyntheticConfig, ev: EventTable) -> int:
    """A horizon with several events expected in it: 30 days, longer for occasion-paced events."""
    tables = by_name(cfg)
    days = 30.0
    for ch in ev.choices:
        occ = tables[ch.parent]
        if isinstance(occ, OccasionTable):
            days = max(days, 10 * math.ceil(occ.every_days * 4 / 10))
    return max(1, int(min(days, cfg.span_days / 4)))


def _is_rank(c: ColumnConfig) -> bool:
    return c.kind == "int" and c.dist == "rank"


def _entity_queries(cfg: SyntheticConfig, ev: EventTable, entity: str, pk: str) -> list[str]:
    w = _window(cfg, ev)
    e = ev.name
    each = f"FOR EACH {entity}.{pk}"
    out = [
        f"PREDICT COUNT({e}.*, 0, {w}, days) = 0 {each} WHERE COUNT({e}.*, -INF, 0, days) > 0",
        f"PREDICT COUNT({e}.*, 0, {w}, days) > 0 {each}",
        f"PREDICT COUNT({e}.*, 0, {3 * w}, days) {each}",
    ]
    for c in ev.columns:
        if c.kind == "float":
            out.append(f"PREDICT SUM({e}.{c.name}, 0, {w}, days) {each}")
            out.append(f"PREDICT AVG({e}.{c.name}, 0, {3 * w}, days) {each}")
        elif _is_rank(c):
            out.append(f"PREDICT MIN({e}.{c.name}, 0, {2 * w}, days) <= 3 {each}")
            out.append(f"PREDICT AVG({e}.{c.name}, 0, {2 * w}, days) {each}")
        elif c.kind == "int":
            out.append(f"PREDICT AVG({e}.{c.name}, 0, {3 * w}, days) {each}")
        elif c.kind == "category":
            out.append(f"PREDICT FIRST({e}.{c.name}, 0, {w}, days) {each}")
            out.append(f"PREDICT COUNT({e}.* WHERE {e}.{c.name} = '{c.values[0]}', 0, {w}, days) > 0 {each}")
        elif c.kind == "bool":
            out.append(f"PREDICT COUNT({e}.* WHERE {e}.{c.name} = true, 0, {w}, days) > 0 {each}")
    tables = by_name(cfg)
    fks = foreign_keys(cfg, ev)
    parents = list(fks.values())
    for col, parent in fks.items():
        if isinstance(tables[parent], DimensionTable) and parents.count(parent) == 1:
            out.append(f"PREDICT LIST_DISTINCT({e}.{col}, 0, {w}, days) RANK TOP 10 {each}")
    return out


def _dimension_queries(ev: EventTable, w: int, dim: str, pk: str) -> list[str]:
    e = ev.name
    each = f"FOR EACH {dim}.{pk}"
    out = [f"PREDICT COUNT({e}.*, 0, {w}, days) {each}", f"PREDICT COUNT({e}.*, 0, {w}, days) > 0 {each}"]
    out.extend(f"PREDICT SUM({e}.{c.name}, 0, {w}, days) {each}" for c in ev.columns if c.kind == "float")
    return out


def suggest_queries(cfg: SyntheticConfig) -> list[str]:
    """Templates for every (entity or dimension, event table) pair linked by exactly one foreign key."""
    tables = by_name(cfg)
    out: list[str] = []
    for ev in (t for t in cfg.tables if isinstance(t, EventTable)):
        fks = foreign_keys(cfg, ev)
        parents = list(fks.values())
        for parent in dict.fromkeys(parents):
            if parents.count(parent) != 1:
                continue
            p = tables[parent]
            if isinstance(p, EntityTable):
                out.extend(_entity_queries(cfg, ev, p.name, p.primary_key))
            elif isinstance(p, DimensionTable):
                out.extend(_dimension_queries(ev, _window(cfg, ev), p.name, p.primary_key))
    return list(dict.fromkeys(out))
