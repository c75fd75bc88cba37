"""Scorers: a model bound to one graph and query, predicting batches of (entity row, anchor).

A fine-tuned model (relfm_core.finetune's artefact folder) scores each entity in one forward pass. A
pretrained checkpoint scores zero-shot: the labelled context is generated from the query once per
anchor, encoded once, and every batch attends to it (as relfm_core.rfm does), so batches stay
independent and can go to any actor. Both return the same columns: `prediction` (probability for
binary, value for regression, class for multiclass) and, for multiclass, `prob_<class>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from graph_engine.cache import relfm_home
from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from relfm_core.features import GraphFeatures
from relfm_core.finetune import is_finetuned, load_finetuned, score
from relfm_core.inputs import InputBuilder, TargetNorm
from relfm_core.labels import LabelEngine, TableConfig, context_table
from relfm_core.text_encoder import TextEncoder
from relfm_core.weights import load_pretrained

Columns = dict[str, np.ndarray]


class Scorer(Protocol):
    engine: LabelEngine
    task_type: str

    def predict(self, rows: np.ndarray, anchors: np.ndarray) -> Columns: ...


def text_encoder() -> TextEncoder:
    return TextEncoder(relfm_home() / "text-embeddings.sqlite")


def _task(engine: LabelEngine) -> str:
    return str(engine.task_type.value)


def _columns(task: str, out: np.ndarray, classes: list[Any]) -> Columns:
    if task != "multiclass":
        return {"prediction": np.asarray(out, dtype=np.float64)}
    probs = np.asarray(out, dtype=np.float64)
    labels = np.array([str(c) for c in classes], dtype=object)
    cols: Columns = {"prediction": labels[np.argmax(probs, axis=1)] if len(probs) else labels[:0]}
    for i, c in enumerate(labels):
        cols[f"prob_{c}"] = probs[:, i] if len(probs) else np.zeros(0)
    return cols


def device_for(use_gpu: bool) -> torch.device:
    return torch.device("cuda") if use_gpu and torch.cuda.is_available() else torch.device("cpu")


def _to(
    t: dict[str, torch.Tensor], lags: torch.Tensor, device: torch.device
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    if device.type == "cpu":
        return t, lags
    return {k: v.to(device) for k, v in t.items()}, lags.to(device)


class FinetunedScorer:
    """One forward pass per entity; the query comes from the artefact. Inputs are sampled and
    featurised on the CPU; the model runs on `device` (a GPU when the actor has one)."""

    def __init__(
        self, graph: Graph, folder: str | Path, text: TextEncoder | None = None, use_gpu: bool = False
    ) -> None:
        self.device = device_for(use_gpu)
        self.loaded = load_finetuned(folder)
        self.loaded.model.to(self.device)
        self.engine = LabelEngine(graph, self.loaded.query)
        self.task_type = str(self.loaded.meta["task_type"])
        if self.task_type == "link_prediction":
            raise RelfmError(
                f"batch scoring writes binary, regression and multiclass predictions; the link-prediction "
                f"model {folder} ranks with `relfm predict`"
            )
        self.classes: list[Any] = list(self.loaded.meta.get("classes") or [])
        features = GraphFeatures(graph, text or text_encoder())
        self.builder = InputBuilder(graph, features, lags=self.loaded.model.base.cfg.lags)

    @torch.no_grad()
    def predict(self, rows: np.ndarray, anchors: np.ndarray) -> Columns:
        if self.device.type == "cpu":
            out = score(self.loaded, self.builder, self.engine, rows, anchors, batch_size=max(len(rows), 1))
            return _columns(self.task_type, out, self.classes)
        t, lg, _ = self.builder.build(self.engine, rows, anchors, self.loaded.norm)
        o = self.loaded.model(*_to(t, lg, self.device)).float().cpu()
        if self.task_type == "binary":
            out = torch.sigmoid(o).numpy()
        elif self.task_type == "regression":
            out = self.loaded.norm.inverse(o[:, 0].numpy())
        else:
            out = torch.softmax(o, -1).numpy()
        return _columns(self.task_type, out, self.classes)


class ZeroShotScorer:
    """In-context prediction at one anchor: the context is built and encoded once, in __init__."""

    def __init__(
        self,
        graph: Graph,
        checkpoint: str | Path,
        query: str,
        anchor: int,
        context_size: int = 1024,
        text: TextEncoder | None = None,
        seed: int = 0,
        use_gpu: bool = False,
    ) -> None:
        self.device = device_for(use_gpu)
        self.model = load_pretrained(checkpoint).to(self.device)
        self.engine = LabelEngine(graph, query)
        self.task_type = _task(self.engine)
        if self.task_type not in ("binary", "regression", "multiclass"):
            raise RelfmError(
                f"zero-shot scoring supports binary, regression and multiclass queries, not {self.task_type}"
            )
        self.anchor = int(anchor)
        self.builder = InputBuilder(
            graph, GraphFeatures(graph, text or text_encoder()), lags=self.model.cfg.lags
        )
        df = context_table(
            self.engine, self.anchor, TableConfig(max_rows=context_size, num_anchors=24, seed=seed)
        )
        if len(df) == 0:
            raise RelfmError(f"no labelled context before {np.datetime64(self.anchor, 'ns')} for: {query}")
        y = df["label"].to_numpy()
        self.classes: list[Any] = []
        if self.task_type == "multiclass":
            values = np.asarray(df.attrs["classes"], dtype=object)[y.astype(np.int64)]
            self.classes = sorted(set(values.tolist()), key=str)[: self.model.cfg.max_classes]
            slot = {c: i for i, c in enumerate(self.classes)}
            keep = np.array([v in slot for v in values.tolist()])
            df = df[keep]
            y = np.array([slot[v] for v in values[keep].tolist()], dtype=np.float64)
            self.norm = TargetNorm.fit("multiclass", y, self.classes)
        else:
            self.norm = TargetNorm.fit(self.task_type, y.astype(np.float64))
            y = self.norm.forward(y.astype(np.float64))
        rows = df["entity_row"].to_numpy(np.int64)
        times = df["anchor_time"].to_numpy("datetime64[ns]").astype(np.int64)
        with torch.no_grad():
            # history statistics are fitted on the context and reused for every batch
            t, lg, self.norm = self.builder.build(self.engine, rows, times, self.norm)
            self.memory = self.model.context_memory(
                t, lg, torch.from_numpy(y.astype(np.float32)), self.task_type
            )

    @torch.no_grad()
    def predict(self, rows: np.ndarray, anchors: np.ndarray) -> Columns:
        if len(anchors) and np.any(np.asarray(anchors) > self.anchor):
            raise RelfmError("zero-shot scorer: an entity's anchor is after the context's anchor")
        t, lg, _ = self.builder.build(self.engine, rows, anchors, self.norm)
        o = self.model.predict_with_memory(
            *_to(t, lg, self.device), self.memory, self.task_type, len(self.classes)
        )
        o = o.float().cpu()
        if self.task_type == "binary":
            out = torch.sigmoid(o).numpy()
        elif self.task_type == "regression":
            out = self.norm.inverse(o[:, 0].numpy())
        else:
            out = torch.softmax(o, -1).numpy()
        return _columns(self.task_type, out, self.classes)


def open_scorer(
    graph: Graph,
    folder: str | Path,
    query: str | None,
    anchor: int,
    context_size: int = 1024,
    use_gpu: bool = False,
) -> Scorer:
    """A fine-tuned artefact scores its own query; a pretrained checkpoint needs `query`."""
    if is_finetuned(folder):
        scorer = FinetunedScorer(graph, folder, use_gpu=use_gpu)
        if query is not None and " ".join(query.split()) != " ".join(scorer.loaded.query.split()):
            raise RelfmError(f"model {folder} was fine-tuned for '{scorer.loaded.query}', not '{query}'")
        return scorer
    if query is None:
        raise RelfmError(f"model {folder} is a pretrained checkpoint: give the query to score zero-shot")
    return ZeroShotScorer(graph, folder, query, anchor, context_size, use_gpu=use_gpu)


def query_of(folder: str | Path, query: str | None) -> str:
    """The query a model scores: a fine-tuned artefact's own, else the configured one."""
    if is_finetuned(folder):
        return load_finetuned_query(folder)
    if query is None:
        raise RelfmError(f"model {folder} is a pretrained checkpoint: give the query to score zero-shot")
    return query


def load_finetuned_query(folder: str | Path) -> str:
    import json

    return str(json.loads((Path(folder) / "config.json").read_text())["query"])
