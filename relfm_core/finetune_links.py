"""Link-prediction fine-tuning: specialise the pretrained candidate scorer to one LIST_DISTINCT query.

Why: zero-shot, relfm ranks each entity's candidates (its own past destinations first, then the popular
ones: relfm_core.labels.links) with the scorer pretraining taught on synthetic links. A recommendation
query in production has its own notion of what comes next, so fine-tuning trains the same encoder and
scorer with the same listwise loss on the query's training table and early-stops on MAP@k of the
validation rows. The result is saved like any fine-tuned model (relfm_core.finetune) and ranks one
entity's candidates per forward pass, with no context.

Candidates are read at one anchor per chunk (their features must not come from after any of its rows),
so training chunks never mix anchors.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from relfm_core.features import GraphFeatures
from relfm_core.inputs import InputBuilder, TargetNorm, slice_tensors
from relfm_core.metrics import ranking_metrics
from relfm_core.model import RelationalFM, link_loss

if TYPE_CHECKING:
    from relfm_core.finetune import FinetuneConfig, FinetunedModel, FinetuneResult, LoadedFinetuned

CHUNK = 256
LINK = "link_prediction"


@dataclass
class LinkChunk:
    """Rows of one anchor: entity inputs, candidate tokens and, per row, candidates and truth."""

    t: dict[str, torch.Tensor]
    lags: torch.Tensor
    cand: dict[str, torch.Tensor]
    index: torch.Tensor  # [B, K] into the candidate tokens
    pair: torch.Tensor  # [B, K, pair features]
    mask: torch.Tensor  # [B, K] real candidates
    target: torch.Tensor | None  # [B, K] candidates in the label
    rows: np.ndarray  # [B, K] destination row ids (-1: none)
    truth: list[list[int]]  # each row's label, destination row ids

    def batch(self, idx: np.ndarray) -> tuple[Any, ...]:
        assert self.target is not None
        return (
            slice_tensors(self.t, idx),
            self.lags[idx],
            self.cand,
            self.index[idx],
            self.pair[idx],
            self.mask[idx],
            self.target[idx],
        )


def link_chunks(
    builder: InputBuilder, engine: Any, rows: np.ndarray, anchors: np.ndarray, with_labels: bool
) -> list[tuple[np.ndarray, LinkChunk]]:
    """Inputs in chunks of one anchor each, with the positions of their rows in `rows`."""
    out: list[tuple[np.ndarray, LinkChunk]] = []
    norm = TargetNorm("link")
    for a in np.unique(anchors):
        pos = np.flatnonzero(anchors == a)
        for s in range(0, len(pos), CHUNK):
            p = pos[s : s + CHUNK]
            r, an = rows[p], anchors[p]
            lab = engine.evaluate(r, an) if with_labels else None
            t, lags, _ = builder.build(engine, r, an, norm)
            cand, index, pair, mask, target, cand_rows = builder.link_batch(engine, r, an, lab)
            truth = lab.lists() if lab is not None else [[] for _ in range(len(p))]
            out.append((p, LinkChunk(t, lags, cand, index, pair, mask, target, cand_rows, truth)))
    return out


def rank(model: RelationalFM, c: LinkChunk, k: int) -> tuple[list[list[int]], list[list[float]]]:
    """Each row's top k candidate destination rows, best first, and their scores."""
    sc = model.link_forward(c.t, c.lags, c.cand, c.index, c.pair).masked_fill(~c.mask, -np.inf).numpy()
    order = np.argsort(-sc, axis=1, kind="stable")[:, :k]
    ranked, scores = [], []
    for i in range(len(sc)):
        top = [j for j in order[i] if np.isfinite(sc[i, j])]
        ranked.append([int(c.rows[i, j]) for j in top])
        scores.append([float(sc[i, j]) for j in top])
    return ranked, scores


def _map_at_k(model: RelationalFM, chunks: list[LinkChunk], k: int) -> float:
    model.eval()
    truth: list[list[int]] = []
    ranked: list[list[int]] = []
    with torch.no_grad():
        for c in chunks:
            truth += c.truth
            ranked += rank(model, c, k)[0]
    model.train()
    return float(ranking_metrics(truth, ranked, k)[f"map@{k}"])


