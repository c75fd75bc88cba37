"""The evaluation report: one Markdown file and one self-contained HTML file with the same content.

Reviewers in regulated industries read these before anything ships, often offline or attached to a
ticket, so the HTML embeds its figures (base64 PNG) and the Markdown links to the PNG files beside it.
Both say what was evaluated (query, graph, model, anchor, how many entities), how well (the metrics),
and what the model relies on (the global explanation: column importances and their cohorts).
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from graph_engine.errors import RelfmError

DPI = 110
METRIC_NAMES = {
    "auroc": "AUROC",
    "average_precision": "average precision",
    "accuracy": "accuracy",
    "f1": "F1 (threshold 0.5)",
    "calibration_error": "expected calibration error",
    "positive_rate": "positive rate",
    "mae": "MAE",
    "rmse": "RMSE",
    "mape": "MAPE (non-zero targets)",
    "mape_zero_targets": "zero targets left out of MAPE",
    "r2": "R²",
    "macro_f1": "macro-F1",
    "coverage": "catalogue coverage",
    "popularity_bias": "popularity bias",
    "count": "entities scored",
}


@dataclass
class ReportContent:
    """Everything a report shows; figures are PNG files (already written)."""

    title: str
    setup: dict[str, str]
    metrics: dict[str, float]
    figures: dict[str, Path] = field(default_factory=dict)  # caption -> PNG
    importance: pd.DataFrame | None = None  # global explanation: table, column, kind, importance, ...
    cohorts: pd.DataFrame | None = None
    explanation_lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    top_cohort_columns: int = 3


# ------------------------------------------------------------------------------------------------ figures
def importance_plot(importance: pd.DataFrame, out_dir: Path, top: int = 15) -> Path:
    """Horizontal bars of the columns' importance (variance of cohort mean predictions)."""
    d = importance.head(top).iloc[::-1]
    fig = Figure(figsize=(6, max(2.0, 0.35 * len(d) + 1)), layout="constrained")
    ax = fig.add_subplot()
    ax.barh([f"{t}.{c}" for t, c in zip(d["table"], d["column"], strict=True)], d["importance"], color="C0")
    ax.set(xlabel="variance of the mean prediction across cohorts", title="Global explanation")
    ax.title.set_fontsize(10)
    ax.grid(alpha=0.3, axis="x")
    path = out_dir / "global_importance.png"
    fig.savefig(path, dpi=DPI, format="png")
    return path


def confusion_plot(y: Any, pred: Any, out_dir: Path, max_classes: int = 12) -> Path:
    """Confusion matrix of a multiclass backtest, rows = actual, share of each actual class."""
    ya = [str(v) for v in y]
    pa = [str(v) for v in pred]
    counts = pd.Series(ya).value_counts()
    classes = counts.index[:max_classes].tolist()
    idx = {c: i for i, c in enumerate(classes)}
    m = np.zeros((len(classes), len(classes)))
    for a, p in zip(ya, pa, strict=True):
        if a in idx and p in idx:
            m[idx[a], idx[p]] += 1
    share = m / np.maximum(m.sum(1, keepdims=True), 1)
    fig = Figure(figsize=(1.0 + 0.5 * len(classes), 1.0 + 0.45 * len(classes)), layout="constrained")
    ax = fig.add_subplot()
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set(xlabel="predicted", ylabel="actual", title="Confusion (share of each actual class)")
    ax.title.set_fontsize(9)
    path = out_dir / "confusion.png"
    fig.savefig(path, dpi=DPI, format="png")
    return path


# ------------------------------------------------------------------------------------------------ tables
def _fmt(v: Any) -> str:
    if isinstance(v, float | np.floating):
        if not math.isfinite(float(v)):
            return "n/a"
        a = abs(float(v))
        return f"{float(v):.4g}" if a < 1e4 else f"{float(v):,.0f}"
    return str(v)


def _metric_rows(metrics: dict[str, float]) -> list[tuple[str, str]]:
    rows = []
    for k, v in metrics.items():
        base = k.split("@")[0]
        name = METRIC_NAMES.get(base, base.replace("_", " "))
        if "@" in k:
            name = f"{name.upper() if base == 'map' else name}@{k.split('@')[1]}"
        rows.append((name, _fmt(int(v) if k == "count" and math.isfinite(v) else v)))
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _importance_rows(imp: pd.DataFrame, top: int = 15) -> tuple[list[str], list[list[str]]]:
    header = ["rank", "column", "kind", "view", "importance", "spread", "label variance", "cohorts"]
    rows = [
        [
            str(int(r["rank"])),
            f"{r['table']}.{r['column']}",
            str(r["kind"]),
            str(r.get("view", "")),
            _fmt(float(r["importance"])),
            _fmt(float(r["spread"])),
            _fmt(float(r["label_variance"])),
            str(int(r["cohorts"])),
        ]
        for _, r in imp.head(top).iterrows()
    ]
    return header, rows


