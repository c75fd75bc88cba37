"""`relfm labels GRAPH --query PQL [--at PAIRS.parquet] --out OUT.parquet`: a query's labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from jobs.commands.options import GraphArg, ParquetOut, QueryOpt


def register(app: typer.Typer) -> None:
    @app.command()
    def labels(
        graph: GraphArg,
        query: QueryOpt,
        out: ParquetOut,
        at: Annotated[
            Path | None,
            typer.Option(
                help="Parquet file of (entity key, anchor time) rows to label (default: every entity "
                "at the latest complete anchor)."
            ),
        ] = None,
        time_col: Annotated[str, typer.Option(help="Anchor time column of --at.")] = "anchor_time",
    ) -> None:
        """Compute a query's labels: for given (entity, anchor) rows, or for every entity now."""
        from pipelines import labels as labels_stage  # lazy: keeps `relfm --help` and other commands fast

        report = labels_stage.write_labels(graph, query, out, at=at, time_col=time_col)
        when = "" if report.anchor is None else f" at {np.datetime64(report.anchor, 'ns')}"
        Console().print(
            f"wrote {report.rows} rows ({report.labelled} labelled, {report.task_type}){when} to {out}",
            soft_wrap=True,
            highlight=False,
        )
