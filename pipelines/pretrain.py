"""The pretraining stage: `relfm pretrain CONFIG` with MLflow tracking and a progress bar."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from graph_engine.errors import RelfmError
from graph_engine.yaml_file import read_yaml
from pipelines import tracking
from relfm_core.pretrain.loop import PretrainConfig, pretrain


def load_config(path: str | Path) -> PretrainConfig:
    p = Path(path)
    data = read_yaml(p, "pretrain config")
    try:
        return PretrainConfig.model_validate(data or {})
    except ValidationError as e:
        err = e.errors()[0]
        raise RelfmError(f"pretrain config {p}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def run(
    config_path: str | Path,
    out_dir: str | Path,
    progress: Callable[[int, int], None] | None = None,
    tracking_uri: str | None = None,
) -> Path:
    cfg = load_config(config_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_file = out / "mlflow_run_id"
    run_id = run_file.read_text().strip() if run_file.is_file() else None
    with tracking.run(
        f"pretrain-{cfg.name}", experiment="relfm-pretrain", tracking=tracking_uri, run_id=run_id
    ) as r:
        run_file.write_text(r.info.run_id)
        if run_id is None:
            tracking.log_params({"config": json.dumps(cfg.model_dump()), "name": cfg.name})
        final = pretrain(cfg, out, tracking.metrics_logger(), progress)
        tracking.log_artifact(final / "config.json", "model")
        return final


def describe(final: Path) -> dict[str, Any]:
    return dict(json.loads((final / "config.json").read_text()))
