"""The nightly job's publish step: one MLflow run per night that ties the night's results together.

Parameters: the query, run id and date, the model version scored with, the graph id and source versions,
the prediction table and its Delta version, the backtest window. Metrics: the backtest's (`backtest_*`),
the distribution of tonight's scores (`pred_*`) and drift against the previous night's run in the same
prediction table (`drift_psi`, `drift_ks`). Plots (pipelines.plots): score distribution, drift, and ROC +
calibration (binary) or predicted-vs-actual (regression) from the backtest's labelled predictions.
A `summary.json` artifact holds what every step consumed and produced (secrets masked). The same metrics
and plots make the night's evaluation report (`report.md` and a self-contained `report.html`), kept in
the job folder under reports/<run id>/ and logged to the MLflow run under `report/`: what a reviewer opens
before trusting tonight's table.
"""

from __future__ import annotations

import json
import tempfile
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graph_engine.errors import RelfmError
from pipelines.nightly_steps import Ctx, Decision

FP_TAG = "relfm.nightly_fingerprint"


def read_run(table: Path, run_id: str) -> pd.DataFrame:
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    data = DeltaTable(str(table)).to_pyarrow_dataset()
    return data.to_table(filter=ds.field("run_id") == run_id).to_pandas()


def previous_run(table: Path, run_id: str, run_date: date) -> str | None:
    """The latest run in the table dated before this one (the previous night), or None."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    data = DeltaTable(str(table)).to_pyarrow_dataset()
    runs = data.to_table(
        columns=["run_id", "run_date"],
        filter=(ds.field("run_id") != run_id) & (ds.field("run_date") < run_date),
    ).to_pandas()
    if runs.empty:
        return None
    latest = runs.drop_duplicates().sort_values(["run_date", "run_id"]).iloc[-1]
    return str(latest["run_id"])


def scores(frame: pd.DataFrame) -> np.ndarray:
    """One number per entity: the prediction, or for multiclass the top class's probability."""
    probs = [c for c in frame.columns if str(c).startswith("prob_")]
    if probs:
        return np.asarray(frame[probs].to_numpy(np.float64).max(axis=1))
    return np.asarray(frame["prediction"].to_numpy(np.float64))


def _existing_run(experiment: str, fp: str) -> str | None:
    import mlflow

    found = mlflow.search_runs(
        experiment_names=[experiment], filter_string=f"tags.`{FP_TAG}` = '{fp}'", output_format="list"
    )
    return str(found[0].info.run_id) if found else None


