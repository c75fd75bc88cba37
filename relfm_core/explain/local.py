"""Local explanations: cell attributions of each entity, summed per column, per table and per row.

Every cell attribution is placed back where it came from (the table, row and column of the sampled
subgraph) and summed. A column's `contribution` is the signed sum over its cells in the entity's
subgraph (how much it moved the prediction, in prediction units) and its `importance` the absolute
value of that sum: columns are ranked by how much they moved the prediction, not by how much their
cells pulled in opposite directions. The entity's own past labels are one more contributor
(`history`), kept out of the column ranking since they belong to no table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from graph_engine.sampler import Subgraph
from graph_engine.shards.reader import Graph
from relfm_core.explain.saliency import Attribution
from relfm_core.features import GraphFeatures

HISTORY = "past values of the target"


@dataclass(frozen=True)
class ColumnIndex:
    """Name-table index of every feature column → (table, column); tables' time columns."""

    columns: dict[int, tuple[str, str]]
    time_columns: dict[str, str]

    @classmethod
    def of(cls, graph: Graph, features: GraphFeatures) -> ColumnIndex:
        cols = {c.text_index: (t.name, c.name) for t in features.tables for c in t.columns}
        times = {
            name: info.time_column
            for name, info in graph.schema.tables.items()
            if info.time_column is not None
        }
        return cls(cols, times)


