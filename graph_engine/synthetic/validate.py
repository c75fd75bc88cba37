"""Checks a config against itself, so a bad recipe fails before any row is generated.

Raises `ValueError` (pydantic turns it into a validation error; `load_config` into a one-line
`SyntheticConfigError`), always naming the table and column at fault.
"""

from __future__ import annotations

import re

from graph_engine.synthetic.config import (
    MAX_SPAN_DAYS,
    DimensionTable,
    EntityTable,
    EventTable,
    OccasionTable,
    SyntheticConfig,
    TableConfig,
)
from graph_engine.synthetic.layout import (
    by_name,
    event_order,
    foreign_keys,
    latent_dim,
    latent_sources,
    node_order,
    root_actor,
)
from graph_engine.synthetic.names import TEXT_TOPICS

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_config(cfg: SyntheticConfig) -> None:
    if cfg.end <= cfg.start:
        raise ValueError("end must be after start")
    if cfg.span_days > MAX_SPAN_DAYS:
        raise ValueError(f"time span of {cfg.span_days:.0f} days is longer than {MAX_SPAN_DAYS}")
    names = [t.name for t in cfg.tables]
    if not names:
        raise ValueError("a synthetic database needs at least one table")
    for t in cfg.tables:
        if not _NAME.match(t.name):
            raise ValueError(f"table '{t.name}': not a valid identifier")
        if names.count(t.name) > 1:
            raise ValueError(f"table '{t.name}' is defined twice")
    tables = by_name(cfg)
    for t in cfg.tables:
        _check_links(cfg, t, tables)
    node_order(cfg)
    event_order(cfg)
    for t in cfg.tables:
        _check_columns(cfg, t)
    if not any(not isinstance(t, EventTable) for t in cfg.tables):
        raise ValueError("a synthetic database needs at least one entity or dimension table")


def _check_links(cfg: SyntheticConfig, t: TableConfig, tables: dict[str, TableConfig]) -> None:
    where = f"table '{t.name}'"
    if not isinstance(t, EventTable):
        for link in t.parents:
            parent = tables.get(link.parent)
            if not isinstance(parent, DimensionTable | OccasionTable):
                raise ValueError(
                    f"{where}: static link '{link.column}' must point to a dimension or occasion table"
                    f" (got '{link.parent}')"
                )
        if isinstance(t, EntityTable) and t.churn is not None and len(t.churn.loading) > t.latent_dim:
            raise ValueError(f"{where}: churn.loading is longer than latent_dim {t.latent_dim}")
        return
    if t.child is None:
        if t.actor is None or t.actor_column is None:
            raise ValueError(f"{where}: an event table needs actor and actor_column, or child")
        actor = tables.get(t.actor)
        if not isinstance(actor, EntityTable | DimensionTable):
            raise ValueError(f"{where}: actor '{t.actor}' must be an entity or dimension table")
        if len(t.process.rate_loading) > actor.latent_dim:
            raise ValueError(f"{where}: process.rate_loading is longer than '{t.actor}' latent_dim")
    else:
        if t.actor is not None or t.actor_column is not None:
            raise ValueError(f"{where}: a child event takes its actor from its parent event")
        parent = tables.get(t.child.parent_event)
        if not isinstance(parent, EventTable):
            raise ValueError(f"{where}: parent_event '{t.child.parent_event}' is not an event table")
    occasions = 0
    for ch in t.choices:
        parent = tables.get(ch.parent)
        if not isinstance(parent, DimensionTable | OccasionTable):
            raise ValueError(
                f"{where}: choice '{ch.column}' must point to a dimension or occasion table (got '{ch.parent}')"
            )
        if isinstance(parent, OccasionTable):
            occasions += 1
            if t.child is not None:
                raise ValueError(f"{where}: child events cannot choose occasion '{ch.parent}'")
    if occasions > 1:
        raise ValueError(f"{where}: at most one occasion choice per event table")


def _check_columns(cfg: SyntheticConfig, t: TableConfig) -> None:
    where = f"table '{t.name}'"
    if isinstance(t, EventTable) and t.child is not None:
        parent = by_name(cfg)[t.child.parent_event]
        parent_fks = foreign_keys(cfg, parent)
        for fk_col in t.child.inherit:
            if fk_col not in parent_fks:
                raise ValueError(f"{where}: inherit '{fk_col}' is not a foreign key of '{parent.name}'")
        actor = by_name(cfg)[root_actor(cfg, t)]
        if len(t.child.loading) > latent_dim(actor):
            raise ValueError(f"{where}: child.loading is longer than the actor's latent_dim")
    key_cols = [t.primary_key, *foreign_keys(cfg, t)]
    time_col = getattr(t, "time_column", None)
    if time_col is not None:
        key_cols.append(time_col)
    all_cols = key_cols + [c.name for c in t.columns]
    for c in all_cols:
        if not _NAME.match(c):
            raise ValueError(f"{where}: column '{c}' is not a valid identifier")
        if all_cols.count(c) > 1:
            raise ValueError(f"{where}: column '{c}' is defined twice")
    sources = latent_sources(cfg, t)
    for col in t.columns:
        if col.kind == "text" and col.topic not in TEXT_TOPICS:
            raise ValueError(f"{where}: column '{col.name}': unknown text topic '{col.topic}'")
        for src, w in col.loading.items():
            if src not in sources:
                raise ValueError(
                    f"{where}: column '{col.name}': unknown latent source '{src}' (have {sorted(sources)})"
                )
            if len(w) > sources[src]:
                raise ValueError(
                    f"{where}: column '{col.name}': loading '{src}' has {len(w)} weights, source has {sources[src]}"
                )
    if isinstance(t, EventTable):
        marks = {"actor", *(ch.column for ch in t.choices if not _is_occasion(cfg, ch.parent))}
        proc = t.process
        for field, loading in (
            ("excitation_loading", proc.excitation_loading),
            ("memory_loading", proc.memory_loading),
        ):
            for src, w in loading.items():
                if src not in marks:
                    raise ValueError(
                        f"{where}: {field}: source '{src}' is not 'actor' or a dimension choice of this table"
                    )
                if len(w) > sources[src]:
                    raise ValueError(
                        f"{where}: {field} '{src}' has {len(w)} weights, source has {sources[src]}"
                    )
        if proc.memory_loading and proc.excitation > 0:
            raise ValueError(f"{where}: process memory_loading and excitation cannot be combined")
    if isinstance(t, OccasionTable) and any(m < 1 or m > 12 for m in t.months):
        raise ValueError(f"{where}: months must be in 1..12")


def _is_occasion(cfg: SyntheticConfig, name: str) -> bool:
    return isinstance(by_name(cfg)[name], OccasionTable)
