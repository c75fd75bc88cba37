"""The fine-tuned model's linear path: the closed-form probe, fitted once on the training table.

Why: zero-shot, a linear probe over the encoder output, the entity's label history and its subgraph
aggregates (relfm_core.icl_head) is what lifts relfm past the baselines; a fine-tuned transformer head on
the encoder output alone lost that and scored below zero-shot. So after the transformer is fine-tuned,
the same probe is solved on the training rows (features from the fine-tuned encoder) and its view,
regularisation and blend weight against the trained head are chosen on the validation rows (the head's
outputs there are out of sample). It is stored as torch buffers inside the fine-tuned model: scoring
stays one forward pass per entity with no context, and explanations differentiate through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from relfm_core.icl_head import (
    ALPHA_GRID,
    BLEND_WEIGHTS,
    C_GRID,
    NO_CLASS,
    fit_linear,
    linear_output,
    probe_loss,
)
from relfm_core.subgraph_aggregates import AggregateGroups, probe_features


@dataclass(frozen=True)
class ProbeSpec:
    """What config.json records so a saved model rebuilds the probe's buffers before loading weights."""

    view: str
    weight: float
    param: float
    n_features: int  # width of the selected view
    n_out: int  # probe outputs: 1 (binary, regression) or the classes seen in training
    n_classes: int  # width of the head's output it blends into (multiclass), else 0
    groups: AggregateGroups
    rows: int = 0  # training rows it was solved on
    median: bool = False  # regression: intercept moved to the median residual (scored by absolute error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "weight": self.weight,
            "param": self.param,
            "n_features": self.n_features,
            "n_out": self.n_out,
            "n_classes": self.n_classes,
            "rows": self.rows,
            "median": self.median,
            "groups": {
                "cells": [list(c) for c in self.groups.cells],
                "rows": [list(r) for r in self.groups.rows],
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeSpec:
        g = d["groups"]
        groups = AggregateGroups(
            tuple((int(a), int(b), int(c)) for a, b, c in g["cells"]),
            tuple((int(a), int(b)) for a, b in g["rows"]),
        )
        return cls(
            str(d["view"]),
            float(d["weight"]),
            float(d["param"]),
            int(d["n_features"]),
            int(d["n_out"]),
            int(d["n_classes"]),
            groups,
            int(d.get("rows", 0)),
            bool(d.get("median", False)),
        )


class TaskProbe(nn.Module):
    """Standardise the selected features, a linear map, and blend into the head's output."""

    columns: torch.Tensor
    mean: torch.Tensor
    scale: torch.Tensor
    coef: torch.Tensor
    intercept: torch.Tensor
    classes: torch.Tensor

    def __init__(self, task: str, spec: ProbeSpec) -> None:
        super().__init__()
        self.task = task
        self.spec = spec
        p, k = spec.n_features, spec.n_out
        self.register_buffer("columns", torch.zeros(p, dtype=torch.int64))
        self.register_buffer("mean", torch.zeros(p))
        self.register_buffer("scale", torch.ones(p))
        self.register_buffer("coef", torch.zeros(k, p))
        self.register_buffer("intercept", torch.zeros(k))
        self.register_buffer("classes", torch.zeros(k if task == "multiclass" else 0, dtype=torch.int64))

    def forward(
        self, h: torch.Tensor, feats: torch.Tensor, t: dict[str, torch.Tensor], head: torch.Tensor
    ) -> torch.Tensor:
        x = probe_features(h, feats, t, self.spec.groups)[:, self.columns]
        p = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        w = self.spec.weight
        if self.task == "binary":
            return (1.0 - w) * head + w * p[:, 0]
        if self.task == "regression":  # the location only; the spread stays the head's
            return torch.cat([(1.0 - w) * head[:, :1] + w * p, head[:, 1:]], 1)
        if p.shape[1] == 1:  # two classes: sklearn gives one decision column
            p = torch.cat([-p, p], 1)
        full = torch.full_like(head, NO_CLASS).index_copy(1, self.classes, p.to(head.dtype))
        return (1.0 - w) * head + w * full


@dataclass
class ProbeData:
    """Probe features, targets (0/1, normalised values or class slots) and the head's outputs."""

    x: np.ndarray
    y: np.ndarray
    head: np.ndarray  # binary: logits [n]; regression: location [n]; multiclass: logits [n, k]

    def subset(self, idx: np.ndarray) -> ProbeData:
        return ProbeData(self.x[idx], self.y[idx], self.head[idx])


def features_of(
    h: torch.Tensor, feats: torch.Tensor, t: dict[str, torch.Tensor], groups: AggregateGroups
) -> np.ndarray:
    return probe_features(h, feats, t, groups).detach().numpy().astype(np.float64)


def views_of(d: int, width: int, total: int) -> dict[str, np.ndarray]:
    """The probe's views of [encoder (d) | lags + history (width) | aggregates] besides "all", as zero-shot
    (relfm.RFM._fit_probe)."""
    return {"history": np.arange(d, d + width), "history+aggregates": np.arange(d, total)}


def _median_shift(model: Any, xs: np.ndarray, y: np.ndarray) -> float:
    """What moves a least-squares fit's intercept to the median of its training residuals."""
    return float(np.median(y - np.asarray(model.predict(xs), dtype=np.float64)))


def fit_task_probe(
    task: str,
    train: ProbeData,
    val: ProbeData,
    views: dict[str, np.ndarray],
    groups: AggregateGroups,
    n_classes: int,
) -> tuple[TaskProbe | None, float, np.ndarray]:
    """The view, regularisation and blend weight with the lowest validation loss, that loss, and the
    validation outputs it was measured on (out of sample: the probe solved on the training rows only);
    None when the head alone is best (or a class is missing from training), with the head's outputs."""
    y_tr = train.y
    if task != "regression" and len(np.unique(y_tr.astype(np.int64))) < 2:
        return None, np.inf, val.head
    k = n_classes if task == "multiclass" else 0

    def val_loss(out: np.ndarray) -> float:
        """Log loss; for regression the mean absolute error the fine-tuning early-stops on."""
        if task == "regression":
            return float(np.mean(np.abs(out - val.y)))
        return probe_loss(task, val.y, out, k)

    head_loss = val_loss(val.head)
    best: tuple[float, str, float, float, bool, np.ndarray] | None = None
    candidates = {"all": np.arange(train.x.shape[1]), **views}
    for view, cols in candidates.items():
        scaler = StandardScaler().fit(train.x[:, cols])
        xs_tr, xs_va = scaler.transform(train.x[:, cols]), scaler.transform(val.x[:, cols])
        for param in ALPHA_GRID if task == "regression" else C_GRID:
            fit = fit_linear(task, param, xs_tr, y_tr, 0)
            out = linear_output(fit, xs_va, task, k)
            # regression is scored by absolute error: the ridge fit's mean can also be moved to the median
            # of its training residuals (skewed targets, such as finishing positions)
            shifts = [(False, 0.0)]
            if task == "regression":
                shifts.append((True, _median_shift(fit, xs_tr, y_tr)))
            for median, shift in shifts:
                for w in BLEND_WEIGHTS[1:]:
                    blended = (1.0 - w) * val.head + w * (out + shift)
                    loss = val_loss(blended)
                    if best is None or loss < best[0]:
                        best = (loss, view, param, w, median, blended)
    if best is None or head_loss <= best[0]:
        return None, head_loss, val.head
    loss, view, param, w, median, val_out = best
    # chosen on the validation rows, then solved on them too: they are the most recent labelled rows,
    # closest to the rows the model will score
    cols = candidates[view]
    x_all = np.concatenate([train.x[:, cols], val.x[:, cols]])
    y_all = np.concatenate([y_tr, val.y])
    scaler = StandardScaler().fit(x_all)
    xs = scaler.transform(x_all)
    model = fit_linear(task, param, xs, y_all, 0)
    if median:
        model.intercept_ = model.intercept_ + _median_shift(model, xs, y_all)
    coef = np.atleast_2d(model.coef_)
    spec = ProbeSpec(view, w, param, len(cols), coef.shape[0], k, groups, len(y_all), median)
    probe = TaskProbe(task, spec)
    probe.columns.copy_(torch.from_numpy(cols.astype(np.int64)))
    probe.mean.copy_(torch.from_numpy(scaler.mean_.astype(np.float32)))
    probe.scale.copy_(torch.from_numpy(np.where(scaler.scale_ > 0, scaler.scale_, 1.0).astype(np.float32)))
    probe.coef.copy_(torch.from_numpy(coef.astype(np.float32)))
    probe.intercept.copy_(torch.from_numpy(np.atleast_1d(model.intercept_).astype(np.float32)))
    if task == "multiclass":
        assert isinstance(model, LogisticRegression)
        probe.classes.copy_(torch.from_numpy(model.classes_.astype(np.int64)))
    return probe, loss, val_out
