"""Fine-tuning (relfm_core.finetune; named apart from tests/pipelines/test_finetune.py, since test
modules share one namespace): it trains, early-stops, leaves the pretrained model alone, and the saved
model scores each entity in one forward pass with no context, identically once loaded back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from relfm_core.features import GraphFeatures
from relfm_core.finetune import (
    KIND,
    FinetuneConfig,
    FinetuneResult,
    finetune,
    is_finetuned,
    load_finetuned,
    score,
)
from relfm_core.inputs import InputBuilder
from relfm_core.labels import LabelEngine, TableConfig, training_table
from relfm_core.metrics import auroc
from relfm_core.model import RelationalFM

pytestmark = pytest.mark.unit

BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
ORDERS = "PREDICT COUNT(orders.*, 0, 90, days) FOR EACH users.user_id"
STATUS = "PREDICT FIRST(orders.status, 0, 30, days) FOR EACH users.user_id"
LINKS = "PREDICT LIST_DISTINCT(orders.item_id, 0, 30, days) RANK TOP 5 FOR EACH users.user_id"
FAST = FinetuneConfig(epochs=4, batch_size=64, lr=3e-3, encoder_lr=1e-3, patience=10)


@dataclass
class Tuned:
    engine: LabelEngine
    train: pd.DataFrame
    val: pd.DataFrame
    result: FinetuneResult
    logged: list[dict[str, float]]
    base_before: dict[str, torch.Tensor]


def _tables(engine: LabelEngine, anchor: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    t = training_table(engine, anchor, TableConfig(num_anchors=6, val_anchors=1, max_rows=400, seed=0))
    return t.train, t.val


def _pairs(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    rows = df["entity_row"].to_numpy(np.int64)
    return rows, pd.to_datetime(df["anchor_time"]).to_numpy("datetime64[ns]").astype(np.int64)


@pytest.fixture(scope="module")
def scorer(shop: Graph, features: GraphFeatures, tiny_model: RelationalFM) -> InputBuilder:
    """Inputs built as fine-tuning builds them (default sampler and node budget)."""
    return InputBuilder(shop, features, lags=tiny_model.cfg.lags)


@pytest.fixture(scope="module")
def tuned(
    shop: Graph,
    features: GraphFeatures,
    tiny_model: RelationalFM,
    anchor: int,
    tmp_path_factory: pytest.TempPathFactory,
) -> Tuned:
    engine = LabelEngine(shop, BUY)
    train, val = _tables(engine, anchor)
    assert train["label"].nunique() == 2 and val["label"].nunique() == 2
    before = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    logged: list[dict[str, float]] = []
    out = tmp_path_factory.mktemp("finetuned") / "buy"
    result = finetune(shop, features, tiny_model, engine, train, val, out, FAST, log=logged.append)
    return Tuned(engine, train, val, result, logged, before)


def test_fine_tuning_trains_and_reports_each_epoch(tuned: Tuned) -> None:
    h = tuned.result.history
    assert h == tuned.logged and [r["epoch"] for r in h] == [1, 2, 3, 4]
    assert h[-1]["train_loss"] < h[0]["train_loss"]
    assert all(np.isfinite(r["val_score"]) for r in h)
    assert tuned.result.metrics["epochs"] == 4
    assert tuned.result.metrics["head_val_score"] == max(r["val_score"] for r in h)


def test_the_linear_probe_path_is_solved_after_training_and_saved(tuned: Tuned, scorer: InputBuilder) -> None:
    """relfm_core.task_probe: solved on the training rows, its view and blend chosen on validation, stored
    in the weights; without it the model is the best epoch's head."""
    meta = json.loads((tuned.result.path / "config.json").read_text())
    spec = meta["probe"]
    assert spec["view"] in {"all", "history", "history+aggregates"} and 0 < spec["weight"] <= 1
    assert spec["groups"]["cells"] and spec["groups"]["rows"]  # subgraph aggregates found in training
    # chosen on validation, then solved again on the chosen training rows (all or the most recent) plus
    # the validation rows
    assert len(tuned.val) < spec["rows"] <= len(tuned.train) + len(tuned.val)
    loaded = load_finetuned(tuned.result.path)
    assert loaded.model.probe is not None
    rows, anchors = _pairs(tuned.val)
    blended = score(loaded, scorer, tuned.engine, rows, anchors)
    loaded.model.probe = None
    head = score(loaded, scorer, tuned.engine, rows, anchors)
    assert not np.allclose(blended, head)
    y = tuned.val["label"].to_numpy()
    assert auroc(y, head) == pytest.approx(tuned.result.metrics["head_val_score"], abs=1e-6)


