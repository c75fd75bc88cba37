"""The plots people open after a nightly run, as PNG files and as MLflow image artifacts.

Classification: ROC curve and calibration (reliability) diagram. Regression: predicted against actual.
Every task: the distribution of tonight's scores, and drift against the previous night's run, a histogram
overlay with two numbers that alerting can threshold on: the population stability index (PSI, on deciles
of the previous run's scores) and the two-sample Kolmogorov-Smirnov statistic.

Figures are drawn with matplotlib's object API on the Agg canvas (`matplotlib.figure.Figure`), never
pyplot: no global figure registry to leak memory in a long-running Ray actor, no GUI backend to pick, and
safe next to other code that does use pyplot.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from graph_engine.errors import RelfmError
from relfm_core.metrics import auroc, calibration_curve, calibration_error, regression_metrics

# Scatter plots of millions of entities are unreadable and slow to render: a fixed-seed sample is drawn.
MAX_SCATTER_POINTS = 20_000
PSI_BINS = 10
# A floor for empty bins, so that PSI stays finite when a bin empties (the usual convention).
PSI_EPSILON = 1e-4
DPI = 110


@dataclass(frozen=True)
class DriftResult:
    """The drift figure and its two numbers (PSI: < 0.1 stable, 0.1-0.25 moderate, > 0.25 shifted)."""

    path: Path
    psi: float
    ks: float
    ks_pvalue: float


# ------------------------------------------------------------------------------------------------ helpers
def _array(values: Any, what: str) -> np.ndarray:
    try:
        a = np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        raise RelfmError(f"plots: {what} must be numeric") from None
    return a


def _finite(what: str, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Drops positions where any array is NaN/inf (rows without a label or a score are not plotted)."""
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise RelfmError(f"plots: {what}: arrays differ in length ({', '.join(str(len(a)) for a in arrays)})")
    keep = np.ones(n, dtype=bool)
    for a in arrays:
        keep &= np.isfinite(a)
    if not keep.any():
        raise RelfmError(f"plots: {what}: no finite values to plot")
    return tuple(a[keep] for a in arrays)


def _binary_labels(y: np.ndarray, what: str) -> np.ndarray:
    if not np.isin(y, (0.0, 1.0)).all():
        raise RelfmError(f"plots: {what}: labels must be 0/1 (found {np.unique(y)[:5].tolist()})")
    return y


def _out_path(out_dir: str | Path | None, name: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix="relfm-plots-")) if out_dir is None else Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    return d / name


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, format="png")
    return path


def _sample(rng_seed: int, n: int, limit: int) -> np.ndarray:
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(rng_seed).choice(n, size=limit, replace=False))


# ------------------------------------------------------------------------------------------------ figures
def roc_curve_plot(y: Any, prob: Any, out_dir: str | Path | None = None) -> Path:
    """ROC curve of a binary task, AUROC in the legend."""
    from sklearn.metrics import roc_curve

    yy, pp = _finite("roc curve", _array(y, "labels"), _array(prob, "probabilities"))
    _binary_labels(yy, "roc curve")
    if yy.min() == yy.max():
        raise RelfmError("plots: roc curve: labels hold one class only; ROC needs positives and negatives")
    fpr, tpr, _ = roc_curve(yy, pp)
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, color="C0", lw=2, label=f"AUROC {auroc(yy, pp):.3f} (n={len(yy):,})")
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="chance")
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.01),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC curve",
    )
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, _out_path(out_dir, "roc_curve.png"))


