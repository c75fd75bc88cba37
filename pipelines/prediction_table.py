"""The Delta prediction table: one row per (run, entity), one atomic commit per run.

Columns: the entity key (named like the entity table's primary key), anchor_time (UTC timestamp),
prediction (+ prob_<class> for multiclass), model_name, model_version, run_id, run_date (the partition
column). A run is written by a single `write_deltalake(mode="overwrite", predicate="run_id = '<id>'")`:
Delta removes the run's previous rows and adds the new ones in the same commit, so re-running a run id
replaces its rows (never duplicates them), readers see either the old or the new rows, and a run that
fails before this call leaves the table at its previous version.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa

from graph_engine.errors import RelfmError
from pipelines.configs import RUN_ID

PARTITION = "run_date"
FIXED = ("model_name", "model_version", "run_id", "run_date")


def build(
    key_name: str,
    keys: np.ndarray,
    anchors_ns: np.ndarray,
    predictions: dict[str, np.ndarray],
    model_name: str,
    model_version: str,
    run_id: str,
    run_date: date,
) -> pa.Table:
    n = len(keys)
    key_arr = (
        pa.array(keys.tolist(), type=pa.string())
        if keys.dtype.kind in "OUS"
        else pa.array(keys.astype(np.int64))
    )
    cols: dict[str, pa.Array] = {
        key_name: key_arr,
        "anchor_time": pa.array(np.asarray(anchors_ns, dtype=np.int64), pa.int64())
        .cast(pa.timestamp("ns"))
        .cast(pa.timestamp("us", tz="UTC")),
    }
    for name, values in predictions.items():
        v = np.asarray(values)
        cols[name] = (
            pa.array(v.tolist(), type=pa.string())
            if v.dtype.kind in "OUS"
            else pa.array(v.astype(np.float64))
        )
    cols["model_name"] = pa.array([model_name] * n, type=pa.string())
    cols["model_version"] = pa.array([model_version] * n, type=pa.string())
    cols["run_id"] = pa.array([run_id] * n, type=pa.string())
    cols["run_date"] = pa.array([run_date] * n, type=pa.date32())
    return pa.table(cols)


def current_version(path: str | Path) -> int | None:
    from deltalake import DeltaTable

    return int(DeltaTable(str(path)).version()) if DeltaTable.is_deltatable(str(path)) else None


def commit(path: str | Path, table: pa.Table, run_id: str, metadata: dict[str, str] | None = None) -> int:
    """Replaces the rows of `run_id` with `table` in one Delta commit; returns the new table version.

    `path` is a folder or a URI delta-rs opens (s3://, abfss://, gs://, file://; credentials from the
    environment, as delta-rs reads them)."""
    from deltalake import CommitProperties, write_deltalake
    from deltalake.exceptions import DeltaError

    if not RUN_ID.match(run_id):
        raise RelfmError(f"run id '{run_id}' may only hold letters, digits and _ . : -")
    target = str(path)
    before = current_version(target)
    if before is not None:
        existing = _schema_names(target)
        missing = [c for c in table.column_names if c not in existing]
        if missing:
            raise RelfmError(
                f"prediction table {target}: has no column '{missing[0]}' (it holds predictions of another "
                f"query or model kind; write to a new table)"
            )
    try:
        if "://" not in target:  # object stores have no folders to create
            Path(target).parent.mkdir(parents=True, exist_ok=True)
        write_deltalake(
            target,
            table,
            mode="overwrite",
            predicate=f"run_id = '{run_id}'",
            partition_by=[PARTITION],
            commit_properties=CommitProperties(custom_metadata={"relfm.run_id": run_id, **(metadata or {})}),
        )
    except (DeltaError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RelfmError(f"prediction table {target}: commit failed ({first})") from None
    after = current_version(target)
    assert after is not None
    return after


def _schema_names(path: str | Path) -> set[str]:
    from deltalake import DeltaTable

    return {f.name for f in DeltaTable(str(path)).schema().fields}
