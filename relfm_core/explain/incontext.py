"""Explanations of zero-shot (in-context) predictions, collected while `RFM.predict` runs.

The explained function is the whole zero-shot predictor of an anchor group: the encoder, the entities
attending to the encoded context (fixed: it is the same for every entity), and the closed-form context
probe blended in when `RFM.predict` fitted one (`relfm_core.icl_head`), re-expressed in torch so that
gradients flow through it too. The reference inputs are the context's averages.

Global explanations need predictions for labelled examples that never saw their own label: the context
is split in two folds and each fold is predicted from a memory built on the other fold alone, and a probe
refitted on it (same regularisation and blend weight as the probe of the whole context).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import torch

from relfm_core.explain.cohorts import GlobalExplanation
from relfm_core.explain.explainer import (
    ExplainConfig,
    Explanation,
    RawForward,
    cell_frame_empty,
    explain_entities,
    explain_globally,
    to_units,
    value_and_label,
)
from relfm_core.explain.local import local_explanation
from relfm_core.explain.saliency import Reference
from relfm_core.inputs import InputBuilder, TargetNorm
from relfm_core.model import RelationalFM
from relfm_core.subgraph_aggregates import probe_features

FOLDS = 2


def blend_torch(probe: Any, task: str, x: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """`relfm_core.icl_head.ContextProbe.blend` as a differentiable torch function of x and the head."""
    if probe is None or probe.weight == 0.0 or probe.model is None or probe.scaler is None:
        return head
    mean = torch.as_tensor(probe.scaler.mean_, dtype=torch.float32)
    scale = torch.as_tensor(probe.scaler.scale_, dtype=torch.float32)
    coef = torch.as_tensor(np.atleast_2d(probe.model.coef_), dtype=torch.float32)
    intercept = torch.as_tensor(np.atleast_1d(probe.model.intercept_), dtype=torch.float32)
    p = ((probe.select(x) - mean) / scale) @ coef.T + intercept  # [B, 1] or [B, k]
    w = float(probe.weight)
    if task == "regression":
        out = head.clone()
        out[:, 0] = (1 - w) * head[:, 0] + w * p[:, 0]
        return out
    if task == "binary":
        return (1 - w) * head + w * p[:, 0]
    full = torch.full_like(head, -30.0)
    cols = torch.as_tensor(np.asarray(probe.classes, dtype=np.int64))
    full[:, cols] = p if p.shape[1] > 1 else torch.cat([-p, p], 1)
    return (1 - w) * head + w * full


def in_context_forward(
    model: RelationalFM, memory: torch.Tensor, probe: Any, task: str, num_classes: int
) -> RawForward:
    """The zero-shot predictor of one anchor group, as `RFM.predict` computes it."""

    def raw(t: dict[str, torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
        hq = model.encode_query(t, feats, task)
        o = model.predict_encoded(hq, memory, task, num_classes)
        if probe is None:
            return o
        return blend_torch(probe, task, probe_features(hq, feats, t, probe.groups), o)

    return raw


def refit_probe(probe: Any, task: str, x: np.ndarray, y: np.ndarray) -> Any:
    """The probe with its hyperparameters and blend weight, fitted again on (x, y) only; None where
    those labels cannot fit one (a single class)."""
    from sklearn.base import clone

    if probe is None or probe.model is None or probe.scaler is None or probe.weight == 0.0:
        return None
    if task != "regression" and len(np.unique(y)) < 2:
        return None
    out = copy.copy(probe)
    x = probe.select(x)
    out.scaler = clone(probe.scaler).fit(x)
    target = y if task == "regression" else y.astype(np.int64)
    out.model = clone(probe.model).fit(out.scaler.transform(x), target)
    if task == "multiclass":
        out.classes = np.asarray(out.model.classes_)
    return out


class InContextExplainer:
    """Collects local explanations per anchor group and cohorts over the first group's context."""

    def __init__(
        self,
        model: RelationalFM,
        builder: InputBuilder,
        engine: Any,
        task: str,
        n: int,
        cfg: ExplainConfig | None = None,
        seed: int = 0,
    ) -> None:
        self.model, self.builder, self.engine, self.task = model, builder, engine, task
        self.cfg = cfg or ExplainConfig()
        self.seed = seed
        self.cells: list[pd.DataFrame] = []
        self.history = np.zeros(n)
        self.output = np.full(n, np.nan)
        self.reference = np.full(n, np.nan)
        self.global_: GlobalExplanation | None = None

    def group(
        self,
        ctx: dict[str, torch.Tensor],
        ctx_feats: torch.Tensor,
        y: np.ndarray,
        encoded: torch.Tensor,
        memory: torch.Tensor,
        probe: Any,
        c_rows: np.ndarray,
        c_anchor: np.ndarray,
        c_labels: np.ndarray,
        norm: TargetNorm,
        classes: list[Any],
        rows: np.ndarray,
        anchors: np.ndarray,
        positions: np.ndarray,
    ) -> None:
        """Explains the entities at `positions` (their rows and anchors) against this group's context."""
        k = len(classes)
        raw = in_context_forward(self.model, memory, probe, self.task, k)
        reference = Reference.from_inputs(ctx, ctx_feats)
        cells, hist, out, ref = explain_entities(
            raw, self.builder, self.engine, rows, anchors, norm, self.task, reference, self.cfg, positions
        )
        self.cells.append(cells)
        self.history[positions], self.output[positions], self.reference[positions] = hist, out, ref
        if self.global_ is None and len(c_rows) >= 2 * FOLDS * self.cfg.min_cohort:
            units = self._held_out(ctx, ctx_feats, y, encoded, probe, norm, k)
            labels = y if self.task == "multiclass" else np.asarray(c_labels, dtype=np.float64)
            pred, lab, target = value_and_label(self.task, units, labels, classes)
            self.global_ = explain_globally(
                self.builder, self.engine, c_rows, c_anchor, pred, lab, self.cfg, target
            )

    @torch.no_grad()
    def _held_out(
        self,
        ctx: dict[str, torch.Tensor],
        ctx_feats: torch.Tensor,
        y: np.ndarray,
        encoded: torch.Tensor,
        probe: Any,
        norm: TargetNorm,
        k: int,
    ) -> np.ndarray:
        """Predictions (prediction units) of every context example from the other fold only."""
        n = len(y)
        fold = np.random.default_rng(self.seed).permutation(n) % FOLDS
        hq = self.model.encode_query(ctx, ctx_feats, self.task)
        x = probe_features(hq, ctx_feats, ctx, None if probe is None else probe.groups)
        out: np.ndarray | None = None
        for f in range(FOLDS):
            test, train = np.flatnonzero(fold == f), np.flatnonzero(fold != f)
            memory = self.model.memory_from(encoded[torch.from_numpy(train)])
            fold_probe = refit_probe(probe, self.task, x[train].numpy(), np.asarray(y)[train])
            ti = torch.from_numpy(test)
            o = self.model.predict_encoded(hq[ti], memory, self.task, k)
            o = blend_torch(fold_probe, self.task, x[ti], o)
            u = to_units(self.task, norm, o).numpy()
            if out is None:
                out = np.full((n, *u.shape[1:]), np.nan)
            out[test] = u
        return out if out is not None else np.full(n, np.nan)

    def result(self) -> Explanation:
        cells = pd.concat(self.cells, ignore_index=True) if self.cells else cell_frame_empty()
        local = local_explanation(
            self.builder.graph,
            self.engine.entity_table,
            cells,
            self.history,
            self.output,
            self.reference,
            self.cfg.top,
        )
        return Explanation(local, self.global_)
