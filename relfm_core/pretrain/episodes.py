"""Pretraining episodes: one database, one random task, a labelled context and entities to predict.

An episode mirrors zero-shot use exactly: the context holds labelled examples at earlier anchors whose
windows close at or before the prediction anchor (the label engine's context tables enforce it), and the
query entities are predicted at the anchor itself, with their true future labels as training targets.
Regression targets are normalised on the context only (as at inference); multiclass labels get random
class slots each episode, so the model learns to match classes through the context, not to memorise
slot identities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import torch

from graph_engine.shards.reader import Graph
from relfm_core.features import GraphFeatures
from relfm_core.inputs import InputBuilder, TargetNorm
from relfm_core.pretrain.tasks import Link, calibrate, choose_window, links, templates

log = logging.getLogger(__name__)
DAY_NS = 86_400 * 10**9


@dataclass
class Episode:
    task_type: str
    num_classes: int
    ctx: dict[str, torch.Tensor]
    ctx_lags: torch.Tensor
    ctx_y: torch.Tensor
    q: dict[str, torch.Tensor]
    q_lags: torch.Tensor
    q_y: torch.Tensor
    query: str
    family: str
    database: str
    # link prediction only: candidate row tokens, each entity's candidates, pair features, truth
    cand: dict[str, torch.Tensor] | None = None
    cand_index: torch.Tensor | None = None
    pair: torch.Tensor | None = None
    cand_mask: torch.Tensor | None = None
    cand_target: torch.Tensor | None = None

    def to(self, device: torch.device) -> Episode:
        """The episode's tensors on `device` (itself on the CPU, where producers make them)."""
        if device.type == "cpu":
            return self

        def move(v: Any) -> Any:
            if isinstance(v, torch.Tensor):
                return v.to(device, non_blocking=True)
            if isinstance(v, dict):
                return {k: move(x) for k, x in v.items()}
            return v

        return replace(self, **{f.name: move(getattr(self, f.name)) for f in fields(self)})


@dataclass
class EpisodeConfig:
    min_context: int = 32
    max_context: int = 256
    queries: int = 64
    lags: int = 8
    max_nodes: int = 48
    max_classes: int = 16


class PoolEntry:
    """One pretraining database: its graph, features and input builder, opened once."""

    def __init__(self, name: str, graph: Graph, features: GraphFeatures, cfg: EpisodeConfig) -> None:
        self.name = name
        self.graph = graph
        self.features = features
        self.builder = InputBuilder(graph, features, lags=cfg.lags, max_nodes=cfg.max_nodes)
        self.links: list[Link] = links(graph.schema)
        self.tmin = graph.min_time()
        self.tmax = graph.max_time()

    def event_rate(self, link: Link) -> float:
        """Events per entity per day through `link`, for choosing windows."""
        n_ent = max(self.graph.table(link.entity).num_rows, 1)
        n_ev = next(
            (
                e["edges"]
                for e in self.graph.manifest["edges"]
                if e["child"] == link.event and e["fk"] == link.fk
            ),
            0,
        )
        days = max((self.tmax - self.tmin) / DAY_NS, 1.0)
        return float(n_ev) / n_ent / days


