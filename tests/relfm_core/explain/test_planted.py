"""The planted-signal check: on a database whose label is driven by one item column two hops from the
user (graph_engine.synthetic.planted_config), explanations of the shipped model, zero-shot.

The explanations are computed on that database end to end; the local explanation ranks the planted
column first for >= 90% of the entities (the in-context probe reads it through the subgraph aggregates,
relfm_core.subgraph_aggregates); the global importance ranks it first, and its cohort-to-label relation
singles it out among its matched noise twins.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from relfm_core.explain import ExplainConfig

pytestmark = pytest.mark.unit
ENTITIES = 80


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from graph_engine.synthetic import generate, planted_config
    from pipelines.build_graph import ensure_graph
    from relfm_core.labels import backtest_table
    from relfm_core.rfm import RFM

    root = tmp_path_factory.mktemp("planted")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELFM_HOME", str(root / "home"))
        mp.setenv("RELFM_TEXT_ENCODER", "hashed")
        cfg = planted_config(seed=0, n_users=1000)
        assert cfg.planted is not None
        graph = ensure_graph(generate(cfg, root / "db"), cache_dir=root / "graphs")
        rfm = RFM(graph)  # the shipped weights, zero-shot
        query = cfg.queries[1]  # PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id
        bt = backtest_table(rfm.engine(query))
        pairs = pd.DataFrame(
            {"user_id": bt["entity"].to_numpy(), "anchor_time": bt["anchor_time"].to_numpy()}
        )
        pred = rfm.predict(
            query,
            at=pairs.iloc[:ENTITIES],
            explain=True,
            explain_config=ExplainConfig(steps=4),
            # 1,024 context rows: with fast mode's 256 the global rank held on 3 of 4 seeds (docs/explanations.md)
            run_mode="normal",
        )
        yield {"signal": cfg.planted, "pred": pred, "labels": bt["label"].to_numpy()[:ENTITIES]}
    torch.set_num_threads(threads)


def _with_items(pred: Any) -> np.ndarray:
    cells = pred.explanation.local.cells
    return np.sort(cells.loc[cells["table"] == "items", "entity"].unique())


def test_planted_database_is_explained_end_to_end(planted: dict[str, Any]) -> None:
    pred, signal = planted["pred"], planted["signal"]
    local = pred.explanation.local
    assert len(local.summary) == ENTITIES and len(_with_items(pred)) > 0.8 * ENTITIES
    planted_cells = local.cells[
        (local.cells["table"] == signal.table) & (local.cells["column"] == signal.column)
    ]
    assert planted_cells["hop"].eq(2).all()  # users -> orders -> items: two hops from the entity
    assert {signal.column, *signal.noise_columns} <= set(local.columns["column"])


def test_cohorts_relate_the_planted_column_to_the_label(planted: dict[str, Any]) -> None:
    """Among the planted column and its matched twins, the planted one splits the context into cohorts
    whose observed labels differ most (the global explanation's cohort-to-label relation)."""
    signal = planted["signal"]
    gl = planted["pred"].explanation.global_
    assert gl is not None
    items = gl.columns[gl.columns["table"] == signal.table].set_index("column")["label_variance"]
    twins = [signal.column, *signal.noise_columns]
    assert items[twins].idxmax() == signal.column, items[twins].to_dict()


def _hit_rates(planted: dict[str, Any]) -> tuple[float, int]:
    pred, signal = planted["pred"], planted["signal"]
    top = pred.explanation.local.top_columns()
    name = top["table"] + "." + top["column"]
    local_hits = float((name == f"{signal.table}.{signal.column}").mean())
    gl = pred.explanation.global_
    rank = (
        int(
            gl.columns.index[(gl.columns["table"] == signal.table) & (gl.columns["column"] == signal.column)][
                0
            ]
        )
        + 1
    )
    return local_hits, rank


def test_local_explanations_rank_the_planted_column_first(planted: dict[str, Any]) -> None:
    """The issue's check, local half: the planted column is the strongest contributor for >= 90% of the
    entities (the in-context probe reads it through the subgraph aggregates; measured 100%)."""
    local_hits, _ = _hit_rates(planted)
    assert local_hits >= 0.9, f"local hit rate {local_hits:.0%}"


def test_global_importance_ranks_the_planted_column_first(planted: dict[str, Any]) -> None:
    """The issue's check, global half. The planted process moves a user's rate 70% of the way to the
    value of the item ordered last, so the column is read on the latest linked row (as the probe reads
    it); measured importance 0.0267 against 0.0162 for orders.order_time recency, which the same process
    drives. Read as the mean over all linked rows, it ranked second."""
    _, global_rank = _hit_rates(planted)
    assert global_rank == 1, f"global rank {global_rank}"
