"""Launching the per-rank training loop on N workers: Ray Train or local processes.

`ray`: Ray Train's TorchTrainer places one worker per rank (a GPU each with `use_gpu`), sets RANK /
WORLD_SIZE / MASTER_ADDR and the process group (nccl on GPUs, gloo on CPUs); rank 0 hands back the
relfm artefact as a Ray Train checkpoint, persisted to the run folder (on a cluster, point the run folder
at shared storage). `local`: processes spawned on this machine with the same environment variables and
a gloo/nccl process group, as torchrun would; the artefact is written by rank 0 directly. Either way the
loop is the same function (pipelines.train_loop.train_worker) and resumes from the run folder.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from graph_engine.errors import RelfmError

Worker = Callable[[dict[str, Any]], dict[str, Any] | None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    worker: Worker,
    config: dict[str, Any],
    workers: int,
    launcher: str,
    use_gpu: bool,
    run_dir: Path,
    ray_address: str | None = None,
) -> dict[str, Any]:
    """Runs `worker(config)` on `workers` ranks; returns rank 0's result."""
    if launcher == "ray":
        return _launch_ray(worker, config, workers, use_gpu, run_dir, ray_address)
    if launcher == "local":
        return _launch_local(worker, config, workers, use_gpu, run_dir)
    raise RelfmError(f"unknown launcher '{launcher}' (choose ray or local)")


# ---------------------------------------------------------------------------------------------- ray
def _ray_entry(config: dict[str, Any]) -> None:
    import tempfile

    import ray.train

    worker = config.pop("_worker")
    result = worker(config)
    if result is None:
        ray.train.report({"rank0": 0})
        return
    with tempfile.TemporaryDirectory() as tmp:
        # the artefact travels as a Ray Train checkpoint: persisted to storage whatever the node
        art = Path(tmp) / "model"
        shutil.copytree(result["model_dir"], art)
        (Path(tmp) / "result.json").write_text(json.dumps(result, default=float))
        ray.train.report({"rank0": 1}, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def _launch_ray(
    worker: Worker, config: dict[str, Any], workers: int, use_gpu: bool, run_dir: Path, address: str | None
) -> dict[str, Any]:
    from pipelines import ray_cluster

    ray_cluster.connect(address)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        _ray_entry,
        train_loop_config={**config, "_worker": worker},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        run_config=RunConfig(name=f"ray-{int(time.time())}", storage_path=str(run_dir / "ray")),
    )
    try:
        result = trainer.fit()
    except Exception as e:  # Ray wraps the worker's exception: surface a RelfmError as itself
        if os.environ.get("RELFM_DEBUG"):
            raise
        raise _unwrap(e) from None
    if result.checkpoint is None:
        raise RelfmError("fine-tuning finished without a model (rank 0 reported no checkpoint)")
    with result.checkpoint.as_directory() as d:
        out = json.loads((Path(d) / "result.json").read_text())
        target = Path(config["output"])
        if Path(d) / "model" != target:
            tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(Path(d) / "model", tmp)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(tmp, target)
    out["model_dir"] = str(config["output"])
    return dict(out)


def _unwrap(e: BaseException) -> BaseException:
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, RelfmError):
            return cur
        for attr in ("worker_failures", "_worker_failures"):
            failures = getattr(cur, attr, None)
            if isinstance(failures, dict):
                for f in failures.values():
                    found = _unwrap(f)
                    if isinstance(found, RelfmError):
                        return found
        cur = cur.__cause__ or cur.__context__
    text = str(e).strip().splitlines()
    for line in reversed(text):
        if "RelfmError:" in line or "DataError:" in line or "SourceError:" in line:
            return RelfmError(line.split(":", 1)[1].strip())
    return RuntimeError(f"fine-tuning failed: {text[-1] if text else type(e).__name__}")


# ---------------------------------------------------------------------------------------------- local
def _watch_parent(parent: int) -> None:
    """Rank processes end with their launcher: a killed launcher must not leave ranks training."""

    def loop() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(1)
            time.sleep(0.5)

    threading.Thread(target=loop, daemon=True).start()


def _local_entry(
    rank: int, worker: Worker, config: dict[str, Any], world: int, port: int, parent: int, use_gpu: bool
) -> None:
    _watch_parent(parent)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    import torch.distributed as dist

    dist.init_process_group("nccl" if use_gpu else "gloo", rank=rank, world_size=world)
    run_dir = Path(config["run_dir"])
    try:
        result = worker(config)
        if result is not None:
            tmp = run_dir / f".result-{os.getpid()}.json"
            tmp.write_text(json.dumps(result, default=float))
            os.replace(tmp, run_dir / "result.json")
    except RelfmError as e:
        (run_dir / f"error-rank{rank}.txt").write_text(e.message)
        raise
    finally:
        dist.destroy_process_group()


def _launch_local(
    worker: Worker, config: dict[str, Any], workers: int, use_gpu: bool, run_dir: Path
) -> dict[str, Any]:
    import torch.multiprocessing as mp

    for old in [run_dir / "result.json", *run_dir.glob("error-rank*.txt")]:
        old.unlink(missing_ok=True)
    if workers == 1 and config.get("deepspeed") is None:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
        result = worker(config)
        assert result is not None
        return result
    try:
        mp.start_processes(  # type: ignore[attr-defined,no-untyped-call]
            _local_entry,
            args=(worker, config, workers, free_port(), os.getpid(), use_gpu),
            nprocs=workers,
            join=True,
            start_method="spawn",
        )
    except Exception as e:
        errors = sorted(run_dir.glob("error-rank*.txt"))
        if os.environ.get("RELFM_DEBUG"):
            raise
        if errors:
            raise RelfmError(errors[0].read_text().strip()) from None
        last = str(e).strip().splitlines()
        raise RuntimeError(f"fine-tuning failed: {last[-1] if last else type(e).__name__}") from None
    result_file = run_dir / "result.json"
    if not result_file.is_file():
        raise RelfmError("fine-tuning finished without a result from rank 0")
    return dict(json.loads(result_file.read_text()))
