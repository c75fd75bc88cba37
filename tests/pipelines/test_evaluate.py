"""The evaluate stage on the tiny synthetic shop with a small random model: backtest, report (Markdown +
self-contained HTML with plots and the global explanation) and the same metrics in a real MLflow SQLite
store the test starts; also the nightly job's entry point logging into its own active run."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from pipelines.evaluate import evaluate_and_report, mlflow_metric_name
from relfm_core.metrics import compute_metrics

pytestmark = pytest.mark.unit
BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
SPEND = "PREDICT AVG(orders.amount, 0, 90, days) FOR EACH users.user_id"
LINKS = "PREDICT LIST_DISTINCT(orders.item_id, 0, 30, days) RANK TOP 3 FOR EACH users.user_id"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    root = tmp_path_factory.mktemp("evaluate")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RELFM_HOME", str(root / "home"))
        mp.setenv("RELFM_TEXT_ENCODER", "hashed")
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield root
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def graph(env: Path) -> Graph:
    from graph_engine.synthetic import default_config, generate
    from pipelines.build_graph import ensure_graph

    return ensure_graph(generate(default_config("tiny"), env / "shop"), cache_dir=env / "graphs")


@pytest.fixture(scope="module")
def model_dir(env: Path) -> Path:
    from relfm_core.model import ModelConfig, RelationalFM
    from relfm_core.training import save_weights

    torch.manual_seed(0)
    cfg = ModelConfig(d=32, cell_dim=16, heads=2, graph_layers=1, icl_layers=1)
    out = env / "model"
    out.mkdir()
    save_weights(RelationalFM(cfg), out / "model.safetensors")
    (out / "config.json").write_text(json.dumps({"model": cfg.to_dict()}))
    return out


@pytest.fixture(scope="module")
def tracking_uri(env: Path) -> str:
    return f"sqlite:///{env / 'mlflow.db'}"


def test_binary_report_and_mlflow_hold_the_same_metrics(
    graph: Graph, model_dir: Path, env: Path, tracking_uri: str
) -> None:
    import mlflow

    out = env / "buy"
    result = evaluate_and_report(graph, BUY, model_dir, out, tracking=tracking_uri, experiment="eval-test")
    assert result.task_type == "binary" and result.rows > 20
    assert set(result.metrics) >= {"auroc", "average_precision", "accuracy", "f1", "calibration_error"}
    # the metrics are those of the backtest table written beside the report
    frame = pd.read_parquet(result.files["predictions"])
    assert len(frame) == result.rows
    again = compute_metrics("binary", frame["label"].to_numpy(), frame)
    assert again == pytest.approx(result.metrics, nan_ok=True)
    # report: both formats, plots on disk, embedded in the HTML, global explanation included
    md, html = result.report_md.read_text(), result.report_html.read_text()
    assert {"ROC curve", "calibration", "score distribution", "global explanation"} <= set(result.plots)
    assert all(p.is_file() and p.stat().st_size > 1000 for p in result.plots.values())
    assert "| AUROC |" in md and "plots/roc_curve.png" in md and "## Global explanation" in md
    assert html.count("data:image/png;base64,") == len(result.plots) and "<h2>Global explanation</h2>" in html
    assert f"{result.metrics['auroc']:.4g}" in md
    imp = pd.read_csv(result.files["importance"])
    assert {"orders", "items", "users"} <= set(imp["table"]) and (imp["importance"] >= 0).all()
    # MLflow: a real SQLite store, read back through the client
    client = mlflow.tracking.MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    for k, v in result.metrics.items():
        if math.isfinite(v):
            assert run.data.metrics[mlflow_metric_name(k)] == pytest.approx(v)
    assert run.data.params["query"] == BUY and run.data.tags["relfm.stage"] == "evaluate"
    arts = {a.path for a in client.list_artifacts(result.run_id, "evaluation")}
    assert {"evaluation/report.md", "evaluation/report.html", "evaluation/plots"} <= arts
    assert client.get_experiment(run.info.experiment_id).name == "eval-test"


def test_regression_at_a_given_anchor_into_the_callers_run(
    graph: Graph, model_dir: Path, env: Path, tracking_uri: str
) -> None:
    """The nightly job calls evaluate_and_report inside its own MLflow run: metrics land there."""
    import mlflow

    from pipelines import tracking
    from relfm_core.labels import LabelEngine

    anchor = pd.Timestamp(LabelEngine(graph, SPEND).latest_complete_anchor()) - pd.Timedelta(days=30)
    with tracking.run("nightly", experiment="eval-test", tracking=tracking_uri) as run:
        result = evaluate_and_report(
            graph, SPEND, model_dir, env / "spend", anchor=str(anchor), max_entities=25
        )
    assert result.run_id == run.info.run_id
    assert result.anchor == anchor.value and result.rows <= 25
    assert {"mae", "rmse", "mape", "r2"} <= set(result.metrics)
    assert "predicted vs actual" in result.plots
    logged = mlflow.tracking.MlflowClient(tracking_uri).get_run(run.info.run_id).data.metrics
    assert logged["mae"] == pytest.approx(result.metrics["mae"])


def test_link_prediction_without_mlflow(graph: Graph, model_dir: Path, env: Path) -> None:
    result = evaluate_and_report(graph, LINKS, model_dir, env / "links", tracking=False)
    assert result.run_id is None and result.global_explanation is None
    assert {"map@3", "recall@3", "ndcg@3", "coverage", "popularity_bias"} <= set(result.metrics)
    assert "MAP@3" in result.report_md.read_text()
    frame = pd.read_parquet(result.files["predictions"])
    assert all(len(p) <= 3 for p in frame["prediction"]) and np.isfinite(result.metrics["coverage"])


@pytest.mark.parametrize(
    ("query", "kw", "message"),
    [
        ("PREDICT COUNT(ordrs.*, 0, 30, days) > 0 FOR EACH users.user_id", {}, "unknown table 'ordrs'"),
        (BUY, {"anchor": "2999-01-01"}, "too late to backtest"),
        (BUY, {"run_mode": "turbo"}, "unknown run mode"),
    ],
)
def test_bad_input_is_a_one_line_error(
    graph: Graph, model_dir: Path, env: Path, query: str, kw: dict[str, str], message: str
) -> None:
    with pytest.raises(RelfmError, match=message) as e:
        evaluate_and_report(graph, query, model_dir, env / "bad", tracking=False, **kw)  # type: ignore[arg-type]
    assert "\n" not in str(e.value)
