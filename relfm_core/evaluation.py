"""Backtests: how good the model is on the latest fully labelled window, before anything ships.

A backtest predicts every entity the query asks about at one anchor whose target window has already
closed (by default the latest such anchor; the label engine's `latest_complete_anchor`), with only what
was visible at that anchor, and scores the predictions against what then happened. The labels are the
query's own (the label engine), so a backtest needs nothing but the graph and the query.

Metrics by task type (relfm_core.metrics): AUROC, AP, accuracy, F1, calibration error (binary); MAE,
RMSE, MAPE, R² (regression); accuracy, macro-F1 (multiclass); MAP@k, recall@k, NDCG@k, catalogue coverage
and popularity bias (link prediction; popularity = how many entities linked to each destination over the
four windows before the anchor).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from graph_engine.errors import RelfmError
from relfm_core.labels import LabelEngine, backtest_table
from relfm_core.metrics import compute_metrics

POPULARITY_WINDOWS = 4

# (query, pairs frame with the entity key and `anchor_time`) -> that frame with prediction columns
Predictor = Callable[[str, pd.DataFrame], pd.DataFrame]


@dataclass
class Backtest:
    """Labels, predictions and metrics of one backtest."""

    query: str
    task_type: str
    anchor: int  # ns
    frame: pd.DataFrame  # entity key, anchor_time, label, prediction (+ prob_* / scores)
    metrics: dict[str, float]
    entity_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    k: int | None = None  # link prediction: the ranking depth scored

    @property
    def key(self) -> str:
        return str(self.frame.columns[0])


def task_name(engine: LabelEngine) -> str:
    t = engine.task_type
    return str(t.value if hasattr(t, "value") else t)


def resolve_anchor(engine: LabelEngine, anchor: Any = None) -> int:
    """The backtest anchor (ns): `anchor` if its windows have closed by the graph's last event, else a
    one-line error; by default the latest anchor whose windows have closed."""
    latest = engine.latest_complete_anchor()
    if anchor is None:
        return int(latest)
    try:
        ts = pd.Timestamp(anchor)
    except (ValueError, TypeError):
        raise RelfmError(f"anchor {anchor!r} is not a time (use e.g. 2024-01-31)") from None
    if pd.isna(ts):
        raise RelfmError(f"anchor {anchor!r} is not a time (use e.g. 2024-01-31)")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    if ts > pd.Timestamp(latest):
        raise RelfmError(
            f"anchor {ts} is too late to backtest: its target window has not closed by the graph's last "
            f"event (latest possible anchor {np.datetime64(latest, 'ns')})"
        )
    try:
        return int(ts.as_unit("ns").value)
    except (OverflowError, ValueError):
        raise RelfmError(f"anchor {anchor!r} is outside the range of times relfm handles") from None


def labelled_pairs(
    engine: LabelEngine, anchor: int, max_entities: int | None = None, seed: int = 0
) -> tuple[pd.DataFrame, np.ndarray]:
    """(entity key, anchor_time, label) of every labelled entity at `anchor` (a seeded sample of at most
    `max_entities`), labels as users see them: 0/1, values, class values, lists of destination keys; and
    the entities' row ids."""
    bt = backtest_table(engine, anchor)
    if max_entities is not None and len(bt) > max_entities:
        keep = np.sort(np.random.default_rng(seed).choice(len(bt), max_entities, replace=False))
        bt = bt.iloc[keep].reset_index(drop=True)
    key = engine.query.entity.key
    label: Any = bt["label"].to_numpy()
    task = task_name(engine)
    if task == "multiclass" and bt.attrs.get("classes") is not None:
        label = np.asarray(bt.attrs["classes"], dtype=object)[np.asarray(label, dtype=np.int64)]
    elif task == "link_prediction":
        dest = engine.graph.table(str(bt.attrs["target_table"]))
        label = [dest.key_values(np.asarray(v, dtype=np.int64)).tolist() for v in bt["label"]]
    frame = pd.DataFrame(
        {key: bt["entity"].to_numpy(), "anchor_time": bt["anchor_time"].to_numpy(), "label": label}
    )
    return frame, bt["entity_row"].to_numpy(np.int64)


def link_context(engine: LabelEngine, anchor: int) -> tuple[list[Any], dict[Any, float]]:
    """Catalogue (every destination key) and each destination's popularity before `anchor`."""
    from relfm_core.labels.links import popularity

    dest_name = engine.query.link_target_table
    if dest_name is None:
        return [], {}
    dest = engine.graph.table(dest_name)
    keys = dest.key_values(np.arange(dest.num_rows)).tolist()
    pop = popularity(engine, anchor, POPULARITY_WINDOWS, dest.num_rows)
    return keys, dict(zip(keys, pop.tolist(), strict=True))


def score(engine: LabelEngine, frame: pd.DataFrame, anchor: int) -> tuple[dict[str, float], int | None]:
    """Metrics of a frame holding `label` and the prediction columns."""
    task = task_name(engine)
    if task == "link_prediction":
        k = int(engine.query.rank_top_k or 10)
        catalogue, pop = link_context(engine, anchor)
        return compute_metrics(task, frame["label"].tolist(), frame, k, catalogue, pop), k
    return compute_metrics(task, frame["label"].to_numpy(), frame), None


def run_backtest(
    engine: LabelEngine,
    query: str,
    predictor: Predictor,
    anchor: Any = None,
    max_entities: int | None = None,
    seed: int = 0,
) -> Backtest:
    """Predicts the labelled entities at the backtest anchor with `predictor` and scores them."""
    t = resolve_anchor(engine, anchor)
    pairs, rows = labelled_pairs(engine, t, max_entities, seed)
    if len(pairs) == 0:
        raise RelfmError(f"no labelled entities at {np.datetime64(t, 'ns')} to backtest: {query}")
    predicted = predictor(query, pairs[[pairs.columns[0], "anchor_time"]])
    frame = pairs.copy()
    for c in predicted.columns:
        if c == "prediction" or c == "scores" or c.startswith("prob_"):
            frame[c] = predicted[c].to_numpy()
    metrics, k = score(engine, frame, t)
    return Backtest(query, task_name(engine), t, frame, metrics, rows, k)
