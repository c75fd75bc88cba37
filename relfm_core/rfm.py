"""The Python SDK, in the style Kumo users know: `RFM(graph).predict(query)` and `.evaluate(query)`.

    from relfm_core import RFM
    rfm = RFM("graph.yaml")                     # a spec, a built graph folder, a Graph, or DataFrames
    rfm.predict("PREDICT COUNT(orders.*, 0, 30, days) = 0 FOR EACH users.user_id")
    rfm.predict(query, at=pairs, time_col="date")          # explicit (entity, anchor) rows
    rfm.predict(query, context=train_df, label_col="label")  # a labelled table as the context

Zero-shot prediction builds a context of labelled examples from the query itself (at earlier anchors,
windows closing before the prediction anchor), encodes it once per anchor group, and lets every entity
attend to it. A fine-tuned model (`relfm_core.finetune`) needs no context.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from graph_engine.cache import open_or_build
from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from graph_engine.spec import GraphSpec
from relfm_core.explain import ExplainConfig, Explanation
from relfm_core.features import GraphFeatures
from relfm_core.inputs import InputBuilder, TargetNorm, slice_tensors
from relfm_core.model import RelationalFM
from relfm_core.subgraph_aggregates import find_groups, probe_features
from relfm_core.text_encoder import TextEncoder

RunMode = Literal["fast", "normal", "best"]
CONTEXT_SIZE: dict[str, int] = {"fast": 256, "normal": 1024, "best": 2048}
MAX_ANCHOR_GROUPS: dict[str, int] = {"fast": 8, "normal": 32, "best": 64}
# How many past anchors a generated context may step back over: few entities are active in any one
# window (about 20 drivers race in a month), so reaching a useful context size needs many windows.
CONTEXT_ANCHORS: dict[str, int] = {"fast": 24, "normal": 64, "best": 128}


class DegenerateContextWarning(UserWarning):
    """The context labels cannot teach the model much (one class, or very few rows)."""


@dataclass
class Prediction:
    frame: pd.DataFrame
    task_type: str
    query: str
    context_rows: int
    # explain=True: saliency per entity (entity = position in `frame`) and cohorts over the context
    explanation: Explanation | None = None


def _graph_from(source: Any, cache_dir: str | Path | None) -> Graph:
    if isinstance(source, dict) and all(isinstance(v, pd.DataFrame) for v in source.values()):
        return graph_from_frames(source, cache_dir=cache_dir)
    if isinstance(source, Graph | GraphSpec | str | Path):
        return open_or_build(source, cache_dir=cache_dir)
    raise RelfmError("RFM needs a graph: a spec file, a built graph folder, a Graph, or a dict of DataFrames")


def _frame_bytes(df: pd.DataFrame, name: str) -> bytes:
    """The frame as Arrow IPC bytes: hashable whatever its cells hold (lists and arrays included)."""
    import pyarrow as pa

    try:
        table = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as e:
        raise RelfmError(f"table '{name}': cannot be converted to Arrow ({str(e).splitlines()[0]})") from None
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue())


def graph_from_frames(
    frames: dict[str, pd.DataFrame], spec: dict[str, Any] | None = None, cache_dir: str | Path | None = None
) -> Graph:
    """A graph over in-memory DataFrames: written once as Parquet under the cache, then built as usual.
    `spec` may pin any table fields (`{"tables": {"users": {"primary_key": "id"}}}`); the rest is inferred."""
    import hashlib

    from graph_engine.cache import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    h = hashlib.sha256()
    for name in sorted(frames):
        h.update(name.encode())
        h.update(_frame_bytes(frames[name], name))
    folder = root / "frames" / h.hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    tables: dict[str, Any] = {}
    given = (spec or {}).get("tables", {})
    for name, df in frames.items():
        path = folder / f"{name}.parquet"
        if not path.exists():
            df.to_parquet(path, index=False)
        tables[name] = {"source": str(path), **given.get(name, {})}
    full = GraphSpec.from_dict(
        {"name": (spec or {}).get("name", "frames"), "tables": tables}, base_dir=folder
    )
    return open_or_build(full, cache_dir=root)


class RFM:
    """A relational foundation model bound to one graph."""

    def __init__(
        self,
        graph: Graph | GraphSpec | str | Path | dict[str, pd.DataFrame],
        model: str | Path | RelationalFM | None = None,
        cache_dir: str | Path | None = None,
        num_threads: int | None = None,
    ) -> None:
        from relfm_core.weights import load_pretrained

        if num_threads:
            torch.set_num_threads(num_threads)
        self.graph = _graph_from(graph, cache_dir)
        self.model = model if isinstance(model, RelationalFM) else load_pretrained(model)
        self.model.eval()
        from graph_engine.cache import relfm_home

        self.text = TextEncoder(relfm_home() / "text-embeddings.sqlite")
        self.features = GraphFeatures(self.graph, self.text)
        self.inputs = InputBuilder(self.graph, self.features, lags=self.model.cfg.lags)

    # ------------------------------------------------------------------ helpers
    def engine(self, query: str) -> Any:
        from relfm_core.labels import LabelEngine

        return LabelEngine(self.graph, query)

    def _pairs(
        self, engine: Any, at: pd.DataFrame | None, time_col: str, anchor: Any
    ) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
        key = self.graph.table(engine.entity_table).info.primary_key
        if at is None:
            t = _to_ns(anchor) if anchor is not None else self.graph.max_time()
            rows = engine.entity_rows(t)
            frame = pd.DataFrame({key: self.graph.table(engine.entity_table).key_values(rows)})
            frame[time_col] = pd.to_datetime(np.full(len(rows), t, dtype="datetime64[ns]"))
            return rows, np.full(len(rows), t, dtype=np.int64), frame
        if key not in at.columns:
            raise RelfmError(f"entity table has no column '{key}' (the key of {engine.entity_table})")
        if time_col not in at.columns:
            raise RelfmError(f"entity table has no anchor column '{time_col}' (use --time-col)")
        rows = self.graph.table(engine.entity_table).lookup(at[key].to_numpy())
        if (rows < 0).any():
            bad = at[key].to_numpy()[np.flatnonzero(rows < 0)[0]]
            raise RelfmError(f"unknown {engine.entity_table}.{key} value {bad!r} in the entity table")
        anchors = _to_ns_array(at[time_col])
        return rows, anchors, at.reset_index(drop=True)

    def _context(
        self,
        engine: Any,
        anchor: int,
        size: int,
        context: pd.DataFrame | None,
        label_col: str,
        time_col: str,
        seed: int,
        num_anchors: int = 24,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if context is not None:
            key = self.graph.table(engine.entity_table).info.primary_key
            for c in (key, label_col):
                if c not in context.columns:
                    raise RelfmError(f"context table has no column '{c}'")
            tcol = time_col if time_col in context.columns else "anchor_time"
            if tcol not in context.columns:
                raise RelfmError(f"context table has no anchor column '{time_col}'")
            ctx = context.dropna(subset=[label_col])
            # only examples whose label window closes at or before the anchor: never the future
            ctx = ctx[_window_ends(engine, _to_ns_array(ctx[tcol])) <= anchor]
            if len(ctx) > size:
                ctx = ctx.sort_values(tcol).iloc[-size:]
            rows = self.graph.table(engine.entity_table).lookup(ctx[key].to_numpy())
            keep = rows >= 0
            return rows[keep], _to_ns_array(ctx[tcol])[keep], ctx[label_col].to_numpy()[keep]
        from relfm_core.labels import TableConfig, context_table

        df = context_table(engine, anchor, TableConfig(max_rows=size, num_anchors=num_anchors, seed=seed))
        labels = df["label"].to_numpy()
        if df.attrs.get("classes") is not None and _task_name(engine) == "multiclass":
            # generated multiclass labels are codes into the engine's classes: predict class values
            labels = np.asarray(df.attrs["classes"], dtype=object)[labels.astype(np.int64)]
        return (
            df["entity_row"].to_numpy(np.int64),
            df["anchor_time"].to_numpy("datetime64[ns]").astype(np.int64),
            labels,
        )

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def predict(
        self,
        query: str,
        at: pd.DataFrame | None = None,
        time_col: str = "anchor_time",
        anchor_time: Any = None,
        context: pd.DataFrame | None = None,
        label_col: str = "label",
        run_mode: RunMode = "fast",
        context_size: int | None = None,
        anchor_groups: int | None = None,
        batch_size: int = 256,
        seed: int = 0,
        icl_probe: bool = True,
        explain: bool = False,
        explain_config: ExplainConfig | None = None,
    ) -> Prediction:
        """Predictions for `at` rows (or every entity at `anchor_time` / the latest time).

        `icl_probe` adds the closed-form in-context head (`relfm_core.icl_head`): a linear probe solved on
        the context, blended with the attention head by cross-validation on the context alone.
        `explain` adds `Prediction.explanation` (relfm_core.explain) and an `explanation` column: each
        entity's strongest contributors, in words.
        """
        engine = self.engine(query)
        task = _task_name(engine)
        rows, anchors, frame = self._pairs(engine, at, time_col, anchor_time)
        explainer = self._explainer(engine, task, len(rows), explain_config, seed) if explain else None
        if task == "link_prediction":
            return self._predict_links(engine, query, rows, anchors, frame, batch_size)
        if task not in ("binary", "regression", "multiclass"):
            raise RelfmError(f"zero-shot {task} queries are not supported yet: {query}")
        size = context_size or CONTEXT_SIZE[run_mode]
        groups = _anchor_groups(anchors, anchor_groups or MAX_ANCHOR_GROUPS[run_mode])
        out_val = np.full(len(rows), np.nan)
        out_probs: np.ndarray | None = None
        classes: list[Any] = []
        ctx_total = 0
        for g_anchor, idx in groups:
            c_rows, c_anchor, c_y = self._context(
                engine, g_anchor, size, context, label_col, time_col, seed, CONTEXT_ANCHORS[run_mode]
            )
            ctx_total = max(ctx_total, len(c_rows))
            _warn_degenerate(task, c_y, query)
            if len(c_rows) == 0:
                raise RelfmError(f"no labelled context before {np.datetime64(g_anchor, 'ns')} for: {query}")
            if task == "multiclass":
                classes = sorted(set(c_y.tolist()), key=str)[: self.model.cfg.max_classes]
                slot = {c: i for i, c in enumerate(classes)}
                keep = np.array([v in slot for v in c_y.tolist()])
                c_rows, c_anchor = c_rows[keep], c_anchor[keep]
                y = np.array([slot[v] for v in c_y[keep].tolist()], dtype=np.float64)
                norm = TargetNorm.fit(task, y, classes)
            else:
                y = np.asarray(c_y, dtype=np.float64)
                norm = TargetNorm.fit(task, y)
                y = norm.forward(y)
            ct, cl, norm = self.inputs.build(engine, c_rows, c_anchor, norm)
            encoded = self.model.encode_context(ct, cl, torch.from_numpy(y.astype(np.float32)), task)
            memory = self.model.memory_from(encoded)
            probe = self._fit_probe(task, ct, cl, y, encoded, len(classes), seed) if icl_probe else None
            if explainer is not None:
                explainer.group(
                    ct, cl, y, encoded, memory, probe, c_rows, c_anchor, c_y, norm, classes, rows[idx],
                    anchors[idx], idx,
                )  # fmt: skip
            for s in range(0, len(idx), batch_size):
                b = idx[s : s + batch_size]
                qt, ql, _ = self.inputs.build(engine, rows[b], anchors[b], norm)
                hq = self.model.encode_query(qt, ql, task)
                o = self.model.predict_encoded(hq, memory, task, len(classes))
                if probe is not None:
                    o = _blend(probe, task, probe_features(hq, ql, qt, probe.groups).numpy(), o)
                if task == "binary":
                    out_val[b] = torch.sigmoid(o).numpy()
                elif task == "regression":
                    out_val[b] = norm.inverse(o[:, 0].numpy())
                else:
                    p = torch.softmax(o, -1).numpy()
                    if out_probs is None or out_probs.shape[1] != p.shape[1]:
                        out_probs = np.full((len(rows), p.shape[1]), np.nan)
                    out_probs[b] = p
        frame = frame.copy()
        if task == "multiclass" and out_probs is not None:
            frame["prediction"] = [classes[i] for i in np.nanargmax(np.nan_to_num(out_probs, nan=-1), 1)]
            for i, c in enumerate(classes):
                frame[f"prob_{c}"] = out_probs[:, i]
        else:
            frame["prediction"] = out_val
        if explainer is None:
            return Prediction(frame, task, query, ctx_total)
        explanation = explainer.result()
        frame["explanation"] = explanation.local.summary
        return Prediction(frame, task, query, ctx_total, explanation)

    def _explainer(self, engine: Any, task: str, n: int, cfg: ExplainConfig | None, seed: int) -> Any:
        from relfm_core.explain import InContextExplainer, check_task

        check_task(task)
        return InContextExplainer(self.model, self.inputs, engine, task, n, cfg, seed)

    def _fit_probe(
        self,
        task: str,
        ct: dict[str, torch.Tensor],
        cl: torch.Tensor,
        y: np.ndarray,
        encoded: torch.Tensor,
        num_classes: int,
        seed: int,
    ) -> Any:
        """The in-context linear probe, with the attention head's out-of-fold outputs for its blend weight.

        Context rows are encoded independently before the ICL layers, so each fold's memory is the ICL
        layers over the other folds' encodings: one extra encoding pass (labels hidden) in total.
        """
        from sklearn.model_selection import KFold

        from relfm_core.icl_head import ProbeConfig, fit_probe
        from relfm_core.task_probe import views_of

        cfg = ProbeConfig(seed=seed)
        if len(y) < cfg.min_rows:
            return None
        hu = self.model.encode_query(ct, cl, task)
        head_oof: np.ndarray | None = None
        folds = KFold(cfg.folds, shuffle=True, random_state=seed).split(np.arange(len(y)))
        for tr, te in folds:
            mem = self.model.memory_from(encoded[torch.from_numpy(tr)])
            o = self.model.predict_encoded(hu[torch.from_numpy(te)], mem, task, num_classes).numpy()
            o = o[:, 0] if task == "regression" else o
            if head_oof is None:
                head_oof = np.zeros((len(y), *o.shape[1:]))
            head_oof[te] = o
        groups = find_groups(ct)
        x = probe_features(hu, cl, ct, groups).numpy()
        views = views_of(hu.shape[1], cl.shape[1], x.shape[1])
        probe = fit_probe(task, x, y, head_oof, cfg, num_classes, views)
        probe.groups = groups
        return probe

    def _predict_links(
        self,
        engine: Any,
        query: str,
        rows: np.ndarray,
        anchors: np.ndarray,
        frame: pd.DataFrame,
        batch_size: int,
    ) -> Prediction:
        """Ranks each entity's candidate destinations; `prediction` holds the top k keys, `scores` theirs."""
        k = int(engine.query.rank_top_k or 10)
        dest = self.graph.table(engine.query.link_target_table)
        keys: list[list[Any]] = []
        scores: list[list[float]] = []
        norm = TargetNorm("link")
        for s in range(0, len(rows), batch_size):
            r, a = rows[s : s + batch_size], anchors[s : s + batch_size]
            qt, ql, _ = self.inputs.build(engine, r, a, norm)
            cand, index, pair, mask, _, cand_rows = self.inputs.link_batch(engine, r, a)
            sc = self.model.link_forward(qt, ql, cand, index, pair).masked_fill(~mask, -np.inf).numpy()
            order = np.argsort(-sc, axis=1, kind="stable")[:, :k]
            for i in range(len(r)):
                top = [j for j in order[i] if np.isfinite(sc[i, j])]
                keys.append(dest.key_values(cand_rows[i, top]).tolist() if top else [])
                scores.append([float(sc[i, j]) for j in top])
        frame = frame.copy()
        frame["prediction"] = keys
        frame["scores"] = scores
        return Prediction(frame, "link_prediction", query, 0)

    def evaluate(
        self,
        query: str,
        anchor_time: Any = None,
        max_entities: int | None = None,
        seed: int = 0,
        **kw: Any,
    ) -> dict[str, float]:
        """Backtest: predict every labelled entity at the latest fully labelled anchor (or `anchor_time`,
        whose window must have closed), at most `max_entities` of them (a seeded sample), and score them
        (relfm_core.evaluation). Other keywords go to `predict`."""
        from relfm_core.evaluation import run_backtest

        def predictor(q: str, pairs: pd.DataFrame) -> pd.DataFrame:
            return self.predict(q, at=pairs, seed=seed, **kw).frame

        return run_backtest(self.engine(query), query, predictor, anchor_time, max_entities, seed).metrics


