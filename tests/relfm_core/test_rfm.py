"""The SDK on the tiny shop: `RFM(graph).predict` for everyone at the latest time and for explicit
(entity, anchor) rows, for binary, regression, multiclass and link (RANK TOP k) queries; a user-supplied
context; warnings on a degenerate context; `evaluate`; and no leakage: an entity's prediction does not
move when its own future (its label) changes, and does move when the context's labels do."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from relfm_core.labels import LabelEngine, TableConfig, context_table
from relfm_core.model import RelationalFM
from relfm_core.rfm import RFM, DegenerateContextWarning, _anchor_groups

pytestmark = pytest.mark.unit

BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
ORDERS = "PREDICT COUNT(orders.*, 0, 90, days) FOR EACH users.user_id"
STATUS = "PREDICT FIRST(orders.status, 0, 30, days) FOR EACH users.user_id"
ITEMS = "PREDICT LIST_DISTINCT(orders.item_id, 0, 30, days) RANK TOP 3 FOR EACH users.user_id"
DAY = np.timedelta64(1, "D")


@pytest.fixture(scope="module")
def base(core_env: Path, shop: Graph) -> RFM:
    """The shipped weights."""
    return RFM(shop)


@pytest.fixture(scope="module")
def tiny(core_env: Path, shop: Graph, tiny_model: RelationalFM) -> RFM:
    return RFM(shop, model=tiny_model)


def _ts(ns: int) -> pd.Timestamp:
    return pd.Timestamp(np.datetime64(ns, "ns"))


def _context(rfm: RFM, query: str, anchor: int, rows: int = 64) -> pd.DataFrame:
    """A labelled table as a user would bring it: entity key, anchor time, label."""
    engine = rfm.engine(query)
    df = context_table(engine, anchor, TableConfig(max_rows=rows, num_anchors=8, seed=0))
    keys = rfm.graph.table("users").key_values(df["entity_row"].to_numpy())
    return pd.DataFrame({"user_id": keys, "anchor_time": df["anchor_time"], "label": df["label"]})


def _one_line(e: pytest.ExceptionInfo[RelfmError]) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


def test_shipped_model_predicts_everyone_at_the_latest_time(base: RFM, shop: Graph) -> None:
    pred = base.predict(BUY, context_size=96)
    now = shop.max_time()
    expected = LabelEngine(shop, BUY).entity_rows(now)
    f = pred.frame
    assert pred.task_type == "binary" and pred.query == BUY
    assert list(f.columns) == ["user_id", "anchor_time", "prediction"]
    assert len(f) == len(expected) and f["user_id"].is_unique
    assert set(f["user_id"]) == set(shop.table("users").key_values(expected).tolist())
    assert (f["anchor_time"] == _ts(now)).all()
    assert f["prediction"].between(0, 1).all()
    assert 0 < pred.context_rows <= 96


def test_explicit_rows_are_answered_in_their_order(tiny: RFM, anchor: int) -> None:
    keys = [5, 1, 9, 1, 30]
    times = [_ts(anchor)] * 3 + [_ts(anchor) - 60 * DAY] * 2
    at = pd.DataFrame({"user_id": keys, "when": times, "note": list("abcde")})
    f = tiny.predict(BUY, at=at, time_col="when", icl_probe=False).frame
    assert f["user_id"].tolist() == keys and f["note"].tolist() == list("abcde")
    assert f["prediction"].notna().all()
    # each row is predicted on its own: asking for it alone gives the same answer
    for i in (0, 3):
        alone = (
            tiny.predict(BUY, at=at.iloc[[i]], time_col="when", icl_probe=False).frame["prediction"].iloc[0]
        )
        assert alone == pytest.approx(f["prediction"].iloc[i], abs=1e-6)
    # user 1 at two anchors: two contexts, two different answers
    assert f["prediction"].iloc[1] != f["prediction"].iloc[3]


def test_regression_predictions_are_in_label_space(base: RFM, anchor: int) -> None:
    at = pd.DataFrame({"user_id": range(20), "anchor_time": _ts(anchor)})
    pred = base.predict(ORDERS, at=at, context_size=96)
    assert pred.task_type == "regression"
    v = pred.frame["prediction"].to_numpy()
    assert np.isfinite(v).all() and v.std() > 0
    assert v.min() > -1 and v.max() < 100  # counts of orders in 90 days, not z-scores


def test_multiclass_predictions_are_classes_with_probabilities(tiny: RFM) -> None:
    pred = tiny.predict(STATUS, icl_probe=False)
    f = pred.frame
    probs = f[[c for c in f.columns if c.startswith("prob_")]]
    classes = [c.removeprefix("prob_") for c in probs.columns]
    assert pred.task_type == "multiclass" and len(classes) >= 2
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert set(f["prediction"]) <= set(classes)
    assert (probs.to_numpy().argmax(1) == [classes.index(p) for p in f["prediction"]]).all()


def test_link_queries_rank_the_top_k_destinations(tiny: RFM, shop: Graph, anchor: int) -> None:
    at = pd.DataFrame({"user_id": range(15), "anchor_time": _ts(anchor)})
    pred = tiny.predict(ITEMS, at=at)
    f = pred.frame
    assert pred.task_type == "link_prediction"
    items = set(shop.table("items").key_values(np.arange(shop.table("items").num_rows)).tolist())
    assert any(len(p) for p in f["prediction"])
    for keys, scores in zip(f["prediction"], f["scores"], strict=True):
        assert len(keys) == len(scores) <= 3
        assert len(set(keys)) == len(keys) and set(keys) <= items
        assert scores == sorted(scores, reverse=True)
    everyone = tiny.predict(ITEMS).frame
    assert len(everyone) == len(LabelEngine(shop, ITEMS).entity_rows())


def test_a_user_supplied_context_is_used_and_its_labels_matter(tiny: RFM, anchor: int) -> None:
    ctx = _context(tiny, BUY, anchor)
    assert ctx["label"].nunique() == 2
    at = pd.DataFrame({"user_id": range(10), "anchor_time": _ts(anchor)})
    pred = tiny.predict(BUY, at=at, context=ctx, icl_probe=False)
    assert pred.context_rows == len(ctx)
    flipped = tiny.predict(BUY, at=at, context=ctx.assign(label=1 - ctx["label"]), icl_probe=False)
    diff = np.abs(pred.frame["prediction"].to_numpy() - flipped.frame["prediction"].to_numpy())
    assert diff.max() > 1e-6
    # examples whose label window is still open at the anchor are never used (they know the future)
    late = ctx.head(30).assign(anchor_time=_ts(anchor) - 10 * DAY, label=1)
    with_late = tiny.predict(BUY, at=at, context=pd.concat([ctx, late], ignore_index=True), icl_probe=False)
    assert with_late.context_rows == len(ctx)
    np.testing.assert_allclose(with_late.frame["prediction"], pred.frame["prediction"], atol=1e-6)


def test_a_degenerate_context_warns(tiny: RFM, anchor: int) -> None:
    ctx = _context(tiny, BUY, anchor)
    at = pd.DataFrame({"user_id": [1, 2], "anchor_time": _ts(anchor)})
    with pytest.warns(DegenerateContextWarning, match="all one class"):
        tiny.predict(BUY, at=at, context=ctx.assign(label=1), icl_probe=False)
    with pytest.warns(DegenerateContextWarning, match="only 5 labelled context rows"):
        tiny.predict(BUY, at=at, context=ctx.head(5), icl_probe=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateContextWarning)
        tiny.predict(BUY, at=at, context=ctx, icl_probe=False)  # a healthy context: silent


def test_prediction_ignores_the_entity_s_own_future(
    core_env: Path, tiny: RFM, tiny_model: RelationalFM, swapped: Any, anchor: int
) -> None:
    """User a's future orders were given to user b: both labels flip, no prediction at the anchor moves."""
    other = RFM(swapped.graph, model=tiny_model)
    ra, rb = tiny.graph.table("users").lookup(np.array([swapped.a, swapped.b]))
    both = np.array([ra, rb])
    before = tiny.engine(BUY).evaluate(both, np.full(2, anchor)).value.tolist()
    after = other.engine(BUY).evaluate(both, np.full(2, anchor)).value.tolist()
    assert before == [1, 0] and after == [0, 1]
    for query in (BUY, ORDERS):
        # the default path, in-context probe included (it is fitted on the context alone)
        p1 = tiny.predict(query, anchor_time=_ts(anchor), context_size=96).frame
        p2 = other.predict(query, anchor_time=_ts(anchor), context_size=96).frame
        assert p1["user_id"].tolist() == p2["user_id"].tolist()
        np.testing.assert_array_equal(p1["prediction"].to_numpy(), p2["prediction"].to_numpy())


