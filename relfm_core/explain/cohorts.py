"""Global explanations: cohorts of labelled examples by each column, and how predictions vary across them.

For every column of every table the model reads from the entity (the tables of its sampled subgraphs),
each example gets a value from its own subgraph, the way the model saw it: the entity's own cell for
the entity table; over the linked rows of another table, the mean of a number or a timestamp's age and
the number on the most recent linked row (the model reads both: relfm_core.subgraph_aggregates), the
most frequent category, and for a table's time column the age of its latest row (recency).
Examples are then split into cohorts (quantile bins of numbers, the most frequent categories), and
the column's importance is the variance, across cohorts weighted by size, of the mean prediction: a
column the model ignores splits the examples into cohorts with the same average prediction. A column
read two ways (mean, latest row) is reported by the view that moves predictions most, so a signal
carried by the latest row is not diluted by the mean over older ones. Beside each cohort's mean
prediction stands its mean label, so users can check that what the model learned is what the data says
(the cohort-to-label relation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from graph_engine.sampler import Subgraph
from graph_engine.shards.reader import Graph
from graph_engine.spec import SemanticType
from relfm_core.explain.local import format_amount
from relfm_core.features import DAY_NS, GraphFeatures

NUMERIC = (SemanticType.numerical, SemanticType.timestamp)
MISSING = "missing"
OTHER = "other"


@dataclass(frozen=True)
class CohortConfig:
    bins: int = 5  # quantile bins of a numeric column
    max_categories: int = 8  # categories kept before 'other'
    min_cohort: int = 5  # smaller cohorts are listed but take no part in the importance


@dataclass
class ColumnValues:
    """One value per example: numbers (NaN = none) or category labels (None = none)."""

    table: str
    column: str
    kind: str  # "numeric", "timestamp" (age in days), "categorical", "recency" (days since latest row)
    values: np.ndarray
    view: str = "own row"  # "own row", "mean", "latest row", "most frequent"


@dataclass
class GlobalExplanation:
    """Column importances (variance of cohort mean predictions) and the cohorts behind them."""

    columns: pd.DataFrame  # table, column, kind, view, importance, spread, label_variance, cohorts, rank
    cohorts: pd.DataFrame  # table, column, view, cohort, order, count, share, mean_prediction, mean_label
    examples: int
    target: str = "prediction"  # what `mean_prediction` and `mean_label` average
    summary: list[str] = field(default_factory=list)

    def ranking(self) -> list[str]:
        """'table.column', most important first."""
        return [f"{t}.{c}" for t, c in zip(self.columns["table"], self.columns["column"], strict=True)]


def subgraph_values(
    graph: Graph, features: GraphFeatures, sub: Subgraph, entity_table: str, max_nodes: int
) -> list[ColumnValues]:
    """The value of every readable column of every table in the subgraphs, per seed."""
    b = sub.num_seeds
    seed = sub.seed_of_node()
    local = np.arange(sub.num_nodes) - sub.seed_ptr[seed]
    kept = local < max_nodes
    out: list[ColumnValues] = []
    for ti, tname in enumerate(sub.table_names):
        sel = kept & (sub.table == ti)
        if tname == entity_table:
            sel &= sub.hop == 0
        if not sel.any():
            continue
        s, rows = seed[sel], sub.row[sel]
        own = tname == entity_table
        tv = graph.table(tname)
        ts = features.tables[features.table_index[tname]]
        for cs in ts.columns:
            col = tv.column(cs.name)
            valid = np.asarray(col.valid[rows], dtype=bool)
            if cs.stype in NUMERIC:
                v = np.asarray(col.value[rows], dtype=np.float64)  # type: ignore[index]
                kind = "numeric"
                if cs.stype == SemanticType.timestamp:
                    v = (sub.anchor[s] - v) / DAY_NS
                    kind = "timestamp"
                if own:
                    out.append(ColumnValues(tname, cs.name, kind, _mean_by(s, v, valid, b)))
                    continue
                out.append(ColumnValues(tname, cs.name, kind, _mean_by(s, v, valid, b), "mean"))
                out.append(ColumnValues(tname, cs.name, kind, _first_by(s, v, valid, b), "latest row"))
            elif cs.stype == SemanticType.categorical:
                codes = np.asarray(col.value[rows], dtype=np.int64)  # type: ignore[index]
                ok = valid & (codes >= 0)
                values = _mode_by(s, codes, ok, b, col.vocab)
                out.append(
                    ColumnValues(tname, cs.name, "categorical", values, "own row" if own else "most frequent")
                )
        time_col = graph.schema.tables[tname].time_column
        if time_col is not None:
            age = sub.rel_time[sel].astype(np.float64) / DAY_NS
            latest = np.full(b, np.inf)
            np.minimum.at(latest, s, age)
            out.append(
                ColumnValues(
                    tname,
                    time_col,
                    "recency",
                    np.where(np.isfinite(latest), latest, np.nan),
                    "own row" if own else "latest row",
                )
            )
    return out


def _mean_by(seed: np.ndarray, v: np.ndarray, valid: np.ndarray, b: int) -> np.ndarray:
    ok = valid & np.isfinite(v)
    total = np.bincount(seed[ok], weights=v[ok], minlength=b)
    count = np.bincount(seed[ok], minlength=b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _first_by(seed: np.ndarray, v: np.ndarray, valid: np.ndarray, b: int) -> np.ndarray:
    """The value on each seed's first row holding one: the sampler emits an entity's rows newest first
    (children by time, parents in the order of the children leading to them)."""
    ok = np.flatnonzero(valid & np.isfinite(v))
    out = np.full(b, np.nan)
    seeds, first = np.unique(seed[ok], return_index=True)  # first occurrence in emission order
    out[seeds] = v[ok[first]]
    return out


def _mode_by(
    seed: np.ndarray, codes: np.ndarray, ok: np.ndarray, b: int, vocab: list[object] | None
) -> np.ndarray:
    out = np.full(b, None, dtype=object)
    if not ok.any():
        return out
    df = pd.DataFrame({"s": seed[ok], "c": codes[ok]})
    counts = df.groupby(["s", "c"]).size().reset_index(name="n")
    counts = counts.sort_values(["s", "n", "c"], ascending=[True, False, True]).drop_duplicates("s")
    names = [str(vocab[c]) if vocab is not None and c < len(vocab) else str(c) for c in counts["c"]]
    out[counts["s"].to_numpy()] = names
    return out


def cohorts_of(values: ColumnValues, cfg: CohortConfig) -> tuple[np.ndarray, list[str]]:
    """Cohort index per example and the cohorts' names, in display order (missing last)."""
    v = values.values
    n = len(v)
    if values.kind == "categorical":
        present = np.array([x is not None for x in v], dtype=bool)
        counts = pd.Series(v[present]).value_counts(sort=True)
        top = sorted(counts.index[: cfg.max_categories].tolist(), key=lambda c: (-int(counts[c]), str(c)))
        names = [str(c) for c in top]
        slot = {c: i for i, c in enumerate(top)}
        idx = np.full(n, -1, dtype=np.int64)
        has_other = False
        for i, x in enumerate(v.tolist()):
            if x is None:
                continue
            j = slot.get(x)
            if j is None:
                has_other = True
                j = len(top)
            idx[i] = j
        if has_other:
            names.append(OTHER)
    else:
        num = np.asarray(v, dtype=np.float64)
        present = np.isfinite(num)
        idx = np.full(n, -1, dtype=np.int64)
        names = []
        if present.any():
            edges = np.unique(np.quantile(num[present], np.linspace(0, 1, cfg.bins + 1)))
            if len(edges) == 1:
                idx[present] = 0
                names = [f"= {_num(edges[0])}"]
            else:
                inner = edges[1:-1]
                idx[present] = np.searchsorted(inner, num[present], side="right")
                names = [
                    f"[{_num(edges[i])}, {_num(edges[i + 1])}{']' if i == len(edges) - 2 else ')'}"
                    for i in range(len(edges) - 1)
                ]
    if (idx < 0).any():
        idx = np.where(idx < 0, len(names), idx)
        names.append(MISSING)
    return idx, names


