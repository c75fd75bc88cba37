"""`relfm run JOB.yaml`: the nightly job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from jobs.config import load_job
from pipelines import nightly


def register(app: typer.Typer) -> None:
    @app.command()
    def run(job: Annotated[Path, typer.Argument(help="Job config (YAML).")]) -> None:
        """Run the nightly job: refresh the warehouse snapshot and the graph."""
        console = Console()
        cfg = load_job(job)
        home = nightly.home_dir(cfg.home)
        warehouse = cfg.path(cfg.warehouse.path) if cfg.warehouse.demo else None
        results = nightly.run_job(
            home, warehouse, cfg.path(cfg.graph.spec), cfg.graph.engine, log=console.print
        )
        t = Table("step", "status", title=f"{cfg.name}: finished")
        t.add_column("output", overflow="fold")  # paths are what users copy: wrap them, never cut them
        t.add_column("detail")
        for r in results:
            t.add_row(r.step, r.status, r.output, r.detail)
        console.print(t)
        console.print(f"outputs are under {home}", soft_wrap=True)
