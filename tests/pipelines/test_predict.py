"""The predict stage on a tiny synthetic shop with a small random model: output layout per task type,
context handling (given, generated, never from the future), fine-tuned models, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from graph_engine.synthetic import default_config, generate
from pipelines.build_graph import ensure_graph
from pipelines.predict import PredictOptions, load_model, predict_table, write_predictions

BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
SPEND = "PREDICT AVG(orders.amount, 0, 90, days) FOR EACH users.user_id"
STATUS = "PREDICT FIRST(orders.status, 0, 30, days) FOR EACH users.user_id"
LINKS = "PREDICT LIST_DISTINCT(orders.item_id, 0, 30, days) RANK TOP 3 FOR EACH users.user_id"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """RELFM_HOME (text-embedding cache) in a temporary folder for the whole module."""
    root = tmp_path_factory.mktemp("predict-home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELFM_HOME", str(root))
        yield root


@pytest.fixture(scope="module")
def graph(home: Path) -> Graph:
    spec = generate(default_config("tiny"), home / "shop")
    return ensure_graph(spec, cache_dir=home / "graphs")


@pytest.fixture(scope="module")
def model_dir(home: Path) -> Path:
    """A small randomly initialised checkpoint, as `load_pretrained` reads them."""
    import torch

    from relfm_core.model import ModelConfig, RelationalFM
    from relfm_core.training import save_weights

    torch.manual_seed(0)
    cfg = ModelConfig(d=32, cell_dim=16, heads=2, graph_layers=1, icl_layers=1)
    out = home / "model"
    out.mkdir()
    save_weights(RelationalFM(cfg), out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({"model": cfg.to_dict()}))
    return out


def _pairs(graph: Graph, n: int = 12) -> pa.Table:
    users = graph.table("users")
    keys = users.key_values(np.arange(min(n, users.num_rows)))
    t = pd.Timestamp(graph.max_time()) - pd.Timedelta(days=60)
    return pa.table(
        {
            "user_id": pa.array(keys.tolist()),
            "anchor_time": pa.array([t.to_datetime64()] * len(keys), pa.timestamp("ns")),
            "note": [f"row {i}" for i in range(len(keys))],
            "prediction": [-1.0] * len(keys),  # replaced
        }
    )


@pytest.mark.unit
def test_binary_predictions_keep_the_pairs_and_are_probabilities(graph: Graph, model_dir: Path) -> None:
    pairs = _pairs(graph)
    out, report = predict_table(graph, PredictOptions(BUY, model=model_dir), pairs)
    assert out.column_names == ["user_id", "anchor_time", "note", "prediction"]
    assert out.column("note").to_pylist() == pairs.column("note").to_pylist()
    p = np.asarray(out.column("prediction").to_pylist(), dtype=float)
    assert len(p) == len(pairs) and ((p > 0) & (p < 1)).all()
    assert report.task_type == "binary" and report.rows == len(pairs) and report.context_rows > 0
    assert report.model.startswith("pretrained ")


@pytest.mark.unit
def test_without_pairs_every_entity_is_predicted_at_the_latest_time(graph: Graph, model_dir: Path) -> None:
    from relfm_core.labels import LabelEngine

    out, report = predict_table(graph, PredictOptions(SPEND, model=model_dir))
    expected = graph.table("users").key_values(LabelEngine(graph, SPEND).entity_rows(graph.max_time()))
    assert out.column("user_id").to_pylist() == expected.tolist()
    times = out.column("anchor_time").cast(pa.int64()).to_numpy()
    assert (times == graph.max_time()).all() and report.anchor == graph.max_time()
    assert report.task_type == "regression"
    assert np.isfinite(np.asarray(out.column("prediction").to_pylist(), dtype=float)).all()


@pytest.mark.unit
def test_a_prediction_does_not_depend_on_the_other_rows(graph: Graph, model_dir: Path) -> None:
    pairs = _pairs(graph, 10)
    opts = PredictOptions(BUY, model=model_dir)
    model = load_model(model_dir)
    full, _ = predict_table(graph, opts, pairs, model)
    part, _ = predict_table(graph, opts, pairs.slice(3, 4), model)
    np.testing.assert_allclose(
        part.column("prediction").to_pylist(), full.column("prediction").to_pylist()[3:7], rtol=1e-5
    )


@pytest.mark.unit
def test_multiclass_predicts_class_values_with_probabilities(graph: Graph, model_dir: Path) -> None:
    from relfm_core.labels import LabelEngine

    out, report = predict_table(graph, PredictOptions(STATUS, model=model_dir), _pairs(graph))
    classes = {str(c) for c in np.asarray(LabelEngine(graph, STATUS).classes()).tolist()}
    probs = [c for c in out.column_names if c.startswith("prob_")]
    assert report.task_type == "multiclass" and len(probs) >= 2
    assert {c[len("prob_") :] for c in probs} <= classes  # class values, not codes
    assert set(out.column("prediction").to_pylist()) <= classes
    p = np.stack([np.asarray(out.column(c).to_pylist(), dtype=float) for c in probs], axis=1)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    best = [probs[i][len("prob_") :] for i in p.argmax(1)]
    assert out.column("prediction").to_pylist() == best


@pytest.mark.unit
def test_link_prediction_ranks_keys_of_the_linked_table(graph: Graph, model_dir: Path) -> None:
    out, report = predict_table(graph, PredictOptions(LINKS, model=model_dir), _pairs(graph, 5))
    assert report.task_type == "link_prediction" and out.column_names[-2:] == ["prediction", "scores"]
    items = set(graph.table("items").key_values(np.arange(graph.table("items").num_rows)).tolist())
    for keys, scores in zip(
        out.column("prediction").to_pylist(), out.column("scores").to_pylist(), strict=True
    ):
        assert 0 < len(keys) <= 3 and set(keys) <= items and len(scores) == len(keys)
        assert scores == sorted(scores, reverse=True)


def _labelled(graph: Graph, query: str, tmp: Path, future_rows: int = 0, time_col: str = "when") -> Path:
    """A labelled table from the label engine's training table, plus `future_rows` rows whose label
    windows end after the prediction anchor (the model must not read them)."""
    from relfm_core.labels import LabelEngine, TableConfig, training_table

    engine = LabelEngine(graph, query)
    anchor = graph.max_time() - 60 * 86_400 * 10**9
    tables = training_table(engine, anchor, TableConfig(num_anchors=6, max_rows=400))
    df = pd.concat([tables.train, tables.val])
    out = pd.DataFrame({"user_id": df["entity"], time_col: df["anchor_time"], "y": df["label"].astype(bool)})
    if future_rows:
        late = out.head(future_rows).assign(
            **{time_col: pd.Timestamp(graph.max_time()) - pd.Timedelta(days=40)}
        )
        out = pd.concat([out, late])
    path = tmp / "labelled.parquet"
    out.to_parquet(path, index=False)
    return path


@pytest.mark.unit
def test_a_given_context_is_read_and_never_from_the_future(
    graph: Graph, model_dir: Path, tmp_path: Path
) -> None:
    path = _labelled(graph, BUY, tmp_path, future_rows=5)
    n_past = len(pd.read_parquet(path)) - 5
    pairs = _pairs(graph).rename_columns(["user_id", "when", "note", "prediction"])
    opts = PredictOptions(BUY, at=None, time_col="when", context=path, label_col="y", model=model_dir)
    out, report = predict_table(graph, opts, pairs)
    assert report.context_rows == min(n_past, 256)  # fast mode reads at most 256
    p = np.asarray(out.column("prediction").to_pylist(), dtype=float)
    assert ((p > 0) & (p < 1)).all()


@pytest.mark.slow
def test_fine_tuned_models_score_without_context(graph: Graph, model_dir: Path, tmp_path: Path) -> None:
    from relfm_core.features import GraphFeatures
    from relfm_core.finetune import FinetuneConfig, finetune
    from relfm_core.labels import LabelEngine, TableConfig, training_table
    from relfm_core.text_encoder import TextEncoder
    from relfm_core.weights import load_pretrained

    engine = LabelEngine(graph, BUY)
    tables = training_table(engine, graph.max_time(), TableConfig(num_anchors=4, val_anchors=1, max_rows=300))
    text = TextEncoder(tmp_path / "text.sqlite")
    result = finetune(
        graph,
        GraphFeatures(graph, text),
        load_pretrained(model_dir),
        engine,
        tables.train,
        tables.val,
        tmp_path / "ft",
        FinetuneConfig(epochs=1, batch_size=64),
    )
    pairs = _pairs(graph)
    out, report = predict_table(graph, PredictOptions(BUY, model=result.path), pairs)
    assert report.model.startswith("fine-tuned ") and report.context_rows == 0
    p = np.asarray(out.column("prediction").to_pylist(), dtype=float)
    assert len(p) == len(pairs) and ((p > 0) & (p < 1)).all()
    with pytest.raises(RelfmError, match="fine-tuned for"):
        predict_table(graph, PredictOptions(SPEND, model=result.path), pairs)
    with pytest.raises(RelfmError, match="scores without context"):
        labelled = _labelled(graph, BUY, tmp_path, time_col="anchor_time")
        predict_table(graph, PredictOptions(BUY, context=labelled, label_col="y", model=result.path), pairs)


@pytest.mark.slow
def test_fine_tuned_link_models_rank_keys_of_the_linked_table(
    graph: Graph, model_dir: Path, tmp_path: Path
) -> None:
    from relfm_core.features import GraphFeatures
    from relfm_core.finetune import FinetuneConfig, finetune
    from relfm_core.labels import LabelEngine, TableConfig, training_table
    from relfm_core.text_encoder import TextEncoder
    from relfm_core.weights import load_pretrained

    engine = LabelEngine(graph, LINKS)
    tables = training_table(engine, graph.max_time(), TableConfig(num_anchors=4, val_anchors=1, max_rows=300))
    text = TextEncoder(tmp_path / "text.sqlite")
    features = GraphFeatures(graph, text)
    cfg = FinetuneConfig(epochs=1, batch_size=64)
    result = finetune(
        graph, features, load_pretrained(model_dir), engine, tables.train, tables.val, tmp_path / "ft", cfg
    )
    out, report = predict_table(graph, PredictOptions(LINKS, model=result.path), _pairs(graph, 5))
    assert report.model.startswith("fine-tuned ") and out.column_names[-2:] == ["prediction", "scores"]
    items = set(graph.table("items").key_values(np.arange(graph.table("items").num_rows)).tolist())
    for keys, scores in zip(
        out.column("prediction").to_pylist(), out.column("scores").to_pylist(), strict=True
    ):
        assert 0 < len(keys) <= 3 and set(keys) <= items and scores == sorted(scores, reverse=True)


@pytest.mark.unit
def test_write_predictions_writes_parquet_and_times_its_steps(
    graph: Graph, model_dir: Path, tmp_path: Path
) -> None:
    pq.write_table(_pairs(graph, 3), tmp_path / "pairs.parquet")
    opts = PredictOptions(BUY, at=tmp_path / "pairs.parquet", model=model_dir)
    report = write_predictions(graph.path, opts, tmp_path / "out" / "p.parquet")
    out = pq.read_table(tmp_path / "out" / "p.parquet")
    assert out.num_rows == 3 and "prediction" in out.column_names
    assert set(report.seconds) == {"graph", "model", "features", "predict", "write"}


@pytest.mark.unit
@pytest.mark.parametrize(
    ("query", "change", "message"),
    [
        ("PREDICT COUNT(ordrs.*, 0, 30, days) > 0 FOR EACH users.user_id", {}, "unknown table 'ordrs'"),
        (BUY, {"drop": "user_id"}, "has no column 'user_id'"),
        (BUY, {"drop": "anchor_time"}, "has no column 'anchor_time'"),
        (BUY, {"key": 999_999}, "unknown key 999999 in 'users.user_id'"),
        (BUY, {"run_mode": "turbo"}, "unknown run mode 'turbo'"),
        (BUY, {"label_col": "y"}, "give --context too"),
        (BUY, {"context_without": "y"}, "has no label column 'y'"),
        (BUY, {"context_label": 2.0}, "binary labels are true/false or 0/1"),
        (
            "PREDICT LIST_DISTINCT(orders.status, 0, 30, days) CLASSIFY FOR EACH users.user_id",
            {},
            "not multilabel yet",
        ),
        (LINKS, {"context_without": "y"}, "without a labelled context"),
    ],
)
def test_bad_input_is_a_one_line_error(
    graph: Graph, model_dir: Path, tmp_path: Path, query: str, change: dict[str, object], message: str
) -> None:
    pairs = _pairs(graph, 4)
    opts: dict[str, object] = {"model": model_dir}
    if "drop" in change:
        pairs = pairs.drop_columns([str(change["drop"])])
    if "key" in change:
        pairs = pairs.set_column(0, "user_id", pa.array([change["key"]] * 4, pa.int64()))
    if "run_mode" in change:
        opts["run_mode"] = change["run_mode"]
    if "label_col" in change:
        opts["label_col"] = change["label_col"]
    if "context_without" in change or "context_label" in change:
        df = pd.DataFrame(
            {"user_id": pairs.column("user_id").to_pylist(), "anchor_time": pd.Timestamp("2022-01-01")}
        )
        if "context_label" in change:
            df["y"] = np.full(len(df), change["context_label"], dtype=np.float64)
        df.to_parquet(tmp_path / "ctx.parquet", index=False)
        opts.update(context=tmp_path / "ctx.parquet", label_col="y")
    with pytest.raises(RelfmError) as err:
        predict_table(graph, PredictOptions(query, **opts), pairs)  # type: ignore[arg-type]
    assert message in str(err.value) and "\n" not in str(err.value)
