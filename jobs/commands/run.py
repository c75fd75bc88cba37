"""`relfm run JOB.yaml`: the nightly job (pipelines.nightly), with progress bars and a summary table.

`--step` runs single stages (what Airflow and Databricks tasks call), `--dry-run` prints the plan,
`--force` redoes a finished step, `--summary-json` leaves the summary where a scheduler can read it.
"""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from graph_engine.errors import RelfmError

STYLE = {
    "done": "green",
    "skipped": "cyan",
    "up to date": "cyan",
    "would run": "yellow",
    "would skip": "cyan",
    "failed": "bold red",
    "not run": "dim",
    "disabled": "dim",
}


class RichReporter:
    """Step lines, log lines, and a live bar for the running step (terminals only: schedulers' logs get
    plain lines instead of redrawn bars)."""

    def __init__(self, console: Console, quiet: bool = False) -> None:
        self.console = console
        self.quiet = quiet  # a dry run: the plan table says it all
        self.live = console.is_terminal
        self.bar = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.fields[step]}[/]"),
            TextColumn("{task.description}", style="dim"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=True,
            disable=not self.live,
        )
        self.task: TaskID | None = None

    def start(self, step: str, reason: str) -> None:
        self.console.print(f"[bold]{step}[/]: running — {reason}", highlight=False, soft_wrap=True)
        self.bar.start()
        self.task = self.bar.add_task("", total=None, step=step)

    def log(self, message: str) -> None:
        self.console.print(f"  {message}", highlight=False, soft_wrap=True, markup=False)

    def status(self, message: str) -> None:
        if self.live and self.task is not None:
            self.bar.update(self.task, description=message[:60])
        else:
            self.log(message)

    def progress(self, done: int, total: int | None) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=done, total=total)

    def finish(self, result: Any) -> None:
        if self.task is not None:
            self.bar.remove_task(self.task)
            self.bar.stop()
            self.task = None
        if self.quiet:
            return
        style = STYLE.get(result.status, "")
        took = f" in {_seconds(result.seconds)}" if result.seconds else ""
        self.console.print(
            f"[bold]{result.step}[/]: [{style}]{result.status}[/]{took} — {result.reason}",
            highlight=False,
            soft_wrap=True,
        )


def _seconds(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def summary_table(report: Any, title: str) -> Table:
    """One row per step; columns that are empty for every step (a dry run has no outputs) are left out."""
    rows = [
        {
            "step": r.step,
            "status": f"[{STYLE.get(r.status, '')}]{r.status}[/]",
            "why": escape(r.reason),
            # the detail goes under the output: one column fewer keeps 80-column terminals readable
            "output": "\n".join(
                x for x in (escape(r.output), f"[dim]{escape(r.detail)}[/]" if r.detail else "") if x
            ),
            "time": _seconds(r.seconds) if r.seconds else "",
        }
        for r in report.steps
    ]
    t = Table(title=title, title_justify="left")
    columns = [c for c in ("step", "status", "why", "output", "time") if any(r[c] for r in rows)]
    for c in columns:
        # paths are what users copy: wrap them, never cut them
        t.add_column(
            c,
            style="bold" if c == "step" else None,
            overflow="fold",
            justify="right" if c == "time" else "left",
        )
    for r in rows:
        t.add_row(*(r[c] for c in columns))
    return t


def register(app: typer.Typer) -> None:
    @app.command()
    def run(
        job: Annotated[Path, typer.Argument(help="Job config (YAML).")],
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print which steps would run or be skipped, and why.")
        ] = False,
        step: Annotated[
            list[str] | None,
            typer.Option(
                "--step",
                help="Run only this step (repeatable): warehouse, graph, finetune, score, backtest, publish. "
                "The steps it depends on must be up to date.",
            ),
        ] = None,
        force: Annotated[
            list[str] | None,
            typer.Option("--force", help="Redo this step even if it is up to date (repeatable)."),
        ] = None,
        run_date: Annotated[
            str | None, typer.Option(help="The night being run, YYYY-MM-DD (default today, UTC).")
        ] = None,
        summary_json: Annotated[
            Path | None, typer.Option(help="Also write the summary (steps, outputs) to this JSON file.")
        ] = None,
    ) -> None:
        """The nightly job: refresh the graph when sources change → fine-tune when due → score every entity
        → backtest → publish to MLflow. Finished steps are skipped; reruns resume."""
        from jobs.config import load_job
        from pipelines import nightly

        console = Console()
        cfg = load_job(job)
        when = _date(run_date) if run_date else None
        report = nightly.run_job(
            cfg, when, step or (), force or (), dry_run=dry_run, reporter=RichReporter(console, quiet=dry_run)
        )
        title = f"{cfg.name} — run {report.run_id}: " + ("plan (dry run)" if dry_run else "summary")
        console.print()
        console.print(summary_table(report, title))
        for name, text in report.facts:
            console.print(f"[bold]{name}:[/] {text}", highlight=False, soft_wrap=True)
        console.print(f"outputs are under {report.home}", soft_wrap=True, highlight=False)
        if summary_json is not None:
            summary_json.parent.mkdir(parents=True, exist_ok=True)
            summary_json.write_text(json.dumps(report.to_json(), indent=1, default=str))
        if report.error is not None:
            failed = next((r for r in report.steps if r.status == "failed"), None)
            where = f"step {failed.step} failed: " if failed else ""
            if isinstance(report.error, RelfmError):
                raise RelfmError(where + (failed.reason if failed else str(report.error)))
            if os.environ.get("RELFM_DEBUG"):
                raise report.error
            Console(stderr=True).print(
                f"[bold red]error:[/] {where}{failed.reason if failed else ''} (RELFM_DEBUG=1 shows the traceback)",
                highlight=False,
                soft_wrap=True,
            )
            raise typer.Exit(1)


def _date(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise RelfmError(f"--run-date '{value}': expected YYYY-MM-DD") from None
