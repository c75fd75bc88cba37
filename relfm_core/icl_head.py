"""The closed-form in-context head: a linear probe fitted on the labelled context at prediction time.

Why: an in-context learner can only be as good as what it extracts from the context. Attention over the
context (the transformer's ICL layers) learns that from pretraining; a regularised linear model solved
on the same context — over the entity representations the encoder produces, the entity's own lagged
and historical target values and plain aggregates of its sampled subgraph (relfm_core.subgraph_aggregates)
— extracts it exactly, for any task, with no gradient step on the task. Which of those views it reads is
chosen by the same cross-validation.
Transformers trained for in-context regression are known to approximate such ridge solutions; here it is
computed directly and blended with the attention head. The blend weight and the regularisation are chosen
by cross-validation on the context alone, so nothing about the rows being predicted is used: this stays
zero-shot in the sense KumoRFM uses (no training on the task, only its in-context examples).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss, mean_squared_error
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.preprocessing import StandardScaler

BLEND_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # weight of the probe against the attention head
C_GRID = (0.003, 0.01, 0.03, 0.1)  # logistic regression inverse regularisation
ALPHA_GRID = (1.0, 10.0, 100.0, 1000.0)  # ridge regularisation
NO_CLASS = -30.0  # logit of a class the probe never saw: ~0 probability


@dataclass
class ProbeConfig:
    folds: int = 4
    min_rows: int = 24  # below this (or with one class) the attention head predicts alone
    seed: int = 0


@dataclass
class ContextProbe:
    """Fitted probe: scaler, linear model and the probe's blend weight (0 = attention head only)."""

    task: str
    weight: float = 0.0
    param: float = 0.0
    scaler: StandardScaler | None = None
    model: LogisticRegression | Ridge | None = None
    classes: np.ndarray = field(default_factory=lambda: np.zeros(0))
    cv_scores: dict[str, float] = field(default_factory=dict)
    view: str = "all"
    columns: np.ndarray | None = None  # the feature columns the probe reads (None: all)
    groups: Any = None  # relfm_core.subgraph_aggregates.AggregateGroups behind the aggregate columns

    def select(self, x: Any) -> Any:
        """The probe's feature view of x (NumPy array or torch tensor, rows by features)."""
        return x if self.columns is None else x[:, self.columns]

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Probe output in the attention head's space: logits (binary), class logits, normalised value."""
        assert self.scaler is not None and self.model is not None
        xs = self.scaler.transform(self.select(x))
        if self.task == "regression":
            return np.asarray(self.model.predict(xs), dtype=np.float64)
        assert isinstance(self.model, LogisticRegression)
        return np.asarray(self.model.decision_function(xs), dtype=np.float64)

    def blend(self, x: np.ndarray, head: np.ndarray) -> np.ndarray:
        """The attention head's output [n] or [n, k] blended with the probe's."""
        if self.weight == 0.0 or self.model is None:
            return head
        assert self.scaler is not None
        k = head.shape[1] if self.task == "multiclass" else 0
        p = linear_output(self.model, self.scaler.transform(self.select(x)), self.task, k)
        return (1.0 - self.weight) * head + self.weight * p


def fit_linear(
    task: str, param: float, x: np.ndarray, y: np.ndarray, seed: int
) -> LogisticRegression | Ridge:
    if task == "regression":
        return Ridge(alpha=param).fit(x, y)
    return LogisticRegression(C=param, max_iter=1000, random_state=seed).fit(x, y.astype(np.int64))


def linear_output(model: LogisticRegression | Ridge, xs: np.ndarray, task: str, k: int) -> np.ndarray:
    """In the head's output space: the value (regression), the logit (binary), or logits over all k
    class slots, NO_CLASS for the classes the model never saw (multiclass)."""
    if task == "regression":
        return np.asarray(model.predict(xs), dtype=np.float64)
    assert isinstance(model, LogisticRegression)
    d = np.asarray(model.decision_function(xs), dtype=np.float64)
    if task == "binary":
        return d
    full = np.full((len(xs), k), NO_CLASS)
    full[:, model.classes_.astype(np.int64)] = d if d.ndim == 2 else np.stack([-d, d], 1)
    return full


