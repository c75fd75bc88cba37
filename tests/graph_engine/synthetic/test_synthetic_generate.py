from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from synthetic_checks import check_links, check_times

from graph_engine.errors import SourceError
from graph_engine.spec import GraphSpec, SemanticType
from graph_engine.synthetic import (
    ChoiceLink,
    ColumnConfig,
    DimensionTable,
    EntityTable,
    EventTable,
    KeyConfig,
    OccasionTable,
    ProcessConfig,
    StaticLink,
    SyntheticConfig,
    default_config,
    generate,
    generate_database,
    generate_in_memory,
    read_report,
)

pytestmark = pytest.mark.unit


def _tiny(**update: object) -> SyntheticConfig:
    return default_config("tiny", seed=5).model_copy(update=update)


def test_same_config_same_tables_whatever_the_chunk_size() -> None:
    a, _ = generate_in_memory(_tiny())
    b, _ = generate_in_memory(_tiny())
    c, _ = generate_in_memory(_tiny(chunk_rows=13))
    assert set(a) == {"users", "items", "orders", "reviews"}
    for name in a:
        assert a[name].num_rows > 0
        assert a[name].equals(b[name]), name
        assert a[name].equals(c[name]), name
    d, _ = generate_in_memory(default_config("tiny", seed=6))
    assert not a["orders"].equals(d["orders"])


def test_parquet_output_is_chunked_and_identical(tmp_path: Path) -> None:
    cfg = _tiny(chunk_rows=200)
    mem, _ = generate_in_memory(cfg)
    spec = generate(cfg, tmp_path / "db")
    assert (tmp_path / "db" / "graph.yaml").is_file()
    for name, table in mem.items():
        path = spec.resolve_source(name)
        assert path == str(tmp_path / "db" / f"{name}.parquet")
        assert pq.read_table(path).equals(table), name
    assert pq.ParquetFile(spec.resolve_source("orders")).num_row_groups > 1
    again = generate(cfg, tmp_path / "again")
    for name in mem:
        assert Path(again.resolve_source(name)).read_bytes() == Path(spec.resolve_source(name)).read_bytes()
    # A second run over the same folder replaces the tables.
    generate(_tiny(chunk_rows=10_000), tmp_path / "db")
    assert pq.read_table(spec.resolve_source("orders")).equals(mem["orders"])


def test_graph_yaml_pins_everything(tmp_path: Path) -> None:
    spec = generate(_tiny(), tmp_path)
    loaded = GraphSpec.from_yaml(tmp_path / "graph.yaml")
    assert loaded.to_dict() == spec.to_dict()
    assert loaded.base_dir == tmp_path.resolve()
    orders = loaded.table("orders")
    assert orders.primary_key == "order_id" and orders.time_column == "order_time"
    assert orders.foreign_keys == {"user_id": "users", "item_id": "items"}
    assert loaded.table("items").given("time_column") and loaded.table("items").time_column is None
    for name, t in loaded.tables.items():
        schema = pq.read_schema(loaded.resolve_source(name))
        assert set(t.semantic_types) == set(schema.names), name
        assert t.semantic_types[t.primary_key] == SemanticType.id
    report = read_report(tmp_path)
    assert report.row_counts["orders"] == pq.read_metadata(spec.resolve_source("orders")).num_rows
    assert report.queries and json.loads((tmp_path / "synthetic.json").read_text())["config"]["seed"] == 5


def test_delta_output_appends_per_chunk(tmp_path: Path) -> None:
    from deltalake import DeltaTable

    cfg = _tiny(chunk_rows=300)
    mem, _ = generate_in_memory(cfg)
    spec = generate(cfg, tmp_path, fmt="delta")
    assert spec.table("orders").source == "delta:orders"
    dt = DeltaTable(str(tmp_path / "orders"))
    assert dt.version() >= 2  # one commit per chunk
    for name, table in mem.items():
        got = DeltaTable(str(tmp_path / name)).to_pyarrow_table().sort_by(spec.table(name).primary_key)
        assert got.num_rows == table.num_rows
        got = got.cast(table.schema)
        assert got.equals(table), name


