"""`relfm pretrain` as a data-parallel DeepSpeed job: two CPU ranks (gloo, ZeRO stage 2) train on their
own episode streams, rank 0 reports to MLflow through the driver, and the run resumes from DeepSpeed's
checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.pipelines.conftest import relfm_command

SMALL = {"d": 32, "cell_dim": 16, "heads": 2, "graph_layers": 1, "icl_layers": 1}
EP = {"min_context": 16, "max_context": 32, "queries": 16, "max_nodes": 16}


def _config(path: Path, steps: int, deepspeed: bool = True) -> Path:
    train: dict[str, object] = {
        "steps": steps,
        "warmup": 1,
        "checkpoint_every": 1,
        "keep_checkpoints": 2,
        "log_every": 1,
    }
    if deepspeed:
        train["deepspeed"] = {"zero_optimization": {"stage": 2}}
    cfg = {
        "name": "tiny",
        "seed": 0,
        "databases": 1,
        "eval_databases": 1,
        "nycflights13": False,
        "model": SMALL,
        "train": train,
        "episode": EP,
        "eval_every": 1,
        "eval_episodes": 2,
        "threads": 1,
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_EXPERIMENT_ID", "RAY_ADDRESS")}
    env.update(
        RELFM_HOME=str(tmp / "home"),
        RELFM_TEXT_ENCODER="hashed",
        DS_ACCELERATOR="cpu",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
    )
    return env


@pytest.fixture(scope="module")
def pool_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder whose pool holds the tiny shop twice (trained on; held out), as generated databases."""
    from graph_engine.synthetic import default_config, generate

    root = tmp_path_factory.mktemp("pretrain")
    data = root / "run" / "pool" / "data"
    generate(default_config("tiny"), data / "synthetic-0")
    shutil.copytree(data / "synthetic-0", data / "synthetic-50000")
    return root


def test_two_deepspeed_ranks_pretrain_report_and_resume(pool_root: Path) -> None:
    from mlflow import MlflowClient

    run_dir, env = pool_root / "run", _env(pool_root)
    cmd = [*relfm_command(), "pretrain", "--out", str(run_dir), "--workers", "2"]
    r = subprocess.run([*cmd, str(_config(pool_root / "a.yaml", 3))], env=env, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr[-3000:]
    final = run_dir / "final"
    meta = json.loads((final / "config.json").read_text())
    assert meta["steps"] == 3 and meta["world_size"] == 2
    assert (final / "model.safetensors").is_file()
    assert (run_dir / "checkpoints" / "deepspeed").is_dir()  # DeepSpeed's own, every rank's shard
    # the driver owns the MLflow run and logged rank 0's step metrics and held-out scores
    run_id = (run_dir / "mlflow_run_id").read_text().strip()
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3]
    assert client.get_run(run_id).data.params["workers"] == "2"
    assert any(k.startswith("eval/") for k in client.get_run(run_id).data.metrics)

    # one more step: resumed from DeepSpeed's step-3 checkpoint, not from scratch
    r = subprocess.run([*cmd, str(_config(pool_root / "b.yaml", 4))], env=env, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((final / "config.json").read_text())["steps"] == 4
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2, 3, 4]


def test_more_than_one_rank_without_deepspeed_is_a_one_line_error(pool_root: Path) -> None:
    cfg = _config(pool_root / "plain.yaml", 2, deepspeed=False)
    cmd = [*relfm_command(), "pretrain", str(cfg), "--out", str(pool_root / "plain"), "--workers", "2"]
    r = subprocess.run(cmd, env=_env(pool_root), text=True, capture_output=True)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "2 workers need a DeepSpeed config (train.deepspeed)" in lines[0], r.stderr