def _cohort_sections(content: ReportContent) -> list[tuple[str, list[str], list[list[str]]]]:
    if content.importance is None or content.cohorts is None or content.cohorts.empty:
        return []
    out = []
    for _, r in content.importance.head(content.top_cohort_columns).iterrows():
        co = content.cohorts[
            (content.cohorts["table"] == r["table"]) & (content.cohorts["column"] == r["column"])
        ].sort_values("order")
        rows = [
            [
                str(c["cohort"]),
                str(int(c["count"])),
                f"{100 * float(c['share']):.1f}%",
                _fmt(float(c["mean_prediction"])),
                _fmt(float(c["mean_label"])),
            ]
            for _, c in co.iterrows()
        ]
        out.append(
            (
                f"{r['table']}.{r['column']}",
                ["cohort", "entities", "share", "mean prediction", "mean label"],
                rows,
            )
        )
    return out


# ------------------------------------------------------------------------------------------------ writers
def write_markdown(content: ReportContent, path: Path) -> Path:
    parts = [f"# {content.title}", ""]
    parts += [_md_table(["", ""], [[k, v] for k, v in content.setup.items()]), ""]
    parts += [
        "## Metrics",
        "",
        _md_table(["metric", "value"], [list(r) for r in _metric_rows(content.metrics)]),
        "",
    ]
    if content.figures:
        parts += ["## Plots", ""]
        for caption, fig in content.figures.items():
            rel = fig.relative_to(path.parent) if fig.is_relative_to(path.parent) else fig
            parts += [f"![{caption}]({rel.as_posix()})", ""]
    if content.importance is not None and not content.importance.empty:
        parts += ["## Global explanation", ""]
        parts += [
            "Each column splits the backtest entities into cohorts (quantile bins of numbers, the most "
            "frequent categories); its importance is the variance of the mean prediction across cohorts. "
            "Label variance is the same for the observed labels: what the data says.",
            "",
        ]
        parts += [_md_table(*_importance_rows(content.importance)), ""]
        parts += [f"- {line}" for line in content.explanation_lines] + [""]
        for name, header, rows in _cohort_sections(content):
            parts += [f"### Cohorts of {name}", "", _md_table(header, rows), ""]
    if content.notes:
        parts += ["## Notes", ""] + [f"- {n}" for n in content.notes] + [""]
    return _write(path, "\n".join(parts))


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; margin: 0.5rem 0; }
figure { display: inline-block; margin: 0 1rem 1rem 0; }
"""


def write_html(content: ReportContent, path: Path) -> Path:
    esc = html.escape
    parts = [
        "<!doctype html>",
        f"<html><head><meta charset='utf-8'><title>{esc(content.title)}</title><style>{_CSS}</style></head>",
        f"<body><h1>{esc(content.title)}</h1>",
        _html_table(["", ""], [[k, v] for k, v in content.setup.items()]),
        "<h2>Metrics</h2>",
        _html_table(["metric", "value"], [list(r) for r in _metric_rows(content.metrics)]),
    ]
    if content.figures:
        parts.append("<h2>Plots</h2>")
        for caption, fig in content.figures.items():
            data = base64.b64encode(fig.read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{esc(caption)}' src='data:image/png;base64,{data}'>"
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    if content.importance is not None and not content.importance.empty:
        parts.append("<h2>Global explanation</h2>")
        parts.append(
            "<p>Each column splits the backtest entities into cohorts; its importance is the variance of "
            "the mean prediction across cohorts. Label variance is the same for the observed labels.</p>"
        )
        parts.append(_html_table(*_importance_rows(content.importance)))
        parts.append(
            "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in content.explanation_lines) + "</ul>"
        )
        for name, header, rows in _cohort_sections(content):
            parts.append(f"<h3>Cohorts of {esc(name)}</h3>")
            parts.append(_html_table(header, rows))
    if content.notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{esc(n)}</li>" for n in content.notes) + "</ul>")
    parts.append("</body></html>")
    return _write(path, "\n".join(parts))


def _write(path: Path, text: str) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as e:
        raise RelfmError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def write_report(content: ReportContent, out_dir: Path) -> tuple[Path, Path]:
    """report.md and report.html in `out_dir`."""
    return write_markdown(content, out_dir / "report.md"), write_html(content, out_dir / "report.html")
