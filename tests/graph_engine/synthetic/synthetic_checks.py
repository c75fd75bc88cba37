"""Checks shared by the synthetic-database tests: links, keys and times of a generated database."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graph_engine.synthetic import SyntheticDatabase


def check_links(db: SyntheticDatabase) -> None:
    """Unique primary keys; every FK value matches a parent key or is a counted, planted orphan."""
    spec, tables = db.spec, db.tables
    for name, t in spec.tables.items():
        pk = tables[name].column(t.primary_key)
        assert pk.null_count == 0, name
        assert pc.count_distinct(pk).as_py() == len(pk), f"{name}: duplicate primary keys"
    for child, col, parent in spec.edges():
        values = tables[child].column(col)
        keys = tables[parent].column(spec.tables[parent].primary_key)
        assert values.type == keys.type, f"{child}.{col}"
        unmatched = int(pc.sum(pc.invert(pc.is_in(values, value_set=keys.combine_chunks()))).as_py() or 0)
        assert unmatched == db.report.orphan_counts.get(f"{child}.{col}", 0), f"{child}.{col}"


def check_times(db: SyntheticDatabase, start: datetime, end: datetime) -> None:
    """Every time column lies in [start, end)."""
    for name, t in db.spec.tables.items():
        if t.time_column is None or db.tables[name].num_rows == 0:
            continue
        times = db.tables[name].column(t.time_column)
        assert times.type == pa.timestamp("us"), name
        assert times.null_count == 0, name
        lo, hi = pc.min(times).as_py(), pc.max(times).as_py()
        assert start <= lo and hi < end, f"{name}: {lo}..{hi} outside {start}..{end}"


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b)[0])