def _blend(probe: Any, task: str, x: np.ndarray, o: torch.Tensor) -> torch.Tensor:
    """The attention head's output with the probe blended in (regression: the location only)."""
    if task == "regression":
        out = o.clone()
        out[:, 0] = torch.from_numpy(probe.blend(x, o[:, 0].numpy()).astype(np.float32))
        return out
    return torch.from_numpy(probe.blend(x, o.numpy()).astype(np.float32))


def _task_name(engine: Any) -> str:
    t = engine.task_type
    return str(t.value if hasattr(t, "value") else t)


def _to_ns(x: Any) -> int:
    return int(pd.Timestamp(x).tz_localize(None).value if pd.Timestamp(x).tzinfo else pd.Timestamp(x).value)


def _to_ns_array(s: pd.Series) -> np.ndarray:
    v = pd.to_datetime(s)
    if getattr(v.dt, "tz", None) is not None:
        v = v.dt.tz_convert("UTC").dt.tz_localize(None)
    return v.to_numpy("datetime64[ns]").astype(np.int64)


def _window_ends(engine: Any, anchors: np.ndarray) -> np.ndarray:
    """When each anchor's forward windows (target and ASSUMING) end: vectorised `engine.window_end`."""
    from relfm_core.pql import shift

    h = engine.horizon
    a = np.asarray(anchors, dtype=np.int64)
    return a if h is None else np.asarray(shift(a, h.end, h.unit), dtype=np.int64)


