"""Facts derived from a config's schema: link order, foreign keys, latent sources of each table.

Kept apart from generation so that validation, the spec writer, the query templates and the generator
all read the schema the same way.
"""

from __future__ import annotations

from graph_engine.synthetic.config import (
    DimensionTable,
    EventTable,
    NodeTable,
    OccasionTable,
    SyntheticConfig,
    TableConfig,
)

SEASON_DIM = 3  # cos(day of year), sin(day of year), weekend


def by_name(cfg: SyntheticConfig) -> dict[str, TableConfig]:
    return {t.name: t for t in cfg.tables}


def node_tables(cfg: SyntheticConfig) -> list[NodeTable]:
    return [t for t in cfg.tables if not isinstance(t, EventTable)]


def event_tables(cfg: SyntheticConfig) -> list[EventTable]:
    return [t for t in cfg.tables if isinstance(t, EventTable)]


def node_order(cfg: SyntheticConfig) -> list[NodeTable]:
    """Node tables with every static parent before its children (the config is checked acyclic)."""
    tables = {t.name: t for t in node_tables(cfg)}
    done: dict[str, NodeTable] = {}

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in done:
            return
        t = tables[name]
        for link in t.parents:
            if link.parent in stack:
                raise ValueError(f"table '{name}': static links form a cycle through '{link.parent}'")
            visit(link.parent, (*stack, name))
        done[name] = t

    for name in tables:
        visit(name, ())
    return list(done.values())


def event_order(cfg: SyntheticConfig) -> list[EventTable]:
    """Event tables with every parent event before its child events."""
    tables = {t.name: t for t in event_tables(cfg)}
    done: dict[str, EventTable] = {}

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in done:
            return
        t = tables[name]
        if t.child is not None:
            if t.child.parent_event in stack or t.child.parent_event == name:
                raise ValueError(
                    f"table '{name}': child events form a cycle through '{t.child.parent_event}'"
                )
            visit(t.child.parent_event, (*stack, name))
        done[name] = t

    for name in tables:
        visit(name, ())
    return list(done.values())


def root_actor(cfg: SyntheticConfig, event: EventTable) -> str:
    """The node table whose process generates `event` (a child event's is its parent's)."""
    tables = by_name(cfg)
    t = event
    while t.child is not None:
        parent = tables[t.child.parent_event]
        assert isinstance(parent, EventTable)
        t = parent
    assert t.actor is not None
    return t.actor


def foreign_keys(cfg: SyntheticConfig, table: TableConfig) -> dict[str, str]:
    """Foreign-key column -> parent table, in column order."""
    if not isinstance(table, EventTable):
        return {link.column: link.parent for link in table.parents}
    out: dict[str, str] = {}
    if table.child is None:
        assert table.actor_column is not None and table.actor is not None
        out[table.actor_column] = table.actor
    else:
        parent = by_name(cfg)[table.child.parent_event]
        assert isinstance(parent, EventTable)
        parent_fks = foreign_keys(cfg, parent)
        if table.child.link_column is not None:
            out[table.child.link_column] = parent.name
        for col in table.child.inherit:
            out[col] = parent_fks[col]
    for ch in table.choices:
        out[ch.column] = ch.parent
    return out


def latent_dim(table: TableConfig) -> int:
    return 0 if isinstance(table, EventTable) else table.latent_dim


def choice_sources(cfg: SyntheticConfig, event: EventTable) -> dict[str, str]:
    """Choice column -> parent table for the event and, for child events, its ancestors' choices."""
    out: dict[str, str] = {}
    tables = by_name(cfg)
    t: EventTable | None = event
    while t is not None:
        for ch in t.choices:
            out.setdefault(ch.column, ch.parent)
        if t.child is None:
            t = None
        else:
            nxt = tables[t.child.parent_event]
            assert isinstance(nxt, EventTable)
            t = nxt
    return out


def latent_sources(cfg: SyntheticConfig, table: TableConfig) -> dict[str, int]:
    """Source name -> latent dimension, for the `loading` maps of this table's columns."""
    tables = by_name(cfg)
    if isinstance(table, EventTable):
        actor = tables[root_actor(cfg, table)]
        out = {"actor": latent_dim(actor)}
        for col, parent in choice_sources(cfg, table).items():
            out[col] = latent_dim(tables[parent])
        out["season"] = SEASON_DIM
        return out
    out = {"self": table.latent_dim}
    for link in table.parents:
        out[link.column] = latent_dim(tables[link.parent])
    if isinstance(table, OccasionTable):
        out["season"] = SEASON_DIM
    return out


def materialized(cfg: SyntheticConfig) -> set[str]:
    """Node tables held in memory (as latent vectors): every dimension and occasion table."""
    return {t.name for t in node_tables(cfg) if isinstance(t, DimensionTable | OccasionTable)}


def actor_events(cfg: SyntheticConfig, actor: str) -> list[EventTable]:
    """Event tables generated from `actor`'s blocks, parents before children."""
    return [e for e in event_order(cfg) if root_actor(cfg, e) == actor]
