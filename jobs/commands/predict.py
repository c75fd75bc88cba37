"""`relfm predict GRAPH --query PQL [--at PAIRS] [--context LABELLED] [--model M] --out OUT`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console

from jobs.commands.options import GraphArg, ParquetOut, QueryOpt


def register(app: typer.Typer) -> None:
    @app.command()
    def predict(
        graph: GraphArg,
        query: QueryOpt,
        out: ParquetOut,
        at: Annotated[
            Path | None,
            typer.Option(
                help="Parquet file of (entity key, anchor time) rows to predict (default: every entity "
                "of the query at the graph's latest time)."
            ),
        ] = None,
        time_col: Annotated[
            str, typer.Option(help="Anchor time column of --at and --context.")
        ] = "anchor_time",
        context: Annotated[
            Path | None,
            typer.Option(
                help="Parquet file of labelled (entity key, anchor time, label) rows to use as the "
                "in-context examples (default: generated from the query)."
            ),
        ] = None,
        label_col: Annotated[
            str | None, typer.Option(help="Label column of --context (default: label).")
        ] = None,
        model: Annotated[
            Path | None,
            typer.Option(
                help="A pretrained checkpoint folder or a fine-tuned model folder (default: the shipped "
                "weights)."
            ),
        ] = None,
        run_mode: Annotated[
            str, typer.Option(help="fast, normal or best: how many context examples the model reads.")
        ] = "fast",
        explain: Annotated[
            bool,
            typer.Option(
                "--explain",
                help="Add an `explanation` column (each entity's strongest contributors, from gradient "
                "saliency of its input cells) and write OUT-explanation.parquet (per column) and "
                "OUT-cohorts.parquet (global cohorts) beside OUT.",
            ),
        ] = False,
    ) -> None:
        """Predict a query: for given (entity, anchor) rows, or for every entity now."""
        from pipelines import predict as predict_stage  # lazy: keeps `relfm --help` and other commands fast

        opts = predict_stage.PredictOptions(
            query=query,
            at=at,
            time_col=time_col,
            context=context,
            label_col=label_col,
            model=model,
            run_mode=run_mode,
            explain=explain,
        )
        report = predict_stage.write_predictions(graph, opts, out)
        err = Console(stderr=True)
        for w in report.warnings:
            err.print(f"[yellow]warning:[/] {w}", highlight=False, soft_wrap=True)
        when = "" if report.anchor is None else f" at {np.datetime64(report.anchor, 'ns')}"
        ctx = f", {report.context_rows} context rows" if report.context_rows else ""
        secs = ", ".join(f"{k} {v:.2f} s" for k, v in report.seconds.items())
        Console().print(
            f"wrote {report.rows} predictions ({report.task_type}, {report.model}{ctx}){when} to {out} "
            f"({secs})",
            soft_wrap=True,
            highlight=False,
        )
        for name, path in report.files.items():
            Console().print(f"wrote {name} to {path}", soft_wrap=True, highlight=False)