def test_csv_output_encodes_lists_as_json(tmp_path: Path) -> None:
    cfg = _tiny()
    mem, _ = generate_in_memory(cfg)
    spec = generate(cfg, tmp_path, fmt="csv")
    items = pacsv.read_csv(spec.resolve_source("items"))
    assert items.num_rows == mem["items"].num_rows
    tags = [None if v is None else json.loads(v) for v in items.column("tags").to_pylist()]
    assert tags == mem["items"].column("tags").to_pylist()
    orders = pacsv.read_csv(spec.resolve_source("orders"))
    assert orders.column("order_id").to_pylist() == mem["orders"].column("order_id").to_pylist()


def test_bad_output_requests_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="format"):
        generate(_tiny(), tmp_path, fmt="orc")  # type: ignore[arg-type]
    (tmp_path / "users").mkdir()
    (tmp_path / "users" / "mine.txt").write_text("not a delta table")
    with pytest.raises(SourceError, match="users"):
        generate(_tiny(), tmp_path, fmt="delta")
    assert (tmp_path / "users" / "mine.txt").is_file()
    (tmp_path / "taken").write_text("a file, not a folder")
    with pytest.raises(SourceError, match="taken"):
        generate(_tiny(), tmp_path / "taken")


def test_links_keys_and_times_are_consistent() -> None:
    cfg = _tiny(orphan_rate=0.02)
    db = generate_database(cfg)
    check_links(db)
    check_times(db, cfg.start, cfg.end)
    assert db.report.orphan_counts["orders.user_id"] > 0
    assert db.report.orphan_counts["reviews.item_id"] > 0  # inherited from the reviewed order
    clean = generate_database(_tiny())
    assert not any(clean.report.orphan_counts.values())
    # Event keys are unique across blocks and chunks and run in order.
    ids = db.tables["orders"].column("order_id").to_numpy()
    assert (np.diff(ids) == 1).all()


def test_string_keys_and_offsets() -> None:
    cfg = _tiny()
    users = cfg.table("users").model_copy(update={"key": KeyConfig(type="string", prefix="U-", start=100)})
    items = cfg.table("items").model_copy(update={"key": KeyConfig(start=1000, step=7)})
    cfg = cfg.model_copy(update={"tables": [users, items, *cfg.tables[2:]]})
    db = generate_database(cfg)
    check_links(db)
    assert db.tables["users"].column("user_id").to_pylist()[:2] == ["U-100", "U-101"]
    assert db.tables["orders"].schema.field("user_id").type == pa.string()
    assert db.tables["items"].column("item_id").to_pylist()[:2] == [1000, 1007]


def test_every_semantic_type_is_present_in_the_default_config() -> None:
    tables, spec = generate_in_memory(default_config("tiny"))
    stypes = {s for t in spec.tables.values() for s in t.semantic_types.values()}
    assert stypes == set(SemanticType)
    types = {str(f.type) for t in tables.values() for f in t.schema}
    for expected in ("int64", "double", "string", "bool", "list<item: string>", "timestamp[us]"):
        assert expected in types
    assert any(pa.types.is_fixed_size_list(f.type) for f in tables["items"].schema)
    assert tables["users"].schema.field("signup_time").type == pa.timestamp("us")


def test_missing_value_rates_follow_the_config() -> None:
    cfg = default_config(30_000, seed=2).model_copy(update={"missing_rate": 0.1})
    tables, spec = generate_in_memory(cfg)
    for name, t in spec.tables.items():
        table = tables[name]
        structural = {t.primary_key, t.time_column, *t.foreign_keys}
        for col in table.column_names:
            rate = table.column(col).null_count / table.num_rows
            if col in structural:
                assert rate == 0, f"{name}.{col}"
            elif col == "image_emb":
                assert rate == 0  # pinned to 0 in the config
            elif table.num_rows > 2000:
                assert abs(rate - 0.1) < 0.03, f"{name}.{col}: {rate}"


