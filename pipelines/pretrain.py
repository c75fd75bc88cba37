"""The pretraining stage: `relfm pretrain CONFIG` with MLflow tracking and a progress bar.

One process by default. With `workers` > 1 (or a DeepSpeed config in `train.deepspeed`), the same loop
(relfm_core.pretrain.loop.pretrain) runs data-parallel on ranks placed by pipelines.launch, Ray Train
or local processes, with GPUs when asked: rank 0 appends metrics to the run folder, and this driver, which
owns the MLflow run, logs them as they come.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from graph_engine.errors import RelfmError
from graph_engine.yaml_file import read_yaml
from pipelines import tracking
from pipelines.launch import launch
from pipelines.train_loop import METRICS_FILE, StepMetrics, _disable_deepspeed_shm, device_for
from relfm_core.pretrain.loop import PretrainConfig, parallel_config_error, pretrain
from relfm_core.training import TrainConfig


def load_config(path: str | Path) -> PretrainConfig:
    p = Path(path)
    data = read_yaml(p, "pretrain config")
    try:
        return PretrainConfig.model_validate(data or {})
    except ValidationError as e:
        err = e.errors()[0]
        raise RelfmError(f"pretrain config {p}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


@dataclass(frozen=True)
class Placement:
    """Where the ranks run: `workers` data-parallel ranks, by `launcher` (ray or local), on GPUs or not."""

    workers: int = 1
    launcher: str = "local"
    use_gpu: bool = False
    ray_address: str | None = None


def run(
    config_path: str | Path,
    out_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
    tracking_uri: str | None = None,
    placement: Placement | None = None,
) -> Path:
    cfg = load_config(config_path)
    place = placement or Placement()
    if place.workers < 1:
        raise RelfmError(f"pretrain: --workers must be at least 1, not {place.workers}")
    distributed = place.workers > 1 or cfg.train.get("deepspeed") is not None
    error = parallel_config_error(cfg.train.get("deepspeed"), place.workers)
    if error is not None:
        raise RelfmError(f"pretrain config {config_path}: {error}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "mlflow_run_id"
    run_id = run_file.read_text().strip() if run_file.is_file() else None
    with tracking.run(
        f"pretrain-{cfg.name}", experiment="relfm-pretrain", tracking=tracking_uri, run_id=run_id
    ) as r:
        run_file.write_text(r.info.run_id)
        if run_id is None:
            tracking.log_params(
                {"config": json.dumps(cfg.model_dump()), "name": cfg.name, "workers": place.workers}
            )
        if not distributed:
            final = pretrain(cfg, out, tracking.metrics_logger(), progress, device_for(place.use_gpu))
            assert final is not None
        else:
            steps = int(cfg.train.get("steps", TrainConfig().steps))
            on_step = (lambda s: progress(s, steps)) if progress is not None else None
            uri = tracking.tracking_uri(tracking_uri)
            worker_cfg = {
                "config": cfg.model_dump(),
                "run_dir": str(out),
                "output": str(out / "final"),
                "use_gpu": place.use_gpu,
                "deepspeed": cfg.train.get("deepspeed"),
            }
            with tracking.MetricsFollower(out / METRICS_FILE, r.info.run_id, uri, on_step=on_step):
                result = launch(
                    pretrain_worker,
                    worker_cfg,
                    place.workers,
                    place.launcher,
                    place.use_gpu,
                    out,
                    place.ray_address,
                )
            final = Path(result["model_dir"])
        tracking.log_artifact(final / "config.json", "model")
        return final


def pretrain_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """One rank of a distributed pretraining run (called by pipelines.launch); rank 0 returns the weights'
    folder."""
    if not config["use_gpu"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
        if config.get("deepspeed") is not None:
            _disable_deepspeed_shm()
    cfg = PretrainConfig.model_validate(config["config"])
    run_dir = Path(config["run_dir"])
    main = int(os.environ.get("RANK", "0")) == 0
    final = pretrain(
        cfg, run_dir, StepMetrics(run_dir) if main else None, None, device_for(config["use_gpu"])
    )
    return {"model_dir": str(final)} if final is not None else None


def describe(final: Path) -> dict[str, Any]:
    return dict(json.loads((final / "config.json").read_text()))