def make_episode(entry: PoolEntry, rng: np.random.Generator, cfg: EpisodeConfig) -> Episode | None:
    """One episode, or None when the drawn task turns out degenerate (then the caller draws again)."""
    from relfm_core.labels import LabelEngine, TableConfig, context_table

    if not entry.links:
        return None
    link = entry.links[int(rng.integers(len(entry.links)))]
    window = choose_window(entry.event_rate(link), rng)
    choices = templates(entry.graph.schema, link, window, rng)
    tmpl = choices[int(rng.integers(len(choices)))]
    wns = window * DAY_NS
    lo = entry.tmin + int(0.3 * (entry.tmax - entry.tmin)) + 2 * wns
    hi = entry.tmax - wns
    if hi <= lo:
        return None
    anchor = int(rng.integers(lo, hi))
    text = tmpl.text
    if tmpl.needs_threshold:
        assert tmpl.base_text is not None
        base = LabelEngine(entry.graph, tmpl.base_text)
        rows = base.entity_rows(anchor)
        if len(rows) < 20:
            return None
        sample = rng.choice(rows, size=min(len(rows), 2000), replace=False)
        anchors = anchor - wns * rng.integers(1, 4, size=len(sample))
        lab = base.evaluate(sample, anchors)
        op = ">" if ">" in tmpl.text.split("{thr}")[0][-3:] else "<="
        thr = calibrate(np.where(lab.valid, lab.value, np.nan), op, rng)
        if thr is None:
            return None
        text = tmpl.text.replace("{thr}", repr(thr) if not float(thr).is_integer() else str(int(thr)))
    engine = LabelEngine(entry.graph, text)
    if str(getattr(engine.task_type, "value", engine.task_type)) == "link_prediction":
        return make_link_episode(entry, engine, anchor, rng, cfg, text, tmpl.family)
    n_ctx = int(rng.integers(cfg.min_context, cfg.max_context + 1))
    ctx_df = context_table(
        engine,
        anchor,
        TableConfig(max_rows=n_ctx, num_anchors=int(rng.integers(1, 9)), seed=int(rng.integers(2**31))),
    )
    if len(ctx_df) < cfg.min_context // 2:
        return None
    rows = engine.entity_rows(anchor)
    if len(rows) == 0:
        return None
    q_rows = rng.choice(rows, size=min(len(rows), 4 * cfg.queries), replace=False)
    q_anchor = np.full(len(q_rows), anchor, dtype=np.int64)
    ok = engine.assuming(q_rows, q_anchor)
    lab = engine.evaluate(q_rows, q_anchor)
    keep = ok & lab.valid
    q_rows, q_anchor, q_val = (
        q_rows[keep][: cfg.queries],
        q_anchor[keep][: cfg.queries],
        lab.value[keep][: cfg.queries],
    )
    if len(q_rows) < 8:
        return None
    task = engine.task_type.value if hasattr(engine.task_type, "value") else str(engine.task_type)
    if task not in ("binary", "regression", "multiclass"):
        return None  # multilabel is not pretrained
    c_rows = ctx_df["entity_row"].to_numpy(np.int64)
    c_anchor = ctx_df["anchor_time"].to_numpy("datetime64[ns]").astype(np.int64)
    c_val = ctx_df["label"].to_numpy()
    num_classes = 0
    if task == "binary":
        c_y, q_y = c_val.astype(np.float64), q_val.astype(np.float64)
        if c_y.min() == c_y.max():
            return None
        norm = TargetNorm.fit(task, c_y)
    elif task == "regression":
        c_y, q_y = c_val.astype(np.float64), q_val.astype(np.float64)
        norm = TargetNorm.fit(task, c_y)
        c_y, q_y = norm.forward(c_y), norm.forward(q_y)
    else:
        classes = sorted(set(c_val.tolist()))
        if len(classes) < 2 or len(classes) > cfg.max_classes:
            return None
        # the head scores slots 0..k-1; which class gets which slot is random in every episode
        perm = rng.permutation(len(classes))
        slot_of = {c: int(perm[i]) for i, c in enumerate(classes)}
        known = np.array([v in slot_of for v in q_val.tolist()])
        q_rows, q_anchor, q_val = q_rows[known], q_anchor[known], q_val[known]
        if len(q_rows) < 8:
            return None
        c_y = np.array([slot_of[v] for v in c_val.tolist()], dtype=np.float64)
        q_y = np.array([slot_of[v] for v in q_val.tolist()], dtype=np.float64)
        num_classes = len(classes)
        norm = TargetNorm.fit(task, c_y)
    ctx_t, ctx_lags, norm = entry.builder.build(engine, c_rows, c_anchor, norm)
    q_t, q_lags, _ = entry.builder.build(engine, q_rows, q_anchor, norm)
    return Episode(
        task,
        num_classes,
        ctx_t,
        ctx_lags,
        torch.from_numpy(np.asarray(c_y, dtype=np.float32)),
        q_t,
        q_lags,
        torch.from_numpy(np.asarray(q_y, dtype=np.float32)),
        text,
        tmpl.family,
        entry.name,
    )


def make_link_episode(
    entry: PoolEntry,
    engine: Any,
    anchor: int,
    rng: np.random.Generator,
    cfg: EpisodeConfig,
    text: str,
    family: str,
) -> Episode | None:
    rows = engine.entity_rows(anchor)
    if len(rows) < 8:
        return None
    q_rows = rng.choice(rows, size=min(len(rows), 4 * cfg.queries), replace=False)
    q_anchor = np.full(len(q_rows), anchor, dtype=np.int64)
    lab = engine.evaluate(q_rows, q_anchor)
    keep = np.flatnonzero(lab.valid)[: cfg.queries]
    if len(keep) < 8:
        return None
    q_rows, q_anchor, lab = q_rows[keep], q_anchor[keep], lab.subset(keep)
    norm = TargetNorm("link")
    q_t, q_lags, _ = entry.builder.build(engine, q_rows, q_anchor, norm)
    cand, index, pair, mask, target, _ = entry.builder.link_batch(engine, q_rows, q_anchor, lab)
    assert target is not None
    if not bool((target & mask).any()):
        return None
    y = torch.zeros(len(q_rows))
    return Episode(
        "link", 0, q_t, q_lags, y, q_t, q_lags, y, text, family, entry.name, cand, index, pair, mask, target
    )


def episode_stats(ep: Episode) -> dict[str, Any]:
    return {"task": ep.task_type, "context": len(ep.ctx_y), "queries": len(ep.q_y), "family": ep.family}