def _anchor_groups(anchors: np.ndarray, max_groups: int) -> list[tuple[int, np.ndarray]]:
    """Entities grouped by anchor; with more distinct anchors than `max_groups`, nearby anchors share
    the context of the earliest anchor in their group (so no group ever sees its own future)."""
    uniq = np.unique(anchors)
    if len(uniq) <= max_groups:
        return [(int(a), np.flatnonzero(anchors == a)) for a in uniq]
    edges = np.quantile(uniq, np.linspace(0, 1, max_groups + 1))
    bucket = np.clip(np.searchsorted(edges, anchors, side="right") - 1, 0, max_groups - 1)
    out = []
    for bkt in np.unique(bucket):
        idx = np.flatnonzero(bucket == bkt)
        out.append((int(anchors[idx].min()), idx))
    return out


def _warn_degenerate(task: str, y: np.ndarray, query: str) -> None:
    if len(y) < 20:
        warnings.warn(
            f"only {len(y)} labelled context rows for: {query}", DegenerateContextWarning, stacklevel=3
        )
    elif task in ("binary", "multiclass") and len(set(np.asarray(y).tolist())) < 2:
        warnings.warn(
            f"context labels are all one class for: {query}", DegenerateContextWarning, stacklevel=3
        )


def slice_frame(t: dict[str, torch.Tensor], idx: np.ndarray) -> dict[str, torch.Tensor]:
    return slice_tensors(t, idx)
