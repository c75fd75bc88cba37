"""Runs a config: node tables block by block, each actor block's events right after it, into sinks.

Only dimension and occasion tables (latent vectors) and one block at a time live in memory, so a
100M-row database streams to disk with bounded RSS. Content depends on (seed, table, block) only.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from graph_engine.errors import SourceError
from graph_engine.spec import GraphSpec
from graph_engine.synthetic.config import (
    DimensionTable,
    EntityTable,
    EventTable,
    OccasionTable,
    SyntheticConfig,
)
from graph_engine.synthetic.events import EventModel, EventRows, child_events, root_events
from graph_engine.synthetic.layout import (
    actor_events,
    by_name,
    choice_sources,
    event_tables,
    latent_dim,
    materialized,
    node_order,
    root_actor,
)
from graph_engine.synthetic.nodes import (
    ChoiceSampler,
    Materialized,
    NodeBlock,
    materialize,
    n_rows,
    node_block,
    occasion_schedule,
)
from graph_engine.synthetic.queries import suggest_queries
from graph_engine.synthetic.randomness import rng_for
from graph_engine.synthetic.sinks import BackgroundWriter, Format, MemorySink, Sink, open_sink, source_for
from graph_engine.synthetic.spec_out import build_spec
from graph_engine.synthetic.tables import TableMaker
from graph_engine.synthetic.timeline import IntensityGrid, Timeline

REPORT_FILE = "synthetic.json"
SPEC_FILE = "graph.yaml"


@dataclass(frozen=True)
class GenerationReport:
    """What a run produced: rows per table, planted orphan FK values per 'table.column', queries."""

    row_counts: dict[str, int]
    orphan_counts: dict[str, int]
    queries: list[str]
    planted: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SyntheticDatabase:
    """An in-memory database with its spec and report."""

    tables: dict[str, pa.Table]
    spec: GraphSpec
    report: GenerationReport
    config: SyntheticConfig = field(repr=False)


class _Plan:
    """Everything fixed for a run: timeline, schedules, materialized tables, event models."""

    def __init__(self, cfg: SyntheticConfig) -> None:
        self.cfg = cfg
        self.timeline = Timeline(cfg.start, cfg.end)
        self.tables = by_name(cfg)
        self.schedules = {
            t.name: occasion_schedule(cfg, t, self.timeline)
            for t in cfg.tables
            if isinstance(t, OccasionTable)
        }
        self.sizes = {t.name: n_rows(t, self.schedules) for t in node_order(cfg)}
        keep = materialized(cfg)
        self.mats: dict[str, Materialized] = {}
        for t in node_order(cfg):
            if t.name in keep:
                self.mats[t.name] = materialize(
                    cfg, t, self.sizes[t.name], self.mats, self.schedules, self.timeline
                )
        self.models = {ev.name: self._model(ev) for ev in event_tables(cfg)}

    def _model(self, ev: EventTable) -> EventModel:
        actor_dim = latent_dim(self.tables[root_actor(self.cfg, ev)])
        samplers: dict[str, ChoiceSampler] = {}
        occasion: tuple[str, Materialized] | None = None
        for ch in ev.choices:
            mat = self.mats[ch.parent]
            if isinstance(mat.table, OccasionTable):
                occasion = (ch.column, mat)
            else:
                samplers[ch.column] = ChoiceSampler(self.cfg, ev.name, ch, mat, actor_dim)
        grid = IntensityGrid(self.timeline, ev.process, self.cfg.seed, ev.name) if ev.child is None else None
        parents = {col: self.mats[p] for col, p in choice_sources(self.cfg, ev).items()}
        return EventModel(ev, grid, samplers, occasion, parents, self.timeline.span_days)

    def block(self, t: EntityTable | DimensionTable | OccasionTable, b: int) -> NodeBlock:
        if t.name in self.mats:
            return self.mats[t.name].block(b)
        return node_block(self.cfg, t, b, self.sizes[t.name], self.mats, self.schedules, self.timeline)

    def n_blocks(self, name: str) -> int:
        return -(-self.sizes[name] // self.cfg.block_rows)


def _events_for_block(
    plan: _Plan, actor: str, blk: NodeBlock, b: int
) -> list[tuple[EventTable, EventRows, EventRows | None]]:
    """(table, rows, parent rows) for every event table generated from this actor block, in order."""
    out: list[tuple[EventTable, EventRows, EventRows | None]] = []
    done: dict[str, EventRows] = {}
    for ev in actor_events(plan.cfg, actor):
        rng = rng_for(plan.cfg.seed, "events", ev.name, b)
        model = plan.models[ev.name]
        if ev.child is None:
            rows, parent = root_events(model, blk, rng), None
        else:
            parent = done[ev.child.parent_event]
            rows = child_events(model, parent, blk, rng)
        done[ev.name] = rows
        out.append((ev, rows, parent))
    return out


def _run(cfg: SyntheticConfig, sink_for: Callable[[str, pa.Schema], Sink]) -> GenerationReport:
    plan = _Plan(cfg)
    makers = {t.name: TableMaker(cfg, t, plan.timeline, plan.sizes) for t in cfg.tables}
    sinks = {t.name: sink_for(t.name, makers[t.name].schema) for t in cfg.tables}
    counts = dict.fromkeys(sinks, 0)
    try:
        for t in node_order(cfg):
            for b in range(plan.n_blocks(t.name)):
                blk = plan.block(t, b)
                table = makers[t.name].node_table(blk, b, plan.mats)
                sinks[t.name].write(table)
                counts[t.name] += table.num_rows
                for ev, rows, parent in _events_for_block(plan, t.name, blk, b):
                    model = plan.models[ev.name]
                    table = makers[ev.name].event_table(rows, b, counts[ev.name], blk, parent, model.parents)
                    sinks[ev.name].write(table)
                    counts[ev.name] += table.num_rows
    finally:
        for s in sinks.values():
            s.close()
    orphans = {f"{name}.{col}": n for name, m in makers.items() for col, n in m.orphans.items()}
    return GenerationReport(
        row_counts=counts,
        orphan_counts=orphans,
        queries=list(cfg.queries) or suggest_queries(cfg),
        planted=cfg.planted.model_dump() if cfg.planted is not None else None,
    )


def count_events(cfg: SyntheticConfig) -> dict[str, int]:
    """Event rows per event table, without building any column (cheap; used to calibrate sizes)."""
    plan = _Plan(cfg)
    counts = {ev.name: 0 for ev in event_tables(cfg)}
    for t in node_order(cfg):
        if not actor_events(cfg, t.name):
            continue
        for b in range(plan.n_blocks(t.name)):
            for ev, rows, _ in _events_for_block(plan, t.name, plan.block(t, b), b):
                counts[ev.name] += rows.n
    return counts


def generate_database(config: SyntheticConfig) -> SyntheticDatabase:
    """Generates the whole database in memory, with its spec (sources `memory:<table>`) and report."""
    sinks: dict[str, MemorySink] = {}

    def sink_for(name: str, schema: pa.Schema) -> Sink:
        sinks[name] = MemorySink(schema, config.chunk_rows)
        return sinks[name]

    report = _run(config, sink_for)
    tables = {name: s.result() for name, s in sinks.items()}
    spec = build_spec(config, {t.name: f"memory:{t.name}" for t in config.tables}, base_dir=None)
    return SyntheticDatabase(tables, spec, report, config)


def generate_in_memory(config: SyntheticConfig) -> tuple[dict[str, pa.Table], GraphSpec]:
    """(tables, spec) of a small database, generated in memory (for tests)."""
    db = generate_database(config)
    return db.tables, db.spec


def generate(config: SyntheticConfig, out_dir: str | Path, fmt: Format = "parquet") -> GraphSpec:
    """Writes one table per file/folder under `out_dir`, plus `graph.yaml` and `synthetic.json`.

    Tables are streamed block by block; existing outputs for the same tables are replaced.
    """
    if fmt not in ("parquet", "delta", "csv"):
        raise SourceError(f"synthetic output format '{fmt}' is not one of parquet, delta, csv")
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SourceError(f"synthetic output folder {out}: cannot create ({e.strerror})") from None
    for t in config.tables:
        _remove_previous(out, t.name)
    try:
        bg = BackgroundWriter()
        try:
            report = _run(
                config, lambda name, schema: open_sink(fmt, out, name, schema, config.chunk_rows, bg)
            )
        finally:
            bg.close()
        spec = build_spec(config, {t.name: source_for(fmt, t.name) for t in config.tables}, base_dir=out)
        spec.save(out / SPEC_FILE)
        payload = {"format": fmt, "report": report.to_dict(), "config": config.model_dump(mode="json")}
        (out / REPORT_FILE).write_text(json.dumps(payload, indent=1))
    except (OSError, pa.ArrowException) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(f"synthetic output {out}: writing failed: {first}") from None
    return spec


def read_report(out_dir: str | Path) -> GenerationReport:
    """The report `generate` wrote next to a database."""
    path = Path(out_dir) / REPORT_FILE
    if not path.is_file():
        raise SourceError(f"synthetic report {path}: file not found")
    data = json.loads(path.read_text())["report"]
    return GenerationReport(**data)


def _remove_previous(out: Path, table: str) -> None:
    """Removes an earlier run's output of `table`; refuses to touch a folder that is not a Delta table."""
    for path in (out / f"{table}.parquet", out / f"{table}.csv"):
        if path.is_file():
            path.unlink()
    folder = out / table
    if folder.is_dir():
        if not (folder / "_delta_log").is_dir():
            raise SourceError(f"synthetic output {folder}: folder exists and is not a Delta table")
        shutil.rmtree(folder)
