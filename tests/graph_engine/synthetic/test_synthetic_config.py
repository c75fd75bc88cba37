from __future__ import annotations

import pytest

from graph_engine.errors import RelfmError
from graph_engine.synthetic import (
    SCALES,
    SyntheticConfig,
    SyntheticConfigError,
    count_events,
    default_config,
    load_config,
    planted_config,
)

pytestmark = pytest.mark.unit


def _raw() -> dict:
    return default_config("tiny").model_dump(mode="json")


def test_default_config_scales_by_event_rows() -> None:
    for scale in ("tiny", "small", 50_000):
        cfg = default_config(scale)
        target = SCALES[scale] if isinstance(scale, str) else scale
        got = sum(count_events(cfg).values())
        assert 0.7 * target <= got <= 1.3 * target, (scale, got)
    assert [t.name for t in default_config().tables] == ["users", "items", "orders", "reviews"]


@pytest.mark.parametrize("scale", ["huge", 0, -5, 2.5])
def test_bad_scale_is_one_line_error(scale: object) -> None:
    with pytest.raises(SyntheticConfigError) as e:
        default_config(scale)  # type: ignore[arg-type]
    assert "\n" not in str(e.value) and "scale" in str(e.value)


def test_config_round_trips_through_json() -> None:
    cfg = default_config("tiny", seed=7)
    assert load_config(cfg.model_dump_json()) == cfg
    assert load_config(cfg.model_dump(mode="json")) == cfg


def _broken(mutate) -> str:  # type: ignore[no-untyped-def]
    raw = _raw()
    mutate(raw)
    with pytest.raises(SyntheticConfigError) as e:
        load_config(raw)
    assert isinstance(e.value, RelfmError)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_errors_name_the_table_and_column() -> None:
    def unknown_parent(raw: dict) -> None:
        raw["tables"][2]["choices"][0]["parent"] = "itemz"

    assert "orders" in _broken(unknown_parent) and "itemz" in _broken(unknown_parent)

    def bad_source(raw: dict) -> None:
        raw["tables"][2]["columns"][0]["loading"] = {"nope": [1.0]}

    msg = _broken(bad_source)
    assert "orders" in msg and "amount" in msg and "nope" in msg

    def duplicate_column(raw: dict) -> None:
        raw["tables"][0]["columns"][0]["name"] = "signup_time"

    assert "signup_time" in _broken(duplicate_column)

    def end_before_start(raw: dict) -> None:
        raw["end"] = "2000-01-01T00:00:00"

    assert "end" in _broken(end_before_start)

    def bad_inherit(raw: dict) -> None:
        raw["tables"][3]["child"]["inherit"] = ["user_id", "shop_id"]

    assert "shop_id" in _broken(bad_inherit)

    def too_many_weights(raw: dict) -> None:
        raw["tables"][2]["process"]["rate_loading"] = [1.0] * 9

    assert "rate_loading" in _broken(too_many_weights)


def test_child_event_cycle_is_rejected() -> None:
    def cycle(raw: dict) -> None:
        raw["tables"][2] = {**raw["tables"][2], "actor": None, "actor_column": None}
        raw["tables"][2]["child"] = {"parent_event": "reviews", "inherit": []}

    assert "cycle" in _broken(cycle)


def test_planted_config_documents_its_signal() -> None:
    cfg = planted_config(seed=3)
    p = cfg.planted
    assert p is not None
    assert p.table == "items" and p.path == ["users", "orders", "items"]
    items = cfg.table("items")
    planted = next(c for c in items.columns if c.name == p.column)
    assert planted.loading == {"self": [1.0]} and planted.noise == 0.0
    for name in p.noise_columns:
        noise = next(c for c in items.columns if c.name == name)
        assert noise.loading == {} and noise.kind == planted.kind
    assert p.query in cfg.queries and "orders" in p.query and "users.user_id" in p.query
    # The seed picks which attribute is planted, so explanations cannot rely on its position.
    assert len({planted_config(seed=s).planted.column for s in range(8)}) > 1  # type: ignore[union-attr]


def test_configs_are_pydantic_models() -> None:
    cfg = default_config("tiny")
    assert isinstance(cfg, SyntheticConfig)
    assert cfg.queries, "default config lists PQL templates"
