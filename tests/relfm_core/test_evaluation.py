"""Backtests on the tiny synthetic shop: the latest fully labelled anchor, labels as users see them, every
task type scored (an oracle predictor scores perfectly), one-line errors for anchors that cannot be
backtested, and `RFM.evaluate` end to end with a small random model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from relfm_core.evaluation import labelled_pairs, resolve_anchor, run_backtest
from relfm_core.labels import LabelEngine

pytestmark = pytest.mark.unit
BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
SPEND = "PREDICT AVG(orders.amount, 0, 90, days) FOR EACH users.user_id"
STATUS = "PREDICT FIRST(orders.status, 0, 30, days) FOR EACH users.user_id"
LINKS = "PREDICT LIST_DISTINCT(orders.item_id, 0, 30, days) RANK TOP 3 FOR EACH users.user_id"


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Graph]:
    from graph_engine.synthetic import default_config, generate
    from pipelines.build_graph import ensure_graph

    root = tmp_path_factory.mktemp("evaluation")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELFM_HOME", str(root / "home"))
        mp.setenv("RELFM_TEXT_ENCODER", "hashed")
        yield ensure_graph(generate(default_config("tiny"), Path(root) / "shop"), cache_dir=root / "graphs")


def _oracle(frame: pd.DataFrame, task: str) -> object:
    """A predictor that knows the labels: the backtest plumbing must then score perfectly."""

    def predict(query: str, pairs: pd.DataFrame) -> pd.DataFrame:
        assert list(pairs.columns) == ["user_id", "anchor_time"]
        out = pairs.copy()
        label = frame.set_index("user_id").loc[pairs["user_id"], "label"].tolist()
        out["prediction"] = label
        return out

    return predict


@pytest.mark.parametrize(
    ("query", "metric", "best"),
    [(BUY, "auroc", 1.0), (SPEND, "mae", 0.0), (STATUS, "macro_f1", 1.0), (LINKS, "ndcg@3", 1.0)],
)
def test_an_oracle_scores_perfectly_on_every_task(graph: Graph, query: str, metric: str, best: float) -> None:
    engine = LabelEngine(graph, query)
    anchor = resolve_anchor(engine)
    assert anchor == engine.latest_complete_anchor()
    frame, rows = labelled_pairs(engine, anchor)
    assert len(frame) == len(rows) > 0
    assert (frame["anchor_time"] == np.datetime64(anchor, "ns")).all()
    if query == STATUS:  # class values, not codes
        assert set(frame["label"]) <= {"completed", "cancelled", "returned", "pending"}
    if query == LINKS:  # lists of item keys
        assert all(isinstance(v, list) for v in frame["label"])
    bt = run_backtest(engine, query, _oracle(frame, engine.task_type.value), None)  # type: ignore[arg-type]
    assert bt.metrics[metric] == pytest.approx(best)
    assert bt.metrics["count"] >= 1 and bt.anchor == anchor
    if query == LINKS:
        assert bt.k == 3 and 0 < bt.metrics["coverage"] <= 1 and 0 <= bt.metrics["popularity_bias"] <= 1


def test_a_sample_of_entities_is_seeded(graph: Graph) -> None:
    engine = LabelEngine(graph, BUY)
    t = resolve_anchor(engine)
    a, _ = labelled_pairs(engine, t, max_entities=10, seed=1)
    b, _ = labelled_pairs(engine, t, max_entities=10, seed=1)
    assert len(a) == 10 and a.equals(b)


@pytest.mark.parametrize(
    ("anchor", "message"),
    [("yesterday-ish", "is not a time"), ("2099-01-01", "too late to backtest")],
)
def test_bad_anchors_are_one_line_errors(graph: Graph, anchor: str, message: str) -> None:
    with pytest.raises(RelfmError, match=message) as e:
        resolve_anchor(LabelEngine(graph, BUY), anchor)
    assert "\n" not in str(e.value)


def test_no_entities_before_the_data_is_an_error(graph: Graph) -> None:
    engine = LabelEngine(graph, BUY)
    with pytest.raises(RelfmError, match="no labelled entities"):
        run_backtest(engine, BUY, _oracle(pd.DataFrame(), "binary"), "1990-01-01")  # type: ignore[arg-type]


def test_rfm_evaluate_backtests_with_the_model(graph: Graph) -> None:
    from relfm_core.model import ModelConfig, RelationalFM
    from relfm_core.rfm import RFM

    torch.manual_seed(0)
    rfm = RFM(
        graph, model=RelationalFM(ModelConfig(d=32, cell_dim=16, heads=2, graph_layers=1, icl_layers=1))
    )
    anchor = pd.Timestamp(LabelEngine(graph, BUY).latest_complete_anchor()) - pd.Timedelta(days=30)
    m = rfm.evaluate(BUY, anchor_time=anchor, max_entities=30, context_size=32, icl_probe=False)
    assert set(m) >= {"auroc", "average_precision", "accuracy", "f1", "calibration_error", "count"}
    assert m["count"] == 30 and 0 <= m["calibration_error"] <= 1
