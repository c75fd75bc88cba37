"""Scorers without Ray: the zero-shot path (context built and encoded once per anchor) gives the same
predictions however the entities are batched, and multiclass output is a class plus prob_<class>."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graph_engine.shards.reader import Graph
from pipelines.scorers import open_scorer

pytestmark = [pytest.mark.unit, pytest.mark.usefixtures("stage_env")]

BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
STATUS = "PREDICT FIRST(orders.status, 0, 30, days) FOR EACH users.user_id"


@pytest.mark.parametrize("query", [BUY, STATUS])
def test_zero_shot_scorer_is_batch_invariant(shop_graph: Path, base_model: Path, query: str) -> None:
    graph = Graph.open(shop_graph)
    anchor = graph.max_time()
    scorer = open_scorer(graph, base_model, query, anchor, context_size=128)
    rows = scorer.engine.entity_rows(anchor)[:40]
    anchors = np.full(len(rows), anchor, dtype=np.int64)
    whole = scorer.predict(rows, anchors)
    parts = [scorer.predict(rows[s : s + 7], anchors[s : s + 7]) for s in range(0, len(rows), 7)]
    for key, values in whole.items():
        joined = np.concatenate([p[key] for p in parts])
        if values.dtype.kind == "f":
            np.testing.assert_allclose(values, joined, rtol=1e-5, atol=1e-6)
        else:
            assert values.tolist() == joined.tolist()
    if query == BUY:
        assert (
            set(whole) == {"prediction"} and ((whole["prediction"] >= 0) & (whole["prediction"] <= 1)).all()
        )
    else:
        probs = np.stack([v for k, v in whole.items() if k.startswith("prob_")], axis=1)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        classes = [k.removeprefix("prob_") for k in whole if k.startswith("prob_")]
        assert set(whole["prediction"].tolist()) <= set(classes)


def test_pretrained_checkpoint_needs_a_query(shop_graph: Path, base_model: Path) -> None:
    from graph_engine.errors import RelfmError

    graph = Graph.open(shop_graph)
    with pytest.raises(RelfmError, match="pretrained checkpoint: give the query"):
        open_scorer(graph, base_model, None, graph.max_time())
