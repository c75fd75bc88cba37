"""Random small graphs for the label-engine tests, with the edge cases real databases have.

One fixed schema (so the query generator knows every column's kind), random data: null values and null
times, ties in time (many events at midnight, anchors at midnight, so window bounds hit events exactly),
foreign keys that are null or point at no parent row, int or string entity keys, shuffled primary keys
(row order is not insertion order), and every column kind: numerical float/int, categorical
string/int/bool, bool as a number, text with LIKE metacharacters, timestamps, multicategorical lists.

    users(user_id PK int|str, signup time?, age, score, country, vip, bio, born, tags, region_id -> regions,
          referrer -> users)
    regions(region_id PK, rname, zone)            brands(brand_id PK str, bcountry)
    products(product_id PK str, category, price, brand_id -> brands, pdesc)
    orders(order_id PK, ts time, user_id -> users, product_id -> products, amount, qty, status, paid,
           gift, note, shipped, code, labels)
    visits(visit_id PK str, vts time, user_id -> users, host_id -> users, duration, channel)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from graph_engine.shards.local_builder import build_local
from graph_engine.shards.reader import Graph
from graph_engine.spec import GraphSpec

BASE = np.datetime64("2021-01-01T00:00:00", "s")
SPAN_DAYS = 150
WORDS = ["red", "blue", "fast", "slow", "big", "50%", "a_b", "cat", "dog", "x\\y", "Zeta", "zeta", "ab"]
COUNTRIES = ["DE", "FR", "US", "UK", "IT", "ES"]
STATUSES = ["done", "cancelled", "returned", "pending", "done_late"]
CHANNELS = ["web", "app", "store"]
CATEGORIES = ["books", "toys", "home", "garden"]
TAGS = ["a", "b", "c", "d"]


@dataclass
class GraphData:
    """The tables of a random graph, before building: enough to write queries about it."""

    seed: int
    tables: dict[str, pa.Table]
    string_users: bool
    users_time: bool
    values: dict[tuple[str, str], list[Any]] = field(default_factory=dict)  # non-null values per column


@dataclass
class RandomGraph:
    data: GraphData
    path: Path
    graph: Graph


def _nullify(rng: np.random.Generator, values: list[Any], rate: float) -> list[Any]:
    return [None if rng.random() < rate else v for v in values]


def _text(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(1, 4))).tolist())


def _times(rng: np.random.Generator, n: int, null_rate: float, start_day: int = 0) -> list[Any]:
    days = rng.integers(start_day, SPAN_DAYS, size=n)
    # Half the events at midnight (ties with each other and with midnight anchors), the rest on the hour.
    hours = np.where(rng.random(n) < 0.5, 0, rng.integers(0, 24, size=n))
    t = BASE + days.astype("timedelta64[D]") + hours.astype("timedelta64[h]")
    out: list[Any] = [x.astype("datetime64[s]").item() for x in t]
    return _nullify(rng, out, null_rate)


def _keys(rng: np.random.Generator, n: int, string: bool, prefix: str) -> list[Any]:
    ids = rng.permutation(np.arange(1, 4 * n))[:n]
    return [f"{prefix}{int(i):03d}" for i in ids] if string else [int(i) for i in ids]


def _links(
    rng: np.random.Generator, keys: list[Any], n: int, null: float, orphan: float, string: bool
) -> list[Any]:
    out: list[Any] = []
    for _ in range(n):
        r = rng.random()
        if r < null:
            out.append(None)
        elif r < null + orphan:
            out.append("zz999" if string else 99_999)
        else:
            out.append(keys[int(rng.integers(0, len(keys)))])
    return out


def make_data(seed: int) -> GraphData:
    tables, string_users, users_time = make_tables(seed)
    data = GraphData(seed, tables, string_users, users_time)
    for name, table in tables.items():
        for col in table.column_names:
            data.values[(name, col)] = [v for v in table.column(col).to_pylist() if v is not None]
    return data


def make_tables(seed: int) -> tuple[dict[str, pa.Table], bool, bool]:
    rng = np.random.default_rng(seed)
    string_users = bool(rng.random() < 0.5)
    users_time = bool(rng.random() < 0.7)
    n_users, n_orders, n_visits = (
        int(rng.integers(15, 40)),
        int(rng.integers(150, 500)),
        int(rng.integers(50, 200)),
    )
    ts = pa.timestamp("s")
    user_type = pa.string() if string_users else pa.int64()

    region_keys = [1, 2, 3, 4, 5]
    regions = pa.table(
        {
            "region_id": pa.array(region_keys, pa.int64()),
            "rname": pa.array(_nullify(rng, ["north", "south", "east", "west", "mid"], 0.2), pa.string()),
            "zone": pa.array([_text(rng) for _ in region_keys], pa.string()),
        }
    )
    brand_keys = ["b1", "b2", "b3", "b4"]
    brands = pa.table(
        {
            "brand_id": pa.array(brand_keys, pa.string()),
            "bcountry": pa.array(_nullify(rng, rng.choice(COUNTRIES, 4).tolist(), 0.2), pa.string()),
        }
    )
    product_keys = _keys(rng, 12, True, "p")
    products = pa.table(
        {
            "product_id": pa.array(product_keys, pa.string()),
            "category": pa.array(_nullify(rng, rng.choice(CATEGORIES, 12).tolist(), 0.15), pa.string()),
            "price": pa.array(_nullify(rng, (rng.integers(1, 80, 12) / 4).tolist(), 0.15), pa.float64()),
            "brand_id": pa.array(_links(rng, brand_keys, 12, 0.1, 0.1, True), pa.string()),
            "pdesc": pa.array(_nullify(rng, [_text(rng) for _ in range(12)], 0.2), pa.string()),
        }
    )
    user_keys = _keys(rng, n_users, string_users, "u")
    users_cols: dict[str, pa.Array] = {
        "user_id": pa.array(user_keys, user_type),
        "age": pa.array(_nullify(rng, (rng.integers(36, 140, n_users) / 2).tolist(), 0.15), pa.float64()),
        "score": pa.array(_nullify(rng, rng.integers(0, 4, n_users).tolist(), 0.1), pa.int64()),
        "country": pa.array(_nullify(rng, rng.choice(COUNTRIES, n_users).tolist(), 0.15), pa.string()),
        "vip": pa.array(_nullify(rng, (rng.random(n_users) < 0.3).tolist(), 0.15), pa.bool_()),
        "bio": pa.array(_nullify(rng, [_text(rng) for _ in range(n_users)], 0.15), pa.string()),
        "born": pa.array(_times(rng, n_users, 0.2), ts),
        "tags": pa.array(
            _nullify(
                rng,
                [sorted(set(rng.choice(TAGS, int(rng.integers(0, 3))).tolist())) for _ in range(n_users)],
                0.15,
            ),
            pa.list_(pa.string()),
        ),
        "region_id": pa.array(_links(rng, region_keys, n_users, 0.1, 0.1, False), pa.int64()),
        "referrer": pa.array(_links(rng, user_keys, n_users, 0.3, 0.1, string_users), user_type),
    }
    if users_time:
        # Some users sign up during the period (they do not exist before), a few with unknown time.
        users_cols["signup"] = pa.array(_times(rng, n_users, 0.1, start_day=-30), ts)
    users = pa.table(users_cols)
    order_keys = _keys(rng, n_orders, False, "")
    orders = pa.table(
        {
            "order_id": pa.array(order_keys, pa.int64()),
            "ts": pa.array(_times(rng, n_orders, 0.05), ts),
            "user_id": pa.array(_links(rng, user_keys, n_orders, 0.05, 0.05, string_users), user_type),
            "product_id": pa.array(_links(rng, product_keys, n_orders, 0.1, 0.05, True), pa.string()),
            "amount": pa.array(
                _nullify(rng, (rng.integers(-80, 400, n_orders) / 4).tolist(), 0.15), pa.float64()
            ),
            "qty": pa.array(_nullify(rng, rng.integers(1, 6, n_orders).tolist(), 0.1), pa.int64()),
            "status": pa.array(_nullify(rng, rng.choice(STATUSES, n_orders).tolist(), 0.1), pa.string()),
            "paid": pa.array(_nullify(rng, (rng.random(n_orders) < 0.6).tolist(), 0.1), pa.bool_()),
            "gift": pa.array(_nullify(rng, (rng.random(n_orders) < 0.2).tolist(), 0.1), pa.bool_()),
            "note": pa.array(_nullify(rng, [_text(rng) for _ in range(n_orders)], 0.2), pa.string()),
            "shipped": pa.array(_times(rng, n_orders, 0.2), ts),
            "code": pa.array(_nullify(rng, rng.integers(1, 7, n_orders).tolist(), 0.1), pa.int64()),
            "labels": pa.array(
                _nullify(
                    rng,
                    [
                        sorted(set(rng.choice(TAGS, int(rng.integers(0, 3))).tolist()))
                        for _ in range(n_orders)
                    ],
                    0.1,
                ),
                pa.list_(pa.string()),
            ),
        }
    )
    visits = pa.table(
        {
            "visit_id": pa.array(_keys(rng, n_visits, True, "v"), pa.string()),
            "vts": pa.array(_times(rng, n_visits, 0.05), ts),
            "user_id": pa.array(_links(rng, user_keys, n_visits, 0.05, 0.05, string_users), user_type),
            "host_id": pa.array(_links(rng, user_keys, n_visits, 0.1, 0.05, string_users), user_type),
            "duration": pa.array(
                _nullify(rng, (rng.integers(0, 200, n_visits) / 8).tolist(), 0.1), pa.float64()
            ),
            "channel": pa.array(_nullify(rng, rng.choice(CHANNELS, n_visits).tolist(), 0.1), pa.string()),
        }
    )
    tables = {
        "regions": regions,
        "brands": brands,
        "products": products,
        "users": users,
        "orders": orders,
        "visits": visits,
    }
    return tables, string_users, users_time


def spec_dict(users_time: bool) -> dict[str, Any]:
    """A complete spec (nothing inferred): keys, times, links and every column's semantic type."""
    users_types = {
        "user_id": "id",
        "age": "numerical",
        "score": "numerical",
        "country": "categorical",
        "vip": "categorical",
        "bio": "text",
        "born": "timestamp",
        "tags": "multicategorical",
        "region_id": "id",
        "referrer": "id",
    }
    if users_time:
        users_types["signup"] = "timestamp"
    return {
        "name": "labels-random",
        "tables": {
            "regions": {
                "source": "regions.parquet",
                "primary_key": "region_id",
                "time_column": None,
                "foreign_keys": {},
                "semantic_types": {"region_id": "id", "rname": "categorical", "zone": "text"},
            },
            "brands": {
                "source": "brands.parquet",
                "primary_key": "brand_id",
                "time_column": None,
                "foreign_keys": {},
                "semantic_types": {"brand_id": "id", "bcountry": "categorical"},
            },
            "products": {
                "source": "products.parquet",
                "primary_key": "product_id",
                "time_column": None,
                "foreign_keys": {"brand_id": "brands"},
                "semantic_types": {
                    "product_id": "id",
                    "category": "categorical",
                    "price": "numerical",
                    "brand_id": "id",
                    "pdesc": "text",
                },
            },
            "users": {
                "source": "users.parquet",
                "primary_key": "user_id",
                "time_column": "signup" if users_time else None,
                "foreign_keys": {"region_id": "regions", "referrer": "users"},
                "semantic_types": users_types,
            },
            "orders": {
                "source": "orders.parquet",
                "primary_key": "order_id",
                "time_column": "ts",
                "foreign_keys": {"user_id": "users", "product_id": "products"},
                "semantic_types": {
                    "order_id": "id",
                    "ts": "timestamp",
                    "user_id": "id",
                    "product_id": "id",
                    "amount": "numerical",
                    "qty": "numerical",
                    "status": "categorical",
                    "paid": "categorical",
                    "gift": "numerical",
                    "note": "text",
                    "shipped": "timestamp",
                    "code": "categorical",
                    "labels": "multicategorical",
                },
            },
            "visits": {
                "source": "visits.parquet",
                "primary_key": "visit_id",
                "time_column": "vts",
                "foreign_keys": {"user_id": "users", "host_id": "users"},
                "semantic_types": {
                    "visit_id": "id",
                    "vts": "timestamp",
                    "user_id": "id",
                    "host_id": "id",
                    "duration": "numerical",
                    "channel": "categorical",
                },
            },
        },
    }


def make_graph(seed: int, folder: Path) -> RandomGraph:
    """Writes the tables as Parquet under `folder`, builds the graph into `folder/graph`."""
    data = make_data(seed)
    spec = write_spec(data, folder)
    build_local(spec, folder / "graph")
    return RandomGraph(data, folder / "graph", Graph.open(folder / "graph"))


def write_spec(data: GraphData, folder: Path) -> GraphSpec:
    """Writes the tables as Parquet under `folder`; returns the complete spec over them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, table in data.tables.items():
        pq.write_table(table, folder / f"{name}.parquet")
    return GraphSpec.from_dict(spec_dict(data.users_time), base_dir=folder)


def random_anchors(rng: np.random.Generator, n: int) -> np.ndarray:
    """Anchors inside the data's period, mostly at midnight (on top of the events there)."""
    days = rng.integers(-10, SPAN_DAYS + 10, size=n)
    hours = np.where(rng.random(n) < 0.7, 0, rng.integers(0, 24, size=n))
    t = BASE + days.astype("timedelta64[D]") + hours.astype("timedelta64[h]")
    return t.astype("datetime64[ns]")
