"""The graph spec: YAML round trips, source paths, variables, explicit choices and spec-level errors."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from graph_engine.errors import SpecError
from graph_engine.infer import complete_spec
from graph_engine.spec import GraphSpec, SemanticType, TableSpec, expand_vars

pytestmark = pytest.mark.unit


def _write_data(root: Path) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    pq.write_table(
        pa.table(
            {
                "user_id": [1, 2, 3],
                "created_at": pa.array([1, 2, 3], pa.timestamp("s")),
                "name": ["a", "b", "c"],
            }
        ),
        data / "users.parquet",
    )
    pq.write_table(
        pa.table(
            {
                "order_id": [10, 11, 12, 13],
                "user_id": [1, 2, 2, 3],
                "ts": pa.array([5, 6, 7, 8], pa.timestamp("s")),
            }
        ),
        data / "orders.parquet",
    )
    return data


SPEC_YAML = """\
name: shop
tables:
  users:
    source: ../data/users.parquet
    primary_key: user_id
    time_column: null
  orders:
    source: ../data/orders.parquet
    primary_key: order_id
    time_column: ts
    foreign_keys:
      user_id: users
    semantic_types:
      order_id: id
"""


def test_yaml_round_trip_resolves_and_rerelativises_sources(tmp_path: Path) -> None:
    data = _write_data(tmp_path)
    (tmp_path / "specs").mkdir()
    spec_file = tmp_path / "specs" / "shop.yaml"
    spec_file.write_text(SPEC_YAML)

    spec = GraphSpec.from_yaml(spec_file)
    assert spec.name == "shop"
    assert spec.resolve_source("users") == str(data / "users.parquet")
    assert spec.tables["orders"].foreign_keys == {"user_id": "users"}
    assert spec.tables["orders"].semantic_types == {"order_id": SemanticType.id}

    # Saved somewhere else, relative sources are rewritten so they still point at the same files.
    target = tmp_path / "elsewhere" / "deeper" / "shop.yaml"
    target.parent.mkdir(parents=True)
    spec.save(target)
    saved = yaml.safe_load(target.read_text())
    assert saved["tables"]["users"]["source"] == "../../data/users.parquet"
    assert saved["tables"]["orders"]["source"] == "../../data/orders.parquet"

    again = GraphSpec.from_yaml(target)
    assert again.resolve_source("users") == str(data / "users.parquet")
    assert again.tables["users"].given("time_column") and again.tables["users"].time_column is None
    strip = {"source"}
    for name in spec.tables:
        a = {k: v for k, v in spec.to_dict()["tables"][name].items() if k not in strip}
        b = {k: v for k, v in again.to_dict()["tables"][name].items() if k not in strip}
        assert a == b


def test_save_next_to_the_data_writes_plain_relative_paths(tmp_path: Path) -> None:
    _write_data(tmp_path)
    spec = GraphSpec.from_dict(
        {"tables": {"users": {"source": str(tmp_path / "data" / "users.parquet")}}}, base_dir=tmp_path
    )
    spec.save(tmp_path / "spec.yaml")
    assert yaml.safe_load((tmp_path / "spec.yaml").read_text())["tables"]["users"]["source"] == (
        "data/users.parquet"
    )


def test_save_keeps_prefixes_pins_and_remote_sources(tmp_path: Path) -> None:
    spec = GraphSpec.from_dict(
        {
            "tables": {
                "a": {"source": "delta:wh/a@3"},
                "b": {"source": "sqlite:db/shop.sqlite#orders"},
                "c": {"source": "delta:s3://bucket/c"},
                "d": {"source": "catalog:main.sales.d"},
            }
        },
        base_dir=tmp_path / "specs",
    )
    assert spec.resolve_source("a") == f"delta:{tmp_path}/specs/wh/a@3"
    out = tmp_path / "other"
    out.mkdir()
    spec.save(out / "spec.yaml")
    tables = yaml.safe_load((out / "spec.yaml").read_text())["tables"]
    assert tables["a"]["source"] == "delta:../specs/wh/a@3"
    assert tables["b"]["source"] == "sqlite:../specs/db/shop.sqlite#orders"
    assert tables["c"]["source"] == "delta:s3://bucket/c"
    assert tables["d"]["source"] == "catalog:main.sales.d"


def test_dotdot_in_sources_is_normalised(tmp_path: Path) -> None:
    spec = GraphSpec.from_dict({"tables": {"a": {"source": "specs/../data/a.parquet"}}}, base_dir=tmp_path)
    assert spec.resolve_source("a") == str(tmp_path / "data" / "a.parquet")


def test_partial_spec_round_trip_leaves_omitted_fields_to_inference(tmp_path: Path) -> None:
    spec = GraphSpec.from_dict({"tables": {"a": {"source": "a.parquet", "time_column": None}}}, tmp_path)
    spec.save(tmp_path / "spec.yaml")
    again = GraphSpec.from_yaml(tmp_path / "spec.yaml")
    t = again.tables["a"]
    assert t.given("time_column") and t.time_column is None
    assert not t.given("primary_key")
    assert not t.given("foreign_keys")
    assert not t.given("semantic_types")


def test_variables_expand_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELFM_TEST_WH", raising=False)
    assert expand_vars("${RELFM_TEST_WH:-/srv/wh}/orders") == "/srv/wh/orders"
    monkeypatch.setenv("RELFM_TEST_WH", str(tmp_path / "wh"))
    assert expand_vars("${RELFM_TEST_WH:-/srv/wh}/orders") == f"{tmp_path}/wh/orders"
    assert expand_vars("${RELFM_TEST_WH}/orders") == f"{tmp_path}/wh/orders"

    spec = GraphSpec.from_dict({"tables": {"o": {"source": "${RELFM_TEST_WH}/orders"}}}, base_dir=tmp_path)
    assert spec.resolve_source("o") == f"{tmp_path}/wh/orders"
    # The variable is the point of writing a source that way: saving keeps it.
    (tmp_path / "x").mkdir()
    spec.save(tmp_path / "x" / "spec.yaml")
    saved = yaml.safe_load((tmp_path / "x" / "spec.yaml").read_text())
    assert saved["tables"]["o"]["source"] == "${RELFM_TEST_WH}/orders"


def test_relfm_home_defaults_to_dot_relfm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELFM_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert expand_vars("${RELFM_HOME}/graphs") == f"{tmp_path.resolve()}/.relfm/graphs"


def test_unset_variable_without_default_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RELFM_TEST_UNSET", raising=False)
    with pytest.raises(SpecError) as e:
        expand_vars("${RELFM_TEST_UNSET}/orders")
    assert (
        str(e.value)
        == "environment variable 'RELFM_TEST_UNSET' is not set (used in '${RELFM_TEST_UNSET}/orders')"
    )


def test_explicit_null_time_column_survives_inference(tmp_path: Path) -> None:
    _write_data(tmp_path)
    given = GraphSpec.from_dict(
        {"tables": {"users": {"source": "data/users.parquet", "time_column": None}}}, base_dir=tmp_path
    )
    inferred = GraphSpec.from_dict({"tables": {"users": {"source": "data/users.parquet"}}}, base_dir=tmp_path)
    assert complete_spec(given).tables["users"].time_column is None
    assert complete_spec(inferred).tables["users"].time_column == "created_at"


def test_explicit_choices_are_never_overridden(tmp_path: Path) -> None:
    _write_data(tmp_path)
    spec = GraphSpec.from_dict(
        {
            "tables": {
                "users": {"source": "data/users.parquet", "semantic_types": {"name": "text"}},
                "orders": {"source": "data/orders.parquet", "foreign_keys": {}},
            }
        },
        base_dir=tmp_path,
    )
    full = complete_spec(spec)
    assert full.tables["orders"].foreign_keys == {}  # given as "no links"
    assert full.tables["users"].semantic_types["name"] == SemanticType.text
    assert full.tables["users"].primary_key == "user_id"
    # A completed spec is explicit about everything, so loading it back infers nothing.
    assert all(full.tables[t].given(f) for t in full.tables for f in ("primary_key", "time_column"))


def test_python_api_builds_the_same_spec_as_yaml(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "shop.yaml").write_text(SPEC_YAML)
    from_yaml = GraphSpec.from_yaml(tmp_path / "specs" / "shop.yaml")
    from_python = GraphSpec(
        name="shop",
        tables={
            "users": TableSpec(source="../data/users.parquet", primary_key="user_id", time_column=None),
            "orders": TableSpec(
                source="../data/orders.parquet",
                primary_key="order_id",
                time_column="ts",
                foreign_keys={"user_id": "users"},
                semantic_types={"order_id": SemanticType.id},
            ),
        },
    ).with_base_dir(tmp_path / "specs")
    assert from_python.to_dict() == from_yaml.to_dict()
    assert from_python.resolve_source("users") == from_yaml.resolve_source("users")
    assert from_yaml.edges() == [("orders", "user_id", "users")]


# ---------------------------------------------------------------------------------------------- errors
def _spec_error(tmp_path: Path, text: str) -> str:
    p = tmp_path / "spec.yaml"
    p.write_text(text)
    with pytest.raises(SpecError) as e:
        GraphSpec.from_yaml(p)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_foreign_key_to_unknown_table_suggests_the_closest(tmp_path: Path) -> None:
    msg = _spec_error(
        tmp_path,
        "tables:\n  users: {source: u.parquet}\n  orders: {source: o.parquet, foreign_keys: {user_id: userz}}\n",
    )
    assert (
        msg == "table 'orders' foreign key 'user_id' points to unknown table 'userz' — did you mean 'users'?"
    )


def test_foreign_key_to_unknown_table_without_close_match(tmp_path: Path) -> None:
    msg = _spec_error(tmp_path, "tables:\n  orders: {source: o.parquet, foreign_keys: {user_id: people}}\n")
    assert msg == "table 'orders' foreign key 'user_id' points to unknown table 'people'"


def test_bad_yaml_names_the_position(tmp_path: Path) -> None:
    msg = _spec_error(tmp_path, "tables:\n  a: {source: x\n  b: 1\n")
    assert msg == f"graph spec {tmp_path / 'spec.yaml'}: invalid YAML at 3:4"


def test_unknown_keys_are_rejected(tmp_path: Path) -> None:
    msg = _spec_error(tmp_path, "tables:\n  users: {source: u.parquet, primary: user_id}\n")
    assert msg == "graph spec: tables.users.primary: Extra inputs are not permitted"
    msg = _spec_error(tmp_path, "tables:\n  users: {source: u.parquet}\nadd_missing_parent: true\n")
    assert msg == "graph spec: add_missing_parent: Extra inputs are not permitted"


def test_structural_errors(tmp_path: Path) -> None:
    assert _spec_error(tmp_path, "tabls: {}\n") == "graph spec: tables: Field required"
    assert (
        _spec_error(tmp_path, "- a\n")
        == f"graph spec {tmp_path / 'spec.yaml'}: expected a mapping with 'tables'"
    )
    assert (
        _spec_error(tmp_path, "tables: {}\n")
        == "graph spec: tables: Value error, a graph needs at least one table"
    )
    assert (
        _spec_error(tmp_path, "tables:\n  a: {source: a.parquet, primary_key: t, time_column: t}\n")
        == "table 'a': time column 't' is also its primary key"
    )
    assert (
        _spec_error(tmp_path, "tables:\n  a: {source: a.parquet, end_time_column: t}\n")
        == "table 'a': end_time_column needs a time_column"
    )
    assert (
        _spec_error(
            tmp_path,
            "tables:\n  a: {source: a.parquet, primary_key: null}\n"
            "  b: {source: b.parquet, foreign_keys: {a_id: a}}\n",
        )
        == "table 'b' foreign key 'a_id' points to 'a', which has no primary key"
    )
    assert _spec_error(
        tmp_path, "tables:\n  a: {source: a.parquet, semantic_types: {x: fancy}}\n"
    ).startswith("graph spec: tables.a.semantic_types.x: Input should be 'numerical', 'categorical'")


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as e:
        GraphSpec.from_yaml(tmp_path / "nope.yaml")
    assert str(e.value) == f"graph spec {tmp_path / 'nope.yaml'}: file not found"


def test_unknown_table_lookup_suggests(tmp_path: Path) -> None:
    spec = GraphSpec.from_dict({"tables": {"orders": {"source": "o.parquet"}}}, base_dir=tmp_path)
    with pytest.raises(SpecError) as e:
        spec.table("order")
    assert str(e.value) == "unknown table 'order' — did you mean 'orders'?"
