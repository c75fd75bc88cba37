"""Fine-tuning: specialise the pretrained encoder to one query, then score without context.

The in-context head is replaced by a task head on the entity representation, so a fine-tuned model
scores each entity in a single forward pass (what nightly batch scoring wants). Training data is either
generated from the query (training tables at anchors stepped back from the prediction anchor, the latest
ones held out for validation) or supplied (for example RelBench's train and val tables). Training stops
early on the validation metric; the saved artefact carries everything needed to score: weights, model
config, query, task type, classes, target normalisation and the graph it was trained on.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from torch import nn

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from relfm_core.features import GraphFeatures
from relfm_core.inputs import InputBuilder, TargetNorm, slice_tensors
from relfm_core.metrics import auroc
from relfm_core.model import TASK_TYPES, ModelConfig, RelationalFM, task_loss
from relfm_core.subgraph_aggregates import MAX_GROUPS, AggregateGroups, find_groups
from relfm_core.task_probe import ProbeData, ProbeSpec, TaskProbe, features_of, fit_task_probe, views_of
from relfm_core.training import load_weights, save_weights

KIND = "relfm-finetuned"


@dataclass
class FinetuneConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 3e-4
    encoder_lr: float = 1e-4
    weight_decay: float = 0.01
    patience: int = 4
    max_train_rows: int = 20_000
    # which rows when the table has more than max_train_rows: the most recent ("latest": relations
    # drift, and the model scores the future) or a random sample over the whole history
    train_rows: Literal["latest", "random"] = "latest"
    # the most recent rows the linear probe path is solved on (relfm_core.task_probe): it needs only a
    # forward pass per row, so it can read more of the training table than the transformer is trained on
    max_probe_rows: int = 50_000
    seed: int = 0


class FinetunedModel(nn.Module):
    """The pretrained encoder with a task head, and once trained the linear probe path beside it
    (relfm_core.task_probe): one forward pass per entity, no context."""

    def __init__(self, base: RelationalFM, task_type: str, num_classes: int = 0) -> None:
        super().__init__()
        self.base = base
        self.task_type = task_type
        self.num_classes = num_classes
        d = base.cfg.d
        self.head: nn.Module | None = None  # link prediction keeps the pretrained candidate scorer
        if task_type != "link_prediction":
            out = {"binary": 1, "regression": 2, "multiclass": max(num_classes, 2)}[task_type]
            self.head = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(), nn.Linear(d, out))
        self.probe: TaskProbe | None = None

    def represent(self, t: dict[str, torch.Tensor], lags: torch.Tensor) -> torch.Tensor:
        b = lags.shape[0]
        unk = self.base.label_tokens(self.task_type, None, b)
        return self.base.encode(t, lags, TASK_TYPES.index(self.task_type), unk) + unk

    def head_output(self, h: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            raise RelfmError(
                "a link-prediction model ranks candidates (relfm_core.finetune_links.score_links)"
            )
        o: torch.Tensor = self.head(h)
        return o.squeeze(-1) if self.task_type == "binary" else o

    def forward(self, t: dict[str, torch.Tensor], lags: torch.Tensor) -> torch.Tensor:
        h = self.represent(t, lags)
        o = self.head_output(h)
        return o if self.probe is None else self.probe(h, lags, t, o)


Chunk = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]  # subgraph tensors, lags, targets


RECENT_ROWS = (1024, 4096)  # besides all rows, the probe may be solved on the most recent ones only


@torch.no_grad()
def attach_probe(
    model: FinetunedModel, train: list[Chunk], val: list[Chunk], anchors: np.ndarray | None = None
) -> tuple[TaskProbe | None, float]:
    """Solves the linear probe path on the training chunks with the trained encoder, chooses its view and
    blend weight on the validation chunks, solves it once more on training and validation rows together,
    and attaches it (None: the trained head alone was better). Also returns the validation score
    (validation_score) of what was chosen, measured before the validation rows were added: out of sample.

    With the training rows' `anchors`, it is also solved on only the most recent RECENT_ROWS of them and
    the validation rows choose: relations drift, and zero-shot likewise reads the latest rows of a given
    context."""
    model.probe = None
    was_training = model.training
    model.eval()
    groups = _union_groups([t for t, _, _ in train])

    def data(chunks: list[Chunk]) -> ProbeData:
        xs, ys, heads = [], [], []
        for t, lg, y in chunks:
            h = model.represent(t, lg)
            o = model.head_output(h)
            xs.append(features_of(h, lg, t, groups))
            heads.append((o[:, 0] if model.task_type == "regression" else o).double().numpy())
            ys.append(y.double().numpy())
        return ProbeData(np.concatenate(xs), np.concatenate(ys), np.concatenate(heads))

    tr, va = data(train), data(val)
    width = int(train[0][1].shape[1])
    d = tr.x.shape[1] - width - groups.width
    k = tr.head.shape[1] if model.task_type == "multiclass" else 0
    views = views_of(d, width, tr.x.shape[1])
    subsets = [np.arange(len(tr.y))]
    if anchors is not None:
        order = np.argsort(np.asarray(anchors), kind="stable")
        subsets += [order[-n:] for n in RECENT_ROWS if n < len(order)]
    fits = [fit_task_probe(model.task_type, tr.subset(idx), va, views, groups, k) for idx in subsets]
    probe, _, out = min(fits, key=lambda f: f[1])
    model.probe = probe
    model.train(was_training)
    val_out = torch.from_numpy(out[:, None] if model.task_type == "regression" else out)
    return probe, validation_score(model.task_type, val_out, torch.from_numpy(va.y))


def _union_groups(ts: list[dict[str, torch.Tensor]]) -> AggregateGroups:
    """Aggregate groups found in any training chunk, in first-seen order."""
    cells: dict[tuple[int, int, int], None] = {}
    rows: dict[tuple[int, int], None] = {}
    for t in ts:
        g = find_groups(t)
        cells.update(dict.fromkeys(g.cells))
        rows.update(dict.fromkeys(g.rows))
    return AggregateGroups(tuple(list(cells)[:MAX_GROUPS]), tuple(list(rows)[:MAX_GROUPS]))


@dataclass
class EarlyStop:
    """Keeps the best validation score's weights; says when `patience` epochs in a row did not beat it."""

    patience: int
    best: float = -np.inf
    state: dict[str, torch.Tensor] | None = None
    bad: int = 0

    def update(self, score: float, model: nn.Module) -> bool:
        """Records an epoch's score; True when training should stop."""
        if score > self.best:
            self.best, self.bad = score, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return False
        self.bad += 1
        return self.bad >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


