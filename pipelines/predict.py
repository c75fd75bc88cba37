"""The predict stage: a query's predictions for given (entity, anchor) rows, or for every entity now.

`relfm predict GRAPH --query PQL [--at PAIRS] [--context LABELLED --label-col L] [--model M] --out OUT`
lands here. The output is the pairs file with the prediction columns added (existing ones replaced), or,
without pairs, every entity the query asks about at the graph's latest time with its key and that time.
Predictions are what users act on: the probability of true (binary), the value (regression), the
class plus one `prob_<class>` column per class (multiclass), or the top k keys of the linked table, best
first, with their `scores` (link prediction).

The model is a pretrained checkpoint (zero-shot: a context of labelled examples generated from the
query, or the given labelled table) or a fine-tuned model folder (one forward pass per entity, no
context). Every bad input is a one-line `RelfmError` raised before any model work starts.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from graph_engine.errors import DataError, RelfmError, SourceError
from graph_engine.shards.reader import Graph
from pipelines.build_graph import ensure_graph
from pipelines.labels import pair_rows, read_pairs
from relfm_core.labels import LabelEngine

DEFAULT_TIME_COL = "anchor_time"
DEFAULT_LABEL_COL = "label"
RUN_MODES = ("fast", "normal", "best")
TASKS = ("binary", "regression", "multiclass", "link_prediction")


@dataclass(frozen=True)
class PredictOptions:
    """What to predict and with which model; paths are files the caller named."""

    query: str
    at: Path | None = None
    time_col: str = DEFAULT_TIME_COL
    context: Path | None = None
    label_col: str | None = None
    model: Path | None = None  # None: the shipped pretrained weights
    run_mode: str = "fast"
    explain: bool = False  # add each entity's strongest contributors (relfm_core.explain)


@dataclass
class PredictReport:
    rows: int
    task_type: str
    model: str  # what scored: "pretrained <path>", "fine-tuned <path>"
    context_rows: int  # labelled examples the model read (0 for a fine-tuned model)
    anchor: int | None  # the anchor used without a pairs file (ns)
    seconds: dict[str, float] = field(default_factory=dict)  # graph, model, features, predict, write
    warnings: list[str] = field(default_factory=list)
    explanation: Any = None  # relfm_core.explain.Explanation, with explain
    files: dict[str, Path] = field(default_factory=dict)  # explanation tables written beside the output


@dataclass(frozen=True)
class LoadedModel:
    """A pretrained model (zero-shot) or a fine-tuned one, and where it came from."""

    kind: str  # "pretrained" | "fine-tuned"
    source: str
    model: Any  # RelationalFM | LoadedFinetuned


def load_model(path: str | Path | None) -> LoadedModel:
    """A fine-tuned model folder, a pretrained checkpoint (folder or .safetensors), or the shipped weights."""
    from relfm_core.finetune import is_finetuned, load_finetuned
    from relfm_core.weights import BASE, load_pretrained

    if path is not None:
        p = Path(path)
        if not p.exists():
            raise SourceError(f"model {p}: no such checkpoint folder or file")
        if is_finetuned(p):
            return LoadedModel("fine-tuned", str(p), load_finetuned(p))
    return LoadedModel("pretrained", str(path if path is not None else BASE), load_pretrained(path))


def _check_options(opts: PredictOptions) -> None:
    if opts.run_mode not in RUN_MODES:
        raise RelfmError(f"unknown run mode '{opts.run_mode}' (choose {', '.join(RUN_MODES)})")
    if opts.label_col is not None and opts.context is None:
        raise RelfmError("--label-col names a column of the --context table; give --context too")


def _read_context(engine: LabelEngine, path: Path, time_col: str, label_col: str) -> pd.DataFrame:
    """The labelled table as the model reads it (key, anchor time, label), checked like a pairs file."""
    table = read_pairs(path)
    where = f"context file {path}"
    tcol = time_col if time_col in table.column_names else DEFAULT_TIME_COL
    if tcol not in table.column_names:
        tcol = time_col  # pair_rows names the missing column
    if label_col not in table.column_names:
        raise DataError(
            f"{where} has no label column '{label_col}' (use --label-col); columns: "
            f"{', '.join(table.column_names) or 'none'}"
        )
    rows, anchors = pair_rows(engine, table, tcol, where=where)
    label = table.column(label_col)
    task = engine.task_type.value
    if task in ("binary", "regression") and not (
        pa.types.is_boolean(label.type) or pa.types.is_integer(label.type) or pa.types.is_floating(label.type)
    ):
        raise DataError(
            f"{where} column '{label_col}' holds {label.type} values; a {task} label must be a number"
        )
    values = label.to_pandas()
    if task == "binary":
        v = values.dropna().astype(float)
        if not v.isin([0.0, 1.0]).all():
            bad = v[~v.isin([0.0, 1.0])].iloc[0]
            raise DataError(
                f"{where} column '{label_col}' holds {bad!r}; binary labels are true/false or 0/1"
            )
    key = engine.query.entity.key
    return pd.DataFrame(
        {
            key: engine.graph.table(engine.entity_table).key_values(rows),
            DEFAULT_TIME_COL: anchors.astype("datetime64[ns]"),
            DEFAULT_LABEL_COL: values.to_numpy(),
        }
    )


def _prediction_columns(task: str, values: np.ndarray, classes: list[Any]) -> dict[str, pa.Array]:
    """`prediction` (probability, value or class) and, for multiclass, `prob_<class>` columns."""
    if task == "link_prediction":  # only ever empty here: ranked lists come from the model directly
        return {
            "prediction": pa.array([[] for _ in range(len(values))]),
            "scores": pa.array([[]] * len(values)),
        }
    if task != "multiclass":
        v = np.asarray(values, dtype=np.float64)
        return {"prediction": pa.array(v, mask=~np.isfinite(v))}
    probs = np.asarray(values, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] == 0 or not classes:
        return {"prediction": pa.nulls(len(probs))}
    k = min(len(classes), probs.shape[1])
    best = np.nanargmax(np.nan_to_num(probs[:, :k], nan=-1.0), axis=1)
    cols: dict[str, pa.Array] = {"prediction": pa.array([classes[i] for i in best.tolist()])}
    for i, c in enumerate(classes[:k]):
        cols[f"prob_{c}"] = pa.array(probs[:, i])
    return cols


def _finetuned_predictions(
    graph: Graph,
    engine: LabelEngine,
    loaded: Any,
    source: str,
    rows: np.ndarray,
    anchors: np.ndarray,
    report: PredictReport,
    explain: bool = False,
) -> dict[str, pa.Array]:
    from graph_engine.cache import relfm_home
    from relfm_core.features import GraphFeatures
    from relfm_core.finetune import score
    from relfm_core.inputs import InputBuilder
    from relfm_core.pql import validate
    from relfm_core.text_encoder import TextEncoder

    if validate(loaded.query, graph.schema) != engine.query:
        raise RelfmError(f"model {source} was fine-tuned for '{loaded.query}', not for this query")
    t0 = time.perf_counter()
    features = GraphFeatures(graph, TextEncoder(relfm_home() / "text-embeddings.sqlite"))
    builder = InputBuilder(graph, features, lags=loaded.model.base.cfg.lags)
    report.seconds["features"] = time.perf_counter() - t0
    if loaded.meta["task_type"] == "link_prediction":
        from relfm_core.finetune_links import score_links

        keys, scores = score_links(loaded, builder, engine, rows, anchors)
        return {"prediction": pa.array(keys), "scores": pa.array(scores, pa.list_(pa.float64()))}
    out = score(loaded, builder, engine, rows, anchors)
    cols = _prediction_columns(str(loaded.meta["task_type"]), out, list(loaded.meta.get("classes") or []))
    if explain:
        from relfm_core.explain import explain_finetuned

        report.explanation = explain_finetuned(loaded, builder, engine, rows, anchors)
        cols["explanation"] = _explanation_column(report.explanation)
    return cols


def _explanation_column(explanation: Any) -> pa.Array:
    return pa.array(explanation.local.summary, pa.list_(pa.string()))


def _zero_shot_predictions(
    graph: Graph,
    engine: LabelEngine,
    model: Any,
    opts: PredictOptions,
    rows: np.ndarray,
    anchors: np.ndarray,
    context: pd.DataFrame | None,
    report: PredictReport,
) -> dict[str, pa.Array]:
    from relfm_core.rfm import RFM

    t0 = time.perf_counter()
    rfm = RFM(graph, model=model)
    report.seconds["features"] = time.perf_counter() - t0
    key = engine.query.entity.key
    at = pd.DataFrame(
        {
            key: graph.table(engine.entity_table).key_values(rows),
            DEFAULT_TIME_COL: anchors.astype("datetime64[ns]"),
        }
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pred = rfm.predict(
            opts.query,
            at=at,
            time_col=DEFAULT_TIME_COL,
            context=context,
            label_col=DEFAULT_LABEL_COL,
            run_mode=opts.run_mode,  # type: ignore[arg-type]
            explain=opts.explain,
        )
    report.warnings.extend(dict.fromkeys(str(w.message) for w in caught))
    report.context_rows = pred.context_rows
    report.explanation = pred.explanation
    frame = pred.frame
    if pred.task_type == "link_prediction":  # the top k destination keys, best first, and their scores
        return {
            "prediction": pa.array([list(v) for v in frame["prediction"]]),
            "scores": pa.array([list(v) for v in frame["scores"]], pa.list_(pa.float64())),
        }
    if pred.task_type == "multiclass":
        cols = {"prediction": pa.array(list(frame["prediction"]))}
        cols.update(
            {c: pa.array(frame[c].to_numpy(np.float64)) for c in frame.columns if c.startswith("prob_")}
        )
    else:
        cols = _prediction_columns(pred.task_type, frame["prediction"].to_numpy(np.float64), [])
    if pred.explanation is not None:
        cols["explanation"] = _explanation_column(pred.explanation)
    return cols


@dataclass(frozen=True)
class Prepared:
    """Checked inputs of one prediction run: the query's engine, the rows to predict, their anchors,
    the table the predictions are appended to, and the labelled context if one was given."""

    engine: LabelEngine
    rows: np.ndarray
    anchors: np.ndarray
    base: pa.Table
    context: pd.DataFrame | None
    anchor: int | None  # the anchor used without a pairs file (ns)


def prepare(graph: Graph, opts: PredictOptions, pairs: pa.Table | None = None) -> Prepared:
    """Everything that can be wrong with the query, the pairs or the context, found before any model
    work (one-line errors)."""
    _check_options(opts)
    engine = LabelEngine(graph, opts.query)
    task = engine.task_type.value
    if task not in TASKS:
        raise RelfmError(
            f"predict supports binary, regression, multiclass and link prediction queries, "
            f"not {task.replace('_', ' ')} yet"
        )
    if task == "link_prediction" and opts.context is not None:
        raise RelfmError("link prediction ranks candidates without a labelled context; drop --context")
    if opts.explain and task == "link_prediction":
        raise RelfmError("--explain supports binary, regression and multiclass queries, not link prediction")
    context = None
    if opts.context is not None:
        label_col = opts.label_col or DEFAULT_LABEL_COL
        context = _read_context(engine, opts.context, opts.time_col, label_col)
        if context[DEFAULT_LABEL_COL].notna().sum() == 0:
            raise DataError(f"context file {opts.context}: column '{label_col}' has no labels")
    if pairs is not None:
        rows, anchors = pair_rows(engine, pairs, opts.time_col, where=f"pairs file {opts.at or ''}".strip())
        drop = [
            c
            for c in pairs.column_names
            if c in ("prediction", "scores", "explanation") or c.startswith("prob_")
        ]
        return Prepared(engine, rows, anchors, pairs.drop_columns(drop) if drop else pairs, context, None)
    anchor = graph.max_time()
    rows = engine.entity_rows(anchor)
    anchors = np.full(len(rows), anchor, dtype=np.int64)
    keys = graph.table(engine.entity_table).key_values(rows)
    base = pa.table(
        {
            engine.query.entity.key: pa.array(np.asarray(keys).tolist()),
            opts.time_col: pa.array(anchors.astype("datetime64[ns]")),
        }
    )
    return Prepared(engine, rows, anchors, base, context, anchor)


def compute_predictions(
    graph: Graph, opts: PredictOptions, model: LoadedModel, prepared: Prepared
) -> tuple[pa.Table, PredictReport]:
    """The prepared table with prediction columns appended, and what was done."""
    engine, rows, anchors = prepared.engine, prepared.rows, prepared.anchors
    task = engine.task_type.value
    if model.kind == "fine-tuned" and prepared.context is not None:
        raise RelfmError(f"model {model.source} is fine-tuned and scores without context; drop --context")
    report = PredictReport(len(rows), task, f"{model.kind} {model.source}", 0, prepared.anchor)
    t0 = time.perf_counter()
    if len(rows) == 0:
        cols = _prediction_columns(task, np.zeros((0, 0) if task == "multiclass" else 0), [])
    elif model.kind == "fine-tuned":
        cols = _finetuned_predictions(
            graph, engine, model.model, model.source, rows, anchors, report, opts.explain
        )
    else:
        cols = _zero_shot_predictions(
            graph, engine, model.model, opts, rows, anchors, prepared.context, report
        )
    report.seconds["predict"] = time.perf_counter() - t0 - report.seconds.get("features", 0.0)
    out = prepared.base
    for name, arr in cols.items():
        out = out.append_column(name, arr)
    return out, report


def predict_table(
    graph: Graph, opts: PredictOptions, pairs: pa.Table | None = None, model: LoadedModel | None = None
) -> tuple[pa.Table, PredictReport]:
    """In-process entry point: prepare, load the model (unless given), predict."""
    prepared = prepare(graph, opts, pairs)
    return compute_predictions(graph, opts, model or load_model(opts.model), prepared)


def write_predictions(graph: str | Path, opts: PredictOptions, out: str | Path) -> PredictReport:
    """Predictions of `opts.query` on the graph at `graph` (a built graph folder or a spec), to `out`."""
    _check_options(opts)
    t0 = time.perf_counter()
    g = ensure_graph(graph)
    prepared = prepare(g, opts, read_pairs(opts.at) if opts.at is not None else None)
    t1 = time.perf_counter()
    model = load_model(opts.model)
    t2 = time.perf_counter()
    table, report = compute_predictions(g, opts, model, prepared)
    t3 = time.perf_counter()
    target = Path(out)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, target)
        if report.explanation is not None:
            key = prepared.engine.query.entity.key
            report.files = write_explanation(report.explanation, table, key, opts.time_col, target)
    except OSError as e:
        raise RelfmError(f"cannot write {target}: {e.strerror or e}") from None
    features = report.seconds.get("features", 0.0)
    report.seconds = {
        "graph": t1 - t0,  # open or build the graph, parse the query, check the inputs
        "model": t2 - t1,
        "features": features,  # text encoder and per-column statistics
        "predict": t3 - t2 - features,  # labels, context, sampling and the model
        "write": time.perf_counter() - t3,
    }
    return report


def write_explanation(
    explanation: Any, table: pa.Table, key: str, time_col: str, out: Path
) -> dict[str, Path]:
    """Beside OUT: OUT-explanation.parquet (each entity's saliency per column: its key and anchor, table,
    column, rows, contribution, importance, rank) and, when there were enough labelled examples,
    OUT-cohorts.parquet (the global explanation: every column's cohorts and importance)."""
    files: dict[str, Path] = {}
    stem = out.with_suffix("")
    cols = explanation.local.columns
    at = cols["entity"].to_numpy()
    local = cols.assign(**{key: table.column(key).to_pandas().to_numpy()[at]})
    if time_col in table.column_names:
        local[time_col] = table.column(time_col).to_pandas().to_numpy()[at]
    files["explanation"] = stem.with_name(stem.name + "-explanation.parquet")
    local.to_parquet(files["explanation"], index=False)
    if explanation.global_ is not None:
        files["cohorts"] = stem.with_name(stem.name + "-cohorts.parquet")
        imp = explanation.global_.columns[["table", "column", "importance", "rank"]]
        cohorts = explanation.global_.cohorts.merge(imp, on=["table", "column"], how="left")
        cohorts.to_parquet(files["cohorts"], index=False)
    return files