def calibration_plot(y: Any, prob: Any, out_dir: str | Path | None = None, bins: int = 10) -> Path:
    """Reliability diagram (observed rate per predicted-probability bin) over a histogram of the scores."""
    yy, pp = _finite("calibration", _array(y, "labels"), _array(prob, "probabilities"))
    _binary_labels(yy, "calibration")
    mean_pred, observed = calibration_curve(yy, pp, bins=bins)
    fig = Figure(figsize=(5, 6), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    top.plot(
        mean_pred,
        observed,
        marker="o",
        color="C0",
        label=f"model (ECE {calibration_error(yy, pp, bins=bins):.3f})",
    )
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="observed positive rate", title="Calibration")
    top.legend(loc="upper left")
    top.grid(alpha=0.3)
    bottom.hist(np.clip(pp, 0, 1), bins=bins, range=(0, 1), color="C0", alpha=0.7)
    bottom.set(xlabel="predicted probability", ylabel="entities")
    return _save(fig, _out_path(out_dir, "calibration.png"))


def predicted_vs_actual_plot(y: Any, pred: Any, out_dir: str | Path | None = None) -> Path:
    """Scatter of predictions against actual values with the identity line, MAE and R² in the title."""
    yy, pp = _finite("predicted vs actual", _array(y, "actual values"), _array(pred, "predictions"))
    m = regression_metrics(yy, pp)
    idx = _sample(0, len(yy), MAX_SCATTER_POINTS)
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.add_subplot()
    alpha = float(np.clip(2000 / len(idx), 0.05, 0.8))
    ax.scatter(yy[idx], pp[idx], s=6, alpha=alpha, color="C0", linewidths=0)
    lo, hi = float(min(yy.min(), pp.min())), float(max(yy.max(), pp.max()))
    pad = (hi - lo) * 0.02 or 1.0
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="grey", ls="--", lw=1)
    ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), xlabel="actual", ylabel="predicted")
    sampled = f", {len(idx):,} shown" if len(idx) < len(yy) else ""
    ax.set_title(
        f"Predicted vs actual: MAE {m['mae']:.3g}, R² {m['r2']:.3f} (n={len(yy):,}{sampled})", fontsize=9
    )
    ax.grid(alpha=0.3)
    return _save(fig, _out_path(out_dir, "predicted_vs_actual.png"))


def score_distribution_plot(pred: Any, out_dir: str | Path | None = None, bins: int = 50) -> Path:
    """Histogram of tonight's scores with the median and the 5th/95th percentiles marked."""
    (pp,) = _finite("score distribution", _array(pred, "predictions"))
    p5, p50, p95 = np.quantile(pp, [0.05, 0.5, 0.95])
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(pp, bins=bins, color="C0", alpha=0.8)
    for q, style in ((p5, ":"), (p50, "-"), (p95, ":")):
        ax.axvline(float(q), color="k", ls=style, lw=1)
    ax.set(
        xlabel="score",
        ylabel="entities",
        title=f"Scores: n={len(pp):,}, median {p50:.3g}, 5-95% [{p5:.3g}, {p95:.3g}]",
    )
    ax.title.set_fontsize(9)
    ax.grid(alpha=0.3)
    return _save(fig, _out_path(out_dir, "score_distribution.png"))


# ------------------------------------------------------------------------------------------------ drift
def population_stability_index(current: Any, previous: Any, bins: int = PSI_BINS) -> float:
    """PSI of `current` against `previous` on the previous run's quantile bins.

    sum_b (c_b - p_b) * ln(c_b / p_b) over bin shares, empty shares floored at PSI_EPSILON. Quantile edges
    give every bin a share of the reference, so the index measures movement rather than binning; ties
    (few distinct scores) merge edges, which leaves fewer, still meaningful bins.
    """
    (cur,) = _finite("drift (tonight)", _array(current, "tonight's scores"))
    (prev,) = _finite("drift (previous run)", _array(previous, "previous scores"))
    inner = np.unique(np.quantile(prev, np.linspace(0, 1, bins + 1)[1:-1]))
    c = np.bincount(np.searchsorted(inner, cur, side="right"), minlength=len(inner) + 1) / len(cur)
    p = np.bincount(np.searchsorted(inner, prev, side="right"), minlength=len(inner) + 1) / len(prev)
    c, p = np.maximum(c, PSI_EPSILON), np.maximum(p, PSI_EPSILON)
    return float(np.sum((c - p) * np.log(c / p)))


