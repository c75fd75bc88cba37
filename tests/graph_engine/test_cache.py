"""Build-or-reuse: the same spec and source versions give the same cached graph; new data a new one."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import write_deltalake

from graph_engine.cache import open_or_build, spec_graph_id
from graph_engine.errors import SourceError
from graph_engine.shards.local_builder import BuildConfig, build_local
from graph_engine.spec import GraphSpec

pytestmark = pytest.mark.unit


def _warehouse(root: Path) -> Path:
    wh = root / "wh"
    write_deltalake(str(wh / "users"), pa.table({"user_id": [1, 2, 3], "plan": ["a", "b", "a"]}))
    write_deltalake(
        str(wh / "events"),
        pa.table(
            {
                "event_id": [1, 2, 3, 4],
                "user_id": [1, 1, 2, 3],
                "at": pa.array([1, 2, 3, 4], pa.timestamp("s")),
            }
        ),
    )
    return wh


SPEC = """\
tables:
  users: {source: wh/users}
  events: {source: wh/events}
"""


class CountingBuilder:
    """The real local builder, counting how often it runs."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, spec: GraphSpec, out: Path, config: BuildConfig) -> object:
        self.calls += 1
        return build_local(spec, out, config)


def test_same_spec_reuses_the_cached_graph(tmp_path: Path) -> None:
    _warehouse(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC)
    builder = CountingBuilder()
    cache = tmp_path / "graphs"
    g1 = open_or_build(tmp_path / "spec.yaml", cache_dir=cache, builder=builder)
    mtime = (g1.path / "manifest.json").stat().st_mtime_ns
    g2 = open_or_build(tmp_path / "spec.yaml", cache_dir=cache, builder=builder)
    assert builder.calls == 1
    assert g2.path == g1.path == cache / g1.graph_id
    assert (g2.path / "manifest.json").stat().st_mtime_ns == mtime
    assert [p.name for p in cache.iterdir()] == [g1.graph_id]  # no temporary folder left behind
    # The id computed from metadata alone is the id the build wrote.
    _, gid = spec_graph_id(GraphSpec.from_yaml(tmp_path / "spec.yaml"))
    assert gid == g1.graph_id
    # A built graph folder opens as is.
    assert open_or_build(g1.path).graph_id == g1.graph_id


def test_new_delta_version_gives_a_new_graph(tmp_path: Path) -> None:
    wh = _warehouse(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC)
    cache = tmp_path / "graphs"
    g1 = open_or_build(tmp_path / "spec.yaml", cache_dir=cache)
    assert g1.manifest["sources"]["events"]["version"] == "delta:0"

    write_deltalake(
        str(wh / "events"),
        pa.table({"event_id": [5], "user_id": [2], "at": pa.array([5], pa.timestamp("s"))}),
        mode="append",
    )
    g2 = open_or_build(tmp_path / "spec.yaml", cache_dir=cache)
    assert g2.graph_id != g1.graph_id
    assert g2.manifest["sources"]["events"]["version"] == "delta:1"
    assert g2["events"].num_rows == 5 and g1["events"].num_rows == 4
    assert sorted(p.name for p in cache.iterdir()) == sorted([g1.graph_id, g2.graph_id])

    # Pinning the old version brings back the old data under its own id.
    (tmp_path / "pinned.yaml").write_text(SPEC.replace("wh/events}", "wh/events@0}"))
    g0 = open_or_build(tmp_path / "pinned.yaml", cache_dir=cache)
    assert g0["events"].num_rows == 4
    assert g0.manifest["sources"]["events"]["version"] == "delta:0"


def test_changed_file_source_gives_a_new_graph(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1, 2]}), tmp_path / "t.parquet")
    spec = GraphSpec.from_dict({"tables": {"t": {"source": "t.parquet"}}}, base_dir=tmp_path)
    _, before = spec_graph_id(spec)
    pq.write_table(pa.table({"id": [1, 2, 3]}), tmp_path / "t.parquet")
    _, after = spec_graph_id(spec)
    assert before != after


def test_rows_per_shard_is_part_of_the_id(tmp_path: Path) -> None:
    _warehouse(tmp_path)
    (tmp_path / "spec.yaml").write_text(SPEC)
    spec = GraphSpec.from_yaml(tmp_path / "spec.yaml")
    assert spec_graph_id(spec, 1 << 16)[1] != spec_graph_id(spec, 1 << 17)[1]


def test_not_a_graph_or_spec(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    with pytest.raises(SourceError) as e:
        open_or_build(tmp_path / "folder")
    assert str(e.value) == f"{tmp_path / 'folder'}: neither a built graph (no manifest.json) nor a spec file"
    with pytest.raises(SourceError) as e:
        open_or_build(tmp_path / "nope.yaml")
    assert str(e.value) == f"{tmp_path / 'nope.yaml'}: no such graph or spec file"