def publish(ctx: Ctx, decision: Decision) -> dict[str, Any]:
    import mlflow

    from graph_engine.shards.reader import Graph
    from pipelines import plots, tracking
    from pipelines.nightly_backtest import read_labelled

    cfg = ctx.cfg
    score, back = ctx.upstream("score"), ctx.upstream("backtest")
    graph, model = ctx.upstream("graph"), ctx.upstream("finetune")
    assert score is not None and back is not None and graph is not None and model is not None
    assert decision.fp is not None
    table = Path(score["table"])
    tonight = read_run(table, ctx.run_id)
    if tonight.empty:
        raise RelfmError(f"prediction table {table}: no rows for run {ctx.run_id} to publish")
    now = scores(tonight)
    prev_id = previous_run(table, ctx.run_id, ctx.run_date) if cfg.publish.drift else None
    previous = scores(read_run(table, prev_id)) if prev_id else None
    task = str(
        back.get("task_type")
        or ("multiclass" if any(str(c).startswith("prob_") for c in tonight.columns) else "binary")
    )
    y = labelled = None
    if back.get("path"):
        lab = read_labelled(Path(back["path"]))
        if task in ("binary", "regression"):
            y, labelled = lab["label"].to_numpy(np.float64), lab["prediction"].to_numpy(np.float64)
            if task == "binary" and len(np.unique(y)) < 2:
                ctx.reporter.log("publish: backtest labels hold one class only; no ROC or calibration plot")
                y = labelled = None

    uri = tracking.setup(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)
    existing = _existing_run(cfg.mlflow.experiment, decision.fp)
    tags = {
        "relfm.stage": "nightly",
        "relfm.job": cfg.name,
        "relfm.run_id": ctx.run_id,
        "relfm.run_date": ctx.run_date.isoformat(),
        "relfm.model": f"{model['name']}/{model['version']}",
        FP_TAG: decision.fp,
    }
    with tracking.run(
        f"nightly-{cfg.name}", experiment=cfg.mlflow.experiment, tracking=uri, tags=tags, run_id=existing
    ) as r:
        if existing is None:
            tracking.log_params(
                ctx.redact.deep(
                    {
                        "job": cfg.name,
                        "query": cfg.query,
                        "run_id": ctx.run_id,
                        "run_date": ctx.run_date.isoformat(),
                        "model_name": model["name"],
                        "model_version": model["version"],
                        "model_alias": model.get("alias"),
                        "prediction_rows": score["rows"],
                        "backtest_anchor": back.get("anchor"),
                        "backtest_rows": back.get("rows"),
                        "job_config": json.dumps(cfg.model_dump(mode="json"), sort_keys=True, default=str),
                    }
                )
            )
            tracking.log_graph(Graph.open(graph["path"]))
            tracking.log_table(table, int(score["version"]), int(score["rows"]))
        metrics = {f"backtest_{k}": float(v) for k, v in back.get("metrics", {}).items()}
        metrics.update(tracking.prediction_stats(now))
        mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in metrics.items() if np.isfinite(v)})
        drift: dict[str, float] | None = None
        names: list[str] = []
        paths: dict[str, Path] = {}
        report_dir = ctx.job_dir / "reports" / ctx.run_id
        with tempfile.TemporaryDirectory() as d:
            if cfg.publish.plots:
                paths = plots.log_plots(
                    task, now, y=y, previous=previous, out_dir=report_dir, labelled_pred=labelled
                )
                names = sorted(paths)
            if previous is not None:
                psi = plots.population_stability_index(now, previous)
                ks, pvalue = plots.ks_statistic(now, previous)
                drift = {"drift_psi": psi, "drift_ks": ks, "drift_ks_pvalue": pvalue}
                if not cfg.publish.plots:
                    mlflow.log_metrics({k: v for k, v in drift.items() if np.isfinite(v)})
            summary = Path(d) / "summary.json"
            summary.write_text(
                json.dumps(
                    ctx.redact.deep({"run_id": ctx.run_id, "steps": ctx.outputs}), indent=1, default=str
                )
            )
            mlflow.log_artifact(str(summary))
        report = _report(ctx, model, back, metrics, drift, paths, report_dir)
        mlflow.log_artifacts(str(report_dir), "report")
        return {
            "report": str(report),
            "mlflow_run_id": r.info.run_id,
            "experiment": cfg.mlflow.experiment,
            "tracking_uri": ctx.redact(uri),
            "plots": names,
            "drift": drift,
            "previous_run": prev_id,
        }


def _report(
    ctx: Ctx,
    model: dict[str, Any],
    back: dict[str, Any],
    metrics: dict[str, float],
    drift: dict[str, float] | None,
    figures: dict[str, Path],
    out_dir: Path,
) -> Path:
    """The night's evaluation report; returns the HTML file's path."""
    from pipelines.report import ReportContent, write_report

    cfg = ctx.cfg
    backtest = {k.removeprefix("backtest_"): v for k, v in metrics.items() if k.startswith("backtest_")}
    setup = {
        "query": cfg.query,
        "run": ctx.run_id,
        "model": f"models:/{model['name']}/{model['version']}",
        "backtest anchor": str(back.get("anchor")),
        "backtest entities": str(back.get("rows")),
    }
    notes = [
        "Metrics come from the backtest: the model scored at the latest anchor whose label window is "
        "complete, against the labels observed since.",
        "Distribution of tonight's scores: "
        + ", ".join(f"{k} {v:.4g}" for k, v in metrics.items() if k.startswith("pred_")),
    ]
    if drift:
        notes.append("Drift against the previous run: " + ", ".join(f"{k} {v:.4g}" for k, v in drift.items()))
    content = ReportContent(
        title=f"relfm nightly report: {cfg.name}, {ctx.run_date.isoformat()}",
        setup=ctx.redact.deep(setup),
        metrics=backtest,
        figures={name.replace("_", " "): path for name, path in sorted(figures.items())},
        notes=notes,
    )
    return write_report(content, out_dir)[1]
