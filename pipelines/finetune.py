"""The fine-tuning stage: `relfm finetune CONFIG` — training data from the query, distributed training,
an MLflow model registered with an alias.

1. Training and validation tables come from the query at anchors before the prediction anchor
   (relfm_core.labels.training_table: no leakage, latest anchors held out) and are written once to the
   run folder with the task's target normalisation, so every rank and every restart reads the same data.
2. The per-rank loop (pipelines.train_loop) runs on `workers` ranks through Ray Train or local processes
   (pipelines.launch), with plain torch or DeepSpeed ZeRO (stage and offload from the config).
3. The run folder is named by a fingerprint of everything that shapes training (graph id, query,
   anchor, tables, training and DeepSpeed settings, ranks, base model). The same config on the same data
   therefore lands in the same folder and resumes from its latest checkpoint after a kill; new data (a
   new graph id, the next night) starts a new run.
4. The artefact is logged to MLflow as a pyfunc model, registered with the query, graph id, source
   versions and metrics as tags, and the configured alias (e.g. champion) is moved onto the new version.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from pipelines import ray_cluster, tracking
from pipelines.build_graph import ensure_graph
from pipelines.configs import FinetuneStageConfig, to_ns
from pipelines.launch import launch
from pipelines.train_loop import METRICS_FILE, train_worker
from relfm_core.finetune import cap_rows
from relfm_core.inputs import TargetNorm
from relfm_core.labels import LabelEngine, training_table


@dataclass
class FinetuneReport:
    run_dir: Path
    model_dir: Path
    metrics: dict[str, float]
    history: list[dict[str, float]]
    steps: int
    resumed_from: int | None
    samples_per_s: float
    mlflow_run_id: str
    model_uri: str
    registered_name: str | None = None
    registered_version: str | None = None
    alias: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def fingerprint(cfg: FinetuneStageConfig, graph: Graph, anchor: int) -> str:
    base = str(cfg.path(cfg.base_model)) if cfg.base_model else "shipped"
    key = {
        "graph_id": graph.graph_id,
        "query": " ".join(cfg.query.split()),
        "anchor": anchor,
        "table": cfg.table.model_dump(mode="json"),
        "train": cfg.train.model_dump(mode="json", exclude={"log_every", "threads_per_worker"}),
        "deepspeed": cfg.deepspeed.model_dump(mode="json") if cfg.deepspeed else None,
        "workers": cfg.workers,
        "base_model": base,
        "seed": cfg.seed,
    }
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def prepare_data(cfg: FinetuneStageConfig, engine: LabelEngine, anchor: int, run_dir: Path) -> dict[str, Any]:
    """Training/validation rows with normalised targets, written once per run folder (plan.json last,
    so a half-written folder is rebuilt)."""
    data = run_dir / "data"
    plan_file = data / "plan.json"
    if plan_file.is_file():
        return dict(json.loads(plan_file.read_text()))
    task = str(engine.task_type.value)
    if task not in ("binary", "regression", "multiclass"):
        raise RelfmError(
            f"the fine-tuning job supports binary, regression and multiclass queries, not {task}"
            + (
                " (link prediction fine-tunes in one process: relfm_core.finetune.finetune)"
                if task == "link_prediction"
                else ""
            )
        )
    tables = training_table(engine, anchor, cfg.table)
    train, val = tables.train, tables.val
    if len(train) == 0 or len(val) == 0:
        raise RelfmError(
            f"no training or validation examples before {np.datetime64(anchor, 'ns')} for: {cfg.query} "
            f"({len(train)} train, {len(val)} validation rows; try more table.num_anchors)"
        )
    train = cap_rows(train, cfg.train.max_train_rows, cfg.train.train_rows, cfg.seed).sort_index()
    classes: list[Any] = []
    if task == "multiclass":
        # class values, not codes into today's vocabulary: the artefact must mean the same tomorrow
        vocab = np.asarray(train.attrs["classes"], dtype=object)
        tr_vals = vocab[train["label"].to_numpy(np.int64)]
        va_vals = vocab[val["label"].to_numpy(np.int64)]
        classes = sorted({_plain(v) for v in tr_vals.tolist()}, key=str)
        slot = {c: i for i, c in enumerate(classes)}
        keep = np.array([_plain(v) in slot for v in va_vals.tolist()], dtype=bool)
        val, va_vals = val[keep], va_vals[keep]
        y_tr = np.array([slot[_plain(v)] for v in tr_vals.tolist()], dtype=np.float64)
        y_va = np.array([slot[_plain(v)] for v in va_vals.tolist()], dtype=np.float64)
        norm = TargetNorm.fit(task, y_tr, classes)
    else:
        y_tr = train["label"].to_numpy(np.float64)
        y_va = val["label"].to_numpy(np.float64)
        norm = TargetNorm.fit(task, y_tr)
        y_tr, y_va = norm.forward(y_tr), norm.forward(y_va)
    # history statistics come from the whole training table, as the target normalisation does
    from relfm_core.labels.history import history

    tr_rows = train["entity_row"].to_numpy(np.int64)
    tr_anchors = pd.to_datetime(train["anchor_time"]).to_numpy("datetime64[ns]").astype(np.int64)
    norm = norm.with_history(*history(engine, tr_rows, tr_anchors))
    data.mkdir(parents=True, exist_ok=True)
    for name, df, y in (("train", train, y_tr), ("val", val, y_va)):
        pq.write_table(
            pa.table(
                {
                    "entity_row": pa.array(df["entity_row"].to_numpy(np.int64)),
                    "anchor_ns": pa.array(
                        pd.to_datetime(df["anchor_time"]).to_numpy("datetime64[ns]").astype(np.int64)
                    ),
                    "y": pa.array(np.asarray(y, dtype=np.float64)),
                }
            ),
            data / f"{name}.parquet",
        )
    plan = {
        "task_type": task,
        "classes": classes,
        "norm": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(norm).items()},
        "n_train": len(train),
        "n_val": len(val),
        "anchor": anchor,
    }
    tmp = data / ".plan.json"
    tmp.write_text(json.dumps(plan, default=str))
    tmp.replace(plan_file)
    return plan


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def worker_config(cfg: FinetuneStageConfig, graph: Graph, run_dir: Path) -> dict[str, Any]:
    ts = cfg.train
    ds = cfg.deepspeed.to_deepspeed(ts.batch_size, ts.grad_clip) if cfg.deepspeed else None
    env = ray_cluster.worker_env()
    if not cfg.use_gpu:
        env.setdefault("DS_ACCELERATOR", "cpu")
    return {
        "graph": str(graph.path),
        "query": cfg.query,
        "base_model": str(cfg.path(cfg.base_model)) if cfg.base_model else None,
        "run_dir": str(run_dir),
        "output": str(cfg.output_path() if cfg.output_dir else run_dir / "model"),
        "train": ts.model_dump(mode="json"),
        "deepspeed": ds,
        "seed": cfg.seed,
        "use_gpu": cfg.use_gpu,
        "threads": ts.threads_per_worker,
        "env": env,
    }


def run(cfg: FinetuneStageConfig, log: Callable[[str], None] = print) -> FinetuneReport:
    """Fine-tunes, logs, registers; resumes a killed run of the same config on the same data."""
    uri = tracking.setup(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)
    graph = ensure_graph(cfg.path(cfg.graph))
    engine = LabelEngine(graph, cfg.query)
    anchor = to_ns(cfg.anchor_time) if cfg.anchor_time is not None else graph.max_time()
    run_dir = cfg.checkpoint_path() / fingerprint(cfg, graph, anchor)
    run_dir.mkdir(parents=True, exist_ok=True)
    plan = prepare_data(cfg, engine, anchor, run_dir)
    log(
        f"fine-tuning on {plan['n_train']} training and {plan['n_val']} validation rows ({plan['task_type']}), "
        f"{cfg.workers} worker(s), {'DeepSpeed ZeRO-' + str(cfg.deepspeed.zero_stage) if cfg.deepspeed else 'plain torch'}, "
        f"run folder {run_dir}"
    )
    run_file = run_dir / "mlflow_run_id"
    previous = run_file.read_text().strip() if run_file.is_file() else None
    with tracking.run(
        f"finetune-{cfg.name}", experiment=cfg.mlflow.experiment, tracking=uri, run_id=previous
    ) as r:
        run_file.write_text(r.info.run_id)
        if previous is None:
            tracking.log_params(
                {
                    "stage": "finetune",
                    "query": cfg.query,
                    "config": json.dumps(cfg.model_dump(mode="json"), sort_keys=True),
                    "anchor_time": str(np.datetime64(anchor, "ns")),
                    "workers": cfg.workers,
                    "launcher": cfg.launcher,
                    "deepspeed_zero_stage": cfg.deepspeed.zero_stage if cfg.deepspeed else "none",
                    "task_type": plan["task_type"],
                    "train_rows": plan["n_train"],
                    "val_rows": plan["n_val"],
                }
            )
            tracking.log_graph(graph)
        with tracking.MetricsFollower(run_dir / METRICS_FILE, r.info.run_id, uri):
            result = launch(
                train_worker,
                worker_config(cfg, graph, run_dir),
                cfg.workers,
                cfg.launcher,
                cfg.use_gpu,
                run_dir,
                cfg.ray_address,
            )
        if result.get("resumed_from"):
            log(f"resumed from step {result['resumed_from']}")
        import mlflow

        summary = {k: float(v) for k, v in result["metrics"].items() if np.isfinite(float(v))}
        summary.update(
            samples_per_s=float(result["samples_per_s"]),
            input_seconds=float(result["input_seconds"]),
            train_seconds=float(result["train_seconds"]),
            steps=float(result["steps"]),
        )
        if result.get("resumed_from"):
            summary["resumed_from_step"] = float(result["resumed_from"])
        mlflow.log_metrics(summary)
        model_dir = Path(result["model_dir"])
        from pipelines import registry

        view = graph.table(engine.entity_table)
        key_type = "string" if view.keys is not None and view.keys.dtype.kind == "S" else "long"
        info = registry.log_model(model_dir, view.info.primary_key or engine.query.entity.key, key_type)
        report = FinetuneReport(
            run_dir,
            model_dir,
            summary,
            list(result["history"]),
            int(result["steps"]),
            result.get("resumed_from"),
            float(result["samples_per_s"]),
            r.info.run_id,
            info.model_uri,
            extra=result,
        )
        if cfg.registered_model_name:
            tags = {
                "query": cfg.query,
                "graph_id": graph.graph_id,
                "source_versions": json.dumps(tracking.source_versions(graph), sort_keys=True),
                "task_type": plan["task_type"],
                "mlflow_run_id": r.info.run_id,
                **{f"metric.{k}": f"{v:.6g}" for k, v in result["metrics"].items()},
            }
            reg = registry.register(info.model_uri, cfg.registered_model_name, tags, cfg.alias)
            report.registered_name, report.registered_version, report.alias = reg.name, reg.version, reg.alias
            mlflow.set_tags({"relfm.registered_model": reg.name, "relfm.registered_version": reg.version})
        return report
