"""The relational foundation model, in one file.

Reads, for each entity (a seed row at an anchor time):
  1. its temporal subgraph: one token per sampled row (KumoRFM's row tokens, not one per cell: on CPU the
     cell-level Relational Transformer is ~20x more expensive). A row token is built from its cells by
     attention pooling over columns; each cell is its value's features modulated by the text embedding
     of its column name, so unseen schemas are read through names (Relational Transformer);
  2. its own past labels at lagged anchors (the query's target evaluated at t - k*window, k = 1..L), which
     both references found the strongest single signal;
  3. for in-context learning, a set of labelled context entities (historical anchors), encoded by the same
     encoder with their label injected into the seed token from the first layer (task-conditioned, as
     KumoRFM-2), then mixed by self-attention; the entities being predicted cross-attend to them and never
     to each other, so predictions do not depend on what else is in the batch.
Heads: binary logit; regression in a normalised target space; multiclass as similarity to class
embeddings (class slots are exchangeable: training permutes them); link prediction scores candidate
destination rows from their row token, the entity's representation and pair features (past interactions,
recency, popularity).

A fine-tuned model keeps the encoder and swaps the in-context head for a task head that needs no context.
At prediction time the SDK adds a closed-form in-context head beside the attention head
(`relfm_core.icl_head`): a regularised linear probe solved on the context's encodings and lagged labels,
blended in by cross-validation on the context alone (see `encode_context` / `memory_from`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from relfm_core.features import NUM_CELL_FEATS, NUM_NODE_FEATS, STYPES
from relfm_core.text_encoder import DIM as TEXT_DIM

TASK_TYPES = ("binary", "regression", "multiclass", "link")


@dataclass
class ModelConfig:
    d: int = 128
    cell_dim: int = 64  # width of per-cell work (the dominant cost on CPU); rows are projected to d
    heads: int = 4
    graph_layers: int = 3
    icl_layers: int = 2
    ff_mult: int = 2
    lags: int = 8
    lag_feats: int = 4  # per lag: label value, label present, activity (log count), window-has-rows
    history_feats: int = 24  # the query's own aggregates over 1/4/16/64 past windows (value, present)
    max_classes: int = 16
    pair_feats: int = 8  # link prediction: features of (entity, candidate) pairs
    dropout: float = 0.0

    @property
    def entity_feats(self) -> int:
        return self.lags * self.lag_feats + self.history_feats

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Block(nn.Module):
    """Pre-norm transformer block; `kv` given → cross-attention to it."""

    def __init__(self, d: int, heads: int, ff_mult: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d)
        self.ln_kv = nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ln2 = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, ff_mult * d), nn.GELU(), nn.Linear(ff_mult * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(
        self, x: torch.Tensor, kv: torch.Tensor | None = None, key_padding_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.ln1(x)
        src = h if kv is None else self.ln_kv(kv)
        a, _ = self.attn(h, src, src, key_padding_mask=key_padding_mask, need_weights=False)
        x = x + self.drop(a)
        return x + self.drop(self.ff(self.ln2(x)))


class RowEncoder(nn.Module):
    """Cells → row tokens: value features × column-name modulation, attention-pooled over columns.

    Everything that depends only on the column (its name embedding, gate and bias) is computed once per
    column name and indexed; the per-cell work is one small linear map, which keeps CPU training fast.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, dc = cfg.d, cfg.cell_dim
        self.name_proj = nn.Linear(TEXT_DIM, d)
        self.cell_name = nn.Linear(d, dc)
        self.value_proj = nn.Linear(TEXT_DIM, dc)
        self.stype = nn.Embedding(len(STYPES) + 1, dc, padding_idx=0)
        self.num = nn.Linear(NUM_CELL_FEATS, dc)
        self.col_bias = nn.Linear(d, dc)
        self.gate = nn.Linear(d, dc)
        self.pool_q = nn.Linear(dc, 2)  # two pooling heads
        self.out = nn.Sequential(
            nn.LayerNorm(2 * dc), nn.Linear(2 * dc, 2 * d), nn.GELU(), nn.Linear(2 * d, d)
        )

    def forward(self, t: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        names = self.name_proj(t["name_emb"])  # [V_names, d]: the small tables are projected once
        gates = 1 + torch.tanh(self.gate(names))
        biases = self.col_bias(names)
        cell_names = self.cell_name(names)
        values = self.value_proj(t["value_emb"])
        values = torch.cat([torch.zeros_like(values[:1]), values[1:]])  # index 0 = no value vector
        cc = t["cell_col"]
        cell = F.gelu(self.num(t["cell_num"]) + biases[cc]) * gates[cc]
        cell = cell + cell_names[cc] + values[t["cell_val"]] + self.stype(t["cell_stype"])
        present = (cc > 0).unsqueeze(-1)
        logits = self.pool_q(cell).masked_fill(~present, -1e4)  # [B, N, C, 2]
        w = torch.softmax(logits, dim=-2) * present
        row = torch.einsum("bnch,bncd->bnhd", w, cell).flatten(-2)
        return self.out(row), names


class RelationalFM(nn.Module):
    def __init__(self, cfg: ModelConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or ModelConfig()
        d = cfg.d
        self.rows = RowEncoder(cfg)
        self.hop = nn.Embedding(8, d)
        self.node_feats = nn.Sequential(nn.Linear(NUM_NODE_FEATS, d), nn.GELU(), nn.Linear(d, d))
        self.task_type = nn.Embedding(len(TASK_TYPES), d)
        self.lag = nn.Sequential(nn.Linear(cfg.entity_feats, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
        self.graph = nn.ModuleList(
            Block(d, cfg.heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.graph_layers)
        )
        self.pool = nn.Sequential(nn.LayerNorm(2 * d), nn.Linear(2 * d, d))
        # label embeddings (context injection) and the matching output heads
        self.label_binary = nn.Embedding(3, d)  # 0, 1, unknown
        self.label_reg = nn.Sequential(nn.Linear(2, d), nn.GELU(), nn.Linear(d, d))
        self.label_class = nn.Embedding(cfg.max_classes + 1, d)  # slot max_classes = unknown
        self.icl_ctx = nn.ModuleList(
            Block(d, cfg.heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.icl_layers)
        )
        self.icl_qry = nn.ModuleList(
            Block(d, cfg.heads, cfg.ff_mult, cfg.dropout) for _ in range(cfg.icl_layers)
        )
        self.ln_out = nn.LayerNorm(d)
        self.head_binary = nn.Linear(d, 1)
        self.head_reg = nn.Linear(d, 2)  # mean and log-scale (Laplace) in normalised space
        self.head_class = nn.Linear(d, d)
        self.pair = nn.Sequential(nn.Linear(cfg.pair_feats, d), nn.GELU(), nn.Linear(d, d))
        self.head_link = nn.Sequential(nn.Linear(3 * d, d), nn.GELU(), nn.Linear(d, 1))
        # lag skip: a direct path from the entity's own history to the output
        self.lag_skip = nn.Linear(cfg.entity_feats, d)
        self.apply(_init)

    # ------------------------------------------------------------------ encoder
    def encode(
        self,
        t: dict[str, torch.Tensor],
        lags: torch.Tensor,
        task_type: int,
        label_tok: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Subgraph tensors [B, N, ...] + lag features [B, L*F] → entity representations [B, d]."""
        row, names = self.rows(t)
        x = row + names[t["node_table"]] + self.hop(t["node_hop"]) + self.node_feats(t["node_feats"])
        edge = t["node_edge"]
        x = x + torch.where((edge > 0).unsqueeze(-1), names[edge], torch.zeros_like(x))
        seed = self.lag(lags) + self.task_type.weight[task_type]
        if label_tok is not None:
            seed = seed + label_tok
        x = torch.cat([x[:, :1] + seed.unsqueeze(1), x[:, 1:]], dim=1)
        pad = ~t["node_mask"]
        for blk in self.graph:
            x = blk(x, key_padding_mask=pad)
        m = t["node_mask"].unsqueeze(-1).float()
        mean = (x * m).sum(1) / m.sum(1).clamp(min=1)
        return self.pool(torch.cat([x[:, 0], mean], dim=-1)) + self.lag_skip(lags)

    # ------------------------------------------------------------------ labels
    def label_tokens(self, task_type: str, y: torch.Tensor | None, n: int) -> torch.Tensor:
        """Embeddings of context labels (y given) or of 'unknown' (y None) for n entities."""
        if task_type == "binary":
            idx = torch.full((n,), 2, dtype=torch.long) if y is None else y.long()
            return self.label_binary(idx)
        if task_type == "regression":
            if y is None:
                return self.label_reg(torch.tensor([[0.0, 1.0]]).expand(n, 2))
            return self.label_reg(torch.stack([y.float(), torch.zeros_like(y.float())], -1))
        if task_type == "multiclass":
            idx = torch.full((n,), self.cfg.max_classes, dtype=torch.long) if y is None else y.long()
            return self.label_class(idx)
        return torch.zeros(n, self.cfg.d)

    # ------------------------------------------------------------------ in-context prediction
    def context_memory(
        self, ctx: dict[str, torch.Tensor], ctx_lags: torch.Tensor, ctx_y: torch.Tensor, task_type: str
    ) -> torch.Tensor:
        """Encodes the labelled context once; reused for every batch of entities of the same task."""
        return self.memory_from(self.encode_context(ctx, ctx_lags, ctx_y, task_type))

    def encode_context(
        self, ctx: dict[str, torch.Tensor], ctx_lags: torch.Tensor, ctx_y: torch.Tensor, task_type: str
    ) -> torch.Tensor:
        """Per-row encodings of labelled context rows [Nc, d]: rows do not see each other yet, so any
        subset of them makes a memory (`memory_from`), which is what cross-validating on the context uses."""
        tt = TASK_TYPES.index(task_type)
        lab = self.label_tokens(task_type, ctx_y, len(ctx_y))
        return self.encode(ctx, ctx_lags, tt, lab) + lab

    def memory_from(self, encoded: torch.Tensor) -> torch.Tensor:
        h = encoded.unsqueeze(0)
        for blk in self.icl_ctx:
            h = blk(h)
        return h  # [1, Nc, d]

    def encode_query(self, q: dict[str, torch.Tensor], q_lags: torch.Tensor, task_type: str) -> torch.Tensor:
        """Encodings [B, d] of entities whose label is unknown (the 'unknown' label token injected)."""
        tt = TASK_TYPES.index(task_type)
        unk = self.label_tokens(task_type, None, q_lags.shape[0])
        return self.encode(q, q_lags, tt, unk) + unk

    def predict_encoded(
        self, hq: torch.Tensor, memory: torch.Tensor, task_type: str, num_classes: int = 0
    ) -> torch.Tensor:
        """Entities attend to the encoded context only (never to each other)."""
        h = hq.unsqueeze(1)  # [B, 1, d]: each entity is its own sequence of one
        mem = memory.expand(hq.shape[0], -1, -1)
        for blk in self.icl_qry:
            h = blk(h, kv=mem)
        return self.head(self.ln_out(h.squeeze(1)), task_type, num_classes)

    def predict_with_memory(
        self,
        q: dict[str, torch.Tensor],
        q_lags: torch.Tensor,
        memory: torch.Tensor,
        task_type: str,
        num_classes: int = 0,
    ) -> torch.Tensor:
        return self.predict_encoded(self.encode_query(q, q_lags, task_type), memory, task_type, num_classes)

    def forward(
        self,
        q: dict[str, torch.Tensor],
        q_lags: torch.Tensor,
        ctx: dict[str, torch.Tensor],
        ctx_lags: torch.Tensor,
        ctx_y: torch.Tensor,
        task_type: str,
        num_classes: int = 0,
    ) -> torch.Tensor:
        memory = self.context_memory(ctx, ctx_lags, ctx_y, task_type)
        return self.predict_with_memory(q, q_lags, memory, task_type, num_classes)

    def head(self, h: torch.Tensor, task_type: str, num_classes: int = 0) -> torch.Tensor:
        if task_type == "binary":
            return self.head_binary(h).squeeze(-1)
        if task_type == "regression":
            return self.head_reg(h)
        if task_type == "multiclass":
            classes = self.label_class.weight[:num_classes]
            return self.head_class(h) @ classes.T / math.sqrt(self.cfg.d)
        return h

    # ------------------------------------------------------------------ link prediction
    def score_candidates(
        self, entity: torch.Tensor, cand_rows: torch.Tensor, pair_feats: torch.Tensor
    ) -> torch.Tensor:
        """entity [B, d], candidate row tokens [B, K, d], pair features [B, K, P] → scores [B, K]."""
        e = entity.unsqueeze(1).expand_as(cand_rows)
        return self.head_link(torch.cat([e * cand_rows, cand_rows, self.pair(pair_feats)], dim=-1)).squeeze(
            -1
        )

    def candidate_tokens(self, cand: dict[str, torch.Tensor]) -> torch.Tensor:
        """Row tokens of candidate destination rows (tensorised as one-node subgraphs) → [K, d]."""
        row, names = self.rows(cand)
        return row[:, 0] + names[cand["node_table"][:, 0]]

    def link_forward(
        self,
        q: dict[str, torch.Tensor],
        q_lags: torch.Tensor,
        cand: dict[str, torch.Tensor],
        cand_index: torch.Tensor,
        pair: torch.Tensor,
    ) -> torch.Tensor:
        """Scores [B, K] of each entity's K candidates (`cand_index` indexes the candidate tokens)."""
        entity = self.encode(q, q_lags, TASK_TYPES.index("link"))
        tokens = self.candidate_tokens(cand)
        return self.score_candidates(entity, tokens[cand_index.clamp(min=0)], pair)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.normal_(m.weight, std=0.02)


def regression_loss(out: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Laplace negative log-likelihood in normalised space: its median is the MAE-optimal prediction."""
    mu, log_b = out[..., 0], out[..., 1].clamp(-5, 5)
    return (torch.abs(z - mu) * torch.exp(-log_b) + log_b).mean()


def link_loss(scores: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Listwise softmax over each entity's candidates, averaged over its true destinations."""
    logp = torch.log_softmax(scores.masked_fill(~mask, -1e4), dim=-1)
    pos = (target & mask).float()
    n_pos = pos.sum(-1)
    has = n_pos > 0
    if not bool(has.any()):
        return scores.sum() * 0.0
    return (-(logp * pos).sum(-1)[has] / n_pos[has]).mean()


def task_loss(out: torch.Tensor, y: torch.Tensor, task_type: str) -> torch.Tensor:
    if task_type == "binary":
        return F.binary_cross_entropy_with_logits(out, y.float())
    if task_type == "regression":
        return regression_loss(out, y.float())
    if task_type == "multiclass":
        return F.cross_entropy(out, y.long())
    raise ValueError(task_type)
