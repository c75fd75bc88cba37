"""Per-entity aggregates of the sampled subgraph: the in-context probe's direct view of the raw cells.

Why: on relational benchmarks the strongest classical baseline is a tree model on automatically generated
aggregates (the mean of a column over an entity's rows one or two hops away, the number of such rows).
The encoder has to learn to compute such summaries during pretraining; until it has seen enough data it
can miss a signal that a plain mean over the entity's two-hop rows shows at once. The closed-form
in-context head (relfm_core.icl_head) therefore also reads these aggregates, computed from the same
subgraph tensors the encoder reads, and its cross-validation on the context decides whether they help.

Groups are (table, hop, column) triples found in the context: the same groups are computed for the
entities predicted, so context and query features line up. The aggregates are differentiable in the cell
values (`cell_num`), so local explanations attribute what the probe takes from them to the cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from relfm_core.features import STYPE_INDEX

# cell feature slots (relfm_core.features._cell): 0 = value (arcsinh z-score for numbers, log frequency
# for categories), 1 = null flag, 2 = quantile position (numbers)
_VALUE, _NULL, _QUANTILE = 0, 1, 2
_STYPES = (STYPE_INDEX["numerical"], STYPE_INDEX["categorical"])
MAX_GROUPS = 48
MIN_COVERAGE = 0.1  # share of context entities that have at least one value in the group


@dataclass(frozen=True)
class AggregateGroups:
    """Which aggregates: (table, hop, column) cell groups (name indices) and (table, hop) row counts."""

    cells: tuple[tuple[int, int, int], ...]
    rows: tuple[tuple[int, int], ...]

    @property
    def width(self) -> int:
        return 3 * len(self.cells) + len(self.rows)


def find_groups(t: dict[str, torch.Tensor], max_groups: int = MAX_GROUPS) -> AggregateGroups:
    """The groups present in enough of the context's subgraphs, most widely present first."""
    mask = t["node_mask"]
    b = max(int(mask.shape[0]), 1)
    node_key = t["node_table"] * 8 + t["node_hop"]  # hops are capped at 7 in the tensors
    rows: list[tuple[float, tuple[int, int]]] = []
    for key in torch.unique(node_key[mask]).tolist():
        cover = ((node_key == key) & mask).any(1).float().mean().item()
        if cover >= MIN_COVERAGE and key % 8 > 0:  # hop 0 is the entity itself: always one row
            rows.append((cover, (key // 8, key % 8)))
    ok = mask[..., None] & (t["cell_num"][..., _NULL] == 0)
    ok &= (t["cell_stype"] == _STYPES[0]) | (t["cell_stype"] == _STYPES[1])
    cell_key = (node_key[..., None] * 100_003 + t["cell_col"]).masked_fill(~ok, -1)
    cells: list[tuple[float, tuple[int, int, int]]] = []
    for key in torch.unique(cell_key[ok]).tolist():
        cover = (cell_key == key).flatten(1).any(1).float().sum().item() / b
        if cover >= MIN_COVERAGE:
            nk, col = divmod(int(key), 100_003)
            cells.append((cover, (nk // 8, nk % 8, col)))
    cells.sort(key=lambda c: (-c[0], c[1]))
    rows.sort(key=lambda r: (-r[0], r[1]))
    return AggregateGroups(tuple(k for _, k in cells[:max_groups]), tuple(k for _, k in rows[:max_groups]))


def aggregates(t: dict[str, torch.Tensor], groups: AggregateGroups) -> torch.Tensor:
    """[B, width]: per cell group the mean value and mean quantile over the entity's non-null cells (0
    where it has none) and the value of its most recent row (the sampler emits children newest first,
    and parents in the order of the children that lead to them); per row group log(1 + sampled rows)."""
    mask = t["node_mask"]
    num = t["cell_num"]
    # presence as a weight, not a test: explanations interpolate the null flag along with the values
    present = (1.0 - num[..., _NULL]).clamp(0.0, 1.0) * mask[..., None].to(num.dtype)
    nodes: dict[tuple[int, int], torch.Tensor] = {}

    def node_mask(table: int, hop: int) -> torch.Tensor:
        """The entity's sampled rows of one table at one hop (shared by that pair's groups)."""
        if (table, hop) not in nodes:
            nodes[table, hop] = mask & (t["node_table"] == table) & (t["node_hop"] == hop)
        return nodes[table, hop]

    out: list[torch.Tensor] = []
    for table, hop, col in groups.cells:
        node = node_mask(table, hop)
        w = present * (node[..., None] & (t["cell_col"] == col)).to(num.dtype)
        count = w.flatten(1).sum(1).clamp(min=1.0)
        out.append((num[..., _VALUE] * w).flatten(1).sum(1) / count)
        out.append((num[..., _QUANTILE] * w).flatten(1).sum(1) / count)
        flat = w.flatten(1)
        with torch.no_grad():
            first = (flat > 0).to(torch.int64)
            first = first * (first.cumsum(1) == 1)  # one-hot at the first row holding a value
        out.append((num[..., _VALUE].flatten(1) * first.to(num.dtype)).sum(1))
    for table, hop in groups.rows:
        out.append(torch.log1p(node_mask(table, hop).to(num.dtype).sum(1)))
    if not out:
        return torch.zeros(mask.shape[0], 0, dtype=num.dtype)
    return torch.stack(out, 1)


def probe_features(
    h: torch.Tensor, feats: torch.Tensor, t: dict[str, torch.Tensor], groups: AggregateGroups | None
) -> torch.Tensor:
    """The in-context probe's input: encoder output, the entity's label history, subgraph aggregates."""
    parts = [h, feats.to(h.dtype)]
    if groups is not None and groups.width:
        parts.append(aggregates(t, groups).to(h.dtype))
    return torch.cat(parts, -1)