def latest_index(df: pd.DataFrame, n: int) -> np.ndarray:
    """Positions of the n rows of a training table with the latest anchor times, oldest first."""
    by_time = np.argsort(pd.to_datetime(df["anchor_time"]).to_numpy("datetime64[ns]"), kind="stable")
    return by_time[-n:]


def cap_rows(train: pd.DataFrame, max_rows: int, how: Literal["latest", "random"], seed: int) -> pd.DataFrame:
    """At most max_rows of a training table (entity_row, anchor_time, label): the latest, or a sample."""
    if len(train) <= max_rows:
        return train
    if how == "random":
        return train.sample(max_rows, random_state=seed)
    return train.iloc[np.sort(latest_index(train, max_rows))]


def table_pairs(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Entity rows and anchors (ns) of a training or validation table (entity_row, anchor_time, label)."""
    rows = df["entity_row"].to_numpy(np.int64)
    return rows, pd.to_datetime(df["anchor_time"]).to_numpy("datetime64[ns]").astype(np.int64)


@dataclass
class FinetuneResult:
    path: Path
    metrics: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)


def validation_score(task: str, out: torch.Tensor, y: torch.Tensor) -> float:
    """Higher is better: AUROC (binary), -MAE in normalised space (regression), accuracy (multiclass)."""
    if task == "binary":
        a = auroc(y.numpy(), torch.sigmoid(out).numpy())
        return a if np.isfinite(a) else -float(task_loss(out, y, task))
    if task == "regression":
        return -float(torch.abs(out[:, 0] - y).mean())
    return float((out.argmax(-1) == y.long()).float().mean())


def _predict(
    model: FinetunedModel, inputs: list[tuple[dict[str, torch.Tensor], torch.Tensor]]
) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        outs = [model(t, lg) for t, lg in inputs]
    model.train()
    return torch.cat(outs)


def finetune(
    graph: Graph,
    features: GraphFeatures,
    base: RelationalFM,
    engine: Any,
    train: pd.DataFrame,
    val: pd.DataFrame,
    out_dir: str | Path,
    cfg: FinetuneConfig | None = None,
    log: Callable[[dict[str, float]], None] | None = None,
) -> FinetuneResult:
    """Trains on `train` (entity_row, anchor_time, label), early-stops on `val`, saves to `out_dir`."""
    cfg = cfg or FinetuneConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    task = str(getattr(engine.task_type, "value", engine.task_type))
    if task not in ("binary", "regression", "multiclass", "link_prediction"):
        raise RelfmError(f"fine-tuning supports binary, regression, multiclass and link queries, not {task}")
    if len(train) == 0 or len(val) == 0:
        raise RelfmError("fine-tuning needs non-empty training and validation tables")
    if task == "link_prediction":
        from relfm_core.finetune_links import finetune_links

        return finetune_links(graph, features, base, engine, train, val, out_dir, cfg, log)
    probe_train = train.iloc[latest_index(train, cfg.max_probe_rows)]
    train = cap_rows(train, cfg.max_train_rows, cfg.train_rows, cfg.seed)
    classes: list[Any] = []
    if task == "multiclass":
        classes = sorted(set(train["label"].tolist()), key=str)
        slot = {c: i for i, c in enumerate(classes)}
        val = val[val["label"].isin(slot)]
        probe_train = probe_train[probe_train["label"].isin(slot)]
        y_tr = np.array([slot[v] for v in train["label"]], dtype=np.float64)
        y_va = np.array([slot[v] for v in val["label"]], dtype=np.float64)
        norm = TargetNorm.fit(task, y_tr, classes)
    else:
        y_tr = train["label"].to_numpy(np.float64)
        y_va = val["label"].to_numpy(np.float64)
        norm = TargetNorm.fit(task, y_tr)
        y_tr, y_va = norm.forward(y_tr), norm.forward(y_va)
    builder = InputBuilder(graph, features, lags=base.cfg.lags)
    from relfm_core.labels.history import history as past_values  # `history` is the epoch log below

    # history statistics come from the whole training table, as the target normalisation does
    norm = norm.with_history(*past_values(engine, *table_pairs(train)))

    def build(df: pd.DataFrame) -> list[tuple[dict[str, torch.Tensor], torch.Tensor]]:
        rows, anchors = table_pairs(df)
        out = []
        for i in range(0, len(df), 512):
            t, lg, _ = builder.build(engine, rows[i : i + 512], anchors[i : i + 512], norm)
            out.append((t, lg))
        return out

    tr_in = build(train)
    va_in = build(val)
    y_tr_t = torch.from_numpy(y_tr.astype(np.float32))
    y_va_t = torch.from_numpy(y_va.astype(np.float32))
    # a copy: fine-tuning must not change the caller's pretrained model (it may serve zero-shot too)
    model = FinetunedModel(copy.deepcopy(base), task, len(classes))
    assert model.head is not None
    model.train()
    opt = torch.optim.AdamW(
        [
            {"params": model.base.parameters(), "lr": cfg.encoder_lr},
            {"params": model.head.parameters(), "lr": cfg.lr},
        ],
        weight_decay=cfg.weight_decay,
    )
    stop, history = EarlyStop(cfg.patience), []
    chunk = 512
    for epoch in range(cfg.epochs):
        t0 = time.time()
        losses = []
        order = rng.permutation(len(tr_in))
        for ci in order:
            t, lg = tr_in[ci]
            yc = y_tr_t[ci * chunk : ci * chunk + len(lg)]
            perm = rng.permutation(len(lg))
            for s in range(0, len(lg), cfg.batch_size):
                b = perm[s : s + cfg.batch_size]
                out = model(slice_tensors(t, b), lg[b])
                loss = task_loss(out, yc[b], task)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                losses.append(float(loss.detach()))
        score = validation_score(task, _predict(model, va_in), y_va_t)
        rec = {
            "epoch": float(epoch + 1),
            "train_loss": float(np.mean(losses)),
            "val_score": score,
            "seconds": time.time() - t0,
        }
        history.append(rec)
        if log is not None:
            log(rec)
        if stop.update(score, model):
            break
    stop.restore(model)
    best = stop.best
    metrics = {"head_val_score": float(best), "epochs": float(len(history))}
    if len(probe_train) > len(train):
        y_pr = probe_train["label"].to_numpy()
        y_pr = (
            np.array([slot[v] for v in y_pr])
            if task == "multiclass"
            else norm.forward(y_pr.astype(np.float64))
        )
        y_pr_t = torch.from_numpy(np.asarray(y_pr, dtype=np.float32))
        chunks = [
            (t, lg, y_pr_t[i * chunk : i * chunk + len(lg)]) for i, (t, lg) in enumerate(build(probe_train))
        ]
        probe_anchors = table_pairs(probe_train)[1]
    else:
        chunks = [(t, lg, y_tr_t[i * chunk : i * chunk + len(lg)]) for i, (t, lg) in enumerate(tr_in)]
        probe_anchors = table_pairs(train)[1]
    val_chunks = [(t, lg, y_va_t[i * chunk : i * chunk + len(lg)]) for i, (t, lg) in enumerate(va_in)]
    _, metrics["val_score"] = attach_probe(model, chunks, val_chunks, probe_anchors)
    path = save_finetuned(model, out_dir, engine, graph, norm, classes, metrics, cfg)
    return FinetuneResult(path, metrics, history)


def save_finetuned(
    model: FinetunedModel,
    out_dir: str | Path,
    engine: Any,
    graph: Graph,
    norm: TargetNorm,
    classes: list[Any],
    metrics: dict[str, float],
    cfg: FinetuneConfig,
) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_weights(model, out / "model.safetensors")
    meta = {
        "kind": KIND,
        "model": model.base.cfg.to_dict(),
        "task_type": model.task_type,
        "num_classes": model.num_classes,
        "classes": [_jsonable(c) for c in classes],
        "norm": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(norm).items()},
        "query": engine.query.source if hasattr(engine.query, "source") else str(engine.query),
        "graph_id": graph.graph_id,
        "sources": graph.manifest.get("sources", {}),
        "metrics": metrics,
        "finetune": asdict(cfg),
        "probe": model.probe.spec.to_dict() if model.probe is not None else None,
    }
    (out / "config.json").write_text(json.dumps(meta, indent=1, default=str))
    return out


def _jsonable(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


@dataclass
class LoadedFinetuned:
    model: FinetunedModel
    meta: dict[str, Any]
    norm: TargetNorm

    @property
    def query(self) -> str:
        return str(self.meta["query"])


def is_finetuned(path: str | Path) -> bool:
    p = Path(path) / "config.json"
    return p.is_file() and json.loads(p.read_text()).get("kind") == KIND


def load_finetuned(path: str | Path) -> LoadedFinetuned:
    p = Path(path)
    if not is_finetuned(p):
        raise RelfmError(f"{p} is not a fine-tuned relfm model (no config.json of kind {KIND})")
    meta = json.loads((p / "config.json").read_text())
    base = RelationalFM(ModelConfig(**meta["model"]))
    model = FinetunedModel(base, meta["task_type"], int(meta["num_classes"]))
    if meta.get("probe"):
        model.probe = TaskProbe(meta["task_type"], ProbeSpec.from_dict(meta["probe"]))
    load_weights(model, p / "model.safetensors")
    model.eval()
    n = meta["norm"]
    norm = TargetNorm(
        n["task_type"],
        bool(n["log"]),
        float(n["center"]),
        float(n["scale"]),
        tuple(n.get("classes", ())),
        tuple(float(x) for x in n.get("hist_center", ())),
        tuple(float(x) for x in n.get("hist_scale", ())),
    )
    return LoadedFinetuned(model, meta, norm)


@torch.no_grad()
def score(
    loaded: LoadedFinetuned,
    builder: InputBuilder,
    engine: Any,
    rows: np.ndarray,
    anchors: np.ndarray,
    batch_size: int = 512,
) -> np.ndarray:
    """Predictions in label space: probability (binary), value (regression), class probabilities [n, k]
    (link prediction: relfm_core.finetune_links.score_links)."""
    task = loaded.meta["task_type"]
    if task == "link_prediction":
        raise RelfmError(
            "a link-prediction model ranks candidates: use relfm_core.finetune_links.score_links"
        )
    outs = []
    for i in range(0, len(rows), batch_size):
        t, lg, _ = builder.build(engine, rows[i : i + batch_size], anchors[i : i + batch_size], loaded.norm)
        o = loaded.model(t, lg)
        if task == "binary":
            outs.append(torch.sigmoid(o).numpy())
        elif task == "regression":
            outs.append(loaded.norm.inverse(o[:, 0].numpy()))
        else:
            outs.append(torch.softmax(o, -1).numpy())
    if not outs:
        return np.zeros((0,) if task != "multiclass" else (0, max(int(loaded.meta["num_classes"]), 2)))
    return np.concatenate(outs)
