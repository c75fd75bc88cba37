"""`relfm evaluate GRAPH --query PQL [--model M] [--anchor T] [--out DIR]`: backtest, report, MLflow."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from jobs.commands.options import GraphArg, QueryOpt


def register(app: typer.Typer) -> None:
    @app.command()
    def evaluate(
        graph: GraphArg,
        query: QueryOpt,
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Folder for report.md, report.html, plots and tables.")
        ] = Path("evaluation"),
        model: Annotated[
            str | None,
            typer.Option(
                help="A fine-tuned model folder, a pretrained checkpoint, or a models:/name@alias URI "
                "(default: the shipped weights, zero-shot)."
            ),
        ] = None,
        anchor: Annotated[
            str | None,
            typer.Option(
                help="Backtest anchor time, e.g. 2024-01-31 (default: the latest anchor whose target "
                "window has closed)."
            ),
        ] = None,
        run_mode: Annotated[
            str, typer.Option(help="fast, normal or best: how many context examples a zero-shot model reads.")
        ] = "fast",
        max_entities: Annotated[
            int | None, typer.Option(help="Score a seeded sample of at most this many entities.")
        ] = None,
        explain: Annotated[
            bool, typer.Option(help="Add the global explanation (cohorts per column) to the report.")
        ] = True,
        tracking_uri: Annotated[
            str | None,
            typer.Option(help="MLflow tracking URI (default: MLFLOW_TRACKING_URI or the embedded store)."),
        ] = None,
        mlflow: Annotated[bool, typer.Option(help="Log metrics, report and plots to MLflow.")] = True,
        experiment: Annotated[str, typer.Option(help="MLflow experiment.")] = "relfm",
    ) -> None:
        """Backtest a query on the latest fully labelled window: metrics, a report with plots, MLflow."""
        from pipelines import evaluate as evaluate_stage  # matplotlib and the model only when used

        result = evaluate_stage.evaluate_and_report(
            graph,
            query,
            model,
            out,
            anchor=anchor,
            tracking=tracking_uri if mlflow else False,
            experiment=experiment,
            run_mode=run_mode,
            max_entities=max_entities,
            explain=explain,
        )
        console = Console()
        err = Console(stderr=True)
        for w in result.warnings:
            err.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
        when = np.datetime64(result.anchor, "ns")
        t = Table("metric", "value", title=f"{result.task_type} backtest at {when}: {result.rows} entities")
        for k, v in result.metrics.items():
            t.add_row(k, "n/a" if not math.isfinite(v) else f"{v:.4g}")
        console.print(t)
        if result.global_explanation is not None and result.global_explanation.summary:
            console.print("what the model relies on most:", highlight=False)
            for line in result.global_explanation.summary[:3]:
                console.print(f"  {line}", highlight=False, soft_wrap=True)
        console.print(f"report: {result.report_html}", soft_wrap=True, highlight=False)
        console.print(f"report: {result.report_md}", soft_wrap=True, highlight=False)
        if result.run_id is not None:
            console.print(f"MLflow run: {result.run_id}", soft_wrap=True, highlight=False)
