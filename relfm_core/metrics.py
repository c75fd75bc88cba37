"""Evaluation metrics by task type, in NumPy (tests check them against scikit-learn on the same arrays).

Binary: AUROC, AP, accuracy, F1 (at 0.5), expected calibration error. Regression: MAE, RMSE, MAPE, R².
Multiclass: accuracy, macro-F1. Link prediction: MAP@k, recall@k, NDCG@k, catalogue coverage (share of
all candidates ever recommended: diversity) and popularity bias (mean popularity rank percentile of what
is recommended: 1 = only the most popular items).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def _rank_average(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def auroc(y: np.ndarray, score: np.ndarray) -> float:
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = _rank_average(s)
    return float((r[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Step-wise AP over distinct thresholds, as sklearn.metrics.average_precision_score."""
    y = np.asarray(y).astype(bool)
    s = np.asarray(score, dtype=np.float64)
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.flatnonzero(np.diff(s)) if len(s) > 1 else np.array([], dtype=int)
    thr_idx = np.r_[distinct, len(s) - 1]
    tp = np.cumsum(y)[thr_idx]
    fp = (thr_idx + 1) - tp
    precision = tp / (tp + fp)
    recall = tp / y.sum()
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))


def f1_binary(y: np.ndarray, pred: np.ndarray) -> float:
    y, p = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    tp = int((y & p).sum())
    denom = 2 * tp + int((~y & p).sum()) + int((y & ~p).sum())
    return 0.0 if denom == 0 else 2 * tp / denom


def calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error with equal-width probability bins."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(prob, dtype=np.float64), 0, 1)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            err += m.mean() * abs(p[m].mean() - y[m].mean())
    return float(err)


def calibration_curve(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(mean predicted, observed rate) per non-empty bin, as sklearn.calibration.calibration_curve."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(prob, dtype=np.float64), 0, 1)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.searchsorted(edges[1:-1], p, side="right")
    mp, obs = [], []
    for b in range(bins):
        m = idx == b
        if m.any():
            mp.append(p[m].mean())
            obs.append(y[m].mean())
    return np.array(mp), np.array(obs)


def binary_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    pred = prob >= 0.5
    return {
        "auroc": auroc(y, prob),
        "average_precision": average_precision(y, prob),
        "accuracy": float((pred == y.astype(bool)).mean()),
        "f1": f1_binary(y, pred),
        "calibration_error": calibration_error(y, prob),
        "positive_rate": float(y.mean()),
        "count": float(len(y)),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    err = p - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    eps = np.finfo(np.float64).eps
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "mape": float((np.abs(err) / np.maximum(np.abs(y), eps)).mean()),
        "r2": float(1 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        "count": float(len(y)),
    }


def multiclass_metrics(y: Sequence[Any], pred: Sequence[Any]) -> dict[str, float]:
    ya, pa = np.asarray(list(y), dtype=object), np.asarray(list(pred), dtype=object)
    labels = sorted(set(ya.tolist()) | set(pa.tolist()), key=str)
    f1s = []
    for c in labels:
        tp = int(((ya == c) & (pa == c)).sum())
        fp = int(((ya != c) & (pa == c)).sum())
        fn = int(((ya == c) & (pa != c)).sum())
        f1s.append(0.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn))
    return {"accuracy": float((ya == pa).mean()), "macro_f1": float(np.mean(f1s)), "count": float(len(ya))}


def ranking_metrics(
    truth: Sequence[Sequence[Any]],
    ranked: Sequence[Sequence[Any]],
    k: int,
    catalogue: Sequence[Any] | None = None,
    popularity: dict[Any, float] | None = None,
) -> dict[str, float]:
    """MAP@k, recall@k, NDCG@k over entities with a non-empty truth, plus coverage and popularity bias."""
    aps, recalls, ndcgs = [], [], []
    recommended: set[Any] = set()
    pop_scores: list[float] = []
    pop_rank: dict[Any, float] = {}
    if popularity:
        items = sorted(popularity, key=lambda x: popularity[x])
        pop_rank = {it: (i + 1) / len(items) for i, it in enumerate(items)}
    for t, r in zip(truth, ranked, strict=True):
        top = list(r)[:k]
        recommended.update(top)
        if pop_rank:
            pop_scores.extend(pop_rank.get(x, 0.0) for x in top)
        ts = set(t)
        if not ts:
            continue
        hits, s = 0, 0.0
        for i, x in enumerate(top):
            if x in ts:
                hits += 1
                s += hits / (i + 1)
        aps.append(s / min(len(ts), k))
        recalls.append(hits / len(ts))
        dcg = sum(1.0 / np.log2(i + 2) for i, x in enumerate(top) if x in ts)
        idcg = sum(1.0 / np.log2(i + 2) for i in range(min(len(ts), k)))
        ndcgs.append(dcg / idcg)
    out = {
        f"map@{k}": float(np.mean(aps)) if aps else float("nan"),
        f"recall@{k}": float(np.mean(recalls)) if recalls else float("nan"),
        f"ndcg@{k}": float(np.mean(ndcgs)) if ndcgs else float("nan"),
        "count": float(len(aps)),
    }
    if catalogue is not None and len(catalogue):
        out["coverage"] = len(recommended & set(catalogue)) / len(set(catalogue))
    if pop_scores:
        out["popularity_bias"] = float(np.mean(pop_scores))
    return out


def compute_metrics(task_type: str, y: np.ndarray, frame: pd.DataFrame) -> dict[str, float]:
    """Metrics for a prediction frame (`prediction` column, plus `prob_*` for multiclass)."""
    if task_type == "binary":
        return binary_metrics(np.asarray(y, dtype=float), frame["prediction"].to_numpy(np.float64))
    if task_type == "regression":
        return regression_metrics(np.asarray(y, dtype=float), frame["prediction"].to_numpy(np.float64))
    if task_type == "multiclass":
        return multiclass_metrics(list(y), frame["prediction"].tolist())
    raise ValueError(f"no metrics for task type {task_type}")
