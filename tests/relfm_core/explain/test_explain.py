"""Local and global explanations of a real (small, random) model on the tiny synthetic shop: attributions
are the model's own gradients (completeness, zero at the reference), land on the right tables, columns
and rows, and come back through `RFM.predict(explain=True)` with words and cohorts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from relfm_core.explain import (
    HISTORY,
    ExplainConfig,
    Reference,
    blend_torch,
    explain_local,
    integrated_gradients,
    reported,
)
from relfm_core.inputs import TargetNorm
from relfm_core.model import ModelConfig, RelationalFM

pytestmark = pytest.mark.unit
BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
SPEND = "PREDICT SUM(orders.amount, 0, 30, days) FOR EACH users.user_id"
STATUS = "PREDICT FIRST(orders.status, 0, 30, days) FOR EACH users.user_id"
LINKS = "PREDICT LIST_DISTINCT(orders.item_id, 0, 30, days) RANK TOP 3 FOR EACH users.user_id"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("explain")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: threads only contend
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELFM_HOME", str(root / "home"))
        mp.setenv("RELFM_TEXT_ENCODER", "hashed")
        yield root
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def graph(env: Path) -> Graph:
    from graph_engine.synthetic import default_config, generate
    from pipelines.build_graph import ensure_graph

    spec = generate(default_config("tiny"), env / "shop")
    return ensure_graph(spec, cache_dir=env / "graphs")


@pytest.fixture(scope="module")
def rfm(graph: Graph) -> object:
    from relfm_core.rfm import RFM

    torch.manual_seed(0)
    model = RelationalFM(ModelConfig(d=32, cell_dim=16, heads=2, graph_layers=1, icl_layers=1))
    return RFM(graph, model=model)


def _pairs(graph: Graph, n: int = 16, days_back: int = 60) -> pd.DataFrame:
    users = graph.table("users")
    t = pd.Timestamp(graph.max_time()) - pd.Timedelta(days=days_back)
    return pd.DataFrame(
        {"user_id": users.key_values(np.arange(n)), "anchor_time": np.full(n, t.to_datetime64())}
    )


def _inputs(rfm: object, query: str, n: int = 12) -> tuple[object, dict[str, torch.Tensor], torch.Tensor]:
    engine = rfm.engine(query)  # type: ignore[attr-defined]
    pairs = _pairs(rfm.graph, n)  # type: ignore[attr-defined]
    rows = rfm.graph.table("users").lookup(pairs["user_id"].to_numpy())  # type: ignore[attr-defined]
    anchors = pairs["anchor_time"].to_numpy("datetime64[ns]").astype(np.int64)
    t, feats, _ = rfm.inputs.build(engine, rows, anchors, TargetNorm("binary"))  # type: ignore[attr-defined]
    return engine, t, feats


def _raw(model: RelationalFM, memory: torch.Tensor) -> object:
    return lambda t, f: model.predict_with_memory(t, f, memory, "binary")


def test_attributions_add_up_to_the_prediction_change(rfm: object) -> None:
    """Integrated gradients are complete: an entity's attributions sum to f(input) - f(reference)."""
    _, t, feats = _inputs(rfm, BUY, n=8)
    model: RelationalFM = rfm.model  # type: ignore[attr-defined]
    memory = model.context_memory(t, feats, torch.zeros(len(feats)), "binary").detach()
    forward = reported(_raw(model, memory), "binary", TargetNorm("binary"))  # type: ignore[arg-type]
    half = {k: (v if k in ("name_emb", "value_emb") else v[: len(feats) // 2]) for k, v in t.items()}
    reference = Reference.from_inputs(half, feats[: len(feats) // 2])
    attr = integrated_gradients(forward, t, feats, reference, steps=32)
    change = attr.output - attr.reference_output
    assert np.abs(change).max() > 1e-4  # the entities differ from the reference
    np.testing.assert_allclose(attr.total, change, atol=0.05 * np.abs(change).max() + 1e-6)
    with torch.no_grad():
        direct = torch.sigmoid(model.predict_with_memory(t, feats, memory, "binary")).numpy()
    np.testing.assert_allclose(attr.output, direct, rtol=1e-5, atol=1e-6)
    # padding cells and padding nodes never get credit
    assert (attr.cells[(t["cell_col"] == 0).numpy()] == 0).all()
    assert (attr.time[~t["node_mask"].numpy()] == 0).all()


def test_cells_at_the_reference_get_no_credit(rfm: object) -> None:
    """With one entity as its own reference, its own row (the only users row in its subgraph) and its
    history sit exactly at the reference: no credit, whatever the gradient there."""
    _, t, feats = _inputs(rfm, BUY, n=1)
    model: RelationalFM = rfm.model  # type: ignore[attr-defined]
    memory = model.context_memory(t, feats, torch.ones(1), "binary").detach()
    forward = reported(_raw(model, memory), "binary", TargetNorm("binary"))  # type: ignore[arg-type]
    attr = integrated_gradients(forward, t, feats, Reference.from_inputs(t, feats), steps=4)
    users = int(rfm.features.tables[rfm.features.table_index["users"]].text_index)  # type: ignore[attr-defined]
    seed_row = (t["node_table"][0] == users).numpy()
    assert seed_row.sum() == 1
    assert np.abs(attr.cells[0][seed_row]).max() < 1e-7
    assert abs(float(attr.history[0])) < 1e-7
    assert np.abs(attr.cells).max() > 0  # other tables' rows differ from their column averages


def test_cells_map_back_to_their_table_column_and_row(rfm: object) -> None:
    graph: Graph = rfm.graph  # type: ignore[attr-defined]
    engine = rfm.engine(BUY)  # type: ignore[attr-defined]
    pairs = _pairs(graph, 8)
    rows = graph.table("users").lookup(pairs["user_id"].to_numpy())
    anchors = pairs["anchor_time"].to_numpy("datetime64[ns]").astype(np.int64)
    model: RelationalFM = rfm.model  # type: ignore[attr-defined]
    t, feats, norm = rfm.inputs.build(engine, rows, anchors, TargetNorm("binary"))  # type: ignore[attr-defined]
    memory = model.context_memory(t, feats, torch.zeros(len(feats)), "binary").detach()
    ex = explain_local(
        _raw(model, memory),  # type: ignore[arg-type]
        rfm.inputs,  # type: ignore[attr-defined]
        engine,
        rows,
        anchors,
        norm,
        "binary",
        Reference.from_inputs(t, feats),
        ExplainConfig(steps=2, batch_size=3),
    )
    cells = ex.cells
    assert set(cells["entity"]) <= set(range(8))
    for table, sub in cells.groupby("table"):
        info = graph.schema.tables[str(table)]
        expected = set(info.feature_columns) | ({info.time_column} if info.time_column else set())
        assert set(sub["column"]) <= expected, table
        assert (sub["row"] < graph.table(str(table)).num_rows).all()
        assert set(sub.loc[sub["kind"] == "time", "column"]) <= {info.time_column}
    seeds = cells[(cells["hop"] == 0)]
    assert (seeds["table"] == "users").all()
    assert (seeds["row"].to_numpy() == rows[seeds["entity"].to_numpy()]).all()
    # a row's cells are summed into the row, a column's into the column, all into the table
    by_row = cells.groupby(["entity", "table", "row"])["contribution"].sum()
    rows_frame = ex.rows.set_index(["entity", "table", "row"])["contribution"]
    pd.testing.assert_series_equal(by_row.sort_index(), rows_frame.sort_index(), check_names=False)
    tables = ex.tables.groupby("entity")["contribution"].sum()
    columns = ex.columns.groupby("entity")["contribution"].sum()
    pd.testing.assert_series_equal(tables, columns, check_names=False)
    assert (ex.columns.groupby("entity")["rank"].min() == 1).all()
    top = ex.top_columns()
    assert len(top) == 8 and (top["importance"] >= 0).all()
    assert all(1 <= len(s) <= 5 for s in ex.summary)
    assert any(HISTORY in line for s in ex.summary for line in s)


def test_predict_explains_every_entity_in_words_and_cohorts(rfm: object) -> None:
    pairs = _pairs(rfm.graph, 10)  # type: ignore[attr-defined]
    # without the probe: on 64 context rows its cross-validation may pick the label-history view alone,
    # and then no subgraph cell moves the prediction (tested in test_icl_head)
    pred = rfm.predict(  # type: ignore[attr-defined]
        BUY, at=pairs, explain=True, explain_config=ExplainConfig(steps=2), context_size=64, icl_probe=False
    )
    assert pred.explanation is not None
    words = pred.frame["explanation"].tolist()
    assert len(words) == 10 and all(isinstance(w, list) and w for w in words)
    line = next(x for w in words for x in w if x.startswith("orders."))
    assert ": +" in line or ": -" in line
    assert "last" in line and "row" in line  # e.g. "orders.amount, last 8 rows: +0.012"
    local = pred.explanation.local
    np.testing.assert_allclose(local.prediction, pred.frame["prediction"].to_numpy(), rtol=1e-4, atol=1e-5)
    gl = pred.explanation.global_
    assert gl is not None and gl.examples >= 20
    reachable = {"users", "orders", "items", "reviews"}
    assert set(gl.columns["table"]) <= reachable and {"users", "orders", "items"} <= set(gl.columns["table"])
    assert (gl.columns["importance"] >= 0).all() and gl.columns["rank"].tolist() == list(
        range(1, len(gl.columns) + 1)
    )
    co = gl.cohorts[(gl.cohorts["table"] == "items") & (gl.cohorts["column"] == "price")]
    assert co["count"].sum() == gl.examples and co["share"].sum() == pytest.approx(1.0)
    assert co["mean_label"].dropna().between(0, 1).all()


@pytest.mark.parametrize("query", [SPEND, STATUS])
def test_regression_and_multiclass_are_explained_in_prediction_units(rfm: object, query: str) -> None:
    pairs = _pairs(rfm.graph, 6)  # type: ignore[attr-defined]
    pred = rfm.predict(  # type: ignore[attr-defined]
        query, at=pairs, explain=True, explain_config=ExplainConfig(steps=2), context_size=32, icl_probe=False
    )
    assert pred.explanation is not None
    local = pred.explanation.local
    if query == SPEND:  # the value itself, in the label's units
        np.testing.assert_allclose(local.prediction, pred.frame["prediction"].to_numpy(), rtol=1e-3)
    else:  # the probability of the predicted class
        probs = pred.frame[[c for c in pred.frame.columns if c.startswith("prob_")]].to_numpy()
        np.testing.assert_allclose(local.prediction, probs.max(1), rtol=1e-4, atol=1e-5)


def test_link_prediction_explanations_are_a_one_line_error(rfm: object) -> None:
    with pytest.raises(RelfmError, match="not link prediction"):
        rfm.predict(LINKS, explain=True)  # type: ignore[attr-defined]


def test_the_context_probe_is_explained_as_it_predicts(rfm: object) -> None:
    """The torch re-expression of the closed-form context probe equals the probe's own blend."""
    from relfm_core.icl_head import ProbeConfig, fit_probe

    rng = np.random.default_rng(0)
    n = 48
    for task, y, k in [
        ("binary", (rng.random(n) < 0.4).astype(float), 0),
        ("regression", rng.normal(size=n), 0),
        ("multiclass", rng.integers(0, 3, n).astype(float), 4),
    ]:
        x = rng.normal(size=(n, 6))
        head_oof = rng.normal(size=(n, k)) if task == "multiclass" else rng.normal(size=n)
        probe = fit_probe(task, x, y, head_oof, ProbeConfig(), k)
        probe.weight = probe.weight or 0.5  # make sure the blend is exercised
        head = rng.normal(size=(n, k if task == "multiclass" else 2 if task == "regression" else 1))
        head = head[:, 0] if task == "binary" else head
        got = blend_torch(
            probe, task, torch.tensor(x, dtype=torch.float32), torch.tensor(head, dtype=torch.float32)
        )
        if task == "regression":
            want = head.copy()
            want[:, 0] = probe.blend(x, head[:, 0])
        else:
            want = probe.blend(x, head)
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-4, atol=1e-4)


def test_a_fine_tuned_model_is_explained_without_context(rfm: object) -> None:
    from relfm_core.explain import explain_finetuned
    from relfm_core.finetune import FinetunedModel, LoadedFinetuned

    torch.manual_seed(1)
    model = FinetunedModel(rfm.model, "binary")  # type: ignore[attr-defined]
    model.eval()
    loaded = LoadedFinetuned(model, {"task_type": "binary", "classes": []}, TargetNorm("binary"))
    engine = rfm.engine(BUY)  # type: ignore[attr-defined]
    pairs = _pairs(rfm.graph, 6)  # type: ignore[attr-defined]
    rows = rfm.graph.table("users").lookup(pairs["user_id"].to_numpy())  # type: ignore[attr-defined]
    anchors = pairs["anchor_time"].to_numpy("datetime64[ns]").astype(np.int64)
    ex = explain_finetuned(loaded, rfm.inputs, engine, rows, anchors, ExplainConfig(steps=16))  # type: ignore[attr-defined]
    with torch.no_grad():
        t, feats, _ = rfm.inputs.build(engine, rows, anchors, TargetNorm("binary"))  # type: ignore[attr-defined]
        direct = torch.sigmoid(model(t, feats)).numpy()
    np.testing.assert_allclose(ex.local.prediction, direct, rtol=1e-5, atol=1e-6)
    total = ex.local.cells.groupby("entity")["contribution"].sum().reindex(range(6), fill_value=0.0)
    change = ex.local.prediction - ex.local.reference_prediction
    np.testing.assert_allclose(
        total.to_numpy() + ex.local.history, change, atol=0.1 * np.abs(change).max() + 1e-6
    )
    assert ex.global_ is not None and len(ex.global_.columns) > 5
