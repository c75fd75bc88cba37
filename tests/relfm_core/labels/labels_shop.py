"""A tiny hand-written shop graph whose every label can be worked out by hand.

users (string keys, signup time): a 2021-01-01, b 2021-02-01, c unknown signup, d 2021-01-15.
orders (pk order, not insertion order):

    pk  ts                user  amount status     note           qty
    7   2021-01-10 00:00  a     10     done       hello world    1
    3   2021-01-10 00:00  a     20     cancelled  help           2    (tie with pk 7; row id lower)
    9   2021-01-20 00:00  a     null   done       null           3
    5   2021-02-28 00:00  a     5      done       bye            1
    1   2021-03-01 12:00  b     7      returned   hello          2
    8   2021-03-02 00:00  zz    1      done       orphan         1    (no such user: a missing link)
    2   null              b     100    done       never          1    (unknown time: never in a window)
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from graph_engine.shards.local_builder import build_local
from graph_engine.shards.reader import Graph
from graph_engine.spec import GraphSpec


def ts(s: str | None) -> object:
    import datetime

    return None if s is None else datetime.datetime.fromisoformat(s)


def build_shop(folder: Path) -> Graph:
    folder.mkdir(parents=True, exist_ok=True)
    users = pa.table(
        {
            "user_id": ["a", "b", "c", "d"],
            "signup": pa.array(
                [ts("2021-01-01"), ts("2021-02-01"), None, ts("2021-01-15")], pa.timestamp("s")
            ),
            "age": pa.array([30.0, None, 50.0, 41.5]),
            "country": pa.array(["DE", "FR", None, "DE"]),
            "ext_id": pa.array(["x1", "x2", "x3", "x4"]),
        }
    )
    orders = pa.table(
        {
            "order_id": pa.array([7, 3, 9, 5, 1, 8, 2], pa.int64()),
            "ts": pa.array(
                [
                    ts("2021-01-10"),
                    ts("2021-01-10"),
                    ts("2021-01-20"),
                    ts("2021-02-28"),
                    ts("2021-03-01 12:00"),
                    ts("2021-03-02"),
                    None,
                ],
                pa.timestamp("s"),
            ),
            "user_id": pa.array(["a", "a", "a", "a", "b", "zz", "b"]),
            "amount": pa.array([10.0, 20.0, None, 5.0, 7.0, 1.0, 100.0]),
            "status": pa.array(["done", "cancelled", "done", "done", "returned", "done", "done"]),
            "note": pa.array(["hello world", "help", None, "bye", "hello", "orphan", "never"]),
            "qty": pa.array([1, 2, 3, 1, 2, 1, 1], pa.int64()),
        }
    )
    pq.write_table(users, folder / "users.parquet")
    pq.write_table(orders, folder / "orders.parquet")
    spec = GraphSpec.from_dict(
        {
            "name": "shop",
            "tables": {
                "users": {
                    "source": "users.parquet",
                    "primary_key": "user_id",
                    "time_column": "signup",
                    "foreign_keys": {},
                    "semantic_types": {
                        "user_id": "id",
                        "signup": "timestamp",
                        "age": "numerical",
                        "country": "categorical",
                        "ext_id": "id",
                    },
                },
                "orders": {
                    "source": "orders.parquet",
                    "primary_key": "order_id",
                    "time_column": "ts",
                    "foreign_keys": {"user_id": "users"},
                    "semantic_types": {
                        "order_id": "id",
                        "ts": "timestamp",
                        "user_id": "id",
                        "amount": "numerical",
                        "status": "categorical",
                        "note": "text",
                        "qty": "numerical",
                    },
                },
            },
        },
        base_dir=folder,
    )
    build_local(spec, folder / "graph")
    return Graph.open(folder / "graph")
