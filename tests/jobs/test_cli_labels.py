"""`relfm labels` through the real command line: labels for pairs or for every entity, one-line errors."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

pytestmark = pytest.mark.unit

RelfmRunner = Callable[..., subprocess.CompletedProcess[str]]
DNF = (
    "PREDICT COUNT(orders.* WHERE orders.status != 'done', 0, 30, days) > 0 FOR EACH users.user_id "
    "ASSUMING COUNT(orders.*, 0, 30, days) > 0"
)


def _spec(root: Path) -> Path:
    pq.write_table(pa.table({"user_id": [1, 2, 3], "country": ["DE", "FR", None]}), root / "users.parquet")
    ts = pa.array(["2021-01-05", "2021-01-06", "2021-01-20", "2021-02-10", "2021-03-01"], pa.string()).cast(
        pa.timestamp("s")
    )
    pq.write_table(
        pa.table(
            {
                "order_id": [1, 2, 3, 4, 5],
                "user_id": [1, 1, 2, 2, 3],
                "ts": ts,
                "status": ["done", "failed", "done", "done", "failed"],
            }
        ),
        root / "orders.parquet",
    )
    spec = {
        "name": "cli-shop",
        "tables": {
            "users": {"source": "users.parquet", "primary_key": "user_id", "time_column": None},
            "orders": {
                "source": "orders.parquet",
                "primary_key": "order_id",
                "time_column": "ts",
                "foreign_keys": {"user_id": "users"},
            },
        },
    }
    path = root / "shop.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _pairs(root: Path) -> Path:
    ts = pa.array(["2021-01-01", "2021-01-01", "2021-02-01", "2021-01-01"], pa.string()).cast(
        pa.timestamp("s")
    )
    path = root / "pairs.parquet"
    pq.write_table(
        pa.table({"user_id": [1, 2, 3, 3], "anchor_time": ts, "extra": ["w", "x", "y", "z"]}), path
    )
    return path


def test_labels_for_pairs(relfm: RelfmRunner, tmp_path: Path) -> None:
    spec, pairs = _spec(tmp_path), _pairs(tmp_path)
    res = relfm(
        "labels", str(spec), "--query", DNF, "--at", str(pairs), "--out", str(tmp_path / "out.parquet")
    )
    assert res.returncode == 0, res.stderr
    assert "wrote 4 rows (4 labelled, binary)" in res.stdout
    out = pq.read_table(tmp_path / "out.parquet")
    assert out.column_names == ["user_id", "anchor_time", "extra", "label"]
    assert out.column("label").to_pylist() == [True, False, True, False]
    assert out.column("extra").to_pylist() == ["w", "x", "y", "z"]


def test_labels_for_every_entity_now(relfm: RelfmRunner, tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    query = "PREDICT COUNT(orders.*, 0, 30, days) FOR EACH users.user_id"
    res = relfm("labels", str(spec), "--query", query, "--out", str(tmp_path / "now.parquet"))
    assert res.returncode == 0, res.stderr
    assert "at 2021-01-30" in res.stdout  # last event Mar 1 minus 30 days
    out = pq.read_table(tmp_path / "now.parquet").to_pylist()
    assert [(r["user_id"], r["label"]) for r in out] == [(1, 0.0), (2, 1.0), (3, 1.0)]
    assert {str(r["anchor_time"]) for r in out} == {"2021-01-30 00:00:00"}


@pytest.mark.parametrize(
    ("query", "pairs_cols", "message"),
    [
        ("PREDICT COUNT(ordrs.*, 0, 30, days) FOR EACH users.user_id", None, "unknown table 'ordrs'"),
        (DNF, {"uid": [1], "anchor_time": ["2021-01-01"]}, "has no column 'user_id'"),
        (DNF, {"user_id": [1], "when": ["2021-01-01"]}, "has no column 'anchor_time'"),
        (
            DNF,
            {"user_id": [1, 7], "anchor_time": ["2021-01-01", "2021-01-01"]},
            "unknown key 7 in 'users.user_id'",
        ),
    ],
)
def test_labels_errors_are_one_line_with_exit_code_2(
    relfm: RelfmRunner, tmp_path: Path, query: str, pairs_cols: dict[str, list[object]] | None, message: str
) -> None:
    spec = _spec(tmp_path)
    args = ["labels", str(spec), "--query", query, "--out", str(tmp_path / "o.parquet")]
    if pairs_cols is not None:
        pq.write_table(pa.table(pairs_cols), tmp_path / "p.parquet")
        args += ["--at", str(tmp_path / "p.parquet")]
    res = relfm(*args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
