"""Opening a built graph: key lookups both ways, columns, and errors for things that are not graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph_engine.errors import SourceError, SpecError
from graph_engine.shards.local_builder import build_local
from graph_engine.shards.reader import Graph
from graph_engine.spec import GraphSpec

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Graph:
    root = tmp_path_factory.mktemp("reader")
    pq.write_table(
        pa.table({"city": ["Zürich", "Ab", "abc", "A", "東京"], "pop": [1.0, 2.0, 3.0, 4.0, 5.0]}),
        root / "cities.parquet",
    )
    pq.write_table(
        pa.table(
            {"uid": [900, -3, 42, 7], "city": ["A", "Zürich", "東京", "A"], "bio": ["x y z", None, "", "é"]}
        ),
        root / "users.parquet",
    )
    pq.write_table(pa.table({"a": [1, 2]}), root / "nokey.parquet")
    spec = GraphSpec.from_dict(
        {
            "tables": {
                "cities": {"source": "cities.parquet", "primary_key": "city", "time_column": None},
                "users": {
                    "source": "users.parquet",
                    "primary_key": "uid",
                    "time_column": None,
                    "foreign_keys": {"city": "cities"},
                    "semantic_types": {"uid": "id", "city": "id", "bio": "text"},
                },
                "nokey": {"source": "nokey.parquet", "primary_key": None, "time_column": None},
            }
        },
        base_dir=root,
    )
    build_local(spec, root / "g")
    return Graph.open(root / "g")


def test_int_keys_round_trip(graph: Graph) -> None:
    users = graph["users"]
    keys = [900, -3, 42, 7]
    rows = users.lookup(keys)
    assert sorted(rows.tolist()) == [0, 1, 2, 3]
    assert users.key_values(rows).tolist() == keys
    assert users.lookup(np.array([7, 8, -4, 10**12])).tolist() == [int(rows[3]), -1, -1, -1]
    assert users.key_values(np.arange(4)).tolist() == [-3, 7, 42, 900]


def test_string_keys_round_trip(graph: Graph) -> None:
    cities = graph["cities"]
    keys = ["Zürich", "Ab", "abc", "A", "東京"]
    rows = cities.lookup(keys)
    assert sorted(rows.tolist()) == [0, 1, 2, 3, 4]
    assert cities.key_values(rows).tolist() == keys
    # Unknown keys, prefixes of known keys and keys longer than any stored key all miss.
    assert cities.lookup(["B", "a", "Zürichsee", "東"]).tolist() == [-1, -1, -1, -1]
    assert cities.lookup(np.array(["abc"])).tolist() == [int(rows[2])]


def test_links_and_text_columns(graph: Graph) -> None:
    users, cities = graph["users"], graph["cities"]
    fk = users.fk("city")
    assert cities.key_values(fk[users.lookup([900, -3, 42, 7])]).tolist() == ["A", "Zürich", "東京", "A"]
    bio = users.column("bio")
    assert bio.text(users.lookup([900, -3, 42, 7])) == ["x y z", None, "", "é"]


def test_table_without_key(graph: Graph) -> None:
    t = graph["nokey"]
    assert t.keys is None
    assert t.key_values(np.array([1, 0])).tolist() == [1, 0]  # row ids are the only identity
    with pytest.raises(SourceError) as e:
        t.lookup([1])
    assert str(e.value) == "table 'nokey' has no primary key to look up"


def test_unknown_table_and_column(graph: Graph) -> None:
    with pytest.raises(SpecError) as e:
        graph.table("user")
    assert str(e.value) == "unknown table 'user' — did you mean 'users'?"
    with pytest.raises(SpecError) as e:
        graph["users"].column("bi")
    assert str(e.value) == "unknown column 'users.bi' — did you mean 'bio'?"


def test_opening_something_else(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as e:
        Graph.open(tmp_path)
    assert str(e.value) == (
        f"graph {tmp_path}: no manifest.json (build it with `relfm graph build SPEC --out {tmp_path}`)"
    )
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(SourceError) as e:
        Graph.open(tmp_path)
    assert str(e.value) == f"graph {tmp_path}: not a relfm graph"


def test_graph_without_time_columns_has_no_time_range(graph: Graph) -> None:
    with pytest.raises(SourceError) as e:
        graph.max_time()
    assert str(e.value) == f"graph {graph.path}: no table has a time column"
