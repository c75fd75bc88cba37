"""Explaining a batch of (entity, anchor) pairs with any relfm model: zero-shot or fine-tuned.

The model is seen through one function, raw(tensors, entity features) -> its head output, so the same
code explains the in-context model (entities attending to an encoded context) and a fine-tuned one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from graph_engine.errors import RelfmError
from relfm_core.explain.cohorts import CohortConfig, GlobalExplanation, global_explanation, subgraph_values
from relfm_core.explain.local import ColumnIndex, LocalExplanation, cell_frame, local_explanation
from relfm_core.explain.saliency import Forward, Reference, integrated_gradients
from relfm_core.inputs import InputBuilder, TargetNorm

RawForward = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]
EXPLAINABLE = ("binary", "regression", "multiclass")


@dataclass(frozen=True)
class ExplainConfig:
    """How explanations are computed and reported."""

    steps: int = 8  # integrated-gradient steps (1 = gradient × (input - reference))
    top: int = 5  # contributors written in words per entity
    batch_size: int = 64
    cohort_bins: int = 5  # global: quantile bins of a numeric column
    max_categories: int = 8  # global: categories kept before 'other'
    min_cohort: int = 5  # global: cohorts with fewer examples are reported but not scored


def check_task(task: str) -> None:
    if task not in EXPLAINABLE:
        raise RelfmError(
            f"explanations support binary, regression and multiclass queries, not {task.replace('_', ' ')}"
        )


def to_units(task: str, norm: TargetNorm, out: torch.Tensor) -> torch.Tensor:
    """Head output → what users read: probability (binary), value in label units (regression), class
    probabilities [B, K] (multiclass)."""
    if task == "binary":
        return torch.sigmoid(out)
    if task == "regression":
        v = out[:, 0] * norm.scale + norm.center
        return torch.expm1(v) if norm.log else v
    return torch.softmax(out, -1)


def reported(raw: RawForward, task: str, norm: TargetNorm, classes: torch.Tensor | None = None) -> Forward:
    """The prediction explained: for multiclass, the probability of each entity's predicted class."""

    def f(t: dict[str, torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
        u = to_units(task, norm, raw(t, feats))
        if task == "multiclass":
            assert classes is not None
            return u.gather(1, classes[: len(u)].unsqueeze(1)).squeeze(1)
        return u

    return f


def explain_entities(
    raw: RawForward,
    builder: InputBuilder,
    engine: Any,
    rows: np.ndarray,
    anchors: np.ndarray,
    norm: TargetNorm,
    task: str,
    reference: Reference,
    cfg: ExplainConfig | None = None,
    positions: np.ndarray | None = None,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Cell attributions of every pair (see `cell_frame`), their history contributions, the explained
    outputs and the reference outputs. Entities are numbered by `positions` (default: 0..n-1)."""
    cfg = cfg or ExplainConfig()
    pos = np.arange(len(rows)) if positions is None else np.asarray(positions, dtype=np.int64)
    check_task(task)
    index = ColumnIndex.of(builder.graph, builder.features)
    frames: list[pd.DataFrame] = []
    hist, out, ref = [], [], []
    for s in range(0, len(rows), cfg.batch_size):
        r, a = rows[s : s + cfg.batch_size], anchors[s : s + cfg.batch_size]
        t, feats, _ = builder.build(engine, r, a, norm)
        sub = builder.sampler.sample(engine.entity_table, r, a)  # the same subgraphs (deterministic)
        kept = np.minimum(np.diff(sub.seed_ptr), builder.max_nodes)
        if not np.array_equal(kept, t["node_mask"].sum(1).numpy()):
            raise RuntimeError("explain: the resampled subgraphs differ from the model inputs")
        classes = None
        if task == "multiclass":
            with torch.no_grad():
                classes = raw(t, feats).argmax(-1)
        attr = integrated_gradients(reported(raw, task, norm, classes), t, feats, reference, cfg.steps)
        frames.append(cell_frame(attr, sub, t, index, pos[s : s + cfg.batch_size]))
        hist.append(attr.history)
        out.append(attr.output)
        ref.append(attr.reference_output)
    if not frames:
        empty = np.zeros(0)
        return cell_frame_empty(), empty, empty, empty
    return (
        pd.concat(frames, ignore_index=True),
        np.concatenate(hist),
        np.concatenate(out),
        np.concatenate(ref),
    )


def cell_frame_empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "entity": pd.Series([], dtype=np.int64),
            "table": pd.Series([], dtype=object),
            "column": pd.Series([], dtype=object),
            "row": pd.Series([], dtype=np.int64),
            "hop": pd.Series([], dtype=np.int64),
            "node": pd.Series([], dtype=np.int64),
            "kind": pd.Series([], dtype=object),
            "contribution": pd.Series([], dtype=np.float64),
        }
    )


def explain_local(
    raw: RawForward,
    builder: InputBuilder,
    engine: Any,
    rows: np.ndarray,
    anchors: np.ndarray,
    norm: TargetNorm,
    task: str,
    reference: Reference,
    cfg: ExplainConfig | None = None,
) -> LocalExplanation:
    """Local explanations of (entity, anchor) pairs, entity = position in `rows`."""
    cfg = cfg or ExplainConfig()
    cells, hist, out, ref = explain_entities(raw, builder, engine, rows, anchors, norm, task, reference, cfg)
    return local_explanation(builder.graph, engine.entity_table, cells, hist, out, ref, cfg.top)


@dataclass
class Explanation:
    """Why the model predicted what it did: per entity (local) and per column over labelled examples
    (global, None when there were too few)."""

    local: LocalExplanation
    global_: GlobalExplanation | None = None


def value_and_label(
    task: str, units: np.ndarray, labels: np.ndarray, classes: list[Any] | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """What cohorts average: the probability and the 0/1 label (binary), the value (regression), and
    for multiclass the probability of the most frequent class and whether the label is that class."""
    if task == "multiclass":
        u = np.asarray(units, dtype=np.float64)
        lab = np.asarray(labels)
        values, counts = np.unique(lab.astype(np.int64), return_counts=True)
        top = int(values[np.argmax(counts)]) if len(values) else 0
        name = classes[top] if classes is not None and top < len(classes) else top
        prob = u[:, top] if u.ndim == 2 and top < u.shape[1] else np.full(len(lab), np.nan)
        return prob, (lab.astype(np.int64) == top).astype(np.float64), f"probability of {name}"
    target = "probability" if task == "binary" else "value"
    return np.asarray(units, dtype=np.float64).reshape(-1), np.asarray(labels, dtype=np.float64), target


def explain_globally(
    builder: InputBuilder,
    engine: Any,
    rows: np.ndarray,
    anchors: np.ndarray,
    prediction: np.ndarray,
    label: np.ndarray,
    cfg: ExplainConfig | None = None,
    target: str = "prediction",
) -> GlobalExplanation:
    """Cohorts of labelled (entity, anchor) examples by every column the model reads, with the mean
    prediction (honest: never of a model that saw the example's label) and the mean label of each."""
    cfg = cfg or ExplainConfig()
    sub = builder.sampler.sample(engine.entity_table, np.asarray(rows), np.asarray(anchors))
    values = subgraph_values(builder.graph, builder.features, sub, engine.entity_table, builder.max_nodes)
    ccfg = CohortConfig(cfg.cohort_bins, cfg.max_categories, cfg.min_cohort)
    return global_explanation(values, prediction, label, ccfg, target)