def probe_loss(task: str, y: np.ndarray, out: np.ndarray, n_classes: int) -> float:
    """Cross-validation loss in the head's output space (logits or normalised values)."""
    if task == "regression":
        return float(mean_squared_error(y, out))
    if task == "binary":
        p = 1.0 / (1.0 + np.exp(-np.clip(out, -30, 30)))
        return float(log_loss(y.astype(np.int64), p, labels=[0, 1]))
    z = out - out.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return float(log_loss(y.astype(np.int64), p, labels=list(range(n_classes))))


def fit_probe(
    task: str,
    x: np.ndarray,
    y: np.ndarray,
    head_oof: np.ndarray | None,
    cfg: ProbeConfig | None = None,
    n_classes: int = 0,
    views: dict[str, np.ndarray] | None = None,
) -> ContextProbe:
    """Fits the probe on context features x and labels y (normalised values, 0/1, or class slots).

    `head_oof` holds the attention head's out-of-fold outputs on the context rows (each row predicted from
    a memory that excluded it); with it the blend weight is chosen by the same folds, without it the probe
    predicts alone when it fits. `views` names alternative column subsets of x (for example the entity's
    own label history alone, which on small contexts generalises better than history plus the encoder's
    128 dimensions); the view is chosen by the same cross-validation. Returns a probe of weight 0 when the
    context cannot support one.
    """
    cfg = cfg or ProbeConfig()
    probe = ContextProbe(task)
    y = np.asarray(y, dtype=np.float64)
    if task not in ("binary", "regression", "multiclass") or len(y) < cfg.min_rows:
        return probe
    if task != "regression":
        counts = np.bincount(y.astype(np.int64))
        if (counts > 0).sum() < 2 or counts[counts > 0].min() < cfg.folds:
            return probe
    folds = (
        KFold(cfg.folds, shuffle=True, random_state=cfg.seed)
        if task == "regression"
        else StratifiedKFold(cfg.folds, shuffle=True, random_state=cfg.seed)
    )
    splits = list(folds.split(x, y if task != "regression" else None))
    classes = np.unique(y.astype(np.int64)) if task == "multiclass" else np.zeros(0)
    k = n_classes or (int(classes.max()) + 1 if len(classes) else 0)

    def oof(xs: np.ndarray, param: float) -> np.ndarray:
        out = np.full((len(y), k), NO_CLASS) if task == "multiclass" else np.zeros(len(y))
        for tr, te in splits:
            out[te] = linear_output(fit_linear(task, param, xs[tr], y[tr], cfg.seed), xs[te], task, k)
        return out

    grid = ALPHA_GRID if task == "regression" else C_GRID
    candidates: dict[str, np.ndarray | None] = {"all": None}
    candidates.update({name: np.asarray(c, dtype=np.int64) for name, c in (views or {}).items() if len(c)})
    best: tuple[float, str, float, float] | None = None  # (loss, view, param, weight)
    for view, columns in candidates.items():
        xv = x if columns is None else x[:, columns]
        xs = StandardScaler().fit_transform(xv)
        for param in grid:
            p = oof(xs, param)
            for w in BLEND_WEIGHTS if head_oof is not None else (1.0,):
                if w == 0.0:
                    continue
                out = p if head_oof is None else (1.0 - w) * head_oof + w * p
                loss = probe_loss(task, y, out, k)
                probe.cv_scores[f"view={view},param={param},w={w}"] = round(loss, 5)
                if best is None or loss < best[0]:
                    best = (loss, view, param, w)
    assert best is not None
    if head_oof is not None:
        head_loss = probe_loss(task, y, head_oof, k)
        probe.cv_scores["head_only"] = round(head_loss, 5)
        if head_loss <= best[0]:
            return probe
    probe.view, probe.param, probe.weight = best[1], best[2], best[3]
    probe.columns = candidates[best[1]]
    probe.scaler = StandardScaler().fit(probe.select(x))
    probe.model = fit_linear(task, probe.param, probe.scaler.transform(probe.select(x)), y, cfg.seed)
    probe.classes = classes
    return probe
