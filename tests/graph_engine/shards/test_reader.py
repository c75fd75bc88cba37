"""Opening a built graph: key lookups both ways, columns, and errors for things that are not graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph_engine.errors import SourceError, SpecError
from graph_engine.shards.local_builder import BuildConfig, build_local
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


# ------------------------------------------------------------------ multi-shard graphs
N_BIG = 150_000  # three shards at rows_per_shard=65536


def _big_graph(root: Path, rows_per_shard: int) -> Graph:
    """One parent table (string keys) and a 150k-row child table with times, a text column and a link."""
    rng = np.random.default_rng(1)
    if not (root / "kids.parquet").exists():
        ids = rng.permutation(N_BIG) * 3 - 7
        pq.write_table(
            pa.table(
                {
                    "kid": ids,
                    "code": [f"p{v}" for v in rng.integers(0, 500, size=N_BIG)],
                    "at": pa.array(rng.integers(0, 10**6, size=N_BIG) * 10**6, pa.timestamp("us")),
                    "note": [f"é{i % 97}" * int(i % 3) if i % 11 else None for i in range(N_BIG)],
                    "v": rng.normal(size=N_BIG),
                }
            ),
            root / "kids.parquet",
        )
        pq.write_table(pa.table({"code": [f"p{i}" for i in range(500)]}), root / "parents.parquet")
    spec = GraphSpec.from_dict(
        {
            "tables": {
                "parents": {"source": "parents.parquet", "primary_key": "code", "time_column": None},
                "kids": {
                    "source": "kids.parquet",
                    "primary_key": "kid",
                    "time_column": "at",
                    "foreign_keys": {"code": "parents"},
                    "semantic_types": {
                        "kid": "id",
                        "code": "id",
                        "at": "timestamp",
                        "note": "text",
                        "v": "numerical",
                    },
                },
            }
        },
        base_dir=root,
    )
    out = root / f"g{rows_per_shard}"
    build_local(spec, out, BuildConfig(rows_per_shard=rows_per_shard))
    return Graph.open(out)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Graph, Graph]:
    root = tmp_path_factory.mktemp("sharded")
    return _big_graph(root, 65536), _big_graph(root, 1 << 22)


def test_multi_shard_arrays_are_their_concatenation(sharded: tuple[Graph, Graph]) -> None:
    g, one = sharded
    for t in ("kids", "parents"):
        for name, info in g[t].meta["arrays"].items():
            arr = g[t].array(name)
            if t == "kids" and info["layout"] == "rows":
                assert len(info["files"]) == 3
            raw = b"".join((g.path / f["path"]).read_bytes() for f in info["files"])
            assert arr.flags.c_contiguous and not arr.flags.writeable
            assert arr.tobytes() == raw[: arr.nbytes], f"{t}.{name}"
            if info["layout"] == "rows" and not name.endswith(".start"):  # starts index padded segments
                assert arr.tobytes() == one[t].array(name).tobytes(), f"{t}.{name}"


def test_multi_shard_reads_match_a_single_shard_build(sharded: tuple[Graph, Graph]) -> None:
    g, one = sharded
    rows = np.array([0, 65535, 65536, 131071, 131072, N_BIG - 1, 7, 99_999])
    kids, kids1 = g["kids"], one["kids"]
    assert kids.column("note").text(rows) == kids1.column("note").text(rows)
    keys = kids.key_values(rows)
    assert keys.tolist() == kids1.key_values(rows).tolist()
    assert kids.lookup(keys).tolist() == rows.tolist()
    assert kids.lookup([-8, 10**9]).tolist() == [-1, -1]
    parents, parents1 = g["parents"], one["parents"]
    for p in parents.lookup(["p0", "p123", "p499"]).tolist():
        c, c1 = parents.csr("kids", "code"), parents1.csr("kids", "code")
        s, n = int(c.start[p]), int(c.count[p])
        s1 = int(c1.start[p])
        assert n == int(c1.count[p]) and n > 0
        assert c.child[s : s + n].tolist() == c1.child[s1 : s1 + n].tolist()
        assert c.time[s : s + n].tolist() == sorted(c.time[s : s + n].tolist())
        assert (kids.fk("code")[c.child[s : s + n]] == p).all()


def test_text_decodes_every_row_across_shards(sharded: tuple[Graph, Graph]) -> None:
    g, _ = sharded
    src = pq.read_table(g.path.parent / "kids.parquet", columns=["kid", "note"]).to_pydict()
    rows = g["kids"].lookup(src["kid"])
    got = g["kids"].column("note").text(rows[::997])
    assert got == src["note"][::997]


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_opening_reads_only_the_manifest(sharded: tuple[Graph, Graph], tmp_path: Path) -> None:
    g, _ = sharded

    def mappings_of(files: set[str]) -> int:
        return sum(line.split()[-1] in files for line in Path("/proc/self/maps").read_text().splitlines())

    kids_files = {str(g.path / f["path"]) for a in g["kids"].meta["arrays"].values() for f in a["files"]}
    time_files = {str(g.path / f["path"]) for f in g["kids"].meta["arrays"]["__time__"]["files"]}
    before, before_time = mappings_of(kids_files), mappings_of(time_files)
    fresh = Graph.open(g.path)
    assert fresh["kids"].num_rows == N_BIG and fresh.max_time() >= fresh.min_time()
    assert mappings_of(kids_files) == before  # opening and metadata map nothing
    assert fresh["kids"].time is not None
    assert mappings_of(time_files) == before_time + 3  # first access maps the three shard files
    assert mappings_of(kids_files) == before + 3
    # A folder holding only the manifest opens and answers metadata; arrays fail with a one-line error.
    (tmp_path / "manifest.json").write_bytes((g.path / "manifest.json").read_bytes())
    bare = Graph.open(tmp_path)
    assert bare.table_names == g.table_names and bare["kids"].num_rows == N_BIG
    with pytest.raises(SourceError) as e:
        bare["kids"].fk("code")
    assert str(e.value).startswith(
        f"graph {tmp_path.resolve()}: cannot map array 'fk.code' of table 'kids' ("
    )
    assert "\n" not in str(e.value)
