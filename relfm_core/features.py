"""From sampled subgraphs to model tensors, for any schema.

The model must read databases it has never seen, so nothing here is learned per column or per category:
a cell is described by (a) the text embedding of its column name ("position order of results"),
(b) its semantic type, (c) a few schema-free numeric features (a robust z-score and the quantile of a
number; the relative age and season of a timestamp; the frequency of a category) and (d) for categories,
text, multi-categories and embeddings, a 384-d value vector (the frozen text encoder's embedding of
"<column> is <value>", or the projected embedding itself). Per-column statistics are computed once per
graph and cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from graph_engine.sampler import NO_TIME, Subgraph
from graph_engine.shards.reader import Graph
from graph_engine.spec import SemanticType
from relfm_core.text_encoder import DIM, TextEncoder, column_text

NUM_CELL_FEATS = 8
NUM_NODE_FEATS = 8
STYPES = [s.value for s in SemanticType]
STYPE_INDEX = {s: i + 1 for i, s in enumerate(STYPES)}  # 0 = padding
DAY_NS = 86_400 * 10**9
_QUANTILES = np.linspace(0.0, 1.0, 65)


@dataclass(frozen=True)
class FeatureConfig:
    max_cells: int = 16  # feature columns read per row; later columns are ignored
    # Text cells of tables up to this many rows are embedded once per graph by the sentence encoder;
    # larger tables use the hashed bag-of-words encoder (encoding millions of distinct texts with MiniLM
    # on CPU would cost hours: it was 90% of pretraining's input time).
    minilm_text_rows: int = 5000


@dataclass
class ColumnStats:
    name: str
    stype: SemanticType
    text_index: int  # row of the column-name embedding in the graph's name table
    median: float = 0.0
    scale: float = 1.0
    quantiles: np.ndarray | None = None
    log_freq: np.ndarray | None = None  # per category code
    value_offset: int = 0  # first row of this column's category embeddings in the value table
    emb_proj: np.ndarray | None = None  # embedding columns: fixed projection to DIM
    text_emb: np.ndarray | None = None  # text columns of small tables: every row's sentence embedding


@dataclass
class TableStats:
    name: str
    text_index: int
    columns: list[ColumnStats] = field(default_factory=list)


class GraphFeatures:
    """Everything schema-dependent the model needs from one graph, computed once."""

    def __init__(self, graph: Graph, text: TextEncoder, config: FeatureConfig | None = None) -> None:
        self.graph = graph
        self.text = text
        self.cfg = config or FeatureConfig()
        names: list[str] = ["<pad>"]
        values: list[str] = ["<none>"]
        self.tables: list[TableStats] = []
        self.table_index: dict[str, int] = {}
        for tname in graph.table_names:
            tv = graph.table(tname)
            ts = TableStats(tname, len(names))
            names.append(f"table {tname.replace('_', ' ')}")
            for col in tv.info.feature_columns[: self.cfg.max_cells]:
                info = tv.info.columns[col]
                cs = ColumnStats(col, info.stype, len(names))
                names.append(column_text(tname, col))
                self._column_stats(tv, cs, values)
                ts.columns.append(cs)
            self.table_index[tname] = len(self.tables)
            self.tables.append(ts)
        self.edge_text_index: list[int] = []
        for child, fk, parent in graph.schema.edges():
            self.edge_text_index.append(len(names))
            names.append(f"{column_text(child, fk)} to {parent.replace('_', ' ')}")
            self.edge_text_index.append(len(names))
            names.append(f"{child.replace('_', ' ')} of {parent.replace('_', ' ')} by {fk}")
        self.name_emb = torch.from_numpy(text.encode(names))
        self.value_emb = torch.from_numpy(text.encode(values))

    # ------------------------------------------------------------------ statistics
    def _column_stats(self, tv: Any, cs: ColumnStats, values: list[str]) -> None:
        col = tv.column(cs.name)
        rng = np.random.default_rng(0)
        n = tv.num_rows
        sample = np.sort(rng.choice(n, size=min(n, 200_000), replace=False)) if n else np.zeros(0, np.int64)
        if cs.stype in (SemanticType.numerical, SemanticType.timestamp):
            v = np.asarray(col.value[sample], dtype=np.float64)[np.asarray(col.valid[sample], dtype=bool)]
            if cs.stype == SemanticType.timestamp:
                v = v / DAY_NS
            if len(v):
                q = np.quantile(v, _QUANTILES)
                cs.median = float(q[32])
                iqr = float(q[48] - q[16])
                cs.scale = iqr / 1.349 if iqr > 0 else float(np.std(v)) or 1.0
                cs.quantiles = q
        elif cs.stype == SemanticType.categorical:
            vocab = col.vocab or []
            codes = np.asarray(col.value[sample])
            counts = np.bincount(codes[codes >= 0], minlength=len(vocab)).astype(np.float64)
            cs.log_freq = np.log1p(counts / max(len(codes), 1) * 1000.0).astype(np.float32)
            cs.value_offset = len(values)
            values.extend(f"{_words(cs.name)} is {v}" for v in vocab)
        elif cs.stype == SemanticType.multicategorical:
            vocab = col.vocab or []
            cs.value_offset = len(values)
            values.extend(f"{_words(cs.name)} is {v}" for v in vocab)
        elif cs.stype == SemanticType.text:
            if 0 < n <= self.cfg.minilm_text_rows:
                texts = col.text(np.arange(n))
                cs.text_emb = self.text.encode([t or "" for t in texts])
        elif cs.stype == SemanticType.embedding:
            assert col.value is not None
            d = int(col.value.shape[1]) if col.value.ndim == 2 else 0
            proj = np.random.default_rng(d).standard_normal((max(d, 1), DIM)).astype(np.float32)
            cs.emb_proj = proj / np.sqrt(max(d, 1))

    # ------------------------------------------------------------------ tensors
    def tensorize(self, sub: Subgraph, max_nodes: int) -> dict[str, torch.Tensor]:
        """Padded tensors for a batch of subgraphs: nodes [B, N], cells [B, N, C]."""
        b = sub.num_seeds
        counts = np.minimum(np.diff(sub.seed_ptr), max_nodes)
        n = int(max(counts.max() if b else 1, 1))
        present_tables = {sub.table_names[i] for i in np.unique(sub.table)}
        c = max(1, max(len(self.tables[self.table_index[t]].columns) for t in present_tables))
        # flat index of every kept node into the padded [B, N] layout
        seed = sub.seed_of_node()
        local = np.arange(sub.num_nodes) - sub.seed_ptr[seed]
        keep = local < max_nodes
        flat = seed[keep] * n + local[keep]
        node_idx = np.flatnonzero(keep)
        node_mask = np.zeros(b * n, dtype=bool)
        node_mask[flat] = True
        node_table = np.zeros(b * n, dtype=np.int64)
        node_hop = np.zeros(b * n, dtype=np.int64)
        node_edge = np.zeros(b * n, dtype=np.int64)
        node_feats = np.zeros((b * n, NUM_NODE_FEATS), dtype=np.float32)
        node_table[flat] = np.array([self.tables[self.table_index[t]].text_index for t in sub.table_names])[
            sub.table[node_idx]
        ]
        node_hop[flat] = sub.hop[node_idx]
        edges = sub.edge[node_idx]
        eidx = np.zeros(len(edges), dtype=np.int64)
        has_edge = edges >= 0
        if has_edge.any():
            et = [sub.edge_types[i] for i in range(len(sub.edge_types))]
            lookup = np.array(
                [self.edge_text_index[2 * (e.index // 2) + (0 if e.to_parent else 1)] for e in et],
                dtype=np.int64,
            )
            eidx[has_edge] = lookup[edges[has_edge]]
        node_edge[flat] = eidx
        node_feats[flat] = _time_features(sub.rel_time[node_idx], sub.anchor[seed[node_idx]])
        cell_col = np.zeros((b * n, c), dtype=np.int64)
        cell_stype = np.zeros((b * n, c), dtype=np.int64)
        cell_num = np.zeros((b * n, c, NUM_CELL_FEATS), dtype=np.float32)
        cell_val = np.zeros((b * n, c), dtype=np.int64)
        extra_vals: list[np.ndarray] = []
        extra_base = len(self.value_emb)
        for ti, tname in enumerate(sub.table_names):
            sel = node_idx[sub.table[node_idx] == ti]
            if len(sel) == 0:
                continue
            pos = flat[sub.table[node_idx] == ti]
            rows = sub.row[sel]
            anchors = sub.anchor[seed[sel]]
            tv = self.graph.table(tname)
            for ci, cs in enumerate(self.tables[self.table_index[tname]].columns):
                col = tv.column(cs.name)
                cell_col[pos, ci] = cs.text_index
                cell_stype[pos, ci] = STYPE_INDEX[cs.stype.value]
                valid = np.asarray(col.valid[rows], dtype=bool)
                cell_num[pos, ci, 1] = (~valid).astype(np.float32)
                feats, vals = self._cell(
                    cs, col, rows, valid, anchors, extra_base + sum(len(x) for x in extra_vals)
                )
                if feats is not None:
                    cell_num[pos, ci, :] += feats
                if vals is not None:
                    idx, new = vals
                    cell_val[pos, ci] = idx
                    if new is not None:
                        extra_vals.append(new)
        value_emb = self.value_emb
        if extra_vals:
            value_emb = torch.cat(
                [value_emb, torch.from_numpy(np.concatenate(extra_vals).astype(np.float32))]
            )
        return {
            "node_mask": torch.from_numpy(node_mask.reshape(b, n)),
            "node_table": torch.from_numpy(node_table.reshape(b, n)),
            "node_hop": torch.from_numpy(np.minimum(node_hop, 7).reshape(b, n)),
            "node_edge": torch.from_numpy(node_edge.reshape(b, n)),
            "node_feats": torch.from_numpy(node_feats.reshape(b, n, NUM_NODE_FEATS)),
            "cell_col": torch.from_numpy(cell_col.reshape(b, n, c)),
            "cell_stype": torch.from_numpy(cell_stype.reshape(b, n, c)),
            "cell_num": torch.from_numpy(cell_num.reshape(b, n, c, NUM_CELL_FEATS)),
            "cell_val": torch.from_numpy(cell_val.reshape(b, n, c)),
            "name_emb": self.name_emb,
            "value_emb": value_emb,
        }

    def _cell(
        self,
        cs: ColumnStats,
        col: Any,
        rows: np.ndarray,
        valid: np.ndarray,
        anchors: np.ndarray,
        next_index: int,
    ) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray | None] | None]:
        m = len(rows)
        f = np.zeros((m, NUM_CELL_FEATS), dtype=np.float32)
        if cs.stype == SemanticType.numerical:
            v = np.asarray(col.value[rows], dtype=np.float64)
            z = (v - cs.median) / cs.scale
            f[:, 0] = np.where(valid, np.arcsinh(z), 0.0)
            if cs.quantiles is not None:
                f[:, 2] = np.where(valid, np.searchsorted(cs.quantiles, v) / len(cs.quantiles) - 0.5, 0.0)
            return f, None
        if cs.stype == SemanticType.timestamp:
            v = np.asarray(col.value[rows], dtype=np.int64)
            f[:, 0:NUM_NODE_FEATS] = np.where(valid[:, None], _time_features(anchors - v, anchors), 0.0)[
                :, :NUM_CELL_FEATS
            ]
            return f, None
        if cs.stype == SemanticType.categorical:
            codes = np.asarray(col.value[rows], dtype=np.int64)
            ok = valid & (codes >= 0)
            if cs.log_freq is not None and len(cs.log_freq):
                f[:, 0] = np.where(ok, cs.log_freq[np.maximum(codes, 0)], 0.0)
            return f, (np.where(ok, cs.value_offset + codes, 0), None)
        if cs.stype == SemanticType.multicategorical:
            vecs = np.zeros((m, DIM), dtype=np.float32)
            table = self.value_emb.numpy()
            for i, r in enumerate(rows):
                s, k = int(col.start[r]), int(col.count[r])
                if k:
                    vecs[i] = table[cs.value_offset + np.asarray(col.items[s : s + k])].mean(0)
                f[i, 0] = np.log1p(k)
            return f, (np.where(valid, next_index + np.arange(m), 0), vecs)
        if cs.stype == SemanticType.text:
            f[:, 0] = np.log1p(np.asarray(col.count[rows], dtype=np.float32)) / 5.0
            if cs.text_emb is not None:
                vecs = cs.text_emb[rows]
            else:
                vecs = _hashed([t or "" for t in col.text(rows)])
            return f, (np.where(valid, next_index + np.arange(m), 0), vecs)
        if cs.stype == SemanticType.embedding and cs.emb_proj is not None:
            e = np.asarray(col.value[rows], dtype=np.float32)
            vecs = (
                e @ cs.emb_proj
                if e.ndim == 2 and e.shape[1] == cs.emb_proj.shape[0]
                else np.zeros((m, DIM), np.float32)
            )
            return f, (np.where(valid, next_index + np.arange(m), 0), vecs.astype(np.float32))
        return None, None


def _hashed(texts: list[str]) -> np.ndarray:
    from relfm_core.text_encoder import hashed_embedding

    return hashed_embedding(texts)


def _words(name: str) -> str:
    from relfm_core.text_encoder import _words as w

    return w(name)


def _time_features(rel_ns: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Relative age (signed log days), presence, and the season/weekday of the absolute time."""
    out = np.zeros((len(rel_ns), NUM_NODE_FEATS), dtype=np.float32)
    has = rel_ns != NO_TIME
    days = np.where(has, rel_ns / DAY_NS, 0.0)
    out[:, 0] = np.sign(days) * np.log1p(np.abs(days)) / 4.0
    out[:, 1] = (~has).astype(np.float32)
    t_abs = np.where(has, anchors - np.where(has, rel_ns, 0), 0) / DAY_NS
    doy = 2 * np.pi * (t_abs % 365.25) / 365.25
    dow = 2 * np.pi * (t_abs % 7) / 7
    out[:, 2] = np.where(has, np.sin(doy), 0)
    out[:, 3] = np.where(has, np.cos(doy), 0)
    out[:, 4] = np.where(has, np.sin(dow), 0)
    out[:, 5] = np.where(has, np.cos(dow), 0)
    out[:, 6] = np.where(has, np.minimum(days, 3650) / 365.0, 0.0)  # linear age in years, capped
    out[:, 7] = np.where(has & (days < 1), 1.0, 0.0)
    return out
