"""The per-rank fine-tuning loop: data-parallel over ranks, plain torch (DDP) or DeepSpeed ZeRO.

Every rank opens the graph itself, builds the model inputs for its shard of the training table (an equal
share, so every rank takes the same number of steps and the collectives line up) and the whole
validation table. Steps are the unit of progress: the batch a step trains on is a pure function of
(seed, epoch, step), so after a kill the run resumes from its latest checkpoint at exactly the step it
had reached. Validation runs at the end of each epoch on every rank; rank 0's score decides, and is
broadcast, so all ranks stop early together. The best weights are kept per epoch beside the
checkpoints and rank 0 writes them as the relfm artefact (relfm_core.finetune.save_finetuned) at the end.

Called by pipelines.launch on each rank (Ray Train worker or a local process); returns rank 0's result.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch import nn

from graph_engine.shards.reader import Graph
from pipelines import ray_cluster
from relfm_core.features import GraphFeatures
from relfm_core.finetune import (
    FinetuneConfig,
    FinetunedModel,
    attach_probe,
    save_finetuned,
    validation_score,
)
from relfm_core.inputs import InputBuilder, TargetNorm, slice_tensors
from relfm_core.labels import LabelEngine
from relfm_core.model import task_loss
from relfm_core.text_encoder import TextEncoder
from relfm_core.training import TrainConfig, Trainer, load_weights, save_weights
from relfm_core.weights import load_pretrained

Inputs = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]  # tensors, lags, targets
NEVER = 1 << 62  # Trainer's own periodic checkpoint is off: this loop saves with its state attached


@dataclass(frozen=True)
class Rank:
    rank: int
    world: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def current_rank() -> Rank:
    return Rank(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")))


def shard(n: int, r: Rank, seed: int) -> np.ndarray:
    """Rank r's share of n training rows: a seeded permutation dealt round-robin, padded by wrapping
    around so that every rank gets ceil(n / world) rows."""
    per = math.ceil(n / r.world)
    perm = np.random.default_rng([seed, 11]).permutation(n)
    perm = np.resize(perm, per * r.world)
    return np.sort(perm[r.rank :: r.world])


def _build(
    builder: InputBuilder, engine: LabelEngine, norm: TargetNorm, table: Any, idx: np.ndarray, chunk: int
) -> list[Inputs]:
    rows = table.column("entity_row").to_numpy()[idx].astype(np.int64)
    anchors = table.column("anchor_ns").to_numpy()[idx].astype(np.int64)
    y = torch.from_numpy(table.column("y").to_numpy()[idx].astype(np.float32))
    out = []
    for s in range(0, len(idx), chunk):
        t, lg, _ = builder.build(engine, rows[s : s + chunk], anchors[s : s + chunk], norm)
        out.append((t, lg, y[s : s + chunk]))
    return out


def epoch_plan(
    chunks: list[Inputs], batch: int, seed: int, epoch: int, rank: int
) -> list[tuple[int, np.ndarray]]:
    """The (chunk, rows) of every step of one epoch: chunks in a seeded order, rows shuffled within."""
    rng = np.random.default_rng([seed, epoch, rank, 7])
    plan = []
    for ci in rng.permutation(len(chunks)):
        perm = rng.permutation(len(chunks[ci][1]))
        plan += [(int(ci), perm[s : s + batch]) for s in range(0, len(perm), batch)]
    return plan


def device_for(use_gpu: bool) -> torch.device:
    """This rank's device: its GPU (Ray Train and torchrun set LOCAL_RANK), else the CPU."""
    if use_gpu and torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return torch.device("cpu")