def _num(x: float) -> str:
    return f"{x:.3g}"


def global_explanation(
    values: list[ColumnValues],
    prediction: np.ndarray,
    label: np.ndarray,
    cfg: CohortConfig | None = None,
    target: str = "prediction",
) -> GlobalExplanation:
    """Cohorts and importances of every column, from per-example values, predictions and labels."""
    cfg = cfg or CohortConfig()
    pred = np.asarray(prediction, dtype=np.float64)
    lab = np.asarray(label, dtype=np.float64)
    col_rows: list[dict[str, object]] = []
    cohort_frames: list[pd.DataFrame] = []
    for cv in values:
        idx, names = cohorts_of(cv, cfg)
        k = len(names)
        count = np.bincount(idx, minlength=k).astype(np.float64)
        ok_p = np.isfinite(pred)
        ok_l = np.isfinite(lab)
        mp = _group_mean(idx, pred, ok_p, k)
        ml = _group_mean(idx, lab, ok_l, k)
        scored = (count >= cfg.min_cohort) & np.isfinite(mp)
        importance = _weighted_variance(mp, count, scored)
        label_var = _weighted_variance(ml, count, scored & np.isfinite(ml))
        spread = float(np.nanmax(mp[scored]) - np.nanmin(mp[scored])) if scored.sum() > 1 else 0.0
        col_rows.append(
            {
                "table": cv.table,
                "column": cv.column,
                "kind": cv.kind,
                "view": cv.view,
                "importance": importance,
                "spread": spread,
                "label_variance": label_var,
                "cohorts": int(scored.sum()),
            }
        )
        cohort_frames.append(
            pd.DataFrame(
                {
                    "table": cv.table,
                    "column": cv.column,
                    "view": cv.view,
                    "cohort": names,
                    "order": np.arange(k),
                    "count": count.astype(np.int64),
                    "share": count / max(len(idx), 1),
                    "mean_prediction": mp,
                    "mean_label": ml,
                    "scored": scored,
                }
            )
        )
    columns = pd.DataFrame(
        col_rows,
        columns=["table", "column", "kind", "view", "importance", "spread", "label_variance", "cohorts"],
    )
    # one row per column: the view that moves predictions most (stable: the first view wins ties)
    columns = columns.sort_values("importance", ascending=False, kind="stable")
    columns = columns.drop_duplicates(["table", "column"]).reset_index(drop=True)
    columns["rank"] = np.arange(1, len(columns) + 1)
    cohorts = pd.concat(cohort_frames, ignore_index=True) if cohort_frames else pd.DataFrame()
    if not cohorts.empty:
        chosen = columns[["table", "column", "view"]]
        cohorts = cohorts.merge(chosen, on=["table", "column", "view"], how="inner")
    expl = GlobalExplanation(columns, cohorts, len(pred), target)
    expl.summary = _summary(expl)
    return expl


