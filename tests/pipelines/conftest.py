"""Shared by the Ray / DeepSpeed / MLflow stage tests: one RELFM_HOME (MLflow SQLite store, text cache),
one local Ray cluster with a small object store, a tiny synthetic shop graph, a tiny random model and
one fine-tuned model that every module scoring with it shares.

Everything is as small as still proves the point: process start-up (torch, DeepSpeed, Ray Train) is
most of what these tests cost, so the fine-tuning fixture launches ranks exactly twice (the killed
attempt and its resumption) and trains a few steps of a model with a few thousand parameters.

The environment these tests need (RELFM_HOME, the hashed text encoder, DS_ACCELERATOR=cpu) is set only
while they run: by `stage_env` (module scope, requested with `usefixtures`) and inside the session
fixtures that build things, so other tests in the same session see the environment they expect.
The Ray tests carry `xdist_group("ray")`, so under `pytest -n 2 --dist loadgroup` they share one worker
and therefore this one cluster and this one fine-tuned model.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
OBJECT_STORE_BYTES = 150 * 1024 * 1024


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`xdist_group` for the tests of this folder under pytest 9.2, which pytest-xdist 3.8 predates.

    xdist's `--dist loadgroup` sends tests to workers by a `@group` suffix that it appends to
    `item._nodeid`; pytest 9.2 derives the node id from `item._id` instead, so the suffix is lost and
    every grouped test is scheduled on its own, on any worker (each worker then starts its own Ray
    cluster and fine-tunes its own model). This sets the suffix where pytest 9.2 reads it; it does
    nothing where xdist's own suffix took effect, without loadgroup, or outside this folder."""
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # a pytest whose node ids xdist sets itself
        return
    here = Path(__file__).parent
    for item in items:
        if "@" in item.nodeid or not hasattr(item, "_id") or here not in Path(item.path).parents:
            continue
        groups = {
            str(m.args[0] if m.args else m.kwargs.get("name", "default"))
            for m in item.iter_markers("xdist_group")
        }
        if groups:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(sorted(groups))}")


@pytest.fixture(scope="session")
def stage_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("stages")