def test_timestamps_follow_seasonality_and_weekly_cycles() -> None:
    tables, _ = generate_in_memory(default_config(40_000, seed=1))
    times = tables["orders"].column("order_time")
    month = pc.month(times).to_numpy()
    hour = pc.hour(times).to_numpy()
    # Yearly peak in late November/December (yearly_peak_day=340), evening peak (daily_peak_hour=20).
    by_month = np.bincount(month, minlength=13)[1:]
    assert by_month[11] > by_month[5]
    assert np.bincount(hour, minlength=24)[18:22].sum() > np.bincount(hour, minlength=24)[4:8].sum()


def _f1_like() -> SyntheticConfig:
    """drivers -> results <- races -> circuits: events paced by occasions, with finishing positions."""
    return SyntheticConfig(
        name="f1",
        seed=3,
        start=datetime(2015, 1, 1),
        end=datetime(2019, 1, 1),
        tables=[
            EntityTable(name="drivers", primary_key="driver_id", n_rows=60, latent_dim=3),
            DimensionTable(
                name="circuits",
                primary_key="circuit_id",
                n_rows=12,
                columns=[ColumnConfig(name="country", kind="category", values=["it", "gb", "mc", "br"])],
            ),
            OccasionTable(
                name="races",
                primary_key="race_id",
                time_column="date",
                every_days=14,
                months=list(range(3, 12)),
                parents=[StaticLink(column="circuit_id", parent="circuits")],
                columns=[ColumnConfig(name="round", kind="int", loc=10, scale=5, low=1, high=22)],
            ),
            EventTable(
                name="results",
                primary_key="result_id",
                time_column="date",
                actor="drivers",
                actor_column="driver_id",
                choices=[ChoiceLink(column="race_id", parent="races")],
                process=ProcessConfig(rate_per_year=40),
                columns=[
                    ColumnConfig(
                        name="position", kind="int", dist="rank", high=20, loading={"actor": [1.0]}, noise=0.5
                    ),
                    ColumnConfig(name="points", kind="float", loading={"actor": [1.0], "race_id": [0.3]}),
                ],
            ),
        ],
    )


def test_occasion_paced_events_take_the_occasion_time() -> None:
    cfg = _f1_like()
    db = generate_database(cfg)
    check_links(db)
    check_times(db, cfg.start, cfg.end)
    races = db.tables["races"].to_pandas().set_index("race_id")
    results = db.tables["results"].to_pandas()
    assert len(results) > 500
    assert (results["date"].to_numpy() == races.loc[results["race_id"], "date"].to_numpy()).all()
    assert not results.duplicated(["driver_id", "race_id"]).any()
    assert set(races["date"].dt.month) <= set(range(3, 12))
    pos = results["position"].dropna()
    assert pos.between(1, 20).all()
    # Skill (the actor's latent) makes positions persistent: a driver's past and future ranks agree.
    cut = results["date"].quantile(0.5)
    past = results[results["date"] <= cut].groupby("driver_id")["position"].mean()
    future = results[results["date"] > cut].groupby("driver_id")["position"].mean()
    both = past.index.intersection(future.index)
    assert np.corrcoef(past[both], future[both])[0, 1] > 0.5
    assert any(re.search(r"MIN\(results\.position, 0, \d+, days\) <= 3", q) for q in db.report.queries)


def test_queries_name_existing_tables_and_columns() -> None:
    cfg = default_config("tiny")
    tables, _ = generate_in_memory(cfg)
    for q in cfg.queries:
        for table, col in re.findall(r"(\w+)\.(\w+|\*)", q):
            assert table in tables, q
            assert col == "*" or col in tables[table].column_names, q