def test_evaluate_backtests_with_metrics(base: RFM) -> None:
    m = base.evaluate(BUY, icl_probe=False)
    assert {"auroc", "average_precision", "accuracy", "count"} <= set(m)
    assert m["count"] > 20 and 0 <= m["auroc"] <= 1
    r = base.evaluate(ORDERS, context_size=96, icl_probe=False)
    assert {"mae", "rmse", "count"} <= set(r) and np.isfinite(r["mae"])
    links = base.evaluate(ITEMS)
    assert links["count"] > 0 and any(k.endswith("@3") for k in links)  # ranked at the query's k


def test_bad_requests_are_one_line_errors(tiny: RFM, anchor: int) -> None:
    with pytest.raises(RelfmError) as e:
        tiny.predict(BUY, at=pd.DataFrame({"user_id": [1, 123456], "anchor_time": _ts(anchor)}))
    assert "users.user_id" in _one_line(e) and "123456" in str(e.value)
    with pytest.raises(RelfmError) as e:
        tiny.predict(BUY, at=pd.DataFrame({"user_id": [1]}))
    assert "anchor_time" in _one_line(e)
    with pytest.raises(RelfmError) as e:
        tiny.predict(BUY, context=pd.DataFrame({"user_id": [1], "anchor_time": [_ts(anchor)]}))
    assert "label" in _one_line(e)
    with pytest.raises(RelfmError):
        RFM(42)  # type: ignore[arg-type]


