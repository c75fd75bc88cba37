"""`relfm score CONFIG.yaml`: score every entity of a query into the Delta prediction table."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def register(app: typer.Typer) -> None:
    @app.command()
    def score(
        config: Annotated[Path, typer.Argument(help="Scoring config (YAML).")],
        run_id: Annotated[str | None, typer.Option(help="Run id (re-using one replaces its rows).")] = None,
        run_date: Annotated[
            str | None, typer.Option(help="Run date, YYYY-MM-DD (default today, UTC).")
        ] = None,
        model: Annotated[
            str | None, typer.Option(help="models:/<name>@<alias>, models:/<name>/<v> or a folder.")
        ] = None,
        workers: Annotated[int | None, typer.Option(help="Scoring actors (overrides the config).")] = None,
        batch_size: Annotated[
            int | None, typer.Option(help="Entities per batch (overrides the config).")
        ] = None,
    ) -> None:
        """Score with a Ray Data actor pool; one atomic Delta commit per run; tracked in MLflow."""
        from pipelines.configs import ScoreStageConfig, load_config

        console = Console()
        when = _date(run_date) if run_date else None
        cfg = load_config(
            config,
            ScoreStageConfig,
            {
                "run_id": run_id,
                "run_date": when,
                "model": model,
                "workers": workers,
                "batch_size": batch_size,
            },
        )
        from pipelines import score as stage  # heavy (torch, Ray): imported once the config is valid

        with Progress(
            TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console
        ) as bar:
            task = bar.add_task("entities", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            report = stage.run(
                cfg, progress=progress, log=lambda m: console.print(m, soft_wrap=True, highlight=False)
            )
        console.print(
            f"wrote {report.rows} predictions to {report.table} (Delta version {report.version}, run id "
            f"{report.run_id}) with {report.model_name} version {report.model_version}: "
            f"{report.entities_per_s:.0f} entities/s on {report.workers} worker(s); MLflow run {report.mlflow_run_id}",
            soft_wrap=True,
            highlight=False,
        )


def _date(value: str) -> date:
    from graph_engine.errors import RelfmError

    try:
        return date.fromisoformat(value)
    except ValueError:
        raise RelfmError(f"--run-date '{value}': expected YYYY-MM-DD") from None
