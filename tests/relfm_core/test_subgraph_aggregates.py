"""Subgraph aggregates for the in-context probe: groups found in the context, means over non-null cells."""

from __future__ import annotations

import math

import pytest
import torch

from relfm_core.features import NUM_CELL_FEATS, STYPE_INDEX
from relfm_core.subgraph_aggregates import AggregateGroups, aggregates, find_groups, probe_features

pytestmark = pytest.mark.unit
NUM = STYPE_INDEX["numerical"]


def _tensors() -> dict[str, torch.Tensor]:
    """Two entities (table 5, hop 0), each with child rows of table 7 at hop 1 holding column 11.
    Entity 0: values 1.0 and 3.0; entity 1: one value 2.0 and one null; a padding node."""
    b, n, c = 2, 4, 1
    t = {
        "node_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]], dtype=torch.bool),
        "node_table": torch.tensor([[5, 7, 7, 0], [5, 7, 7, 0]]),
        "node_hop": torch.tensor([[0, 1, 1, 0], [0, 1, 1, 0]]),
        "cell_col": torch.full((b, n, c), 11),
        "cell_stype": torch.full((b, n, c), NUM),
        "cell_num": torch.zeros(b, n, c, NUM_CELL_FEATS),
    }
    t["cell_col"][:, 0] = 3  # the entity's own column
    t["cell_num"][0, 1, 0, 0], t["cell_num"][0, 2, 0, 0] = 1.0, 3.0
    t["cell_num"][1, 1, 0, 0] = 2.0
    t["cell_num"][1, 2, 0, 1] = 1.0  # null
    t["cell_stype"][:, 3] = 0
    return t


def test_groups_are_found_in_the_context() -> None:
    g = find_groups(_tensors())
    assert set(g.cells) == {(7, 1, 11), (5, 0, 3)}
    assert g.rows == ((7, 1),)  # the entity's own row is not counted
    assert g.width == 3 * 2 + 1


def test_means_skip_nulls_and_counts_are_logged() -> None:
    t = _tensors()
    out = aggregates(t, AggregateGroups(cells=((7, 1, 11),), rows=((7, 1),)))
    assert out[:, 0].tolist() == [2.0, 2.0]  # (1 + 3) / 2, and 2 / 1 (the null left out)
    assert out[:, 2].tolist() == [1.0, 2.0]  # the most recent (first) row's value
    assert out[:, 3].tolist() == pytest.approx([math.log(3.0)] * 2)


def test_aggregates_are_differentiable_in_the_cells() -> None:
    t = _tensors()
    t["cell_num"] = t["cell_num"].clone().requires_grad_(True)
    out = aggregates(t, AggregateGroups(cells=((7, 1, 11),), rows=()))
    out[0, 0].backward()
    grad = t["cell_num"].grad
    assert grad is not None
    assert grad[0, 1, 0, 0].item() == pytest.approx(0.5) and grad[0, 2, 0, 0].item() == pytest.approx(0.5)
    t["cell_num"].grad = None
    aggregates(t, AggregateGroups(cells=((7, 1, 11),), rows=()))[0, 2].backward()
    assert t["cell_num"].grad[0, :, 0, 0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert grad[1].abs().sum().item() == 0.0


def test_probe_features_append_the_aggregates() -> None:
    t = _tensors()
    h, feats = torch.ones(2, 3), torch.zeros(2, 2)
    g = find_groups(t)
    assert probe_features(h, feats, t, g).shape == (2, 3 + 2 + g.width)
    assert probe_features(h, feats, t, None).shape == (2, 5)
