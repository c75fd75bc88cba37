"""Random predictive tasks for any schema: the task half of the pretraining prior.

Real queries come in a few families (Kumo's docs and RelBench agree): will the entity be active, will
it churn, how much / how many / on average, will a thresholded aggregate hold (top-3 qualifying, spend
over X), will a particular kind of event happen given that some event happens (driver-dnf), which
category comes first. We generate those families for every (entity table, event table) link of a schema,
with windows matched to the database's event rate and thresholds calibrated on the label distribution so
that tasks are neither trivial nor degenerate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from graph_engine.schema import GraphSchema
from graph_engine.spec import SemanticType

WINDOWS_DAYS = (1, 3, 7, 14, 30, 60, 90, 180, 365)


@dataclass(frozen=True)
class TaskTemplate:
    """A query with at most one threshold placeholder `{thr}` to calibrate."""

    text: str
    family: str
    entity_table: str
    event_table: str
    window_days: int
    needs_threshold: bool = False
    base_text: str | None = None  # the aggregate alone, evaluated to calibrate {thr}


@dataclass(frozen=True)
class Link:
    entity: str
    entity_key: str
    event: str
    fk: str
    link_name: str  # `event` or `event[fk]` when several foreign keys reach the entity


def links(schema: GraphSchema) -> list[Link]:
    """Every (entity table, time-stamped child table) pair a target can aggregate over."""
    out = []
    for parent, pinfo in schema.tables.items():
        if pinfo.primary_key is None:
            continue
        children = schema.children_of(parent)
        for child, fk in children:
            cinfo = schema.tables[child]
            if cinfo.time_column is None or child == parent:
                continue
            several = sum(1 for c, _ in children if c == child) > 1
            out.append(Link(parent, pinfo.primary_key, child, fk, f"{child}[{fk}]" if several else child))
    return out


def templates(
    schema: GraphSchema, link: Link, window_days: int, rng: np.random.Generator
) -> list[TaskTemplate]:
    e, k, w = link.entity, link.entity_key, window_days
    ev = schema.tables[link.event]
    name = link.link_name
    win = f"0, {w}, days"
    each = f"FOR EACH {e}.{k}"
    out: list[TaskTemplate] = []

    def add(text: str, family: str, base: str | None = None) -> None:
        out.append(TaskTemplate(text, family, e, link.event, w, base is not None, base))

    add(f"PREDICT COUNT({name}.*, {win}) > 0 {each}", "active")
    add(f"PREDICT COUNT({name}.*, {win}) = 0 {each}", "churn")
    add(f"PREDICT COUNT({name}.*, {win}) {each}", "count")
    nums = [
        c for c, i in ev.columns.items() if i.stype == SemanticType.numerical and c not in ev.foreign_keys
    ]
    cats = [
        c
        for c, i in ev.columns.items()
        if i.stype == SemanticType.categorical and c not in ev.foreign_keys and c != ev.primary_key
    ]
    assume = f" ASSUMING COUNT({name}.*, {win}) > 0"
    for col in rng.permutation(nums)[:2] if nums else []:
        ref = f"{link.event}.{col}"
        add(f"PREDICT SUM({name}.{col}, {win}) {each}", "sum")
        add(f"PREDICT AVG({name}.{col}, {win}) {each}", "avg")
        agg = str(rng.choice(["SUM", "AVG", "MIN", "MAX"]))
        op = str(rng.choice([">", "<=", ">=", "<"]))
        base = f"PREDICT {agg}({name}.{col}, {win}) {each}"
        add(f"PREDICT {agg}({name}.{col}, {win}) {op} {{thr}} {each}", f"{agg.lower()}_threshold", base)
        add(
            f"PREDICT MIN({name}.{col}, {win}) <= {{thr}} {each}",
            "min_threshold",
            f"PREDICT MIN({name}.{col}, {win}) {each}",
        )
        add(
            f"PREDICT COUNT({name}.* WHERE {ref} > {{thr}}, {win}) > 0 {each}{assume}",
            "filtered_given_active",
            f"PREDICT MAX({name}.{col}, {win}) {each}",
        )
    for col in rng.permutation(cats)[:2] if cats else []:
        add(f"PREDICT FIRST({name}.{col}, {win}) {each}", "first_class")
        add(f"PREDICT LAST({name}.{col}, {win}) {each}", "last_class")
    for fk2, parent in ev.foreign_keys.items():
        if fk2 == link.fk or parent == link.entity:
            continue
        add(f"PREDICT LIST_DISTINCT({name}.{fk2}, {win}) RANK TOP 10 {each}", "link")
        pinfo = schema.tables[parent]
        pnums = [
            c
            for c, i in pinfo.columns.items()
            if i.stype == SemanticType.numerical and c not in pinfo.foreign_keys
        ]
        if pnums:
            pc = str(rng.choice(pnums))
            add(f"PREDICT AVG({name}.{fk2}->{parent}.{pc}, {win}) {each}", "parent_avg")
        break
    return out


def choose_window(event_rate_per_day: float, rng: np.random.Generator) -> int:
    """A window in which an active entity has between ~0.3 and ~30 events."""
    ok = [w for w in WINDOWS_DAYS if 0.3 <= event_rate_per_day * w <= 30]
    return int(rng.choice(ok or [WINDOWS_DAYS[len(WINDOWS_DAYS) // 2]]))


def calibrate(values: np.ndarray, op: str, rng: np.random.Generator) -> float | None:
    """A threshold giving a positive rate between ~10% and ~60% for `op`, or None if impossible."""
    v = values[np.isfinite(values)]
    if len(v) < 20 or np.unique(v).size < 2:
        return None
    q = float(rng.uniform(0.4, 0.9)) if op in (">", ">=") else float(rng.uniform(0.1, 0.6))
    thr = float(np.quantile(v, q))
    if np.all(v == thr):
        return None
    return round(thr, 6) if not float(thr).is_integer() else float(int(thr))