def to_device(
    t: dict[str, torch.Tensor], lags: torch.Tensor, device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    if device.type == "cpu":
        return t, lags
    return {k: v.to(device, non_blocking=True) for k, v in t.items()}, lags.to(device, non_blocking=True)


def norm_from_dict(d: dict[str, Any]) -> TargetNorm:
    """A TargetNorm from its JSON form (tuples travel as lists)."""
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
    return TargetNorm(**fields)


def freeze_unused(model: nn.Module, sample: Inputs, task: str) -> int:
    """Freezes parameters the task head never reaches (the in-context blocks, other heads): DDP and ZeRO
    expect every trained parameter to get a gradient. Returns how many tensors were frozen."""
    t, lg, y = sample
    n = min(len(lg), 4)
    idx = np.arange(n)
    model.zero_grad(set_to_none=True)
    loss: torch.Tensor = task_loss(model(slice_tensors(t, idx), lg[idx]), y[idx], task)
    loss.backward()  # type: ignore[no-untyped-call]
    frozen = 0
    for p in model.parameters():
        if p.grad is None:
            p.requires_grad_(False)
            frozen += 1
    model.zero_grad(set_to_none=True)
    return frozen


METRICS_FILE = "metrics.jsonl"


class StepMetrics:
    """Rank 0 appends step metrics to `<run_dir>/metrics.jsonl`; the driver, which owns the MLflow run,
    follows that file (pipelines.tracking.MetricsFollower). Ranks therefore never talk to the tracking
    store: on a cluster they need no route to it, and the embedded SQLite store has a single writer."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / METRICS_FILE

    def __call__(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        if clean:
            with self.path.open("a") as f:  # one line per write: a reader never sees half a record
                f.write(json.dumps({"step": step, "metrics": clean}) + "\n")


def _disable_deepspeed_shm() -> None:
    """DeepSpeed's CPU shared-memory allreduce is JIT-compiled on first use (minutes on a fresh
    machine); gloo does the same job for CPU runs, which are tests and benchmarks, not production."""
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def _save_best(model: nn.Module, path: Path, r: Rank, zero_stage: int | None) -> None:
    def write() -> None:
        if r.main:
            tmp = path.with_name(f".tmp-{path.name}")
            save_weights(model, tmp)
            os.replace(tmp, path)

    if zero_stage == 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
            write()
    else:
        write()


def _broadcast(value: float, r: Rank) -> float:
    if r.world == 1:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return float(t.item())


def _barrier(r: Rank) -> None:
    if r.world > 1:
        import torch.distributed as dist

        dist.barrier()


def train_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """One rank of the fine-tuning job (see the module docstring); rank 0 returns the result."""
    ray_cluster.apply_env(config.get("env", {}))
    if not config["use_gpu"]:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    if config.get("threads"):
        torch.set_num_threads(int(config["threads"]))
    r = current_rank()
    run_dir = Path(config["run_dir"])
    plan = json.loads((run_dir / "data" / "plan.json").read_text())
    ts = config["train"]
    seed = int(config["seed"])
    torch.manual_seed(seed)

    graph = Graph.open(config["graph"])
    engine = LabelEngine(graph, config["query"])
    task = plan["task_type"]
    classes = list(plan["classes"])
    norm = norm_from_dict(plan["norm"])
    base = load_pretrained(config["base_model"])
    base.train()
    model = FinetunedModel(base, task, len(classes))
    from graph_engine.cache import relfm_home

    builder = InputBuilder(
        graph, GraphFeatures(graph, TextEncoder(relfm_home() / "text-embeddings.sqlite")), lags=base.cfg.lags
    )
    t0 = time.perf_counter()
    train_t = pq.read_table(run_dir / "data" / "train.parquet")
    val_t = pq.read_table(run_dir / "data" / "val.parquet")
    chunk = int(ts["chunk_rows"])
    train_idx = shard(train_t.num_rows, r, seed)
    train_in = _build(builder, engine, norm, train_t, train_idx, chunk)
    train_anchors = train_t.column("anchor_ns").to_numpy()[train_idx]
    val_in = _build(builder, engine, norm, val_t, np.arange(val_t.num_rows), chunk)
    input_seconds = time.perf_counter() - t0
    frozen = freeze_unused(model, train_in[0], task)

    bs = int(ts["batch_size"])
    steps_per_epoch = sum(math.ceil(len(c[1]) / bs) for c in train_in)
    total = int(ts["epochs"]) * steps_per_epoch
    ds = config.get("deepspeed")
    zero_stage = int(ds["zero_optimization"]["stage"]) if ds else None
    if ds is not None and not config["use_gpu"]:
        _disable_deepspeed_shm()
    device = device_for(config["use_gpu"])
    model.to(device)
    wrapped: nn.Module = model
    if ds is None and r.world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    tcfg = TrainConfig(
        steps=total,
        lr=float(ts["lr"]),
        weight_decay=float(ts["weight_decay"]),
        warmup=int(ts["warmup_steps"]),
        grad_clip=float(ts["grad_clip"]),
        checkpoint_every=NEVER,
        keep_checkpoints=int(ts["keep_checkpoints"]),
        log_every=int(ts["log_every"]),
        seed=seed,
        deepspeed=ds,
    )
    log = StepMetrics(run_dir) if r.main else None
    trainer = Trainer(wrapped, tcfg, run_dir / "checkpoints", log, base.cfg.to_dict())
    state: dict[str, Any] = {"best": -math.inf, "best_file": None, "bad": 0, "history": [], "stopped": False}
    state.update(trainer.resume())
    resumed_from = trainer.step_num or None
    forward = trainer.engine if trainer.engine is not None else wrapped
    plans: dict[int, list[tuple[int, np.ndarray]]] = {}
    train_seconds, samples, every = 0.0, 0, int(ts["checkpoint_every"])
    while trainer.step_num < total and not state["stopped"]:
        epoch, b = divmod(trainer.step_num, steps_per_epoch)
        if epoch not in plans:
            plans = {epoch: epoch_plan(train_in, bs, seed, epoch, r.rank)}
        ci, idx = plans[epoch][b]
        t, lg, y = train_in[ci]
        s0 = time.perf_counter()
        loss = task_loss(forward(*to_device(slice_tensors(t, idx), lg[idx], device)), y[idx].to(device), task)
        trainer.train_step(loss)
        train_seconds += time.perf_counter() - s0
        samples += len(idx)
        at_epoch_end = b == steps_per_epoch - 1
        if at_epoch_end:
            model.eval()
            with torch.no_grad():
                out = torch.cat([model(*to_device(tv, lv, device)).cpu() for tv, lv, _ in val_in])
            model.train()
            score = _broadcast(validation_score(task, out, torch.cat([yv for _, _, yv in val_in])), r)
            rec = {"epoch": float(epoch + 1), "val_score": score, "step": float(trainer.step_num)}
            state["history"].append(rec)
            if score > state["best"]:
                best_file = f"best-epoch-{epoch + 1:04d}.safetensors"
                _save_best(model, run_dir / best_file, r, zero_stage)
                state.update(best=score, best_file=best_file, bad=0)
            else:
                state["bad"] += 1
                state["stopped"] = state["bad"] >= int(ts["patience"])
            if log is not None:
                log(trainer.step_num, {"val_score": score, "epoch": float(epoch + 1)})
            if r.main:
                print(
                    f"epoch {epoch + 1}: val_score {score:.4f} (step {trainer.step_num}/{total})", flush=True
                )
        if at_epoch_end or trainer.step_num % every == 0 or trainer.step_num >= total:
            trainer.save(extra=state)
    _barrier(r)
    if not r.main:
        return None
    out_dir = Path(config["output"])
    meta = finish(
        config,
        plan,
        graph,
        engine,
        norm,
        classes,
        state,
        base.cfg.to_dict(),
        out_dir,
        (train_in, val_in, train_anchors),
    )
    world_samples = samples * r.world
    return {
        "model_dir": str(out_dir),
        "metrics": meta,
        "history": state["history"],
        "steps": trainer.step_num,
        "total_steps": total,
        "resumed_from": resumed_from,
        "frozen_tensors": frozen,
        "input_seconds": input_seconds,
        "train_seconds": train_seconds,
        "samples_per_s": world_samples / train_seconds if train_seconds > 0 else 0.0,
        "samples_per_s_per_worker": samples / train_seconds if train_seconds > 0 else 0.0,
        "world_size": r.world,
    }


def finish(
    config: dict[str, Any],
    plan: dict[str, Any],
    graph: Graph,
    engine: LabelEngine,
    norm: TargetNorm,
    classes: list[Any],
    state: dict[str, Any],
    model_cfg: dict[str, Any],
    out_dir: Path,
    chunks: tuple[list[Inputs], list[Inputs], np.ndarray],
) -> dict[str, float]:
    """Rank 0: the best epoch's weights with the linear probe path solved on its training shard and the
    validation rows (relfm_core.task_probe), saved as the relfm artefact, written atomically."""
    from relfm_core.model import ModelConfig, RelationalFM

    run_dir = Path(config["run_dir"])
    final = FinetunedModel(RelationalFM(ModelConfig(**model_cfg)), plan["task_type"], len(classes))
    if state.get("best_file"):
        load_weights(final, run_dir / state["best_file"])
    final.eval()
    _, val_score = attach_probe(final, *chunks)
    ts = config["train"]
    head_score = float(state["best"]) if math.isfinite(state["best"]) else float("nan")
    metrics = {
        "val_score": val_score,
        "head_val_score": head_score,
        "epochs": float(len(state["history"])),
        "train_rows": float(plan["n_train"]),
        "val_rows": float(plan["n_val"]),
    }
    fcfg = FinetuneConfig(
        epochs=int(ts["epochs"]),
        batch_size=int(ts["batch_size"]),
        lr=float(ts["lr"]),
        encoder_lr=float(ts["lr"]),
        weight_decay=float(ts["weight_decay"]),
        patience=int(ts["patience"]),
        max_train_rows=int(ts["max_train_rows"]),
        train_rows=ts.get("train_rows", "latest"),
        seed=int(config["seed"]),
    )
    tmp = out_dir.with_name(f".tmp-{out_dir.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_finetuned(final, tmp, engine, graph, norm, classes, metrics, fcfg)
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, out_dir)
    return metrics
