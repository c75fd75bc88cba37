"""Context, training and backtest tables: no leakage (a property), determinism, splits, balancing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from labels_graphs import BASE, RandomGraph, make_graph

from graph_engine.errors import RelfmError
from relfm_core.labels import LabelEngine, TableConfig, backtest_table, context_table, training_table
from relfm_core.pql import TimeUnit, shift

QUERIES = [
    "PREDICT COUNT(orders.*, 0, 7, days) > 0 FOR EACH users.user_id",
    "PREDICT SUM(orders.amount, 2, 20, days) FOR EACH users.user_id "
    "ASSUMING COUNT(visits[user_id].*, 0, 40, days) > 0",
    "PREDICT LIST_DISTINCT(orders.product_id, 0, 1, months) RANK TOP 5 FOR EACH users.user_id",
    "PREDICT FIRST(orders.status, 0, 36, hours) FOR EACH users.user_id WHERE COUNT(orders.*, -INF, 0, days) > 0",
    "PREDICT AVG(orders.amount, 0, 2, weeks) FOR EACH users.user_id",
    "PREDICT users.age > 40 FOR EACH users.user_id",
]


@pytest.fixture(scope="module")
def rg(tmp_path_factory: pytest.TempPathFactory) -> RandomGraph:
    # Seed 2 has users with a time column, so entity existence at t' matters too.
    g = make_graph(2, tmp_path_factory.mktemp("tables"))
    assert g.data.users_time
    return g


@pytest.fixture(scope="module")
def engines(rg: RandomGraph) -> list[LabelEngine]:
    return [LabelEngine(rg.graph, text) for text in QUERIES]


def _ns(days: int, hours: int = 0) -> int:
    t = BASE + np.timedelta64(days, "D") + np.timedelta64(hours, "h")
    return int(t.astype("datetime64[ns]").astype(np.int64))


configs = st.builds(
    TableConfig,
    max_rows=st.integers(1, 300),
    max_entities=st.one_of(st.none(), st.integers(1, 30)),
    num_anchors=st.integers(1, 8),
    stride=st.one_of(st.none(), st.integers(1, 40)),
    stride_unit=st.one_of(st.none(), st.sampled_from([TimeUnit.HOURS, TimeUnit.DAYS, TimeUnit.MONTHS])),
    seed=st.integers(0, 3),
    balance=st.booleans(),
    balance_ratio=st.floats(1.0, 5.0),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, len(QUERIES) - 1), day=st.integers(0, 200), hour=st.integers(0, 23), cfg=configs)
def test_context_tables_never_leak(
    engines: list[LabelEngine], which: int, day: int, hour: int, cfg: TableConfig
) -> None:
    engine = engines[which]
    prediction = _ns(day, hour)
    df = context_table(engine, prediction, cfg)
    assert len(df) <= cfg.max_rows
    if df.empty:
        return
    anchors = df["anchor_time"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    assert (anchors < prediction).all()
    for w in (engine.window, engine.horizon):
        if w is not None:  # every label window (target and ASSUMING) ends by the prediction anchor
            assert (shift(anchors, w.end, w.unit) <= prediction).all()
    rows = df["entity_row"].to_numpy()
    labels = engine.evaluate(rows, anchors)
    assert labels.valid.all()
    assert engine.assuming(rows, anchors).all()
    for t in np.unique(anchors):  # only entities the query asks about at t' (they exist, pass WHERE)
        assert set(rows[anchors == t].tolist()) <= set(engine.entity_rows(int(t)).tolist())


def test_context_table_is_deterministic_and_shaped(engines: list[LabelEngine]) -> None:
    cfg = TableConfig(max_rows=50, num_anchors=4, seed=7)
    a = context_table(engines[0], _ns(120), cfg)
    b = context_table(engines[0], _ns(120), cfg)
    pd.testing.assert_frame_equal(a, b)
    assert list(a.columns) == ["entity_row", "entity", "anchor_time", "label"]
    assert a["anchor_time"].dtype == np.dtype("datetime64[ns]")
    assert set(a["label"].unique()) <= {0.0, 1.0}
    keys = engines[0].graph.table("users").key_values(a["entity_row"].to_numpy())
    assert a["entity"].tolist() == keys.tolist()
    lists = context_table(engines[2], _ns(150), TableConfig(num_anchors=2))
    assert lists.attrs["target_table"] == "products"
    assert all(isinstance(x, list) and x for x in lists["label"])


def test_anchors_step_back_by_the_stride(engines: list[LabelEngine]) -> None:
    engine = engines[0]  # 7-day window
    df = context_table(engine, _ns(100), TableConfig(num_anchors=3, max_rows=10_000))
    got = sorted(set(df["anchor_time"].to_numpy().astype("datetime64[ns]").astype(np.int64).tolist()))
    assert got == [_ns(100 - 7 * k) for k in (3, 2, 1)]
    hours = context_table(engine, _ns(100), TableConfig(num_anchors=2, stride=12, stride_unit=TimeUnit.HOURS))
    got = sorted(set(hours["anchor_time"].to_numpy().astype("datetime64[ns]").astype(np.int64).tolist()))
    assert got == [_ns(100, -7 * 24 - 12), _ns(100, -7 * 24)]  # k = 14, 15 are the first without leakage


def test_balancing_bounds_the_class_ratio(engines: list[LabelEngine]) -> None:
    cfg = TableConfig(num_anchors=8, max_rows=400, balance=True, balance_ratio=1.5, seed=1)
    df = context_table(engines[0], _ns(150), cfg)
    counts = df["label"].value_counts()
    assert len(counts) == 2 and counts.max() <= 1.5 * counts.min() + 1


def test_training_table_splits_by_time_without_overlap(engines: list[LabelEngine]) -> None:
    engine = engines[1]  # SUM over (2, 20] days, ASSUMING over (0, 40] days
    tables = training_table(engine, _ns(140), TableConfig(num_anchors=8, val_anchors=2, stride=10))
    assert not tables.train.empty and not tables.val.empty
    val = tables.val["anchor_time"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    train = tables.train["anchor_time"].to_numpy().astype("datetime64[ns]").astype(np.int64)
    assert len(np.unique(val)) == 2
    assert train.max() < val.min()
    assert engine.horizon is not None
    assert (shift(train, engine.horizon.end, engine.horizon.unit) <= val.min()).all()


def test_backtest_table_labels_the_latest_complete_anchor(engines: list[LabelEngine]) -> None:
    engine = engines[4]
    df = backtest_table(engine)
    t = engine.latest_complete_anchor()
    assert (df["anchor_time"] == np.datetime64(t, "ns")).all()
    rows = engine.entity_rows(t)
    lab = engine.evaluate(rows, np.full(len(rows), t))
    assert df["entity_row"].tolist() == sorted(rows[lab.valid].tolist())


def test_static_targets_and_bad_configs(engines: list[LabelEngine], tmp_path: Path) -> None:
    df = context_table(engines[5], _ns(100), TableConfig(num_anchors=2))
    assert set(df["label"].unique()) <= {0.0, 1.0}
    with pytest.raises(RelfmError, match="max_rows"):
        TableConfig.make(max_rows=0)
