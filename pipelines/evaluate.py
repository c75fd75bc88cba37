"""The evaluate stage: backtest a query's model on the latest fully labelled window, report, track.

`relfm evaluate GRAPH --query PQL [--model M] [--anchor T] --out DIR` and the nightly job land here.
The backtest (relfm_core.evaluation) predicts every labelled entity at the anchor with the same code that
scores tonight's entities (pipelines.predict: a pretrained model zero-shot, or a fine-tuned one), so the
metrics describe the predictions that ship. The report (Markdown + self-contained HTML, pipelines.report)
holds the metrics, the plots and the global explanation: cohorts of the backtest entities by every column
the model reads, with their mean prediction and mean label. The same metrics, the report and the plots
go to MLflow.

For the nightly job:

    result = evaluate_and_report(graph, query, model, out_dir, anchor=None, tracking=None)
    result.metrics, result.report_html, result.report_md, result.run_id
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from pipelines import plots
from pipelines import tracking as mlflow_tracking
from pipelines.build_graph import ensure_graph
from pipelines.predict import RUN_MODES, LoadedModel, PredictOptions, load_model, predict_table
from pipelines.report import ReportContent, confusion_plot, importance_plot, write_report
from relfm_core.evaluation import Backtest, run_backtest
from relfm_core.labels import LabelEngine

COHORTS_FILE = "cohorts.csv"
IMPORTANCE_FILE = "importance.csv"
PREDICTIONS_FILE = "backtest.parquet"


@dataclass
class EvaluationResult:
    """What an evaluation produced: metrics, the report files, plots and the MLflow run (if tracked)."""

    query: str
    task_type: str
    anchor: int  # ns
    rows: int
    model: str
    metrics: dict[str, float]
    report_md: Path
    report_html: Path
    plots: dict[str, Path] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)  # predictions, cohorts, importance
    run_id: str | None = None
    global_explanation: Any = None  # relfm_core.explain.GlobalExplanation
    warnings: list[str] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def resolve_model(model: LoadedModel | str | Path | None) -> LoadedModel:
    """A loaded model, a `models:/name@alias` URI, a model folder or checkpoint, or the shipped weights."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str) and model.startswith("models:/"):
        from graph_engine.cache import relfm_home
        from pipelines import registry

        dst = relfm_home() / "models"
        dst.mkdir(parents=True, exist_ok=True)
        return load_model(registry.resolve(model, dst).folder)
    return load_model(model)


def backtest(
    graph: Graph,
    query: str,
    model: LoadedModel,
    anchor: Any = None,
    run_mode: str = "fast",
    max_entities: int | None = None,
    seed: int = 0,
    caught: list[str] | None = None,
) -> Backtest:
    """Predicts the labelled entities at the anchor exactly as the predict stage does and scores them."""
    if run_mode not in RUN_MODES:
        raise RelfmError(f"unknown run mode '{run_mode}' (choose {', '.join(RUN_MODES)})")
    if max_entities is not None and max_entities < 1:
        raise RelfmError(f"--max-entities must be at least 1, got {max_entities}")
    engine = LabelEngine(graph, query)

    def predictor(q: str, pairs: pd.DataFrame) -> pd.DataFrame:
        table = pa.Table.from_pandas(pairs, preserve_index=False)
        out, report = predict_table(graph, PredictOptions(q, run_mode=run_mode), table, model=model)
        if caught is not None:
            caught.extend(report.warnings)
        return out.to_pandas()

    return run_backtest(engine, query, predictor, anchor, max_entities, seed)


