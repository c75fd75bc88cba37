"""Gradient saliency of the real model, per input cell of each entity's sampled subgraph.

Attributions are integrated gradients (Sundararajan et al., 2017) of the reported prediction (the
probability for binary tasks, the value in label units for regression, the probability of the predicted
class for multiclass) with respect to the model's continuous inputs, on a straight path from a
*reference* to the entity's actual inputs. With one step this is gradient × (input - reference); with
more steps the attributions of an entity add up to f(input) - f(reference) (completeness), which is
what lets a sentence such as "items.price, 8 rows: +0.21" mean a share of the prediction.

The reference is the average input of every column (over the labelled context, or another reference
set of entities): its numeric features, its value vector (category, text or embedding) and, for a
table's time column, the time features of its rows. Attributions therefore say how much each cell
moves this entity's prediction away from that of an entity whose cells are all typical. Missing-ness
is read through the missing flag of the numeric features; a cell without a value vector keeps none.

Inputs attributed per cell: `cell_num` (numeric features) and the cell's value vector. Per row: the
node time features (credited to the table's time column). Per entity: the lag and history features
(the entity's own past labels). Structure (which table, hop, link) is not an input value and gets no
credit. Everything is computed by autograd through the model's own forward pass; nothing is
approximated by a surrogate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from relfm_core.features import NUM_CELL_FEATS, NUM_NODE_FEATS

# (subgraph tensors, entity features) -> the reported prediction per entity [B]
Forward = Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Reference:
    """Average inputs per column (rows indexed by the column's name-table index) and per table."""

    cell_num: torch.Tensor  # [V, NUM_CELL_FEATS]
    value: torch.Tensor  # [V, D] average value vector of the column's cells that have one
    node_feats: torch.Tensor  # [V, NUM_NODE_FEATS] indexed by the table's name index
    entity: torch.Tensor  # [F] lag and history features

    @classmethod
    def from_inputs(cls, tensors: dict[str, torch.Tensor], feats: torch.Tensor) -> Reference:
        """Means over every real cell, row and entity of a set of model inputs (e.g. the context)."""
        v = int(tensors["name_emb"].shape[0])
        col = tensors["cell_col"].reshape(-1)
        real = col > 0
        num = tensors["cell_num"].reshape(-1, NUM_CELL_FEATS)[real]
        ref_num = _group_mean(col[real], num, v)
        val_idx = tensors["cell_val"].reshape(-1)
        has = real & (val_idx > 0)
        values = tensors["value_emb"][val_idx[has]]
        ref_val = _group_mean(col[has], values, v)
        mask = tensors["node_mask"].reshape(-1)
        tables = tensors["node_table"].reshape(-1)[mask]
        nodes = tensors["node_feats"].reshape(-1, NUM_NODE_FEATS)[mask]
        ref_node = _group_mean(tables, nodes, v)
        entity = feats.float().mean(0) if len(feats) else torch.zeros(feats.shape[1])
        return cls(ref_num, ref_val, ref_node, entity)

    def covers(self, tensors: dict[str, torch.Tensor]) -> bool:
        return int(tensors["name_emb"].shape[0]) <= int(self.cell_num.shape[0])


def _group_mean(index: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    out = torch.zeros(n, values.shape[-1], dtype=torch.float32)
    count = torch.zeros(n, dtype=torch.float32)
    if len(index):
        out.index_add_(0, index, values.float())
        count.index_add_(0, index, torch.ones(len(index)))
    return out / count.clamp(min=1).unsqueeze(-1)


@dataclass
class Attribution:
    """Integrated-gradient attributions of one batch, in prediction units."""

    cells: np.ndarray  # [B, N, C]: numeric features + value vector of each cell
    time: np.ndarray  # [B, N]: the row's time features (credited to its table's time column)
    history: np.ndarray  # [B]: the entity's own past labels (lag and history features)
    output: np.ndarray  # [B]: f(actual inputs)
    reference_output: np.ndarray  # [B]: f(reference inputs)

    @property
    def total(self) -> np.ndarray:
        """Sum of an entity's attributions (≈ output - reference_output for enough steps)."""
        return self.cells.sum((1, 2)) + self.time.sum(1) + self.history


def integrated_gradients(
    forward: Forward,
    tensors: dict[str, torch.Tensor],
    feats: torch.Tensor,
    reference: Reference,
    steps: int = 8,
) -> Attribution:
    """Attributions of `forward` for one batch (entities are independent: gradients stay per entity)."""
    steps = max(int(steps), 1)
    col = tensors["cell_col"]
    real = col > 0
    x_num = tensors["cell_num"].float()
    r_num = torch.where(real.unsqueeze(-1), reference.cell_num[col], x_num)
    # one private value-vector row per cell that has one, so that gradients are per cell
    val = tensors["cell_val"]
    has = (real & (val > 0)).reshape(-1)
    pos = torch.nonzero(has).squeeze(-1)
    x_val = tensors["value_emb"][val.reshape(-1)[pos]].float()
    r_val = reference.value[col.reshape(-1)[pos]]
    cell_val = torch.zeros_like(val).reshape(-1)
    cell_val[pos] = torch.arange(1, len(pos) + 1)
    cell_val = cell_val.reshape(val.shape)
    mask = tensors["node_mask"]
    x_node = tensors["node_feats"].float()
    r_node = torch.where(mask.unsqueeze(-1), reference.node_feats[tensors["node_table"]], x_node)
    x_ent = feats.float()
    r_ent = reference.entity.unsqueeze(0).expand_as(x_ent)
    head = tensors["value_emb"][:1].float()

    def run(alpha: float, grad: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        leaves = [
            (r_num + alpha * (x_num - r_num)).detach().requires_grad_(grad),
            (r_val + alpha * (x_val - r_val)).detach().requires_grad_(grad),
            (r_node + alpha * (x_node - r_node)).detach().requires_grad_(grad),
            (r_ent + alpha * (x_ent - r_ent)).detach().requires_grad_(grad),
        ]
        t = dict(tensors)
        t["cell_num"] = leaves[0]
        t["value_emb"] = torch.cat([head, leaves[1]])
        t["cell_val"] = cell_val
        t["node_feats"] = leaves[2]
        return forward(t, leaves[3]), leaves

    grads = [torch.zeros_like(x) for x in (x_num, x_val, x_node, x_ent)]
    with torch.enable_grad():
        for k in range(steps):
            out, leaves = run((k + 0.5) / steps, True)
            total = out.sum()
            if total.requires_grad:
                for g, d in zip(grads, torch.autograd.grad(total, leaves, allow_unused=True), strict=True):
                    if d is not None:
                        g += d
    with torch.no_grad():
        output = run(1.0, False)[0]
        ref_out = run(0.0, False)[0]
    g_num, g_val, g_node, g_ent = (g / steps for g in grads)
    cells = ((x_num - r_num) * g_num).sum(-1)
    val_attr = ((x_val - r_val) * g_val).sum(-1)
    flat = cells.reshape(-1).clone()
    flat[pos] += val_attr
    cells = flat.reshape(cells.shape) * real
    time = ((x_node - r_node) * g_node).sum(-1) * mask
    history = ((x_ent - r_ent) * g_ent).sum(-1)
    return Attribution(
        cells.detach().numpy().astype(np.float64),
        time.detach().numpy().astype(np.float64),
        history.detach().numpy().astype(np.float64),
        output.detach().numpy().astype(np.float64),
        ref_out.detach().numpy().astype(np.float64),
    )