@contextmanager
def stage_vars(root: Path) -> Iterator[None]:
    """The stages' environment, and afterwards the process as it was: MLflow keeps the store a stage
    pointed it at (and exports it as MLFLOW_TRACKING_URI), which must not leak into later tests."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    with pytest.MonkeyPatch.context() as mp:
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_ID", "RAY_ADDRESS"):
            mp.setenv(name, "")  # so that leaving restores the value (or the absence) found here
            mp.delenv(name)
        mp.setenv("RELFM_HOME", str(root / "home"))
        mp.setenv("RELFM_TEXT_ENCODER", "hashed")  # fast and deterministic; MiniLM is not under test here
        mp.setenv("DS_ACCELERATOR", "cpu")
        try:
            yield
        finally:
            if "mlflow" in sys.modules:
                import mlflow

                mlflow.set_tracking_uri(before)  # type: ignore[arg-type]  # None: back to the default


@pytest.fixture(scope="module")
def stage_env(stage_home: Path) -> Iterator[Path]:
    with stage_vars(stage_home):
        yield stage_home


@pytest.fixture(scope="session")
def ray_session(stage_home: Path) -> Iterator[Any]:
    import ray

    from pipelines.ray_cluster import quiet_ray_data, start_local

    with stage_vars(stage_home):  # the raylet and workers start with this environment
        start_local(
            num_cpus=2,
            object_store_memory=OBJECT_STORE_BYTES,
            include_dashboard=False,
            log_to_driver=False,  # failures still reach the tests as exceptions
            logging_level=logging.WARNING,
        )  # workers inherit the environment set here (no runtime_env: one Python start-up less each)
    quiet_ray_data()
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def shop_graph(stage_home: Path) -> Path:
    """The tiny synthetic shop (88 users), built once: the folder every actor opens."""
    from graph_engine.synthetic import default_config, generate
    from pipelines.build_graph import ensure_graph

    with stage_vars(stage_home):
        spec = generate(default_config("tiny"), stage_home / "shop")
        return Path(ensure_graph(spec).path)


@pytest.fixture(scope="session")
def base_model(stage_home: Path) -> Path:
    """A tiny randomly initialised pretrained checkpoint (fast, independent of the shipped weights)."""
    import torch

    from relfm_core.model import ModelConfig, RelationalFM
    from relfm_core.training import save_weights

    torch.manual_seed(0)  # no environment needed: weights only
    folder = stage_home / "base-model"
    folder.mkdir()
    model = RelationalFM(
        ModelConfig(d=16, cell_dim=8, heads=2, graph_layers=1, icl_layers=1, ff_mult=1, lags=4)
    )
    save_weights(model, folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps({"model": model.cfg.to_dict()}))
    return folder


def finetune_settings(graph: Path, base: Path, **over: Any) -> dict[str, Any]:
    """A fine-tuning config small enough for tests: two ranks of DeepSpeed ZeRO-2, 64 training rows
    (32 per rank), two steps per epoch, three epochs, a checkpoint after every step."""
    cfg: dict[str, Any] = {
        "name": "shop-buy",
        "graph": str(graph),
        "query": BUY,
        "base_model": str(base),
        "table": {"num_anchors": 3, "val_anchors": 1, "max_rows": 256},
        "train": {
            "epochs": 3,
            "batch_size": 16,
            "max_train_rows": 64,
            "warmup_steps": 1,
            "patience": 10,
            "checkpoint_every": 1,
            "log_every": 1,
            "chunk_rows": 64,
            "threads_per_worker": 1,
        },
        "deepspeed": {"zero_stage": 2},
        "workers": 2,
        "launcher": "ray",
        "registered_model_name": "shop-buy",
        "alias": "champion",
    }
    cfg.update(over)
    return cfg


@dataclass
class Finetuned:
    run_dir: Path
    killed_at: int  # the latest complete checkpoint when the first attempt was killed
    final_step: int
    killed_log: str  # what `relfm finetune` printed before it was killed
    log: str  # what the resumed run logged
    report: Any  # pipelines.finetune.FinetuneReport


def _checkpoints(root: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in root.glob("*/checkpoints/step-*/trainer.pt"))


@pytest.fixture(scope="session")
def finetuned(ray_session: Any, shop_graph: Path, base_model: Path, stage_home: Path) -> Finetuned:
    """`relfm finetune` (two ranks, DeepSpeed ZeRO-2 on CPU over gloo) killed with SIGKILL as soon as
    its first checkpoint exists, then the same config run again, here, through Ray Train on this
    session's cluster: it resumes at that checkpoint and registers shop-buy@champion.

    The killed attempt uses the local launcher (ranks are processes of the killed command) and the
    resumed one Ray Train, so both launchers are exercised and the checkpoint is shown not to depend
    on the launcher, for the price of two launches."""
    with stage_vars(stage_home):
        return _kill_and_resume(shop_graph, base_model, stage_home)


def _kill_and_resume(shop_graph: Path, base_model: Path, stage_home: Path) -> Finetuned:
    config = stage_home / "finetune.yaml"
    config.write_text(yaml.safe_dump(finetune_settings(shop_graph, base_model)))
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "250"}
    env.pop("RELFM_DEBUG", None)
    root = stage_home / "home" / "finetune" / "shop-buy"
    cmd = [*relfm_command(), "finetune", str(config), "--launcher", "local"]
    log_file = stage_home / "finetune-killed.log"
    with log_file.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 400
        while not _checkpoints(root) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)  # the command and its ranks, mid-run
        proc.wait()
    killed_log = log_file.read_text()
    assert _checkpoints(root), f"no checkpoint before the kill:\n{killed_log[-3000:]}"
    killed_at = _checkpoints(root)[-1]
    # the restart runs in this process (the CLI's start-up was exercised above): same config, same data,
    # so the same run folder, resumed from its latest checkpoint
    from pipelines import finetune
    from pipelines.configs import FinetuneStageConfig, load_config

    lines: list[str] = []
    report = finetune.run(load_config(config, FinetuneStageConfig), log=lines.append)
    return Finetuned(report.run_dir, killed_at, _checkpoints(root)[-1], killed_log, "\n".join(lines), report)


def relfm_command() -> list[str]:
    script = Path(sys.executable).parent / "relfm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "jobs.cli"]
