"""Model inputs for (entity, anchor) pairs: target normalisation, lag and history features, and the time
rule: nothing after the anchor reaches the inputs (moving a user's future orders to another user leaves
every input at the anchor bit-for-bit unchanged, while their labels change)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graph_engine.sampler import NO_TIME
from graph_engine.shards.reader import Graph
from relfm_core.features import GraphFeatures
from relfm_core.inputs import (
    HISTORY_FEATS,
    HISTORY_WIDTH,
    LAG_FEATS,
    InputBuilder,
    TargetNorm,
    history_features,
    lag_features,
    slice_tensors,
)
from relfm_core.labels import LabelEngine
from relfm_core.text_encoder import TextEncoder

pytestmark = pytest.mark.unit

BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
SPEND = "PREDICT SUM(orders.amount, 0, 30, days) FOR EACH users.user_id"
DAY = 86_400 * 10**9


# ---------------------------------------------------------------------------------------- TargetNorm
def test_classification_labels_pass_through() -> None:
    y = np.array([0.0, 1.0, 1.0])
    norm = TargetNorm.fit("binary", y)
    assert np.array_equal(norm.forward(y), y)
    mc = TargetNorm.fit("multiclass", np.array([0, 2, 1]), ["a", "b", "c"])
    assert mc.classes == ("a", "b", "c")
    assert np.array_equal(mc.forward(np.array([2, 0])), [2.0, 0.0])


def test_skewed_counts_are_logged_and_round_trip() -> None:
    y = np.array([0.0] * 40 + [1.0] * 30 + [2.0] * 20 + [3.0] * 8 + [500.0, 2000.0])
    norm = TargetNorm.fit("regression", y)
    assert norm.log
    z = norm.forward(y)
    assert np.isfinite(z).all() and np.abs(z).max() < 20
    np.testing.assert_allclose(norm.inverse(z), y, rtol=1e-9, atol=1e-9)


def test_symmetric_targets_get_a_robust_z_score() -> None:
    y = np.random.default_rng(0).normal(50.0, 10.0, 2000)
    norm = TargetNorm.fit("regression", y)
    assert not norm.log
    assert norm.center == pytest.approx(50.0, abs=1.0)
    assert norm.scale == pytest.approx(10.0, rel=0.1)


@pytest.mark.parametrize(
    "y", [np.full(10, 3.0), np.array([]), np.array([np.nan, np.inf]), np.array([0.0, 0.0, 7.0])]
)
def test_degenerate_targets_never_divide_by_zero(y: np.ndarray) -> None:
    norm = TargetNorm.fit("regression", y)
    assert norm.scale > 0 and np.isfinite(norm.center)
    assert np.isfinite(norm.forward(np.array([0.0, 3.0, 100.0]))).all()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=60))
def test_regression_norm_round_trips(values: list[float]) -> None:
    y = np.array(values)
    norm = TargetNorm.fit("regression", y)
    np.testing.assert_allclose(
        norm.inverse(norm.forward(y)), y, rtol=1e-6, atol=1e-6 * max(1, np.abs(y).max())
    )


def test_history_statistics_handle_empty_and_constant_columns() -> None:
    values = np.array([[1.0, 5.0, 0.0], [2.0, 5.0, 0.0], [3.0, 5.0, 0.0], [100.0, 5.0, 0.0]])
    valid = np.array([[True, True, False]] * 4)
    norm = TargetNorm("binary").with_history(values, valid)
    assert norm.hist_center[2] == 0.0 and norm.hist_scale[2] == 1.0  # never seen
    assert norm.hist_center[1] == 5.0 and norm.hist_scale[1] == 5.0  # constant: scale = |median|
    assert all(s > 0 for s in norm.hist_scale)
    feats = history_features(values, valid, norm)
    assert feats.shape == (4, 6)
    assert np.isfinite(feats).all() and np.abs(feats[:, :3]).max() <= 8
    assert (feats[:, 5] == 0).all() and (feats[:, 2] == 0).all()  # absent: no value, flag 0


def test_lag_features_flag_missing_lags_and_clip_values() -> None:
    values = np.array([[1.0, 0.0, 1e9], [0.0, 0.0, -1e9]])
    valid = np.array([[True, False, True], [True, True, True]])
    activity = np.array([[3, 0, 1], [0, 0, 100]])
    norm = TargetNorm.fit("regression", np.array([0.0, 1.0, 2.0, 3.0]))
    f = lag_features(values, valid, activity, norm).reshape(2, 3, LAG_FEATS)
    assert f[0, 1, 0] == 0.0 and f[0, 1, 1] == 0.0  # a missing lag is flagged and carries no value
    assert f[0, 2, 0] == 10.0 and f[1, 2, 0] == -10.0  # clipped
    assert f[0, 0, 3] == 1.0 and f[1, 0, 3] == 0.0  # active in that window or not
    assert f[1, 2, 2] == pytest.approx(np.log1p(100) / 3)
    b = lag_features(values, valid, activity, TargetNorm("binary")).reshape(2, 3, LAG_FEATS)
    assert b[0, 0, 0] == 1.0  # binary labels are given as they are


# ---------------------------------------------------------------------------------------- InputBuilder
def test_build_returns_model_shaped_inputs_and_fits_history_once(
    shop: Graph, builder: InputBuilder, anchor: int
) -> None:
    engine = LabelEngine(shop, SPEND)
    rows = engine.entity_rows(anchor)[:12]
    anchors = np.full(len(rows), anchor, dtype=np.int64)
    t, lags, norm = builder.build(engine, rows, anchors, TargetNorm.fit("regression", np.arange(10.0)))
    assert lags.shape == (12, builder.lags * LAG_FEATS + HISTORY_FEATS)
    assert lags.dtype == torch.float32 and torch.isfinite(lags).all()
    assert t["node_mask"].shape[0] == 12 and t["node_mask"].shape[1] <= builder.max_nodes
    assert len(norm.hist_center) == len(norm.hist_scale) == HISTORY_WIDTH
    # the returned norm is passed on to the predicted entities: its history statistics are kept
    _, _, again = builder.build(engine, rows[:3], anchors[:3], norm)
    assert again == norm


def test_sampled_rows_are_never_after_their_anchor(shop: Graph, builder: InputBuilder) -> None:
    rng = np.random.default_rng(0)
    lo, hi = shop.min_time(), shop.max_time()
    rows = rng.integers(0, shop.table("users").num_rows, 200)
    anchors = rng.integers(lo, hi, 200)
    sub = builder.sampler.sample("users", rows, anchors)
    # hop 0 is the seed itself (the caller's choice: here also users who sign up after their anchor)
    timed = (sub.rel_time != NO_TIME) & (sub.hop > 0)
    assert timed.any() and (sub.rel_time[timed] >= 0).all()
    # the same check on absolute times, table by table
    seed = sub.seed_of_node()
    for ti, name in enumerate(sub.table_names):
        times = shop.table(name).time
        sel = (sub.table == ti) & (sub.hop > 0)
        if times is None or not sel.any():
            continue
        assert (np.asarray(times)[sub.row[sel]] <= sub.anchor[seed[sel]]).all(), name


def _inputs(
    graph: Graph, text: TextEncoder, anchor: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor, LabelEngine]:
    engine = LabelEngine(graph, BUY)
    rows = engine.entity_rows(anchor)
    b = InputBuilder(graph, GraphFeatures(graph, text), lags=8, max_nodes=16)
    t, lags, _ = b.build(engine, rows, np.full(len(rows), anchor, dtype=np.int64), TargetNorm("binary"))
    return t, lags, engine


def test_future_rows_do_not_reach_the_inputs(
    shop: Graph, swapped: Any, text: TextEncoder, anchor: int
) -> None:
    g2 = swapped.graph
    a, b = swapped.a, swapped.b
    t1, l1, e1 = _inputs(shop, text, anchor)
    t2, l2, e2 = _inputs(g2, text, anchor)
    users = shop.table("users")
    ra, rb = users.lookup(np.array([a, b]))
    labels = [e.evaluate(np.array([ra, rb]), np.full(2, anchor)).value.tolist() for e in (e1, e2)]
    assert labels == [[1, 0], [0, 1]]  # the labels did change
    assert t1.keys() == t2.keys()
    for k in t1:
        assert torch.equal(t1[k], t2[k]), k
    assert torch.equal(l1, l2)
    # not vacuous: once those orders are in the past, user a's inputs do differ
    later = anchor + 60 * DAY
    p1, q1, _ = _inputs(shop, text, later)
    p2, q2, _ = _inputs(g2, text, later)
    rows = LabelEngine(shop, BUY).entity_rows(later)
    i = int(np.flatnonzero(rows == ra)[0])
    assert not torch.equal(q1[i], q2[i]) or not torch.equal(p1["node_mask"][i], p2["node_mask"][i])


def test_slice_keeps_the_shared_embedding_tables(shop: Graph, builder: InputBuilder, anchor: int) -> None:
    engine = LabelEngine(shop, BUY)
    rows = engine.entity_rows(anchor)[:6]
    t, _, _ = builder.build(engine, rows, np.full(6, anchor, dtype=np.int64), TargetNorm("binary"))
    s = slice_tensors(t, np.array([4, 1]))
    assert s["name_emb"] is t["name_emb"] and s["value_emb"] is t["value_emb"]
    assert torch.equal(s["cell_num"][0], t["cell_num"][4])
    assert s["node_mask"].shape[0] == 2


def test_link_batch_marks_true_destinations_among_candidates(
    shop: Graph, builder: InputBuilder, anchor: int
) -> None:
    engine = LabelEngine(
        shop, "PREDICT LIST_DISTINCT(orders.item_id, 0, 30, days) RANK TOP 5 FOR EACH users.user_id"
    )
    rows = engine.entity_rows(anchor)
    anchors = np.full(len(rows), anchor, dtype=np.int64)
    labels = engine.evaluate(rows, anchors)
    cand, index, _pair, mask, target, cand_rows = builder.link_batch(engine, rows, anchors, labels)
    assert target is not None
    assert not (target & ~mask).any()  # only real candidates can be true
    assert target.any()
    assert int(index.max()) < cand["node_mask"].shape[0]
    assert cand["node_mask"].shape[1] == 1  # one-node subgraphs
    lists = labels.lists()
    for i in range(len(rows)):
        hit = set(cand_rows[i][target[i].numpy()].tolist())
        assert hit <= set(lists[i])
