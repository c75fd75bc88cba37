"""The local builder: data checks (`validate`) and the graph it writes (`build`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph_engine.errors import DataError, SpecError
from graph_engine.shards.local_builder import BuildConfig, LocalBuilder, build_local
from graph_engine.shards.reader import Graph
from graph_engine.spec import GraphSpec

pytestmark = pytest.mark.unit


def _spec(root: Path, tables: dict[str, dict[str, object]], **extra: object) -> GraphSpec:
    return GraphSpec.from_dict({"tables": tables, **extra}, base_dir=root)


def _shop(root: Path) -> GraphSpec:
    pq.write_table(
        pa.table({"code": ["BB", "A", "CCC"], "label": ["b", "a", "c"]}),
        root / "parents.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "kid_id": [5, 3, 4, 1, 2],
                "code": ["A", "A", "BB", "ZZZZZZZZ", None],
                "at": pa.array([30, 10, 20, 40, 50], pa.timestamp("s")),
                "v": [1.0, None, 3.0, 4.0, 5.0],
            }
        ),
        root / "kids.parquet",
    )
    return _spec(
        root,
        {
            "parents": {"source": "parents.parquet", "primary_key": "code", "time_column": None},
            "kids": {
                "source": "kids.parquet",
                "primary_key": "kid_id",
                "time_column": "at",
                "foreign_keys": {"code": "parents"},
            },
        },
    )


def test_validate_reports_rows_times_and_missing_links(tmp_path: Path) -> None:
    spec = _shop(tmp_path)
    report = LocalBuilder(spec, tmp_path / "unused", BuildConfig()).validate()
    assert report["missing_links"] == {"kids.code": 1}
    assert report["tables"]["parents"] == {"rows": 3}
    kids = report["tables"]["kids"]
    assert kids["rows"] == 5 and kids["null_times"] == 0
    assert kids["time_min"] == 10 * 10**9 and kids["time_max"] == 50 * 10**9
    assert not (tmp_path / "unused").exists()


def test_build_orders_rows_by_key_and_sorts_children_by_time(tmp_path: Path) -> None:
    spec = _shop(tmp_path)
    manifest = build_local(spec, tmp_path / "g")
    g = Graph.open(tmp_path / "g")
    parents, kids = g["parents"], g["kids"]
    assert parents.key_values(np.arange(3)).tolist() == ["A", "BB", "CCC"]  # UTF-8 byte order
    assert kids.key_values(np.arange(5)).tolist() == [1, 2, 3, 4, 5]
    assert kids.time is not None
    assert (kids.time // 10**9).tolist() == [40, 50, 10, 20, 30]
    # kid 1 has no parent (ZZZZZZZZ) and kid 2 a null link: both kept, as -1.
    assert kids.fk("code").tolist() == [-1, -1, 0, 1, 0]
    csr = parents.csr("kids", "code")
    a = int(parents.lookup(["A"])[0])
    s, c = int(csr.start[a]), int(csr.count[a])
    assert kids.key_values(csr.child[s : s + c]).tolist() == [3, 5]  # by time: 10 s, then 30 s
    assert (csr.time[s : s + c] // 10**9).tolist() == [10, 30]
    assert csr.count.tolist() == [2, 1, 0]
    v = kids.column("v")
    assert v.valid.tolist() == [1, 1, 0, 1, 1]
    assert manifest["counts"] == {"rows": 8, "edges": 3, "missing_links": 1, "added_parent_rows": 0}
    assert manifest["edges"] == [
        {"child": "kids", "fk": "code", "parent": "parents", "edges": 3, "missing_links": 1}
    ]
    assert manifest["spec"]["tables"]["kids"]["foreign_keys"] == {"code": "parents"}
    assert set(manifest["sources"]) == {"parents", "kids"}


def test_added_parent_keys_longer_than_existing_keys_are_not_truncated(tmp_path: Path) -> None:
    spec = _shop(tmp_path).model_copy(update={"add_missing_parents": True})
    spec = spec.with_base_dir(tmp_path)
    manifest = build_local(spec, tmp_path / "g")
    g = Graph.open(tmp_path / "g")
    parents, kids = g["parents"], g["kids"]
    assert parents.key_values(np.arange(4)).tolist() == ["A", "BB", "CCC", "ZZZZZZZZ"]
    assert kids.fk("code").tolist() == [3, -1, 0, 1, 0]
    assert parents.lookup(["ZZZZZZZZ", "Z"]).tolist() == [3, -1]
    assert parents.column("label").valid.tolist() == [1, 1, 1, 0]
    assert manifest["tables"]["parents"]["added_parent_rows"] == 1
    assert manifest["counts"]["missing_links"] == 0 and manifest["counts"]["added_parent_rows"] == 1


def test_multi_shard_build_matches_single_shard(tmp_path: Path) -> None:
    n = 70_000  # more than one 65,536-row shard
    rng = np.random.default_rng(1)
    pq.write_table(pa.table({"id": np.arange(200), "x": rng.normal(size=200)}), tmp_path / "p.parquet")
    pq.write_table(
        pa.table(
            {
                "cid": rng.permutation(n),
                "id": rng.integers(0, 200, n),
                "t": pa.array(rng.integers(0, 10**6, n), pa.timestamp("s")),
                "txt": [f"row {i}" for i in range(n)],
            }
        ),
        tmp_path / "c.parquet",
    )
    spec = _spec(
        tmp_path,
        {
            "p": {"source": "p.parquet", "primary_key": "id", "time_column": None},
            "c": {
                "source": "c.parquet",
                "primary_key": "cid",
                "time_column": "t",
                "foreign_keys": {"id": "p"},
                "semantic_types": {"cid": "id", "id": "id", "t": "timestamp", "txt": "text"},
            },
        },
    )
    m1 = build_local(spec, tmp_path / "one", BuildConfig(rows_per_shard=1 << 17))
    m2 = build_local(spec, tmp_path / "two", BuildConfig(rows_per_shard=1 << 16))
    assert len(m1["tables"]["c"]["arrays"]["fk.id"]["files"]) == 1
    assert len(m2["tables"]["c"]["arrays"]["fk.id"]["files"]) == 2
    g1, g2 = Graph.open(tmp_path / "one"), Graph.open(tmp_path / "two")
    for name in ("fk.id", "__time__", "__pk__"):
        assert np.array_equal(g1["c"].array(name), g2["c"].array(name))
    csr1, csr2 = g1["p"].csr("c", "id"), g2["p"].csr("c", "id")
    assert np.array_equal(csr1.count, csr2.count)
    for p in (0, 57, 199):
        s1, s2, c = int(csr1.start[p]), int(csr2.start[p]), int(csr1.count[p])
        assert np.array_equal(csr1.child[s1 : s1 + c], csr2.child[s2 : s2 + c])
        assert (np.diff(csr2.time[s2 : s2 + c]) >= 0).all()
    rows = np.array([0, 65_535, 65_536, n - 1])
    assert g1["c"].column("txt").text(rows) == g2["c"].column("txt").text(rows)


def test_table_without_primary_key_gets_a_canonical_order(tmp_path: Path) -> None:
    pq.write_table(pa.table({"a": [3, 1, 2, 1], "b": ["x", "z", "y", None]}), tmp_path / "t.parquet")
    spec = _spec(tmp_path, {"t": {"source": "t.parquet", "primary_key": None, "time_column": None}})
    build_local(spec, tmp_path / "g")
    t = Graph.open(tmp_path / "g")["t"]
    assert t.keys is None
    assert t.column("a").value.tolist() == [1.0, 1.0, 2.0, 3.0]  # type: ignore[union-attr]
    assert t.column("b").valid.tolist() == [0, 1, 1, 1]  # nulls first


def test_data_errors_are_one_line(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1.5, 2.5]}), tmp_path / "f.parquet")
    spec = _spec(tmp_path, {"f": {"source": "f.parquet", "primary_key": "id", "time_column": None}})
    with pytest.raises(DataError) as e:
        build_local(spec, tmp_path / "g")
    assert str(e.value) == "table 'f' primary key 'id' must be an integer or string column"

    pq.write_table(pa.table({"id": [1, 2], "tags": ["a", "b"]}), tmp_path / "m.parquet")
    spec = _spec(
        tmp_path,
        {"m": {"source": "m.parquet", "primary_key": "id", "semantic_types": {"tags": "multicategorical"}}},
    )
    with pytest.raises(SpecError) as e:
        build_local(spec, tmp_path / "g")
    assert str(e.value) == "table 'm' column 'tags': multicategorical needs a list of strings, found string"

    pq.write_table(pa.table({"id": [1, 2], "emb": [[1.0, 2.0], [1.0]]}), tmp_path / "e.parquet")
    spec = _spec(tmp_path, {"e": {"source": "e.parquet", "primary_key": "id", "time_column": None}})
    with pytest.raises(DataError) as e:
        build_local(spec, tmp_path / "g")
    assert str(e.value) == "table 'e' column 'emb': embeddings of different lengths [1, 2]"


def test_foreign_key_without_any_values_takes_its_parents_type(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("id,name\n1,a\n2,b\n")
    (tmp_path / "orders.csv").write_text("oid,user_id\n1,NA\n2,NA\n")  # read as a null-typed column
    spec = _spec(
        tmp_path,
        {
            "users": {"source": "users.csv", "primary_key": "id", "time_column": None},
            "orders": {
                "source": "orders.csv",
                "primary_key": "oid",
                "time_column": None,
                "foreign_keys": {"user_id": "users"},
            },
        },
    )
    assert LocalBuilder(spec, tmp_path / "unused", BuildConfig()).validate()["missing_links"] == {
        "orders.user_id": 0
    }
    build_local(spec, tmp_path / "g")
    assert Graph.open(tmp_path / "g")["orders"].fk("user_id").tolist() == [-1, -1]
