"""The graph stage: infer, validate, build and build-or-reuse behind one small API."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph_engine.errors import RelfmError
from pipelines import build_graph

pytestmark = pytest.mark.unit


def _data(root: Path) -> Path:
    pq.write_table(pa.table({"user_id": [1, 2], "plan": ["a", "b"]}), root / "users.parquet")
    pq.write_table(
        pa.table({"order_id": [1, 2, 3], "user_id": [1, 2, 5], "at": pa.array([1, 2, 3], pa.timestamp("s"))}),
        root / "orders.parquet",
    )
    spec = build_graph.infer(str(root), "shop")
    spec.save(root / "shop.yaml")
    return root / "shop.yaml"


def test_infer_validate_build(tmp_path: Path) -> None:
    spec_path = _data(tmp_path)
    report = build_graph.validate(spec_path)
    assert report["missing_links"] == {"orders.user_id": 1}
    manifest = build_graph.build(spec_path, tmp_path / "g")
    assert manifest["counts"]["rows"] == 5
    assert manifest["spec"]["name"] == "shop"


def test_ensure_graph_reuses_the_cache(tmp_path: Path) -> None:
    spec_path = _data(tmp_path)
    g1 = build_graph.ensure_graph(spec_path, cache_dir=tmp_path / "cache")
    g2 = build_graph.ensure_graph(spec_path, cache_dir=tmp_path / "cache")
    assert g1.path == g2.path
    assert build_graph.ensure_graph(g1.path).graph_id == g1.graph_id


def test_unknown_engine(tmp_path: Path) -> None:
    spec_path = _data(tmp_path)
    with pytest.raises(RelfmError) as e:
        build_graph.build(spec_path, tmp_path / "g", engine="dask")
    assert str(e.value) == "unknown engine 'dask' (choose local or spark)"
