"""Pretraining tasks and episodes on the tiny shop: every generated query is valid PQL of the expected
task type; an episode's labels are the label engine's (query labels at the anchor, context labels from
windows that close by the anchor); its tensors fit the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
import torch

import relfm_core.labels as labels_pkg
from graph_engine.shards.reader import Graph
from relfm_core.features import GraphFeatures
from relfm_core.inputs import TargetNorm
from relfm_core.labels import LabelEngine, Labels
from relfm_core.model import ModelConfig
from relfm_core.pretrain.episodes import (
    Episode,
    EpisodeConfig,
    PoolEntry,
    episode_stats,
    make_episode,
    make_link_episode,
)
from relfm_core.pretrain.tasks import WINDOWS_DAYS, calibrate, choose_window, links, templates

pytestmark = pytest.mark.unit

CFG = EpisodeConfig(min_context=16, max_context=48, queries=16, max_nodes=16)
FAMILY_TASK = {
    "active": "binary",
    "churn": "binary",
    "count": "regression",
    "sum": "regression",
    "avg": "regression",
    "parent_avg": "regression",
    "min_threshold": "binary",
    "filtered_given_active": "binary",
    "link": "link_prediction",
}


@pytest.fixture(scope="module")
def entry(shop: Graph, features: GraphFeatures) -> PoolEntry:
    return PoolEntry("shop", shop, features, CFG)


def _task(engine: LabelEngine) -> str:
    return str(getattr(engine.task_type, "value", engine.task_type))


# ---------------------------------------------------------------------------------------- tasks
def test_links_are_every_entity_to_event_path(shop: Graph) -> None:
    found = {(lk.entity, lk.event, lk.fk, lk.link_name) for lk in links(shop.schema)}
    assert found == {
        ("users", "orders", "user_id", "orders"),
        ("users", "reviews", "user_id", "reviews"),
        ("items", "orders", "item_id", "orders"),
        ("items", "reviews", "item_id", "reviews"),
    }


def test_every_template_is_a_valid_query_of_its_family(shop: Graph) -> None:
    rng = np.random.default_rng(0)
    families = set()
    for link in links(shop.schema):
        for t in templates(shop.schema, link, 30, rng):
            text = t.text.replace("{thr}", "1.5") if t.needs_threshold else t.text
            assert t.needs_threshold == (t.base_text is not None)
            engine = LabelEngine(shop, text)  # parses and validates against the schema
            assert engine.entity_table == link.entity == t.entity_table
            want = FAMILY_TASK.get(t.family)
            if t.family.endswith("_threshold"):
                want = "binary"
            if t.family in ("first_class", "last_class"):
                assert _task(engine) in ("multiclass", "binary")
            else:
                assert _task(engine) == want, text
            if t.base_text is not None:
                assert _task(LabelEngine(shop, t.base_text)) == "regression"
            families.add(t.family)
    assert {"active", "churn", "count", "sum", "avg", "first_class", "link"} <= families


def test_windows_fit_the_event_rate() -> None:
    rng = np.random.default_rng(0)
    for rate in (0.01, 0.1, 1.0, 10.0):
        w = choose_window(rate, rng)
        assert w in WINDOWS_DAYS and 0.3 <= rate * w <= 30
    assert choose_window(0.0, rng) in WINDOWS_DAYS  # no events at all: still a window


def test_thresholds_give_a_usable_positive_rate() -> None:
    rng = np.random.default_rng(0)
    v = np.random.default_rng(1).exponential(10.0, 500)
    for op in (">", "<="):
        thr = calibrate(v, op, rng)
        assert thr is not None
        rate = np.mean(v > thr) if op == ">" else np.mean(v <= thr)
        assert 0.05 <= rate <= 0.65
    assert calibrate(np.full(100, 3.0), ">", rng) is None
    assert calibrate(np.arange(10.0), ">", rng) is None  # too few values
    assert calibrate(np.array([np.nan] * 50 + [1.0]), ">", rng) is None


# ---------------------------------------------------------------------------------------- episodes
@dataclass
class Seen:
    """What the label engine was asked while one episode was made."""

    engines: list[Any] = field(default_factory=list)
    contexts: list[tuple[Any, int, pd.DataFrame]] = field(default_factory=list)


def _spy(monkeypatch: pytest.MonkeyPatch) -> Seen:
    """Real label engines and context tables that also record their answers."""
    seen = Seen()
    real_context = labels_pkg.context_table

    class Recording(LabelEngine):
        def __init__(self, graph: Graph, query: str) -> None:
            super().__init__(graph, query)
            self.text = query
            self.calls: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], Labels]] = []
            seen.engines.append(self)

        def evaluate(self, entity_rows: Any, anchors: Any) -> Labels:
            out = super().evaluate(entity_rows, anchors)
            self.calls.append((np.asarray(entity_rows).copy(), np.asarray(anchors).copy(), out))
            return out

    def context_table(engine: Any, anchor: int, cfg: Any = None) -> pd.DataFrame:
        df = real_context(engine, anchor, cfg)
        seen.contexts.append((engine, int(anchor), df))
        return df

    monkeypatch.setattr(labels_pkg, "LabelEngine", Recording)
    monkeypatch.setattr(labels_pkg, "context_table", context_table)
    return seen


def _check_tensors(ep: Episode) -> None:
    width = ModelConfig(lags=CFG.lags).entity_feats
    assert ep.q_lags.shape == (len(ep.q_y), width) and ep.ctx_lags.shape == (len(ep.ctx_y), width)
    assert ep.q["node_mask"].shape[0] == len(ep.q_y) and ep.q["node_mask"].shape[1] <= CFG.max_nodes
    assert ep.ctx["node_mask"].shape[0] == len(ep.ctx_y)
    for t in (ep.q_lags, ep.ctx_lags, ep.q_y, ep.ctx_y):
        assert torch.isfinite(t).all()


def _check_labels(ep: Episode, seen: Seen) -> None:
    engine = seen.engines[-1]
    assert engine.text == ep.query
    # the context: the label engine's context table, windows closed by the prediction anchor
    (c_engine, anchor, ctx) = seen.contexts[-1]
    assert c_engine is engine
    ends = np.array(
        [engine.window_end(int(a)) for a in ctx["anchor_time"].to_numpy("datetime64[ns]").astype(np.int64)]
    )
    assert (ends <= anchor).all()
    c_val = ctx["label"].to_numpy()
    # the queries: the engine's labels at the anchor itself, where ASSUMING holds
    rows, anchors, lab = engine.calls[-1]
    assert (anchors == anchor).all()
    keep = engine.assuming(rows, anchors) & lab.valid
    q_val = np.asarray(lab.value)[keep][: CFG.queries]
    q_y, c_y = ep.q_y.numpy().astype(np.float64), ep.ctx_y.numpy().astype(np.float64)
    if ep.task_type == "binary":
        assert np.array_equal(q_y, q_val) and np.array_equal(c_y, c_val.astype(np.float64))
        assert set(np.unique(c_y)) == {0.0, 1.0}
    elif ep.task_type == "regression":
        norm = TargetNorm.fit("regression", c_val.astype(np.float64))  # fitted on the context only
        np.testing.assert_allclose(q_y, norm.forward(q_val.astype(np.float64)), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(c_y, norm.forward(c_val.astype(np.float64)), rtol=1e-5, atol=1e-5)
    else:
        assert ep.task_type == "multiclass"
        # random slots, one per class, the same in the context and the queries
        slot: dict[Any, float] = {}
        for v, s in zip([*c_val.tolist()], c_y.tolist(), strict=True):
            assert slot.setdefault(v, s) == s
        assert sorted(slot.values()) == list(range(ep.num_classes))
        known = np.array([v in slot for v in q_val.tolist()])  # classes the context never showed: dropped
        assert [slot[v] for v in q_val[known].tolist()] == q_y.tolist()


def test_episodes_carry_the_label_engine_s_labels(
    entry: PoolEntry, shop: Graph, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen = _spy(monkeypatch)
    rng = np.random.default_rng(3)
    kinds: dict[str, int] = {}
    for _ in range(60):
        seen.engines.clear()
        seen.contexts.clear()
        ep = make_episode(entry, rng, CFG)
        if ep is None:
            continue
        kinds[ep.task_type] = kinds.get(ep.task_type, 0) + 1
        assert ep.database == "shop" and ep.family in {*FAMILY_TASK, "first_class", "last_class"} | {
            f"{a}_threshold" for a in ("sum", "avg", "min", "max")
        }
        assert "{thr}" not in ep.query
        assert _task(LabelEngine(shop, ep.query)).replace("link_prediction", "link") == ep.task_type
        assert 8 <= len(ep.q_y) <= CFG.queries
        if ep.task_type == "link":
            assert ep.cand_target is not None and ep.cand_mask is not None
            assert bool((ep.cand_target & ep.cand_mask).any())
            continue
        assert CFG.min_context // 2 <= len(ep.ctx_y) <= CFG.max_context
        _check_tensors(ep)
        _check_labels(ep, seen)
        stats = episode_stats(ep)
        assert stats["queries"] == len(ep.q_y) and stats["task"] == ep.task_type
        if {"binary", "regression", "multiclass"} <= set(kinds):
            break
    assert {"binary", "regression", "multiclass"} <= set(kinds), kinds


def test_link_episodes_score_candidates_with_true_destinations(
    entry: PoolEntry, shop: Graph, anchor: int
) -> None:
    query = "PREDICT LIST_DISTINCT(orders.item_id, 0, 30, days) RANK TOP 10 FOR EACH users.user_id"
    engine = LabelEngine(shop, query)
    ep = make_link_episode(entry, engine, anchor, np.random.default_rng(0), CFG, query, "link")
    assert ep is not None and ep.task_type == "link"
    assert ep.cand is not None and ep.cand_index is not None and ep.pair is not None
    assert ep.cand_mask is not None and ep.cand_target is not None
    b = len(ep.q_y)
    assert ep.cand_index.shape == ep.cand_mask.shape == ep.cand_target.shape and ep.cand_index.shape[0] == b
    assert ep.pair.shape == (*ep.cand_index.shape, ModelConfig().pair_feats)
    assert not (ep.cand_target & ~ep.cand_mask).any()
    assert int(ep.cand_index.max()) < ep.cand["node_mask"].shape[0]


def test_event_rates_and_degenerate_draws(entry: PoolEntry, shop: Graph, features: GraphFeatures) -> None:
    rates = {lk.link_name + "/" + lk.entity: entry.event_rate(lk) for lk in entry.links}
    days = (shop.max_time() - shop.min_time()) / (86_400 * 10**9)
    n_users, n_orders = shop.table("users").num_rows, shop.table("orders").num_rows
    assert rates["orders/users"] == pytest.approx(n_orders / n_users / days)
    # a database without time-stamped links has no task to draw
    empty = PoolEntry("shop", shop, features, CFG)
    empty.links = []
    assert make_episode(empty, np.random.default_rng(0), CFG) is None