def test_data_frames_are_a_graph_too(
    core_env: Path, tmp_path: Path, shop_dir: Path, tiny_model: RelationalFM
) -> None:
    frames = {
        "users": pd.read_parquet(shop_dir / "users.parquet", columns=["user_id", "signup_time", "age"]),
        "orders": pd.read_parquet(shop_dir / "orders.parquet", columns=["order_id", "user_id", "order_time"]),
    }
    rfm = RFM(frames, model=tiny_model, cache_dir=tmp_path)
    f = rfm.predict(BUY, icl_probe=False).frame
    assert len(f) > 0 and f["prediction"].between(0, 1).all()


def test_data_frames_with_list_columns(
    core_env: Path, tmp_path: Path, shop_dir: Path, tiny_model: RelationalFM
) -> None:
    frames = {
        "users": pd.read_parquet(shop_dir / "users.parquet", columns=["user_id", "signup_time", "interests"]),
        "orders": pd.read_parquet(shop_dir / "orders.parquet", columns=["order_id", "user_id", "order_time"]),
    }
    RFM(frames, model=tiny_model, cache_dir=tmp_path)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=80), st.integers(1, 6))
def test_anchor_groups_never_give_a_group_a_later_context(anchors: list[int], max_groups: int) -> None:
    a = np.array(anchors, dtype=np.int64) * 86_400 * 10**9
    groups = _anchor_groups(a, max_groups)
    assert len(groups) <= max(max_groups, 1)
    seen = np.concatenate([idx for _, idx in groups])
    assert sorted(seen.tolist()) == list(range(len(a)))
    for g_anchor, idx in groups:
        assert g_anchor <= a[idx].min()  # the group's context is built at or before every member's anchor