def _group_mean(idx: np.ndarray, v: np.ndarray, ok: np.ndarray, k: int) -> np.ndarray:
    total = np.bincount(idx[ok], weights=v[ok], minlength=k)
    count = np.bincount(idx[ok], minlength=k)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _weighted_variance(means: np.ndarray, count: np.ndarray, use: np.ndarray) -> float:
    if use.sum() < 2:
        return 0.0
    w = count[use] / count[use].sum()
    m = means[use]
    centre = float((w * m).sum())
    return float((w * (m - centre) ** 2).sum())


def _summary(expl: GlobalExplanation, top: int = 5) -> list[str]:
    """'items.price (latest row): mean prediction 0.12 for [1.2, 8.4) to 0.61 for [40.1, 95] (labels 0.10
    and 0.58)'."""
    out: list[str] = []
    for _, r in expl.columns.head(top).iterrows():
        if r["importance"] <= 0:
            continue
        t, c = r["table"], r["column"]
        co = expl.cohorts[
            (expl.cohorts["table"] == t) & (expl.cohorts["column"] == c) & expl.cohorts["scored"]
        ]
        lo = co.loc[co["mean_prediction"].idxmin()]
        hi = co.loc[co["mean_prediction"].idxmax()]
        how = f" ({r['view']})" if r["view"] in ("mean", "latest row") else ""
        out.append(
            f"{t}.{c}{how}: mean {expl.target} {format_amount(lo['mean_prediction']).lstrip('+')} for "
            f"{lo['cohort']} to {format_amount(hi['mean_prediction']).lstrip('+')} for {hi['cohort']} "
            f"(labels {format_amount(lo['mean_label']).lstrip('+')} and "
            f"{format_amount(hi['mean_label']).lstrip('+')})"
        )
    return out
