"""Evaluation metrics by task type, in NumPy (tests check them against scikit-learn on the same arrays).

Binary: AUROC, AP, accuracy, F1 (at 0.5), expected calibration error. Regression: MAE, RMSE, MAPE (over non-zero
targets), R².
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
    x = np.asarray(x)
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[True, xs[1:] != xs[:-1]]
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], n] - 1
    ranks = np.empty(n, dtype=np.float64)
    ranks[order] = ((first + last) / 2.0 + 1.0)[np.cumsum(starts) - 1]
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


def _calibration_bins(prob: np.ndarray, bins: int) -> np.ndarray:
    """Bin of each probability: equal-width bins, edges assigned as sklearn.calibration does."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.searchsorted(edges[1:-1], prob)


def calibration_error(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: sum over equal-width probability bins of the bin's share of rows times
    |mean predicted probability - observed positive rate| (bins as sklearn.calibration.calibration_curve)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(prob, dtype=np.float64), 0, 1)
    if len(p) == 0:
        return float("nan")
    idx = _calibration_bins(p, bins)
    count = np.bincount(idx, minlength=bins).astype(np.float64)
    pred = np.bincount(idx, weights=p, minlength=bins)
    obs = np.bincount(idx, weights=y, minlength=bins)
    used = count > 0
    return float(np.sum(np.abs(pred[used] - obs[used])) / len(p))


def calibration_curve(y: np.ndarray, prob: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(mean predicted, observed rate) per non-empty bin, as sklearn.calibration.calibration_curve."""
    y = np.asarray(y, dtype=np.float64)
    p = np.clip(np.asarray(prob, dtype=np.float64), 0, 1)
    idx = _calibration_bins(p, bins)
    count = np.bincount(idx, minlength=bins)
    used = count > 0
    pred = np.bincount(idx, weights=p, minlength=bins)[used] / count[used]
    obs = np.bincount(idx, weights=y, minlength=bins)[used] / count[used]
    return pred, obs


def binary_metrics(y: np.ndarray, prob: np.ndarray) -> dict[str, float]:
    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, dtype=np.float64)
    if len(y) == 0:
        return {"count": 0.0}
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
    if len(y) == 0:
        return {"count": 0.0}
    err = p - y
    ss_tot = float(((y - y.mean()) ** 2).sum())
    # Count targets are often zero, and a percentage error against zero is undefined (scikit-learn
    # divides by machine epsilon and reports ~1e15); MAPE is taken over the non-zero targets and the
    # number left out is reported beside it.
    nonzero = y != 0
    denom = np.maximum(np.abs(y[nonzero]), np.finfo(np.float64).eps)  # as scikit-learn, for tiny targets
    mape = float((np.abs(err[nonzero]) / denom).mean()) if nonzero.any() else float("nan")
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "mape": mape,
        "mape_zero_targets": float((~nonzero).sum()),
        "r2": float(1 - (err**2).sum() / ss_tot) if ss_tot > 0 else float("nan"),
        "count": float(len(y)),
    }


def multiclass_metrics(y: Sequence[Any], pred: Sequence[Any]) -> dict[str, float]:
    ya, pa = np.asarray(list(y), dtype=object), np.asarray(list(pred), dtype=object)
    if len(ya) == 0:
        return {"count": 0.0}
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
        items = list(popularity)
        ranks = _rank_average(np.array([popularity[x] for x in items], dtype=np.float64))
        pop_rank = {it: float(r) / len(items) for it, r in zip(items, ranks, strict=True)}
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


def compute_metrics(
    task_type: str,
    y: Any,
    frame: pd.DataFrame,
    k: int | None = None,
    catalogue: Sequence[Any] | None = None,
    popularity: dict[Any, float] | None = None,
) -> dict[str, float]:
    """Metrics for a prediction frame (`prediction` column, plus `prob_*` for multiclass) against labels
    `y` in the same order. Rows without a label or a prediction are left out (`count` says how many were
    scored). Link prediction: `y` holds the true keys of each entity, `prediction` the ranked keys; `k`
    defaults to the length of the longest ranking."""
    if task_type == "link_prediction":
        truth = [list(t) if t is not None else [] for t in y]
        ranked = [list(r) if r is not None else [] for r in frame["prediction"]]
        kk = k or max((len(r) for r in ranked), default=1) or 1
        return ranking_metrics(truth, ranked, kk, catalogue, popularity)
    if task_type in ("binary", "regression"):
        yy = np.asarray(y, dtype=np.float64)
        pp = frame["prediction"].to_numpy(np.float64)
        keep = np.isfinite(yy) & np.isfinite(pp)
        if task_type == "binary":
            return binary_metrics(yy[keep], pp[keep])
        return regression_metrics(yy[keep], pp[keep])
    if task_type == "multiclass":
        ys, ps = list(y), frame["prediction"].tolist()
        keep = [i for i, (a, b) in enumerate(zip(ys, ps, strict=True)) if not _missing(a) and not _missing(b)]
        return multiclass_metrics([ys[i] for i in keep], [ps[i] for i in keep])
    raise ValueError(f"no metrics for task type {task_type}")


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and not np.isfinite(v))
