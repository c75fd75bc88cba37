"""The labels stage: labels as users read them (booleans, class values, linked keys, nulls)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph_engine.shards.local_builder import build_local
from graph_engine.shards.reader import Graph
from graph_engine.spec import GraphSpec
from pipelines.labels import compute_labels, write_labels

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def graph_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labels-stage")
    pq.write_table(pa.table({"user_id": ["u1", "u2", "u3"]}), root / "users.parquet")
    pq.write_table(pa.table({"item_id": [10, 20, 30], "kind": ["x", "y", "x"]}), root / "items.parquet")
    ts = pa.array(["2021-01-05", "2021-01-06", "2021-01-20", "2021-02-10"]).cast(pa.timestamp("s"))
    pq.write_table(
        pa.table(
            {
                "order_id": [1, 2, 3, 4],
                "user_id": ["u1", "u1", "u2", "u2"],
                "item_id": [10, 30, 20, 99],  # 99: no such item
                "ts": ts,
                "status": ["done", "late", "done", "late"],
            }
        ),
        root / "orders.parquet",
    )
    spec = GraphSpec.from_dict(
        {
            "tables": {
                "users": {"source": "users.parquet", "primary_key": "user_id", "time_column": None},
                "items": {"source": "items.parquet", "primary_key": "item_id", "time_column": None},
                "orders": {
                    "source": "orders.parquet",
                    "primary_key": "order_id",
                    "time_column": "ts",
                    "foreign_keys": {"user_id": "users", "item_id": "items"},
                    "semantic_types": {"status": "categorical"},
                },
            }
        },
        base_dir=root,
    )
    build_local(spec, root / "graph")
    return root / "graph"


def _pairs() -> pa.Table:
    t = pa.array(["2021-01-01", "2021-01-01", "2021-01-01"]).cast(pa.timestamp("s"))
    return pa.table({"user_id": ["u1", "u2", "u3"], "anchor_time": t})


@pytest.mark.parametrize(
    ("query", "expected", "arrow_type"),
    [
        ("PREDICT COUNT(orders.*, 0, 30, days) > 1 FOR EACH users.user_id", [True, False, False], pa.bool_()),
        ("PREDICT AVG(orders.item_id->items.item_id, 0, 30, days) FOR EACH users.user_id", None, None),
        (
            "PREDICT FIRST(orders.status, 0, 30, days) FOR EACH users.user_id",
            ["done", "done", None],
            pa.string(),
        ),
        (
            "PREDICT LIST_DISTINCT(orders.item_id, 0, 60, days) RANK TOP 2 FOR EACH users.user_id",
            [[10, 30], [20], None],
            pa.list_(pa.int64()),
        ),
        (
            "PREDICT LIST_DISTINCT(orders.item_id->items.kind, 0, 60, days) CLASSIFY FOR EACH users.user_id",
            [["x"], ["y"], None],
            pa.list_(pa.string()),
        ),
    ],
)
def test_label_columns(
    graph_dir: Path, query: str, expected: list[object] | None, arrow_type: pa.DataType
) -> None:
    if expected is None:  # AVG over an id column is rejected at validation, as a one-line error
        with pytest.raises(Exception, match="needs a numerical column"):
            compute_labels(Graph.open(graph_dir), query, _pairs())
        return
    table, report = compute_labels(Graph.open(graph_dir), query, _pairs())
    assert table.column("label").to_pylist() == expected
    assert table.schema.field("label").type == arrow_type
    assert report.rows == 3 and report.labelled == sum(v is not None for v in expected)


def test_write_labels_without_pairs(graph_dir: Path, tmp_path: Path) -> None:
    query = "PREDICT COUNT(orders.*, 0, 10, days) FOR EACH users.user_id"
    report = write_labels(graph_dir, query, tmp_path / "out" / "labels.parquet")
    assert report.anchor == int(np.datetime64("2021-01-31", "ns").astype(np.int64))
    out = pq.read_table(tmp_path / "out" / "labels.parquet")
    assert out.column_names == ["user_id", "anchor_time", "label"]
    assert out.column("label").to_pylist() == [0.0, 1.0, 0.0]


def test_key_type_mismatch_is_one_line(graph_dir: Path) -> None:
    from graph_engine.errors import RelfmError

    t = pa.array(["2021-01-01"]).cast(pa.timestamp("s"))
    pairs = pa.table({"user_id": [1], "anchor_time": t})
    query = "PREDICT COUNT(orders.*, 0, 10, days) FOR EACH users.user_id"
    with pytest.raises(RelfmError, match=r"unknown key|keys are"):
        compute_labels(Graph.open(graph_dir), query, pairs)
