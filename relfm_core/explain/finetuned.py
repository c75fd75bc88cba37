"""Explanations of a fine-tuned model (one forward pass per entity, no context).

A fine-tuned model reads no context, so the reference inputs and the labelled examples of the global
explanation come from the query itself: the labelled examples at anchors before the latest one explained
(the label engine's context table, as zero-shot prediction would use). Their predictions are the
fine-tuned model's; some may be examples it was trained on, so its cohort means can look cleaner than on
new data (the evaluation report's cohorts, over the backtest window, do not have that bias).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from relfm_core.explain.explainer import (
    ExplainConfig,
    Explanation,
    explain_globally,
    explain_local,
    to_units,
    value_and_label,
)
from relfm_core.explain.saliency import Reference
from relfm_core.inputs import InputBuilder

REFERENCE_ROWS = 256
REFERENCE_ANCHORS = 8


def explain_finetuned(
    loaded: Any,
    builder: InputBuilder,
    engine: Any,
    rows: np.ndarray,
    anchors: np.ndarray,
    cfg: ExplainConfig | None = None,
    seed: int = 0,
) -> Explanation:
    """Local explanations of (entity, anchor) pairs and cohorts over labelled examples before them.
    `loaded` is a relfm_core.finetune.LoadedFinetuned."""
    from relfm_core.finetune import table_pairs
    from relfm_core.labels import TableConfig, context_table

    cfg = cfg or ExplainConfig()
    task = str(loaded.meta["task_type"])
    norm = loaded.norm
    model = loaded.model

    def raw(t: dict[str, torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = model(t, feats)
        return out

    anchor = int(np.max(anchors)) if len(anchors) else 0
    examples = context_table(
        engine, anchor, TableConfig(max_rows=REFERENCE_ROWS, num_anchors=REFERENCE_ANCHORS, seed=seed)
    )
    e_rows, e_anchors = table_pairs(examples)
    if len(e_rows) == 0:  # no labelled past: the entities explained are their own reference
        e_rows, e_anchors = np.asarray(rows, dtype=np.int64), np.asarray(anchors, dtype=np.int64)
    rt, rf, _ = builder.build(engine, e_rows, e_anchors, norm)
    local = explain_local(raw, builder, engine, rows, anchors, norm, task, Reference.from_inputs(rt, rf), cfg)
    global_ = None
    if len(examples) >= 2 * cfg.min_cohort:
        with torch.no_grad():
            units = to_units(task, norm, raw(rt, rf)).numpy()
        classes = list(loaded.meta.get("classes") or [])
        labels = examples["label"].to_numpy()
        if task == "multiclass":  # engine class codes -> the model's class slots (-1: unseen in training)
            values = np.asarray(examples.attrs.get("classes") or [], dtype=object)
            slot = {str(c): i for i, c in enumerate(classes)}
            labels = np.array([slot.get(str(values[int(c)]), -1) for c in labels], dtype=np.int64)
        pred, lab, target = value_and_label(task, units, labels, classes)
        global_ = explain_globally(builder, engine, e_rows, e_anchors, pred, lab, cfg, target)
    return Explanation(local, global_)