def test_the_pretrained_model_is_left_alone(tuned: Tuned, tiny_model: RelationalFM) -> None:
    for k, v in tiny_model.state_dict().items():
        assert torch.equal(v, tuned.base_before[k]), k


def test_the_saved_model_is_the_best_epoch_with_everything_to_score(
    tuned: Tuned, shop: Graph, scorer: InputBuilder
) -> None:
    path = tuned.result.path
    assert is_finetuned(path) and (path / "model.safetensors").is_file()
    meta = json.loads((path / "config.json").read_text())
    assert meta["kind"] == KIND and meta["task_type"] == "binary" and meta["query"] == BUY
    assert meta["graph_id"] == shop.graph_id
    loaded = load_finetuned(path)
    assert loaded.query == BUY and not loaded.model.training
    assert len(loaded.norm.hist_center) > 0  # the history statistics travel with the model
    rows, anchors = _pairs(tuned.val)
    p = score(loaded, scorer, tuned.engine, rows, anchors)
    assert p.shape == (len(rows),) and ((p > 0) & (p < 1)).all()
    # the validation score it reports is out of sample: the probe path as solved before the validation
    # rows joined its training rows (the saved weights have seen them, so they score them higher)
    reported = tuned.result.metrics["val_score"]
    assert 0.0 <= reported <= 1.0
    assert auroc(tuned.val["label"].to_numpy(), p) >= reported - 0.05


def test_each_entity_is_scored_alone_and_reloading_changes_nothing(
    tuned: Tuned, scorer: InputBuilder
) -> None:
    rows, anchors = _pairs(tuned.val.head(12))
    first = load_finetuned(tuned.result.path)
    together = score(first, scorer, tuned.engine, rows, anchors)
    one_by_one = score(first, scorer, tuned.engine, rows, anchors, batch_size=1)
    np.testing.assert_allclose(one_by_one, together, atol=1e-6)
    again = score(load_finetuned(tuned.result.path), scorer, tuned.engine, rows, anchors)
    assert np.array_equal(again, together)
    assert score(first, scorer, tuned.engine, rows[:0], anchors[:0]).shape == (0,)


def test_training_stops_when_validation_stops_improving(
    shop: Graph, features: GraphFeatures, tiny_model: RelationalFM, tuned: Tuned, tmp_path: Path
) -> None:
    frozen = FinetuneConfig(epochs=10, batch_size=64, lr=0.0, encoder_lr=0.0, weight_decay=0.0, patience=2)
    res = finetune(shop, features, tiny_model, tuned.engine, tuned.train, tuned.val, tmp_path, frozen)
    assert len(res.history) == 3  # epoch 1 is the best; 2 and 3 do not beat it; patience 2
    assert len({r["val_score"] for r in res.history}) == 1


def test_regression_scores_are_in_label_space(
    shop: Graph,
    features: GraphFeatures,
    scorer: InputBuilder,
    tiny_model: RelationalFM,
    anchor: int,
    tmp_path: Path,
) -> None:
    engine = LabelEngine(shop, ORDERS)
    train, val = _tables(engine, anchor)
    cfg = FinetuneConfig(epochs=2, batch_size=64, lr=3e-3, patience=5)
    res = finetune(shop, features, tiny_model, engine, train, val, tmp_path, cfg)
    loaded = load_finetuned(res.path)
    assert loaded.meta["task_type"] == "regression"
    rows, anchors = _pairs(val)
    p = score(loaded, scorer, engine, rows, anchors)
    y = val["label"].to_numpy(np.float64)
    assert np.isfinite(p).all() and p.shape == y.shape
    assert -1 < np.median(p) < 10 * max(y.max(), 1)  # counts, not z-scores


