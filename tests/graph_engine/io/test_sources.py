"""Warehouse I/O: every format read with the right rows and types, versions recorded, one-line errors."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from graph_engine.errors import SourceError
from graph_engine.io.normalize import normalize_column
from graph_engine.io.sources import SourceFormat, list_tables, open_source, parse_source

pytestmark = pytest.mark.unit


# ---------------------------------------------------------------------------------------------- Delta
def test_delta_versions_pin_and_are_recorded(tmp_path: Path) -> None:
    path = tmp_path / "orders"
    write_deltalake(str(path), pa.table({"id": [1, 2], "amount": [1.5, 2.5]}))
    write_deltalake(str(path), pa.table({"id": [3], "amount": [3.5]}), mode="append")

    v0 = open_source(f"{path}@0", "orders")
    assert v0.ref.format == SourceFormat.delta and v0.ref.version == 0
    assert v0.read().sort_by("id").column("id").to_pylist() == [1, 2]
    assert v0.num_rows() == 2
    assert v0.version().version == "delta:0"

    latest = open_source(str(path), "orders")
    assert latest.read().sort_by("id").column("id").to_pylist() == [1, 2, 3]
    assert latest.version().to_dict() == {
        "format": "delta",
        "location": str(path),
        "table": None,
        "version": "delta:1",
    }
    assert latest.files() and all(f.endswith(".parquet") for f in latest.files())
    # An explicit prefix reads the same table.
    assert open_source(f"delta:{path}@1").read().num_rows == 3


def test_delta_unknown_version_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "orders"
    write_deltalake(str(path), pa.table({"id": [1]}))
    with pytest.raises(SourceError) as e:
        open_source(f"{path}@7", "orders").read()
    msg = str(e.value)
    assert msg.startswith(f"table 'orders': cannot open Delta table delta:{path}@7: ")
    assert "\n" not in msg


# ---------------------------------------------------------------------------------------------- Parquet
def test_parquet_file_and_folder(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": pa.array([1, 2], pa.int32()), "s": ["a", "b"]}), tmp_path / "one.parquet")
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"id": [1, 2]}), folder / "part-0.parquet")
    pq.write_table(pa.table({"id": [3]}), folder / "part-1.parquet")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-0.parquet.crc").write_bytes(b"\x00\x01")

    one = open_source(str(tmp_path / "one.parquet"))
    assert one.ref.format == SourceFormat.parquet
    assert one.name == "one"
    t = one.read()
    assert t.column("id").to_pylist() == [1, 2]
    assert normalize_column("one", "id", t.column("id")).type == pa.int64()
    assert one.version().version.startswith("files:")

    parts = open_source(str(folder))
    assert parts.ref.format == SourceFormat.parquet
    assert sorted(parts.read().column("id").to_pylist()) == [1, 2, 3]
    assert parts.num_rows() == 3
    assert len(parts.files()) == 2


def test_file_fingerprint_changes_with_the_data(tmp_path: Path) -> None:
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1]}), p)
    before = open_source(str(p)).version().version
    pq.write_table(pa.table({"id": [1, 2, 3]}), p)
    assert open_source(str(p)).version().version != before


# ---------------------------------------------------------------------------------------------- CSV
def test_csv_with_na_and_backslash_n_nulls(tmp_path: Path) -> None:
    p = tmp_path / "drivers.csv"
    p.write_text('id,code,number,dob\n1,HAM,44,1985-01-07\n2,\\N,\\N,NA\n3,NA,5,1990-02-03\n4,"",7,\\N\n')
    t = open_source(str(p)).read()
    assert t.num_rows == 4
    assert t.column("code").to_pylist() == ["HAM", None, None, ""]
    assert t.column("number").to_pylist() == [44, None, 5, 7]
    assert pa.types.is_integer(t.column("number").type)
    dob = normalize_column("drivers", "dob", t.column("dob"))
    assert dob.type == pa.timestamp("ns")
    assert dob.null_count == 2
    assert str(dob[0].as_py()) == "1985-01-07 00:00:00"


def test_csv_folder_skips_marker_files(tmp_path: Path) -> None:
    folder = tmp_path / "events"
    folder.mkdir()
    (folder / "part-0.csv").write_text("id,v\n1,a\n2,b\n")
    (folder / "part-1.csv").write_text("id,v\n3,c\n")
    (folder / "_SUCCESS").write_text("")
    (folder / ".part-0.csv.crc").write_text("junk")
    src = open_source(str(folder))
    assert src.ref.format == SourceFormat.csv
    assert src.read().column("id").to_pylist() == [1, 2, 3]


def test_csv_zip_is_read(tmp_path: Path) -> None:
    import zipfile

    with zipfile.ZipFile(tmp_path / "flights.csv.zip", "w") as z:
        z.writestr("flights.csv", "id,origin\n1,EWR\n2,JFK\n")
    src = open_source(str(tmp_path / "flights.csv.zip"))
    assert src.name == "flights.csv"  # the table name comes from list_tables, see below
    assert src.read().column("origin").to_pylist() == ["EWR", "JFK"]
    assert list_tables(str(tmp_path)) == {"flights": str(tmp_path / "flights.csv.zip")}


# ---------------------------------------------------------------------------------------------- SQLite
def _sqlite(path: Path) -> None:
    con = sqlite3.connect(path)
    con.executescript(
        """
        create table orders(order_id integer primary key, customer text, amount, note text, placed_at text);
        create table empty_log(id integer, msg text, score real);
        """
    )
    rows = [
        (i, f"c{i % 3}", i if i < 3 else i + 0.5, None, f"2021-03-0{i % 9 + 1} 10:00:00") for i in range(7)
    ]
    con.executemany("insert into orders values (?,?,?,?,?)", rows)
    con.commit()
    con.close()


def test_sqlite_table(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite"
    _sqlite(db)
    src = open_source(f"{db}#orders")
    assert src.ref.format == SourceFormat.sqlite and src.ref.table == "orders"
    assert src.name == "orders"
    # One type per column for the whole table (ints then reals → float; a null-only TEXT column → string),
    # so every batch has the same schema, however the rows are split.
    assert src.schema == pa.schema(
        [
            ("order_id", pa.int64()),
            ("customer", pa.string()),
            ("amount", pa.float64()),
            ("note", pa.string()),
            ("placed_at", pa.string()),
        ]
    )
    batches = list(src.batches(batch_rows=2))
    assert len(batches) == 4 and all(b.schema == src.schema for b in batches)
    t = src.read()
    assert t.column("order_id").to_pylist() == list(range(7))
    assert t.column("amount").to_pylist() == [0.0, 1.0, 2.0, 3.5, 4.5, 5.5, 6.5]
    assert src.read(columns=["customer"], limit=3).column("customer").to_pylist() == ["c0", "c1", "c2"]
    assert src.num_rows() == 7
    placed = normalize_column("orders", "placed_at", t.column("placed_at"), as_time=True)
    assert placed.type == pa.timestamp("ns") and str(placed[0].as_py()) == "2021-03-01 10:00:00"
    assert src.version().version.startswith("files:")


def test_sqlite_empty_table_has_a_schema(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite"
    _sqlite(db)
    src = open_source(f"sqlite:{db}#empty_log")
    assert src.schema.types == [pa.int64(), pa.string(), pa.float64()]
    assert src.read().num_rows == 0 and src.num_rows() == 0


def test_sqlite_unknown_table_and_column(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite"
    _sqlite(db)
    with pytest.raises(SourceError) as e:
        open_source(f"{db}#ordrs").read()
    assert str(e.value) == f"table 'ordrs' not found in {db} — did you mean 'orders'?"
    with pytest.raises(SourceError) as e:
        open_source(f"{db}#orders").read(columns=["amonut"])
    assert str(e.value) == "unknown column 'orders.amonut' — did you mean 'amount'?"


def test_sqlite_and_duckdb_need_a_table_name(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite"
    _sqlite(db)
    with pytest.raises(SourceError) as e:
        parse_source(str(db))
    assert str(e.value) == f"source '{db}': name the table of the sqlite file as 'file#table'"


# ---------------------------------------------------------------------------------------------- DuckDB
def _duckdb(path: Path) -> None:
    con = duckdb.connect(str(path))
    con.execute(
        "create table trips(trip_id integer, origin varchar, departed timestamptz, dist decimal(8,2))"
    )
    con.execute(
        "insert into trips values (1, 'EWR', TIMESTAMPTZ '2024-01-01 12:00:00+02', 10.5),"
        " (2, 'JFK', NULL, NULL)"
    )
    con.execute("create table empty_t(id bigint, s varchar)")
    con.close()


def test_duckdb_table(tmp_path: Path) -> None:
    db = tmp_path / "ops.duckdb"
    _duckdb(db)
    src = open_source(f"{db}#trips")
    assert src.ref.format == SourceFormat.duckdb
    t = src.read()
    assert t.column("trip_id").to_pylist() == [1, 2]
    assert t.column("origin").to_pylist() == ["EWR", "JFK"]
    departed = normalize_column("trips", "departed", t.column("departed"))
    assert departed.type == pa.timestamp("ns")
    assert str(departed[0].as_py()) == "2024-01-01 10:00:00"  # +02:00 → UTC-naive
    assert departed[1].as_py() is None
    assert normalize_column("trips", "dist", t.column("dist")).to_pylist() == [10.5, None]
    assert normalize_column("trips", "trip_id", t.column("trip_id")).type == pa.int64()
    assert src.num_rows() == 2
    empty = open_source(f"duckdb:{db}#empty_t")
    assert empty.schema.names == ["id", "s"] and empty.read().num_rows == 0


def test_duckdb_unknown_table(tmp_path: Path) -> None:
    db = tmp_path / "ops.duckdb"
    _duckdb(db)
    with pytest.raises(SourceError) as e:
        open_source(f"{db}#trip").read()
    assert str(e.value) == f"table 'trip' not found in {db} — did you mean 'trips'?"


# ---------------------------------------------------------------------------------------------- listing
def test_list_tables_of_files_and_folders(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite"
    _sqlite(db)
    assert list_tables(str(db)) == {
        "empty_log": f"sqlite:{db}#empty_log",
        "orders": f"sqlite:{db}#orders",
    }
    ddb = tmp_path / "ops.duckdb"
    _duckdb(ddb)
    assert list_tables(str(ddb)) == {"empty_t": f"duckdb:{ddb}#empty_t", "trips": f"duckdb:{ddb}#trips"}

    wh = tmp_path / "wh"
    wh.mkdir()
    write_deltalake(str(wh / "orders"), pa.table({"id": [1]}))
    pq.write_table(pa.table({"id": [1]}), wh / "users.parquet")
    (wh / "items").mkdir()
    pq.write_table(pa.table({"id": [1]}), wh / "items" / "part-0.parquet")
    (wh / "notes.csv").write_text("id\n1\n")
    (wh / "_tmp").mkdir()
    (wh / "README.txt").write_text("not a table")
    assert list_tables(str(wh)) == {
        "items": str(wh / "items"),
        "notes": str(wh / "notes.csv"),
        "orders": str(wh / "orders"),
        "users": str(wh / "users.parquet"),
    }


# ---------------------------------------------------------------------------------------------- errors
def test_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as e:
        open_source(str(tmp_path / "nope.parquet"))
    assert str(e.value) == f"source '{tmp_path / 'nope.parquet'}': no such file or folder"
    with pytest.raises(SourceError) as e:
        open_source(f"delta:{tmp_path / 'nope'}", "orders")
    assert str(e.value) == f"table 'orders': source '{tmp_path / 'nope'}' does not exist"
    with pytest.raises(SourceError) as e:
        list_tables(str(tmp_path / "nowhere"))
    assert str(e.value) == f"source '{tmp_path / 'nowhere'}': no such file or folder"
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError) as e:
        list_tables(str(tmp_path / "empty"))
    assert str(e.value) == f"source '{tmp_path / 'empty'}': no Delta, Parquet or CSV tables found"


def test_version_pin_on_a_parquet_source(tmp_path: Path) -> None:
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"id": [1]}), p)
    with pytest.raises(SourceError) as e:
        open_source(f"{p}@3")
    assert str(e.value) == f"source '{p}@3': '@3' pins a Delta version, but this is parquet"


def test_unknown_column_and_unknown_format(tmp_path: Path) -> None:
    p = tmp_path / "t.parquet"
    pq.write_table(pa.table({"name": ["a"]}), p)
    with pytest.raises(SourceError) as e:
        open_source(str(p), "users").read(columns=["nme"])
    assert str(e.value) == "unknown column 'users.nme' — did you mean 'name'?"
    (tmp_path / "t.xlsx").write_text("")
    with pytest.raises(SourceError) as e:
        open_source(str(tmp_path / "t.xlsx"))
    assert str(e.value) == (
        f"source '{tmp_path / 't.xlsx'}': cannot tell its format; prefix it with delta:, parquet: or csv:"
    )


def test_catalog_sources_need_spark() -> None:
    with pytest.raises(SourceError) as e:
        open_source("catalog:main.sales.orders", "orders")
    assert str(e.value) == (
        "table 'orders': catalog source 'main.sales.orders' can only be read by the Spark builder on a cluster"
        " (relfm graph build --engine spark)"
    )


def test_files_that_are_not_what_they_claim(tmp_path: Path) -> None:
    for name in ("bad.parquet", "bad.sqlite", "bad.duckdb"):
        (tmp_path / name).write_text("garbage")
    with pytest.raises(SourceError) as e:
        open_source(str(tmp_path / "bad.parquet"), "t").read()
    assert str(e.value).startswith(f"table 't': cannot read Parquet {tmp_path / 'bad.parquet'}: ")
    with pytest.raises(SourceError) as e:
        open_source(f"{tmp_path / 'bad.sqlite'}#t", "t").read()
    assert (
        str(e.value)
        == f"table 't': cannot read sqlite file {tmp_path / 'bad.sqlite'}: file is not a database"
    )
    with pytest.raises(SourceError) as e:
        list_tables(str(tmp_path / "bad.duckdb"))
    assert str(e.value).startswith(f"source '{tmp_path / 'bad.duckdb'}': cannot read duckdb file ")
    with pytest.raises(SourceError) as e:
        open_source(f"{tmp_path / 'bad.duckdb'}#t", "t").num_rows()
    assert "\n" not in str(e.value) and str(e.value).startswith("table 't': cannot read duckdb file ")


def test_csv_offsets_and_naive_times_agree_in_utc(tmp_path: Path) -> None:
    p = tmp_path / "tz.csv"
    p.write_text(
        "id,at,naive\n1,2024-01-01T12:00:00+02:00,2024-01-01 10:00:00\n2,2024-01-01T12:00:00Z,2024-01-01 12:00:00\n"
    )
    t = open_source(str(p)).read()
    at = normalize_column("tz", "at", t.column("at"))
    naive = normalize_column("tz", "naive", t.column("naive"))
    assert at.type == naive.type == pa.timestamp("ns")
    assert at.equals(naive)
