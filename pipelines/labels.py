"""The labels stage: a PQL query's labels for given (entity, anchor) rows, or for every entity now.

`relfm labels GRAPH --query PQL [--at PAIRS.parquet] --out OUT.parquet` lands here. With pairs, the
output is the pairs file with a `label` column added (an existing one is replaced); without, it is every
entity the query asks about at the latest anchor whose target window is complete, with its key, the
anchor time and the label. Labels are written as users read them: booleans for binary targets, class
values for multiclass, keys of the linked table for link prediction; null where the label is null.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from graph_engine.errors import DataError, RelfmError, SourceError
from graph_engine.io.normalize import to_timestamp
from graph_engine.shards.reader import Graph
from pipelines.build_graph import ensure_graph
from relfm_core.labels import LabelEngine, Labels
from relfm_core.pql import TaskType

DEFAULT_TIME_COL = "anchor_time"


@dataclass(frozen=True)
class LabelsReport:
    rows: int
    labelled: int  # rows whose label is not null
    anchor: int | None  # the anchor used without a pairs file (ns)
    task_type: str


def read_pairs(path: str | Path) -> pa.Table:
    p = Path(path)
    if not p.is_file():
        raise SourceError(f"pairs file {p}: file not found")
    try:
        return pq.read_table(p)
    except (pa.ArrowInvalid, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SourceError(f"pairs file {p}: cannot read it as Parquet ({first})") from None


def pair_rows(
    engine: LabelEngine, pairs: pa.Table, time_col: str, where: str = "pairs"
) -> tuple[np.ndarray, np.ndarray]:
    """(entity rows, anchors ns) of a pairs table; one-line errors naming the missing column or key."""
    table = engine.entity_table
    key = engine.query.entity.key
    for col, what in ((key, f"the key of '{table}'"), (time_col, "the anchor time")):
        if col not in pairs.column_names:
            raise DataError(
                f"{where} has no column '{col}' ({what}); columns: {', '.join(pairs.column_names) or 'none'}"
            )
    keys = pairs.column(key)
    if keys.null_count:
        raise DataError(f"{where} column '{key}' has {keys.null_count} null keys")
    times = to_timestamp(where, time_col, pairs.column(time_col))
    if times.null_count:
        raise DataError(f"{where} column '{time_col}' has {times.null_count} null anchor times")
    values = keys.to_numpy(zero_copy_only=False)
    view = engine.graph.table(table)
    try:
        rows = view.lookup(values)
    except (ValueError, TypeError, OverflowError):
        kind = "string" if view.keys is not None and view.keys.dtype.kind == "S" else "integer"
        raise DataError(
            f"{where} column '{key}' holds {keys.type} values but '{table}.{key}' keys are {kind}s"
        ) from None
    unknown = np.flatnonzero(rows < 0)
    if len(unknown):
        first = values[unknown[0]].item() if hasattr(values[unknown[0]], "item") else values[unknown[0]]
        raise DataError(
            f"{where} row {int(unknown[0])}: unknown key {first!r} in '{table}.{key}' "
            f"({len(unknown)} unknown keys in all)"
        )
    anchors = np.asarray(times.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
    return np.asarray(rows, dtype=np.int64), anchors


def _arrow_type(values: np.ndarray) -> pa.DataType:
    kind = values.dtype.kind
    if kind == "b":
        return pa.bool_()
    if kind in "iu":
        return pa.int64()
    if kind == "f":
        return pa.float64()
    return pa.string()


def label_array(engine: LabelEngine, labels: Labels) -> pa.Array:
    """Labels as users read them, null where null."""
    valid = labels.valid
    tt = labels.task_type
    if labels.is_list:
        assert labels.ptr is not None and labels.items is not None
        items = labels.items
        if engine.query.link_target_table is not None:
            view = engine.graph.table(engine.query.link_target_table)
            values = np.asarray(view.key_values(items))
            keys = view.keys
            vtype = pa.string() if keys is not None and keys.dtype.kind == "S" else pa.int64()
        else:
            assert labels.classes is not None
            classes = np.asarray(labels.classes)
            values, vtype = classes[items], _arrow_type(classes)
        flat = pa.array(values.tolist(), type=vtype)
        offsets = pa.array(labels.ptr.astype(np.int32))
        return pa.ListArray.from_arrays(offsets, flat, mask=pa.array(~valid))
    if tt is TaskType.BINARY:
        return pa.array(np.asarray(labels.values) > 0.5, mask=~valid)
    if tt is TaskType.MULTICLASS:
        assert labels.classes is not None
        classes = np.asarray(labels.classes)
        codes = np.clip(np.asarray(labels.values, dtype=np.int64), 0, max(len(classes) - 1, 0))
        picked = classes[codes].tolist() if len(classes) else [None] * len(codes)
        return pa.array(
            [v if ok else None for v, ok in zip(picked, valid.tolist(), strict=True)],
            type=_arrow_type(classes),
        )
    return pa.array(np.asarray(labels.values, dtype=np.float64), mask=~valid)


def compute_labels(
    graph: Graph, query: str, pairs: pa.Table | None = None, time_col: str = DEFAULT_TIME_COL
) -> tuple[pa.Table, LabelsReport]:
    engine = LabelEngine(graph, query)
    anchor: int | None = None
    if pairs is not None:
        rows, anchors = pair_rows(engine, pairs, time_col)
        base = pairs.drop_columns(["label"]) if "label" in pairs.column_names else pairs
    else:
        anchor = engine.latest_complete_anchor()
        rows = engine.entity_rows(anchor)
        anchors = np.full(len(rows), anchor, dtype=np.int64)
        keys = graph.table(engine.entity_table).key_values(rows)
        base = pa.table(
            {
                engine.query.entity.key: pa.array(np.asarray(keys).tolist()),
                time_col: pa.array(anchors.astype("datetime64[ns]")),
            }
        )
    labels = engine.evaluate(rows, anchors)
    out = base.append_column("label", label_array(engine, labels))
    report = LabelsReport(len(rows), int(labels.valid.sum()), anchor, engine.task_type.value)
    return out, report


def write_labels(
    graph: str | Path,
    query: str,
    out: str | Path,
    at: str | Path | None = None,
    time_col: str = DEFAULT_TIME_COL,
) -> LabelsReport:
    """Labels of `query` on the graph at `graph` (a built graph folder or a spec), written to `out`."""
    g = ensure_graph(graph)
    pairs = read_pairs(at) if at is not None else None
    table, report = compute_labels(g, query, pairs, time_col)
    target = Path(out)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
    except OSError as e:
        raise RelfmError(f"cannot write {target}: {e.strerror or e}") from None
    return report