def test_multiclass_scores_are_class_probabilities(
    shop: Graph,
    features: GraphFeatures,
    scorer: InputBuilder,
    tiny_model: RelationalFM,
    anchor: int,
    tmp_path: Path,
) -> None:
    engine = LabelEngine(shop, STATUS)
    train, val = _tables(engine, anchor)
    res = finetune(
        shop, features, tiny_model, engine, train, val, tmp_path, FinetuneConfig(epochs=1, batch_size=64)
    )
    loaded = load_finetuned(res.path)
    k = len(loaded.meta["classes"])
    assert k >= 2 and loaded.meta["num_classes"] == k
    rows, anchors = _pairs(val)
    p = score(loaded, scorer, engine, rows, anchors)
    assert p.shape == (len(rows), k)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)


def test_unsupported_tasks_and_tables_are_one_line_errors(
    shop: Graph, features: GraphFeatures, tiny_model: RelationalFM, tuned: Tuned, tmp_path: Path
) -> None:
    multilabel = LabelEngine(
        shop, "PREDICT LIST_DISTINCT(orders.status, 0, 30, days) CLASSIFY FOR EACH users.user_id"
    )
    assert multilabel.task_type.value == "multilabel"
    cases = [
        (multilabel, tuned.train, tuned.val),
        (tuned.engine, tuned.train, tuned.val.head(0)),
        (tuned.engine, tuned.train.head(0), tuned.val),
    ]
    for engine, train, val in cases:
        with pytest.raises(RelfmError) as e:
            finetune(shop, features, tiny_model, engine, train, val, tmp_path / "x", FAST)
        assert "\n" not in str(e.value)
    with pytest.raises(RelfmError) as e:
        load_finetuned(tmp_path)
    assert "\n" not in str(e.value) and str(tmp_path) in str(e.value)
    assert not is_finetuned(tmp_path)


def test_link_prediction_fine_tunes_the_candidate_scorer(
    shop: Graph,
    features: GraphFeatures,
    scorer: InputBuilder,
    tiny_model: RelationalFM,
    anchor: int,
    tmp_path: Path,
) -> None:
    """relfm_core.finetune_links: trained with the listwise loss, early-stopped on MAP@k (epoch 0 is the
    pretrained scorer, so the saved model is never worse on validation), saved and ranked per entity."""
    from relfm_core.finetune_links import score_links

    engine = LabelEngine(shop, LINKS)
    train, val = _tables(engine, anchor)
    cfg = FinetuneConfig(epochs=2, batch_size=64, encoder_lr=1e-3, patience=2)
    logged: list[dict[str, float]] = []
    res = finetune(shop, features, tiny_model, engine, train, val, tmp_path, cfg, log=logged.append)
    assert [r["epoch"] for r in res.history] == [0, 1, 2] and logged == res.history[1:]
    assert res.metrics["val_score"] == max(r["val_score"] for r in res.history)
    assert res.metrics["val_score"] >= res.metrics["pretrained_val_score"]
    loaded = load_finetuned(res.path)
    assert loaded.meta["task_type"] == "link_prediction" and loaded.model.head is None
    rows, anchors = _pairs(pd.concat([train.tail(10), val.head(10)]))  # two anchors in one call
    assert len(np.unique(anchors)) == 2
    keys, scores = score_links(loaded, scorer, engine, rows, anchors)
    assert len(keys) == len(rows) and all(1 <= len(k) <= 5 and len(set(k)) == len(k) for k in keys)
    items = set(shop.table("items").key_values(np.arange(shop.table("items").num_rows)).tolist())
    assert all(set(k) <= items for k in keys)
    assert all(s == sorted(s, reverse=True) for s in scores)
    one = score_links(loaded, scorer, engine, rows[:1], anchors[:1])
    assert one[0][0] == keys[0]
    with pytest.raises(RelfmError):
        score(loaded, scorer, engine, rows, anchors)
