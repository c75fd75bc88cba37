"""`relfm graph validate|build|infer` through the real command line: one-line errors, exit code 2."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from graph_engine.shards.reader import Graph

pytestmark = pytest.mark.unit

# The `relfm` fixture (tests/jobs/conftest.py) runs the real command line in a subprocess.
RelfmRunner = Callable[..., subprocess.CompletedProcess[str]]


def _data(root: Path) -> None:
    pq.write_table(pa.table({"user_id": [1, 2, 3], "name": ["ann", "bob", "cy"]}), root / "users.parquet")
    pq.write_table(
        pa.table(
            {
                "order_id": [10, 11, 12, 13, 14],
                "user_id": [1, 2, 9, None, 9],  # 9 has no user: two orphan rows, one null link
                "ts": pa.array(np.array([1, 2, 3, 4, 5], dtype="datetime64[D]"), pa.timestamp("s")),
                "amount": [1.0, 2.0, 3.0, 4.0, 5.0],
            }
        ),
        root / "orders.parquet",
    )
    pq.write_table(pa.table({"user_id": [1, 1, 3], "name": ["a", "b", "c"]}), root / "dup_users.parquet")
    pq.write_table(pa.table({"user_id": [1, None, 3], "name": ["a", "b", "c"]}), root / "null_users.parquet")
    pq.write_table(
        pa.table({"order_id": [1, 2, 3], "ts": ["2020-01-01", "2020-01-02", "yesterday"]}),
        root / "bad_ts.parquet",
    )
    pq.write_table(pa.table({"order_id": [1, 2], "user_id": ["1", "2"]}), root / "str_fk.parquet")


def _spec(root: Path, tables: dict[str, dict[str, object]], **extra: object) -> str:
    (root / "spec.yaml").write_text(yaml.safe_dump({"name": "shop", "tables": tables, **extra}))
    return "spec.yaml"


USERS = {"source": "users.parquet", "primary_key": "user_id", "time_column": None}
ORDERS = {"source": "orders.parquet", "primary_key": "order_id", "time_column": "ts"}


def _fails(relfm: RelfmRunner, *args: str) -> str:
    r = relfm(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr  # one line, no traceback
    assert r.stdout == ""
    return lines[0]


# ---------------------------------------------------------------------------------------------- validation errors
def test_unknown_table(relfm: RelfmRunner, tmp_path: Path) -> None:
    _data(tmp_path)
    spec = _spec(tmp_path, {"users": USERS, "orders": {**ORDERS, "foreign_keys": {"user_id": "userz"}}})
    assert _fails(relfm, "graph", "validate", spec) == (
        "error: table 'orders' foreign key 'user_id' points to unknown table 'userz' — did you mean 'users'?"
    )


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        (
            "primary_key",
            "orderid",
            "error: table 'orders': unknown column 'orderid' — did you mean 'order_id'?",
        ),
        ("time_column", "tss", "error: table 'orders': unknown column 'tss' — did you mean 'ts'?"),
        (
            "foreign_keys",
            {"usr_id": "users"},
            "error: table 'orders': unknown column 'usr_id' — did you mean 'user_id'?",
        ),
        (
            "semantic_types",
            {"amout": "numerical"},
            "error: table 'orders': unknown column 'amout' — did you mean 'amount'?",
        ),
    ],
)
def test_unknown_column(relfm: RelfmRunner, tmp_path: Path, field: str, value: object, expected: str) -> None:
    _data(tmp_path)
    spec = _spec(tmp_path, {"users": USERS, "orders": {**ORDERS, field: value}})
    assert _fails(relfm, "graph", "validate", spec) == expected


def test_unknown_column_in_a_complete_spec(relfm: RelfmRunner, tmp_path: Path) -> None:
    # A complete spec skips inference: the builder's own column check gives the same message.
    _data(tmp_path)
    users = {**USERS, "foreign_keys": {}, "semantic_types": {"user_id": "id", "nam": "text"}}
    spec = _spec(tmp_path, {"users": users})
    assert _fails(relfm, "graph", "validate", spec) == (
        "error: table 'users': unknown column 'nam' — did you mean 'name'?"
    )


def test_duplicate_primary_keys(relfm: RelfmRunner, tmp_path: Path) -> None:
    _data(tmp_path)
    spec = _spec(tmp_path, {"users": {**USERS, "source": "dup_users.parquet"}})
    assert _fails(relfm, "graph", "validate", spec) == (
        "error: table 'users' primary key 'user_id' has 1 duplicate values (e.g. 1)"
    )


def test_null_primary_keys(relfm: RelfmRunner, tmp_path: Path) -> None:
    _data(tmp_path)
    spec = _spec(tmp_path, {"users": {**USERS, "source": "null_users.parquet"}})
    assert (
        _fails(relfm, "graph", "validate", spec)
        == "error: table 'users' primary key 'user_id' has 1 null values"
    )


def test_unparseable_timestamps(relfm: RelfmRunner, tmp_path: Path) -> None:
    _data(tmp_path)
    spec = _spec(
        tmp_path, {"orders": {"source": "bad_ts.parquet", "primary_key": "order_id", "time_column": "ts"}}
    )
    assert _fails(relfm, "graph", "validate", spec) == (
        "error: table 'orders' column 'ts': unparseable timestamp 'yesterday' at row 2 (1 such values)"
    )
    # The build runs the same checks.
    assert _fails(relfm, "graph", "build", spec, "--out", "g").startswith("error: table 'orders' column 'ts'")


def test_foreign_key_of_the_wrong_type(relfm: RelfmRunner, tmp_path: Path) -> None:
    _data(tmp_path)
    orders = {"source": "str_fk.parquet", "primary_key": "order_id", "time_column": None}
    spec = _spec(tmp_path, {"users": USERS, "orders": {**orders, "foreign_keys": {"user_id": "users"}}})
    assert _fails(relfm, "graph", "validate", spec) == (
        "error: table 'orders' foreign key 'user_id' is string but 'users.user_id' is int64"
    )


def test_spec_file_errors(relfm: RelfmRunner, tmp_path: Path) -> None:
    assert _fails(relfm, "graph", "validate", "nope.yaml") == "error: graph spec nope.yaml: file not found"
    (tmp_path / "bad.yaml").write_text("tables:\n  a: {source: x\n  b: 1\n")
    assert _fails(relfm, "graph", "validate", "bad.yaml") == "error: graph spec bad.yaml: invalid YAML at 3:4"
    _data(tmp_path)
    spec = _spec(tmp_path, {"users": {**USERS, "source": "missing.parquet"}})
    assert (
        _fails(relfm, "graph", "validate", spec)
        == f"error: source '{tmp_path}/missing.parquet': no such file or folder"
    )


def test_unknown_engine(relfm: RelfmRunner, tmp_path: Path) -> None:
    _data(tmp_path)
    spec = _spec(tmp_path, {"users": USERS})
    assert _fails(relfm, "graph", "build", spec, "--out", "g", "--engine", "flink") == (
        "error: unknown engine 'flink' (choose local or spark)"
    )


# ---------------------------------------------------------------------------------------------- missing links
def test_validate_reports_missing_parents(relfm: RelfmRunner, tmp_path: Path) -> None:
    _data(tmp_path)
    spec = _spec(tmp_path, {"users": USERS, "orders": {**ORDERS, "foreign_keys": {"user_id": "users"}}})
    r = relfm("graph", "validate", spec)
    assert r.returncode == 0, r.stderr
    assert "spec.yaml: valid" in r.stdout
    assert "orders.user_id: 2 rows link to no parent row; kept as missing links" in r.stdout


def test_build_keeps_orphan_rows_as_missing_links(relfm: RelfmRunner, tmp_path: Path) -> None:
    _data(tmp_path)
    spec = _spec(tmp_path, {"users": USERS, "orders": {**ORDERS, "foreign_keys": {"user_id": "users"}}})
    r = relfm("graph", "build", spec, "--out", "g")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("built graph ") and "in g: 8 rows, 2 edges, 2 missing links (" in r.stdout
    g = Graph.open(tmp_path / "g")
    orders = g["orders"]
    assert orders.num_rows == 5  # no row dropped
    assert orders.key_values(np.arange(5)).tolist() == [10, 11, 12, 13, 14]
    assert g["users"].key_values(orders.fk("user_id")[:2]).tolist() == [1, 2]
    assert orders.fk("user_id").tolist()[2:] == [-1, -1, -1]  # two orphans and one null
    assert g.manifest["tables"]["orders"]["missing_links"] == {"user_id": 2}
    assert g.manifest["counts"]["missing_links"] == 2
    assert g.manifest["counts"]["added_parent_rows"] == 0


def test_build_can_add_key_only_parent_rows(relfm: RelfmRunner, tmp_path: Path) -> None:
    _data(tmp_path)
    spec = _spec(
        tmp_path,
        {"users": USERS, "orders": {**ORDERS, "foreign_keys": {"user_id": "users"}}},
        add_missing_parents=True,
    )
    r = relfm("graph", "build", spec, "--out", "g")
    assert r.returncode == 0, r.stderr
    assert "0 missing links, 1 key-only parent rows added" in r.stdout
    g = Graph.open(tmp_path / "g")
    users, orders = g["users"], g["orders"]
    assert users.num_rows == 4
    assert g.manifest["tables"]["users"]["added_parent_rows"] == 1
    assert g.manifest["counts"]["added_parent_rows"] == 1
    assert g.manifest["counts"]["missing_links"] == 0
    row = int(users.lookup([9])[0])
    assert row >= 0 and orders.fk("user_id").tolist() == [0, 1, row, -1, row]
    assert users.column("name").valid[row] == 0  # key-only: no features
    csr = users.csr("orders", "user_id")
    assert int(csr.count[row]) == 2


def test_build_writes_a_graph_that_opens(relfm: RelfmRunner, tmp_path: Path) -> None:
    _data(tmp_path)
    spec = _spec(tmp_path, {"users": USERS, "orders": {**ORDERS, "foreign_keys": {"user_id": "users"}}})
    r = relfm("graph", "build", spec, "--out", "g", "--rows-per-shard", "65536")
    assert r.returncode == 0, r.stderr
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    g = Graph.open(tmp_path / "g")
    assert g.graph_id == manifest["graph_id"]
    assert sorted(g.table_names) == ["orders", "users"]
    assert manifest["sources"]["users"]["version"].startswith("files:")
    assert g.spec.resolve_source("users") == str(tmp_path / "users.parquet")
    assert g["orders"].time is not None and g.max_time() > g.min_time()


def test_infer_prints_or_writes_a_complete_spec(relfm: RelfmRunner, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    _data(data)
    for extra in ("dup_users", "null_users", "bad_ts", "str_fk"):
        (data / f"{extra}.parquet").unlink()
    r = relfm("graph", "infer", "data")
    assert r.returncode == 0, r.stderr
    printed = yaml.safe_load(r.stdout)
    assert printed["tables"]["orders"]["foreign_keys"] == {"user_id": "users"}
    assert printed["tables"]["orders"]["time_column"] == "ts"
    assert printed["tables"]["users"]["primary_key"] == "user_id"

    r = relfm("graph", "infer", "data", "--out", "shop.yaml", "--name", "shop")
    assert r.returncode == 0, r.stderr
    written = yaml.safe_load((tmp_path / "shop.yaml").read_text())
    assert written["name"] == "shop"
    assert written["tables"]["users"]["source"] == "data/users.parquet"  # relative to the spec file
    r = relfm("graph", "validate", "shop.yaml")
    assert r.returncode == 0, r.stderr


def test_infer_on_a_missing_source(relfm: RelfmRunner) -> None:
    assert _fails(relfm, "graph", "infer", "nowhere") == "error: source 'nowhere': no such file or folder"
