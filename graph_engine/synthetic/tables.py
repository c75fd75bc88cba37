"""Arrow tables from generated blocks: keys, foreign keys (with planted orphans), time, features."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graph_engine.synthetic.columns import TIMESTAMP, ColumnMaker, arrow_type
from graph_engine.synthetic.config import (
    ColumnConfig,
    EventTable,
    KeyConfig,
    SyntheticConfig,
    TableConfig,
)
from graph_engine.synthetic.events import EventRows
from graph_engine.synthetic.latent import LatentSource
from graph_engine.synthetic.layout import by_name, foreign_keys
from graph_engine.synthetic.nodes import Materialized, NodeBlock
from graph_engine.synthetic.randomness import rng_for
from graph_engine.synthetic.timeline import Timeline


def key_type(key: KeyConfig) -> pa.DataType:
    return pa.int64() if key.type == "int" else pa.string()


def key_values(key: KeyConfig, idx: np.ndarray) -> pa.Array:
    """Key values of rows `idx` (row numbers at or past the table's size give keys with no row)."""
    vals = key.start + np.asarray(idx, dtype=np.int64) * key.step
    if key.type == "int":
        return pa.array(vals, type=pa.int64())
    return pc.binary_join_element_wise(key.prefix, pc.cast(pa.array(vals), pa.string()), "")


def arrow_schema(cfg: SyntheticConfig, t: TableConfig) -> pa.Schema:
    tables = by_name(cfg)
    fields = [pa.field(t.primary_key, key_type(t.key), nullable=False)]
    for col, parent in foreign_keys(cfg, t).items():
        fields.append(pa.field(col, key_type(tables[parent].key)))
    time_col = getattr(t, "time_column", None)
    if time_col is not None:
        fields.append(pa.field(time_col, TIMESTAMP))
    fields.extend(pa.field(c.name, arrow_type(c)) for c in t.columns)
    return pa.schema(fields)


def missing_rate(cfg: SyntheticConfig, t: TableConfig, col: ColumnConfig) -> float:
    if col.missing_rate is not None:
        return col.missing_rate
    return t.missing_rate if t.missing_rate is not None else cfg.missing_rate


@dataclass
class TableMaker:
    """Turns blocks of one table into Arrow tables with a fixed schema, counting planted orphans."""

    cfg: SyntheticConfig
    table: TableConfig
    timeline: Timeline
    sizes: Mapping[str, int]  # node table -> rows, for orphan keys

    def __post_init__(self) -> None:
        self.schema = arrow_schema(self.cfg, self.table)
        self.fks = foreign_keys(self.cfg, self.table)
        self.makers = [
            ColumnMaker(
                c, self.cfg.seed, self.table.name, missing_rate(self.cfg, self.table, c), self.timeline
            )
            for c in self.table.columns
        ]
        self.orphans: dict[str, int] = dict.fromkeys(self.fks, 0)
        self.needs_season = any("season" in c.loading for c in self.table.columns)
        self._tables = by_name(self.cfg)

    def parent_keys(self, col: str, idx: np.ndarray, block: int) -> tuple[pa.Array, np.ndarray | None]:
        """FK values for parent rows `idx`, a share `orphan_rate` replaced by keys with no parent row.

        Also returns which rows got such an orphan key (None when there are none by design).
        """
        parent = self._tables[self.fks[col]]
        rate = self.cfg.orphan_rate
        hit = None
        if rate > 0 and idx.size:
            rng = rng_for(self.cfg.seed, "orphan", self.table.name, col, block)
            hit = rng.random(idx.size) < rate
            n = self.sizes[parent.name]
            idx = np.where(hit, n + rng.integers(0, max(n, 1), idx.size), idx)
            self.orphans[col] += int(hit.sum())
        return key_values(parent.key, idx), hit

    def node_table(self, blk: NodeBlock, block: int, mats: Mapping[str, Materialized]) -> pa.Table:
        t = self.table
        assert not isinstance(t, EventTable)
        arrays: list[pa.Array] = [key_values(t.key, np.arange(blk.lo, blk.hi))]
        sources: dict[str, LatentSource] = {"self": LatentSource(blk.z)}
        for link in t.parents:
            idx = blk.parent_idx[link.column]
            arrays.append(self.parent_keys(link.column, idx, block)[0])
            mat = mats[link.parent]
            sources[link.column] = LatentSource(mat.z, idx, mat.cache)
        if getattr(t, "time_column", None) is not None:
            assert blk.time_days is not None
            arrays.append(_timestamps(self.timeline, blk.time_days))
            if self.needs_season:
                sources["season"] = LatentSource(self.timeline.season(blk.time_days))
        arrays.extend(m.make(sources, blk.n, block) for m in self.makers)
        return pa.Table.from_arrays(arrays, schema=self.schema)

    def event_table(
        self,
        rows: EventRows,
        block: int,
        pk_start: int,
        actor: NodeBlock,
        parent_rows: EventRows | None,
        parents: Mapping[str, Materialized],
    ) -> pa.Table:
        t = self.table
        assert isinstance(t, EventTable)
        rows.pk = key_values(t.key, pk_start + np.arange(rows.n))
        fk: dict[str, pa.Array] = {}
        orphan: dict[str, np.ndarray | None] = {}
        if t.child is None:
            assert t.actor_column is not None
            fk[t.actor_column], orphan[t.actor_column] = self.parent_keys(
                t.actor_column, actor.lo + rows.aidx, block
            )
        else:
            assert parent_rows is not None and parent_rows.pk is not None and parent_rows.fk is not None
            assert rows.src is not None
            take = pa.array(rows.src)
            if t.child.link_column is not None:
                fk[t.child.link_column] = parent_rows.pk.take(take)
            for col in t.child.inherit:
                fk[col] = parent_rows.fk[col].take(take)
                hit = parent_rows.orphan.get(col)
                orphan[col] = None if hit is None else hit[rows.src]
                self.orphans[col] += 0 if hit is None else int(hit[rows.src].sum())
        for ch in t.choices:
            fk[ch.column], orphan[ch.column] = self.parent_keys(ch.column, rows.choice_idx[ch.column], block)
        rows.fk = fk
        rows.orphan = orphan
        sources = {"actor": LatentSource(actor.z, rows.aidx)}
        if self.needs_season:
            sources["season"] = LatentSource(self.timeline.season(rows.days))
        for col, idx in rows.choice_idx.items():
            sources[col] = LatentSource(parents[col].z, idx, parents[col].cache)
        arrays = [rows.pk, *(fk[c] for c in self.fks), _timestamps(self.timeline, rows.days)]
        arrays.extend(m.make(sources, rows.n, block) for m in self.makers)
        return pa.Table.from_arrays(arrays, schema=self.schema)


def _timestamps(timeline: Timeline, days: np.ndarray) -> pa.Array:
    return pa.array(timeline.to_us(days).view("datetime64[us]"), type=TIMESTAMP)