def cell_frame(
    attr: Attribution,
    sub: Subgraph,
    tensors: dict[str, Any],
    index: ColumnIndex,
    positions: np.ndarray,
) -> pd.DataFrame:
    """One row per attributed cell: entity (`positions[i]` for the batch's i-th seed), table, column,
    row id, hop, node (position in the entity's subgraph), kind ('value' or 'time') and contribution."""
    b, n = attr.cells.shape[:2]
    seed = sub.seed_of_node()
    local = np.arange(sub.num_nodes) - sub.seed_ptr[seed]
    keep = local < n
    node_table = np.full((b, n), -1, dtype=np.int64)
    node_row = np.full((b, n), -1, dtype=np.int64)
    node_hop = np.zeros((b, n), dtype=np.int64)
    node_table[seed[keep], local[keep]] = sub.table[keep]
    node_row[seed[keep], local[keep]] = sub.row[keep]
    node_hop[seed[keep], local[keep]] = sub.hop[keep]
    col = tensors["cell_col"].numpy()
    ei, ni, ci = np.nonzero(col > 0)
    names = [index.columns[int(k)] for k in col[ei, ni, ci]]
    parts = [
        pd.DataFrame(
            {
                "entity": positions[ei],
                "table": [t for t, _ in names],
                "column": [cname for _, cname in names],
                "row": node_row[ei, ni],
                "hop": node_hop[ei, ni],
                "node": ni,
                "kind": "value",
                "contribution": attr.cells[ei, ni, ci],
            }
        )
    ]
    te, tn = np.nonzero(node_table >= 0)
    tables = [sub.table_names[i] for i in node_table[te, tn]]
    timed = np.array([t in index.time_columns for t in tables], dtype=bool)
    if timed.any():
        te, tn = te[timed], tn[timed]
        tables = [t for t, ok in zip(tables, timed, strict=True) if ok]
        parts.append(
            pd.DataFrame(
                {
                    "entity": positions[te],
                    "table": tables,
                    "column": [index.time_columns[t] for t in tables],
                    "row": node_row[te, tn],
                    "hop": node_hop[te, tn],
                    "node": tn,
                    "kind": "time",
                    "contribution": attr.time[te, tn],
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


@dataclass
class LocalExplanation:
    """Per-entity saliency; `entity` is the position of the entity in the prediction frame."""

    cells: pd.DataFrame  # entity, table, column, row, hop, node, kind, contribution
    columns: pd.DataFrame  # entity, table, column, rows, contribution, importance, rank
    tables: pd.DataFrame  # entity, table, rows, contribution, importance
    rows: pd.DataFrame  # entity, table, row, key, hop, contribution, importance
    history: np.ndarray  # [n] contribution of the entity's own past labels
    prediction: np.ndarray  # [n] the explained output (prediction units)
    reference_prediction: np.ndarray  # [n] the output for the reference inputs
    summary: list[list[str]] = field(default_factory=list)  # strongest contributors, in words

    def top_columns(self) -> pd.DataFrame:
        """The first-ranked column of every entity."""
        return self.columns[self.columns["rank"] == 1].set_index("entity").sort_index()


def local_explanation(
    graph: Graph,
    entity_table: str,
    cells: pd.DataFrame,
    history: np.ndarray,
    prediction: np.ndarray,
    reference_prediction: np.ndarray,
    top: int = 5,
) -> LocalExplanation:
    """Aggregates cell attributions (from `cell_frame`, all batches concatenated) per column, table and
    row, and writes the strongest contributors of every entity in words."""
    cells = cells.reset_index(drop=True)
    grouped = cells.groupby(["entity", "table", "column"], sort=False)
    columns = grouped.agg(rows=("node", "nunique"), contribution=("contribution", "sum")).reset_index()
    columns["importance"] = columns["contribution"].abs()
    columns = columns.sort_values(["entity", "importance"], ascending=[True, False], kind="stable")
    columns["rank"] = columns.groupby("entity").cumcount() + 1
    columns = columns.reset_index(drop=True)
    tables = (
        cells.groupby(["entity", "table"], sort=False)
        .agg(rows=("node", "nunique"), contribution=("contribution", "sum"))
        .reset_index()
    )
    tables["importance"] = tables["contribution"].abs()
    tables = tables.sort_values(["entity", "importance"], ascending=[True, False], kind="stable")
    rows = (
        cells.groupby(["entity", "table", "row", "hop"], sort=False)
        .agg(contribution=("contribution", "sum"))
        .reset_index()
    )
    rows["importance"] = rows["contribution"].abs()
    rows["key"] = _keys(graph, rows)
    rows = rows.sort_values(["entity", "importance"], ascending=[True, False], kind="stable")
    expl = LocalExplanation(
        cells,
        columns,
        tables.reset_index(drop=True),
        rows.reset_index(drop=True)[["entity", "table", "row", "key", "hop", "contribution", "importance"]],
        np.asarray(history, dtype=np.float64),
        np.asarray(prediction, dtype=np.float64),
        np.asarray(reference_prediction, dtype=np.float64),
    )
    expl.summary = summaries(graph, entity_table, columns, expl.history, top)
    return expl


def _keys(graph: Graph, rows: pd.DataFrame) -> list[Any]:
    out: list[Any] = [None] * len(rows)
    for table, found in rows.groupby("table").indices.items():
        idx = np.asarray(found, dtype=np.int64)
        keys = graph.table(str(table)).key_values(rows["row"].to_numpy()[idx])
        for i, k in zip(idx.tolist(), np.asarray(keys).tolist(), strict=True):
            out[i] = k
    return out


def format_amount(x: float) -> str:
    """Signed, short: +0.21, -0.035, +12.4, +1.2e+03."""
    if x == 0 or not np.isfinite(x):
        return f"{x:+.2f}"
    a = abs(x)
    if a >= 1000:
        return f"{x:+.2g}"
    if a >= 1:
        return f"{x:+.3g}"
    return f"{x:+.2f}" if a >= 0.01 else f"{x:+.2g}"


def describe(graph: Graph, entity_table: str, table: str, column: str, rows: int) -> str:
    """'items.price, 8 linked rows', 'orders.order_time (recency), last 5 rows', 'users.age (own row)'."""
    info = graph.schema.tables[table]
    recency = column == info.time_column
    if table == entity_table and rows == 1:
        return f"{table}.{column} (own row{', recency' if recency else ''})"
    name = f"{table}.{column}" + (" (recency)" if recency else "")
    if info.time_column is not None:
        return f"{name}, last {rows} row{'s' if rows != 1 else ''}"
    return f"{name}, {rows} linked row{'s' if rows != 1 else ''}"


def summaries(
    graph: Graph, entity_table: str, columns: pd.DataFrame, history: np.ndarray, top: int
) -> list[list[str]]:
    """The `top` strongest contributors of each entity (columns and its own past labels), in words."""
    out: list[list[str]] = []
    by_entity = columns.groupby("entity").indices
    for e in range(len(history)):
        items: list[tuple[float, str]] = []
        idx = by_entity.get(e, np.empty(0, dtype=np.int64))
        sub = columns.iloc[idx[:top]] if len(idx) else columns.iloc[:0]
        for t, c, r, v in zip(sub["table"], sub["column"], sub["rows"], sub["contribution"], strict=True):
            items.append((float(v), f"{describe(graph, entity_table, str(t), str(c), int(r))}"))
        items.append((float(history[e]), HISTORY))
        items.sort(key=lambda x: -abs(x[0]))
        out.append([f"{text}: {format_amount(v)}" for v, text in items[:top]])
    return out
