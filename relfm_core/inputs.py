"""Model inputs for (entity, anchor) pairs of one task: subgraph tensors, lag features, normalised labels.

Shared by in-context prediction, pretraining and fine-tuning, so that all three see exactly the same
inputs. Regression targets live in a normalised space fitted on the labelled examples the model is given
(the context, or the training table): log1p for skewed non-negative targets, then a robust z-score. The
entity's own lagged labels are normalised the same way, so "the value it had last window" is directly
comparable with what is predicted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch

from graph_engine.sampler import SamplerConfig, TemporalSampler
from graph_engine.shards.reader import Graph
from relfm_core.features import GraphFeatures

LAG_FEATS = 4
HISTORY_WIDTH = 12  # history.MAX_AGGREGATIONS * len(history.SCALES)
HISTORY_FEATS = 2 * HISTORY_WIDTH  # value and present flag per history column


class LabelSource(Protocol):
    """What inputs need from the label engine (relfm_core.labels.LabelEngine)."""

    entity_table: str

    def lagged(
        self, entity_rows: np.ndarray, anchors: np.ndarray, lags: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...

    def _pairs(self, entity_rows: Any, anchors: Any) -> Any: ...


@dataclass(frozen=True)
class TargetNorm:
    """Maps labels into the model's space and back. Binary and multiclass labels pass through."""

    task_type: str
    log: bool = False
    center: float = 0.0
    scale: float = 1.0
    classes: tuple[Any, ...] = ()
    # per history column (see relfm_core.labels.history): robust centre and scale fitted on the labelled
    # examples the model is given; empty until the first `InputBuilder.build` fills them in
    hist_center: tuple[float, ...] = ()
    hist_scale: tuple[float, ...] = ()

    def with_history(self, values: np.ndarray, valid: np.ndarray) -> TargetNorm:
        centers, scales = [], []
        for j in range(values.shape[1]):
            v = values[valid[:, j], j]
            if len(v) == 0:
                centers.append(0.0)
                scales.append(1.0)
                continue
            q25, q50, q75 = np.quantile(v, [0.25, 0.5, 0.75])
            sc = float(q75 - q25) / 1.349
            if sc <= 1e-9:
                sc = float(np.std(v)) or max(abs(float(q50)), 1.0)
            centers.append(float(q50))
            scales.append(sc)
        return replace(self, hist_center=tuple(centers), hist_scale=tuple(scales))

    @classmethod
    def fit(cls, task_type: str, y: np.ndarray, classes: list[Any] | None = None) -> TargetNorm:
        if task_type != "regression":
            return cls(task_type, classes=tuple(classes or ()))
        y = np.asarray(y, dtype=np.float64)
        y = y[np.isfinite(y)]
        if len(y) == 0:
            return cls(task_type)
        log = bool(y.min() >= 0 and np.quantile(y, 0.99) > 10 * max(np.median(y), 1e-9) and y.max() > 10)
        v = np.log1p(y) if log else y
        q25, q50, q75 = np.quantile(v, [0.25, 0.5, 0.75])
        scale = float(q75 - q25) / 1.349
        if scale <= 1e-9:
            scale = float(np.std(v)) or 1.0
        return cls(task_type, log, float(q50), scale)

    def forward(self, y: np.ndarray) -> np.ndarray:
        if self.task_type != "regression":
            return np.asarray(y, dtype=np.float64)
        v = np.asarray(y, dtype=np.float64)
        if self.log:
            v = np.log1p(np.maximum(v, 0.0))
        return (v - self.center) / self.scale

    def inverse(self, z: np.ndarray) -> np.ndarray:
        v = np.asarray(z, dtype=np.float64) * self.scale + self.center
        return np.expm1(v) if self.log else v

    def inverse_scale(self) -> float:
        return self.scale


def lag_features(values: np.ndarray, valid: np.ndarray, activity: np.ndarray, norm: TargetNorm) -> np.ndarray:
    """[n, lags] label history → [n, lags * LAG_FEATS]: value (normalised), present, log activity, active."""
    n, lags = values.shape
    out = np.zeros((n, lags, LAG_FEATS), dtype=np.float32)
    if norm.task_type in ("binary", "regression"):
        v = norm.forward(np.where(valid, values, 0.0)) if norm.task_type == "regression" else values
        out[:, :, 0] = np.where(valid, np.clip(v, -10, 10), 0.0)
    out[:, :, 1] = valid
    out[:, :, 2] = np.log1p(np.maximum(activity, 0)) / 3.0
    out[:, :, 3] = activity > 0
    return out.reshape(n, lags * LAG_FEATS)