def finetune_links(
    graph: Graph,
    features: GraphFeatures,
    base: RelationalFM,
    engine: Any,
    train: pd.DataFrame,
    val: pd.DataFrame,
    out_dir: str | Path,
    cfg: FinetuneConfig,
    log: Callable[[dict[str, float]], None] | None = None,
) -> FinetuneResult:
    """Trains the candidate scorer on `train` (entity_row, anchor_time), early-stops on MAP@k of `val`."""
    from relfm_core.finetune import (
        EarlyStop,
        FinetunedModel,
        FinetuneResult,
        cap_rows,
        save_finetuned,
        table_pairs,
    )

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    k = int(engine.query.rank_top_k or 10)
    train = cap_rows(train, cfg.max_train_rows, cfg.train_rows, cfg.seed)
    builder = InputBuilder(graph, features, lags=base.cfg.lags)
    tr = [c for _, c in link_chunks(builder, engine, *table_pairs(train), with_labels=True)]
    va = [c for _, c in link_chunks(builder, engine, *table_pairs(val), with_labels=True)]
    if not any(bool((c.target & c.mask).any()) for c in tr if c.target is not None):
        raise RelfmError(
            "no training row has a true destination among its candidates "
            "(its own past destinations and the most popular ones); nothing to fine-tune on"
        )
    model = FinetunedModel(copy.deepcopy(base), LINK)
    model.train()
    opt = torch.optim.AdamW(model.base.parameters(), lr=cfg.encoder_lr, weight_decay=cfg.weight_decay)
    stop = EarlyStop(cfg.patience)
    stop.update(_map_at_k(model.base, va, k), model)  # epoch 0: the pretrained scorer
    history: list[dict[str, float]] = [{"epoch": 0.0, "train_loss": float("nan"), "val_score": stop.best}]
    for epoch in range(cfg.epochs):
        t0 = time.time()
        losses = []
        for ci in rng.permutation(len(tr)):
            c = tr[ci]
            perm = rng.permutation(len(c.lags))
            for s in range(0, len(perm), cfg.batch_size):
                t, lags, cand, index, pair, mask, target = c.batch(perm[s : s + cfg.batch_size])
                loss = link_loss(model.base.link_forward(t, lags, cand, index, pair), target, mask)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                losses.append(float(loss.detach()))
        score = _map_at_k(model.base, va, k)
        rec = {"epoch": float(epoch + 1), "train_loss": float(np.mean(losses)), "val_score": score}
        rec["seconds"] = time.time() - t0
        history.append(rec)
        if log is not None:
            log(rec)
        if stop.update(score, model):
            break
    stop.restore(model)
    best = stop.best
    metrics = {"val_score": float(best), f"val_map@{k}": float(best), "epochs": float(len(history) - 1)}
    metrics["pretrained_val_score"] = history[0]["val_score"]
    path = save_finetuned(model, out_dir, engine, graph, TargetNorm("link"), [], metrics, cfg)
    return FinetuneResult(path, metrics, history)


@torch.no_grad()
def score_links(
    loaded: LoadedFinetuned, builder: InputBuilder, engine: Any, rows: np.ndarray, anchors: np.ndarray
) -> tuple[list[list[Any]], list[list[float]]]:
    """Per (entity, anchor): the top k destination keys, best first, and their scores."""
    model: FinetunedModel = loaded.model
    k = int(engine.query.rank_top_k or 10)
    dest = engine.graph.table(engine.query.link_target_table)
    keys: list[list[Any]] = [[] for _ in range(len(rows))]
    scores: list[list[float]] = [[] for _ in range(len(rows))]
    rows, anchors = np.asarray(rows, dtype=np.int64), np.asarray(anchors, dtype=np.int64)
    for pos, c in link_chunks(builder, engine, rows, anchors, with_labels=False):
        ranked, sc = rank(model.base, c, k)
        for i, p in enumerate(pos.tolist()):
            keys[p] = dest.key_values(np.asarray(ranked[i], dtype=np.int64)).tolist() if ranked[i] else []
            scores[p] = sc[i]
    return keys, scores
