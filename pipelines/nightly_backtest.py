"""The nightly backtest: tonight's model scored on the latest window whose labels are complete.

The anchor is the latest one whose target window ends by the graph's last event
(LabelEngine.latest_complete_anchor): every entity labelled there (backtest_table, no leakage) is scored
the way the scoring stage scores (the same Ray Data actor pool, `pipelines.score.score_pairs`) and
compared with its label (relfm_core.metrics). The labelled predictions are kept as a Parquet file so the
publish step can draw ROC, calibration or predicted-vs-actual plots without scoring again.

SEAM: pipelines/evaluate.py (backtest + report, `evaluate_and_report`) is being written separately; when
it lands, `backtest` below should delegate to it and keep this return type (or the nightly step should
call it directly). Nothing else in the nightly job depends on how the numbers are computed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from pipelines.configs import ScoreStageConfig
from relfm_core.labels import LabelEngine, backtest_table
from relfm_core.metrics import compute_metrics

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BacktestResult:
    task_type: str
    anchor_ns: int
    rows: int
    metrics: dict[str, float]
    path: Path  # Parquet: entity, anchor_time, label, prediction (+ prob_<class>)


def backtest(
    cfg: ScoreStageConfig,
    graph: Graph,
    model_folder: Path,
    query: str,
    out: Path,
    max_entities: int | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> BacktestResult:
    """Scores every entity labelled at the latest complete anchor (a seeded sample of `max_entities`)
    and computes the task's metrics; writes the labelled predictions to `out`."""
    from pipelines.score import score_pairs
    from relfm_core.finetune import is_finetuned

    engine = LabelEngine(graph, query)
    task = str(engine.task_type.value)
    if task not in ("binary", "regression", "multiclass"):
        raise RelfmError(f"backtest supports binary, regression and multiclass queries, not {task}")
    anchor = engine.latest_complete_anchor()
    df = backtest_table(engine, anchor)
    if len(df) == 0:
        raise RelfmError(
            f"backtest: no labelled {engine.entity_table} at {np.datetime64(anchor, 'ns')} for: {query}"
        )
    if max_entities is not None and len(df) > max_entities:
        df = df.sample(max_entities, random_state=seed).sort_index()
    rows = df["entity_row"].to_numpy(np.int64)
    anchors = pd.to_datetime(df["anchor_time"]).to_numpy("datetime64[ns]").astype(np.int64)
    preds, _ = score_pairs(
        cfg,
        graph,
        model_folder,
        None if is_finetuned(model_folder) else query,
        rows,
        anchors,
        anchor,
        progress,
    )
    labels = df["label"].to_numpy()
    if task == "multiclass":
        labels = np.asarray(df.attrs["classes"], dtype=object)[labels.astype(np.int64)].astype(str)
    frame = pd.DataFrame(preds)
    metrics = {k: float(v) for k, v in compute_metrics(task, labels, frame).items() if np.isfinite(float(v))}
    out.parent.mkdir(parents=True, exist_ok=True)
    cols: dict[str, pa.Array] = {
        "entity": pa.array([str(k) for k in df["entity"].tolist()], type=pa.string()),
        "anchor_time": pa.array(anchors, pa.int64()).cast(pa.timestamp("ns")),
        "label": pa.array(labels.tolist()),
    }
    for name, values in preds.items():
        cols[name] = pa.array(np.asarray(values).tolist())
    tmp = out.with_name(f".{out.name}.tmp")
    pq.write_table(pa.table(cols), tmp)
    tmp.replace(out)
    return BacktestResult(task, int(anchor), len(df), metrics, out)


def read_labelled(path: Path) -> pd.DataFrame:
    """The labelled predictions a backtest wrote (for plots)."""
    return pq.read_table(path).to_pandas()