def ks_statistic(current: Any, previous: Any) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and p-value (scipy)."""
    from scipy.stats import ks_2samp

    (cur,) = _finite("drift (tonight)", _array(current, "tonight's scores"))
    (prev,) = _finite("drift (previous run)", _array(previous, "previous scores"))
    res = ks_2samp(cur, prev)
    return float(res.statistic), float(res.pvalue)


def drift_plot(current: Any, previous: Any, out_dir: str | Path | None = None, bins: int = 50) -> DriftResult:
    """Overlaid density histograms of tonight's and the previous run's scores, with PSI and KS."""
    (cur,) = _finite("drift (tonight)", _array(current, "tonight's scores"))
    (prev,) = _finite("drift (previous run)", _array(previous, "previous scores"))
    psi = population_stability_index(cur, prev)
    ks, pvalue = ks_statistic(cur, prev)
    edges = np.histogram_bin_edges(np.concatenate([cur, prev]), bins=bins)
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.hist(
        prev,
        bins=edges.tolist(),
        density=True,
        alpha=0.5,
        color="grey",
        label=f"previous run (n={len(prev):,})",
    )
    ax.hist(cur, bins=edges.tolist(), density=True, alpha=0.5, color="C0", label=f"tonight (n={len(cur):,})")
    ax.set(xlabel="score", ylabel="density")
    ax.set_title(f"Drift against the previous run: PSI {psi:.3f}, KS {ks:.3f}", fontsize=9)
    ax.legend(loc="best")
    ax.grid(alpha=0.3)
    return DriftResult(_save(fig, _out_path(out_dir, "drift.png")), psi, ks, pvalue)


# ------------------------------------------------------------------------------------------------ MLflow
def log_plots(
    task_type: str,
    pred: Any,
    y: Any = None,
    previous: Any = None,
    out_dir: str | Path | None = None,
    artifact_path: str = "plots",
    labelled_pred: Any = None,
) -> dict[str, Path]:
    """Renders the plots that apply and logs them to the active MLflow run under `artifact_path`.

    `pred`: tonight's scores (probabilities for binary tasks). `y`: labels of the backtest window, when
    there are any (ROC and calibration for binary, predicted-vs-actual for regression), paired with
    `labelled_pred`, the model's predictions for those labelled rows (default `pred`: when tonight's scores
    are themselves the labelled ones). The nightly job passes both: tonight's entities have no labels yet,
    so its ROC comes from the backtest window and its score distribution from tonight. `previous`: the
    previous run's scores; with it, the drift plot is drawn and `drift_psi`, `drift_ks` and
    `drift_ks_pvalue` are logged as metrics. Returns {plot name: local PNG path}.
    """
    import mlflow

    if mlflow.active_run() is None:
        raise RelfmError("plots: no active MLflow run to log plots to (call inside pipelines.tracking.run)")
    d = Path(tempfile.mkdtemp(prefix="relfm-plots-")) if out_dir is None else Path(out_dir)
    paths: dict[str, Path] = {"score_distribution": score_distribution_plot(pred, d)}
    scored = pred if labelled_pred is None else labelled_pred
    if y is not None and task_type == "binary":
        paths["roc_curve"] = roc_curve_plot(y, scored, d)
        paths["calibration"] = calibration_plot(y, scored, d)
    elif y is not None and task_type == "regression":
        paths["predicted_vs_actual"] = predicted_vs_actual_plot(y, scored, d)
    if previous is not None:
        drift = drift_plot(pred, previous, d)
        paths["drift"] = drift.path
        metrics = {"drift_psi": drift.psi, "drift_ks": drift.ks, "drift_ks_pvalue": drift.ks_pvalue}
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
    for path in paths.values():
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    return paths
