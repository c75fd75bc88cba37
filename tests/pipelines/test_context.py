"""Context and training data with Ray: identical output whatever the number of actors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from graph_engine.sampler import TemporalSampler
from graph_engine.shards.reader import Graph
from pipelines.context import ContextSpec, compute_chunk, generate, to_arrow
from relfm_core.labels import LabelEngine

pytestmark = [pytest.mark.ray, pytest.mark.xdist_group("ray"), pytest.mark.usefixtures("stage_env")]

BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"


def test_context_is_identical_for_one_and_two_actors(ray_session: Any, shop_graph: Path) -> None:
    graph = Graph.open(shop_graph)
    engine = LabelEngine(graph, BUY)
    latest = engine.latest_complete_anchor()
    anchors_at = [engine.step_back(latest, k) for k in range(3)]
    rows = np.concatenate([engine.entity_rows(a) for a in anchors_at])
    anchors = np.concatenate([np.full(len(engine.entity_rows(a)), a, dtype=np.int64) for a in anchors_at])
    spec = ContextSpec(str(shop_graph), BUY, lags=4, subgraphs=True)
    seen: list[tuple[int, int]] = []

    one = generate(spec, rows, anchors, actors=1, chunk_size=40)
    two = generate(
        spec,
        rows,
        anchors,
        actors=2,
        chunk_size=40,
        max_in_flight=3,
        progress=lambda d, n: seen.append((d, n)),
    )
    whole = compute_chunk(engine, TemporalSampler(graph, spec.sampler), spec, rows, anchors)

    assert set(one) == set(two) == set(whole)
    for key in whole:
        np.testing.assert_array_equal(one[key], two[key], err_msg=key)
        np.testing.assert_array_equal(two[key], whole[key], err_msg=key)  # chunking changes nothing
    assert len(one["label"]) == len(rows) and one["lag_value"].shape == (len(rows), 4)
    assert one["seed_ptr"][-1] == len(one["row"]) > len(rows)  # subgraphs beyond the seeds
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and seen[-1] == (len(rows), len(rows))
    table = to_arrow(two)
    assert table.num_rows == len(rows) and table.column("label").null_count == int(
        (~two["label_valid"]).sum()
    )