def history_features(values: np.ndarray, valid: np.ndarray, norm: TargetNorm) -> np.ndarray:
    """[n, HISTORY_WIDTH] raw history → [n, HISTORY_FEATS]: asinh of the robust z-score, present flag."""
    c = np.asarray(norm.hist_center, dtype=np.float64)
    s = np.asarray(norm.hist_scale, dtype=np.float64)
    z = np.where(valid, np.arcsinh((values - c) / s), 0.0)
    return np.concatenate([np.clip(z, -8, 8), valid.astype(np.float64)], axis=1).astype(np.float32)


class InputBuilder:
    """Samples, featurises and tensorises batches of (entity, anchor) pairs for one graph."""

    def __init__(
        self,
        graph: Graph,
        features: GraphFeatures,
        sampler: SamplerConfig | None = None,
        lags: int = 8,
        max_nodes: int = 48,
    ) -> None:
        self.graph = graph
        self.features = features
        self.lags = lags
        self.max_nodes = max_nodes
        cfg = sampler or SamplerConfig(fanouts=(8, 4), max_nodes=max_nodes)
        self.sampler = TemporalSampler(graph, cfg)
        self._rows_only = TemporalSampler(graph, SamplerConfig(fanouts=(), max_nodes=1))

    def link_batch(
        self, engine: Any, rows: np.ndarray, anchors: np.ndarray, labels: Any = None
    ) -> tuple[
        dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, np.ndarray
    ]:
        """Link prediction: candidate tokens, candidate index [B, K] into them, pair features, mask, truth
        (with labels) and the candidates' destination row ids [B, K]."""
        from relfm_core.labels.links import link_inputs

        li = link_inputs(engine, rows, anchors, labels=labels)
        flat = np.where(li.mask, li.candidates, -1)
        uniq, inverse = np.unique(flat, return_inverse=True)
        uniq_rows = uniq[uniq >= 0]
        index = inverse.reshape(flat.shape) - (1 if len(uniq) and uniq[0] < 0 else 0)
        if len(uniq_rows) == 0:
            uniq_rows = np.zeros(1, dtype=np.int64)
        cand = self.candidates(li.destination, uniq_rows, int(np.max(anchors)))
        target = None if li.target is None else torch.from_numpy(li.target)
        return (
            cand,
            torch.from_numpy(np.maximum(index, 0)),
            torch.from_numpy(li.pair),
            torch.from_numpy(li.mask),
            target,
            li.candidates,
        )

    def candidates(self, table: str, rows: np.ndarray, anchor: int) -> dict[str, torch.Tensor]:
        """One-node subgraphs of candidate destination rows (their own row, read at `anchor`)."""
        rows = np.asarray(rows, dtype=np.int64)
        sub = self._rows_only.sample(table, rows, np.full(len(rows), anchor, dtype=np.int64))
        return self.features.tensorize(sub, 1)

    def build(
        self, labels: LabelSource, rows: np.ndarray, anchors: np.ndarray, norm: TargetNorm
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor, TargetNorm]:
        """Tensors, per-entity features (lags + history) and the norm, completed with history statistics
        fitted on these rows when it had none (pass the returned norm on to the entities predicted)."""
        from relfm_core.labels.history import history

        rows = np.asarray(rows, dtype=np.int64)
        anchors = np.asarray(anchors, dtype=np.int64)
        sub = self.sampler.sample(labels.entity_table, rows, anchors)
        tensors = self.features.tensorize(sub, self.max_nodes)
        values, valid, activity = labels.lagged(rows, anchors, self.lags)
        h_values, h_valid = history(labels, rows, anchors)  # type: ignore[arg-type]
        if not norm.hist_center:
            norm = norm.with_history(h_values, h_valid)
        feats = np.concatenate(
            [lag_features(values, valid, activity, norm), history_features(h_values, h_valid, norm)], axis=1
        )
        return tensors, torch.from_numpy(feats), norm


def slice_tensors(t: dict[str, torch.Tensor], idx: slice | np.ndarray) -> dict[str, torch.Tensor]:
    """A batch subset; the shared embedding tables are kept whole."""
    return {k: (v if k in ("name_emb", "value_emb") else v[idx]) for k, v in t.items()}
