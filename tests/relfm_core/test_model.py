"""The model on real subgraph tensors of the tiny shop: head shapes per task type, predictions that
depend on the context's labels but not on the other entities of the batch (nor on their padding), a
context read as a set, and the losses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch

from graph_engine.shards.reader import Graph
from relfm_core.features import GraphFeatures
from relfm_core.inputs import HISTORY_FEATS, LAG_FEATS, InputBuilder, TargetNorm, slice_tensors
from relfm_core.labels import LabelEngine, TableConfig, context_table
from relfm_core.model import (
    TASK_TYPES,
    ModelConfig,
    RelationalFM,
    link_loss,
    regression_loss,
    task_loss,
)

pytestmark = pytest.mark.unit

BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
ITEMS = "PREDICT LIST_DISTINCT(orders.item_id, 0, 30, days) RANK TOP 5 FOR EACH users.user_id"


@dataclass
class Task:
    engine: LabelEngine
    norm: TargetNorm
    rows: np.ndarray
    anchors: np.ndarray
    q: dict[str, torch.Tensor]
    q_lags: torch.Tensor
    ctx: dict[str, torch.Tensor]
    ctx_lags: torch.Tensor
    ctx_y: torch.Tensor


@pytest.fixture(scope="module")
def task(shop: Graph, builder: InputBuilder, anchor: int) -> Task:
    engine = LabelEngine(shop, BUY)
    ctx = context_table(engine, anchor, TableConfig(max_rows=48, num_anchors=6, seed=1))
    c_rows = ctx["entity_row"].to_numpy(np.int64)
    c_anchor = ctx["anchor_time"].to_numpy("datetime64[ns]").astype(np.int64)
    y = ctx["label"].to_numpy(np.float64)
    assert 0 < y.mean() < 1  # both classes: the context can teach something
    ct, cl, norm = builder.build(engine, c_rows, c_anchor, TargetNorm.fit("binary", y))
    rows = engine.entity_rows(anchor)[:10]
    anchors = np.full(len(rows), anchor, dtype=np.int64)
    qt, ql, _ = builder.build(engine, rows, anchors, norm)
    return Task(engine, norm, rows, anchors, qt, ql, ct, cl, torch.from_numpy(y.astype(np.float32)))


def _ctx_labels(task_type: str, n: int) -> tuple[torch.Tensor, int]:
    g = torch.Generator().manual_seed(0)
    if task_type == "binary":
        return torch.randint(0, 2, (n,), generator=g).float(), 0
    if task_type == "regression":
        return torch.randn(n, generator=g), 0
    return torch.randint(0, 3, (n,), generator=g).float(), 3


@pytest.mark.parametrize(("task_type", "shape"), [("binary", ()), ("regression", (2,)), ("multiclass", (3,))])
def test_heads_have_the_shape_of_their_task(
    tiny_model: RelationalFM, task: Task, task_type: str, shape: tuple[int, ...]
) -> None:
    y, k = _ctx_labels(task_type, len(task.ctx_y))
    with torch.no_grad():
        out = tiny_model(task.q, task.q_lags, task.ctx, task.ctx_lags, y, task_type, k)
    assert out.shape == (len(task.rows), *shape)
    assert torch.isfinite(out).all()


def test_link_scores_every_candidate(
    shop: Graph, builder: InputBuilder, tiny_model: RelationalFM, anchor: int
) -> None:
    engine = LabelEngine(shop, ITEMS)
    rows = engine.entity_rows(anchor)[:6]
    anchors = np.full(len(rows), anchor, dtype=np.int64)
    qt, ql, _ = builder.build(engine, rows, anchors, TargetNorm("link"))
    cand, index, pair, mask, target, cand_rows = builder.link_batch(engine, rows, anchors)
    assert target is None  # no labels asked for
    with torch.no_grad():
        scores = tiny_model.link_forward(qt, ql, cand, index, pair)
    assert scores.shape == index.shape == mask.shape == cand_rows.shape
    assert pair.shape == (*index.shape, tiny_model.cfg.pair_feats)
    assert torch.isfinite(scores).all()
    assert mask.any()
    n_items = shop.table("items").num_rows
    assert ((cand_rows[mask.numpy()] >= 0) & (cand_rows[mask.numpy()] < n_items)).all()


def test_an_entity_is_scored_alone_whatever_else_is_in_the_batch(
    tiny_model: RelationalFM, builder: InputBuilder, task: Task
) -> None:
    """Entities attend to the context, never to each other; padding to the batch's largest subgraph
    changes nothing either (each entity is rebuilt on its own, with its own node count)."""
    with torch.no_grad():
        memory = tiny_model.context_memory(task.ctx, task.ctx_lags, task.ctx_y, "binary")
        together = tiny_model.predict_with_memory(task.q, task.q_lags, memory, "binary")
        alone = []
        for r, a in zip(task.rows[:4], task.anchors[:4], strict=True):
            qt, ql, _ = builder.build(task.engine, np.array([r]), np.array([a]), task.norm)
            alone.append(tiny_model.predict_with_memory(qt, ql, memory, "binary"))
        reordered = tiny_model.predict_with_memory(
            slice_tensors(task.q, np.arange(len(task.rows))[::-1].copy()),
            task.q_lags.flip(0),
            memory,
            "binary",
        )
    torch.testing.assert_close(torch.cat(alone), together[:4], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reordered.flip(0), together, atol=1e-5, rtol=1e-5)


def test_prediction_depends_on_context_labels_not_on_context_order(
    tiny_model: RelationalFM, task: Task
) -> None:
    with torch.no_grad():
        base = tiny_model(task.q, task.q_lags, task.ctx, task.ctx_lags, task.ctx_y, "binary")
        flipped = tiny_model(task.q, task.q_lags, task.ctx, task.ctx_lags, 1 - task.ctx_y, "binary")
        perm = torch.randperm(len(task.ctx_y), generator=torch.Generator().manual_seed(3))
        shuffled = tiny_model(
            task.q,
            task.q_lags,
            slice_tensors(task.ctx, perm.numpy()),
            task.ctx_lags[perm],
            task.ctx_y[perm],
            "binary",
        )
    assert (base - flipped).abs().max() > 1e-5
    torch.testing.assert_close(shuffled, base, atol=1e-5, rtol=1e-5)


def test_forward_is_context_memory_then_prediction(tiny_model: RelationalFM, task: Task) -> None:
    """The context can be encoded once per task and reused for every batch of entities."""
    with torch.no_grad():
        direct = tiny_model(task.q, task.q_lags, task.ctx, task.ctx_lags, task.ctx_y, "binary")
        memory = tiny_model.context_memory(task.ctx, task.ctx_lags, task.ctx_y, "binary")
        half = len(task.rows) // 2
        parts = [
            tiny_model.predict_with_memory(slice_tensors(task.q, s), task.q_lags[s], memory, "binary")
            for s in (slice(0, half), slice(half, None))
        ]
    assert memory.shape == (1, len(task.ctx_y), tiny_model.cfg.d)
    torch.testing.assert_close(torch.cat(parts), direct, atol=1e-5, rtol=1e-5)


def test_unknown_label_tokens_are_the_same_for_every_entity(tiny_model: RelationalFM) -> None:
    """What a query entity is given in place of its label carries nothing about it."""
    for task_type in ("binary", "regression", "multiclass"):
        tok = tiny_model.label_tokens(task_type, None, 4)
        assert tok.shape == (4, tiny_model.cfg.d)
        assert torch.equal(tok, tok[:1].expand(4, -1))
        known = tiny_model.label_tokens(task_type, torch.tensor([0.0, 1.0, 1.0, 0.0]), 4)
        assert not torch.equal(known[0], known[1])


def test_training_reaches_every_part_of_the_in_context_path(task: Task) -> None:
    torch.manual_seed(1)
    model = RelationalFM(ModelConfig(d=32, cell_dim=16, heads=2, graph_layers=1, icl_layers=1))
    y = torch.randint(0, 2, (len(task.rows),), generator=torch.Generator().manual_seed(0)).float()
    loss = task_loss(model(task.q, task.q_lags, task.ctx, task.ctx_lags, task.ctx_y, "binary"), y, "binary")
    loss.backward()
    for name in ("rows.out.1.weight", "graph.0.attn.in_proj_weight", "icl_ctx.0.ff.0.weight", "lag.0.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0, name


def test_config_matches_the_inputs_and_round_trips() -> None:
    cfg = ModelConfig()
    assert cfg.lag_feats == LAG_FEATS
    assert cfg.history_feats == HISTORY_FEATS
    assert cfg.entity_feats == cfg.lags * LAG_FEATS + HISTORY_FEATS
    small = ModelConfig(d=32, cell_dim=16, heads=2, graph_layers=1, icl_layers=1, lags=4)
    assert ModelConfig(**small.to_dict()) == small
    assert set(TASK_TYPES) == {"binary", "regression", "multiclass", "link"}


def test_model_entity_width_follows_lags(task: Task, shop: Graph, features: GraphFeatures) -> None:
    """A model with fewer lags reads inputs built with that many lags."""
    torch.manual_seed(0)
    model = RelationalFM(ModelConfig(d=32, cell_dim=16, heads=2, graph_layers=1, icl_layers=1, lags=3)).eval()
    b = InputBuilder(shop, features, lags=3, max_nodes=8)
    ct, cl, _norm = b.build(task.engine, task.rows, task.anchors, task.norm)
    assert cl.shape == (len(task.rows), model.cfg.entity_feats)
    with torch.no_grad():
        out = model(ct, cl, ct, cl, torch.zeros(len(task.rows)), "binary")
    assert out.shape == (len(task.rows),)


def test_regression_loss_is_lowest_at_the_median() -> None:
    z = torch.tensor([-3.0, -1.0, 0.0, 0.5, 10.0])
    at = {m: float(regression_loss(torch.tensor([[m, 0.0]]).expand(5, 2), z)) for m in (-1.0, 0.0, 0.5, 2.0)}
    assert min(at, key=at.__getitem__) == 0.0
    # an extreme log-scale is clamped: no overflow
    assert torch.isfinite(regression_loss(torch.tensor([[0.0, -1e4], [0.0, 1e4]]), torch.zeros(2)))


def test_link_loss_prefers_true_destinations_and_ignores_entities_without_any() -> None:
    target = torch.tensor([[True, False, False], [False, False, False]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    good = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    bad = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, 0.0]])
    assert float(link_loss(good.detach(), target, mask)) < float(link_loss(bad, target, mask))
    # a masked-out candidate marked true does not count
    assert (
        float(link_loss(good.detach(), target, torch.tensor([[False, True, True], [True, True, True]])))
        == 0.0
    )
    none = link_loss(good, torch.zeros_like(target), mask)
    none.backward()  # a batch without positives still backpropagates (zero gradient)
    assert float(none.detach()) == 0.0 and good.grad is not None and float(good.grad.abs().sum()) == 0.0


def test_task_loss_rejects_link_and_unknown_types() -> None:
    with pytest.raises(ValueError):
        task_loss(torch.zeros(2), torch.zeros(2), "link")
    assert float(task_loss(torch.zeros(2, 3), torch.tensor([0.0, 2.0]), "multiclass")) == pytest.approx(
        np.log(3)
    )
