"""`relfm finetune CONFIG.yaml`: fine-tune on a query, log the model to MLflow and register it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def register(app: typer.Typer) -> None:
    @app.command()
    def finetune(
        config: Annotated[Path, typer.Argument(help="Fine-tuning config (YAML).")],
        workers: Annotated[int | None, typer.Option(help="Training ranks (overrides the config).")] = None,
        launcher: Annotated[
            str | None, typer.Option(help="ray (Ray Train) or local (processes here).")
        ] = None,
        register_model: Annotated[
            bool, typer.Option("--register/--no-register", help="Register the model in the MLflow registry.")
        ] = True,
    ) -> None:
        """Fine-tune with DeepSpeed or plain torch on N ranks; resumes a killed run of the same config."""
        from pipelines.configs import FinetuneStageConfig, load_config

        console = Console()
        cfg = load_config(config, FinetuneStageConfig, {"workers": workers, "launcher": launcher})
        if not register_model:
            cfg.registered_model_name = None
        from pipelines import finetune as stage  # heavy (torch, Ray): imported once the config is valid

        report = stage.run(cfg, log=lambda m: console.print(m, soft_wrap=True, highlight=False))
        m = report.metrics
        console.print(
            f"fine-tuned in {report.steps} steps: val_score {m.get('val_score', float('nan')):.4f}, "
            f"{report.samples_per_s:.0f} samples/s; model {report.model_dir}",
            soft_wrap=True,
            highlight=False,
        )
        if report.registered_name:
            where = f"@{report.alias}" if report.alias else ""
            console.print(
                f"registered {report.registered_name} version {report.registered_version}{where} "
                f"(MLflow run {report.mlflow_run_id})",
                soft_wrap=True,
                highlight=False,
            )