def cohorts_of_backtest(graph: Graph, bt: Backtest, model: LoadedModel) -> Any:
    """Global explanation over the backtest: cohorts of its entities by every column the model reads."""
    from graph_engine.cache import relfm_home
    from relfm_core.explain import ExplainConfig, explain_globally
    from relfm_core.features import GraphFeatures
    from relfm_core.inputs import InputBuilder
    from relfm_core.text_encoder import TextEncoder

    if bt.task_type not in ("binary", "regression", "multiclass"):
        return None
    engine = LabelEngine(graph, bt.query)
    base = model.model.model.base if model.kind == "fine-tuned" else model.model
    features = GraphFeatures(graph, TextEncoder(relfm_home() / "text-embeddings.sqlite"))
    builder = InputBuilder(graph, features, lags=base.cfg.lags)
    frame = bt.frame
    target = "probability" if bt.task_type == "binary" else "value"
    if bt.task_type == "multiclass":
        top = frame["label"].astype(str).value_counts().index[0]
        col = next((c for c in frame.columns if c == f"prob_{top}"), None)
        pred = frame[col].to_numpy(np.float64) if col else np.full(len(frame), np.nan)
        label = (frame["label"].astype(str) == top).to_numpy(np.float64)
        target = f"probability of {top}"
    else:
        pred = frame["prediction"].to_numpy(np.float64)
        label = frame["label"].to_numpy(np.float64)
    anchors = np.full(len(frame), bt.anchor, dtype=np.int64)
    return explain_globally(builder, engine, bt.entity_rows, anchors, pred, label, ExplainConfig(), target)


def _plots(bt: Backtest, out: Path, importance: pd.DataFrame | None, notes: list[str]) -> dict[str, Path]:
    """The plots that apply to the task; a plot that cannot be drawn becomes a note, not a failure."""
    frame = bt.frame
    figs: dict[str, Path] = {}

    def add(caption: str, make: Any) -> None:
        try:
            figs[caption] = make()
        except RelfmError as e:
            notes.append(f"{caption}: not drawn ({e.message})")

    if bt.task_type in ("binary", "regression"):
        y = frame["label"].to_numpy(np.float64)
        p = frame["prediction"].to_numpy(np.float64)
        if bt.task_type == "binary":
            add("ROC curve", lambda: plots.roc_curve_plot(y, p, out))
            add("calibration", lambda: plots.calibration_plot(y, p, out))
        else:
            add("predicted vs actual", lambda: plots.predicted_vs_actual_plot(y, p, out))
        add("score distribution", lambda: plots.score_distribution_plot(p, out))
    elif bt.task_type == "multiclass":
        add("confusion matrix", lambda: confusion_plot(frame["label"], frame["prediction"], out))
    if importance is not None and not importance.empty:
        add("global explanation", lambda: importance_plot(importance, out))
    return figs


def _setup(
    graph: Graph, bt: Backtest, model: LoadedModel, run_mode: str, max_entities: int | None
) -> dict[str, str]:
    return {
        "query": bt.query,
        "task type": bt.task_type.replace("_", " "),
        "graph": f"{graph.path} (id {graph.graph_id})",
        "model": f"{model.kind} {model.source}",
        "anchor": str(np.datetime64(bt.anchor, "ns")),
        "entities": f"{len(bt.frame):,}"
        + (f" (a sample of at most {max_entities:,})" if max_entities else ""),
        "run mode": run_mode if model.kind == "pretrained" else "fine-tuned (no context)",
        "evaluated": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d %H:%M UTC"),
    }


def _save_tables(out: Path, bt: Backtest, global_: Any) -> dict[str, Path]:
    files = {"predictions": out / PREDICTIONS_FILE}
    frame = bt.frame.copy()
    for c in ("label", "prediction", "scores"):
        if c in frame.columns and frame[c].dtype == object:
            frame[c] = [list(v) if isinstance(v, list | np.ndarray) else v for v in frame[c]]
    frame.to_parquet(files["predictions"], index=False)
    if global_ is not None:
        files["importance"] = out / IMPORTANCE_FILE
        files["cohorts"] = out / COHORTS_FILE
        global_.columns.to_csv(files["importance"], index=False)
        global_.cohorts.to_csv(files["cohorts"], index=False)
    return files


def mlflow_metric_name(name: str) -> str:
    return name.replace("@", "_at_")


def _track(
    result: EvaluationResult,
    graph: Graph,
    tracking_uri: str | None,
    experiment: str,
    run_name: str | None,
) -> str:
    """Logs params, metrics, report, plots and tables to the active MLflow run, or to a new one."""
    import mlflow

    def log() -> str:
        mlflow_tracking.log_params(
            {
                "stage": "evaluate",
                "query": result.query,
                "task_type": result.task_type,
                "anchor_time": str(np.datetime64(result.anchor, "ns")),
                "model": result.model,
                "backtest_entities": result.rows,
            }
        )
        mlflow_tracking.log_graph(graph)
        mlflow.log_metrics(
            {mlflow_metric_name(k): float(v) for k, v in result.metrics.items() if math.isfinite(float(v))}
        )
        for path in (result.report_md, result.report_html, *result.files.values()):
            mlflow.log_artifact(str(path), artifact_path="evaluation")
        for path in result.plots.values():
            mlflow.log_artifact(str(path), artifact_path="evaluation/plots")
        run = mlflow.active_run()
        assert run is not None
        return str(run.info.run_id)

    if mlflow.active_run() is not None:
        return log()
    name = run_name or f"evaluate {result.query[:60]}"
    with mlflow_tracking.run(
        name, experiment=experiment, tracking=tracking_uri, tags={"relfm.stage": "evaluate"}
    ):
        return log()


def evaluate_and_report(
    graph: Graph | str | Path,
    query: str,
    model: LoadedModel | str | Path | None,
    out_dir: str | Path,
    anchor: Any = None,
    tracking: str | bool | None = None,
    *,
    experiment: str = "relfm",
    run_name: str | None = None,
    run_mode: str = "fast",
    max_entities: int | None = None,
    explain: bool = True,
    seed: int = 0,
) -> EvaluationResult:
    """Backtests `query` at `anchor` (default: the latest fully labelled window), writes report.md,
    report.html, plots and tables to `out_dir`, and logs the same to MLflow: into the active run if there
    is one (the nightly job's), else into a new run of `experiment` at the `tracking` URI (None: the
    MLFLOW_TRACKING_URI or the embedded SQLite store; False: no MLflow). `model`: a loaded model, a model folder,
    a checkpoint, a `models:/` URI, or None for the shipped weights. Bad input: one-line RelfmError."""
    t0 = time.perf_counter()
    g = graph if isinstance(graph, Graph) else ensure_graph(graph)
    loaded = resolve_model(model)
    out = Path(out_dir)
    try:
        (out / "plots").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RelfmError(f"cannot create {out}: {e.strerror or e}") from None
    caught: list[str] = []
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        bt = backtest(g, query, loaded, anchor, run_mode, max_entities, seed, caught)
        t1 = time.perf_counter()
        global_ = cohorts_of_backtest(g, bt, loaded) if explain else None
    caught.extend(str(w.message) for w in ws)
    t2 = time.perf_counter()
    notes = list(dict.fromkeys(caught))
    importance = global_.columns if global_ is not None else None
    figs = _plots(bt, out / "plots", importance, notes)
    content = ReportContent(
        title="relfm evaluation",
        setup=_setup(g, bt, loaded, run_mode, max_entities),
        metrics=bt.metrics,
        figures=figs,
        importance=importance,
        cohorts=global_.cohorts if global_ is not None else None,
        explanation_lines=global_.summary if global_ is not None else [],
        notes=notes,
    )
    md, html_path = write_report(content, out)
    result = EvaluationResult(
        query,
        bt.task_type,
        bt.anchor,
        len(bt.frame),
        f"{loaded.kind} {loaded.source}",
        bt.metrics,
        md,
        html_path,
        figs,
        _save_tables(out, bt, global_),
        None,
        global_,
        notes,
    )
    t3 = time.perf_counter()
    if tracking is not False:
        uri = tracking if isinstance(tracking, str) else None
        result.run_id = _track(result, g, uri, experiment, run_name)
    result.seconds = {
        "backtest": t1 - t0,
        "explain": t2 - t1,
        "report": t3 - t2,
        "track": time.perf_counter() - t3,
    }
    return result
