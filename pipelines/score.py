"""The batch-scoring stage: `relfm score CONFIG` — every entity of a query (or a given list) at an
anchor time, scored with Ray Data, written to the Delta prediction table in one commit.

The (entity, anchor) pairs become a Ray Dataset; `map_batches` runs `ScoreWorker`, an actor pool of
`workers` actors that each open the graph (mmap) and load the model once, `batch_size` entities per
call. Dead actors are restarted and their batches retried (`max_restarts`), so killing an actor mid-run
still yields exactly one prediction per entity; the driver checks that before it writes anything. The
model is resolved once on the driver (an MLflow registry URI or a folder) and shipped to the actors
through the object store, so workers need no access to the registry. The driver collects the results,
builds the table (pipelines.prediction_table) and commits once; MLflow records the run: parameters,
graph hash and source versions, the model version, the table path and its new Delta version, and the
distribution of predictions.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import tempfile
import time
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from graph_engine.errors import DataError, RelfmError
from graph_engine.shards.reader import Graph
from pipelines import prediction_table, ray_cluster, tracking
from pipelines.build_graph import ensure_graph
from pipelines.configs import ScoreStageConfig, to_ns
from relfm_core.labels import LabelEngine

FAULT_ENV = "RELFM_FAULT_KILL_SCORE_ACTOR"  # fault drills: a marker path; the first actor to reach its
# second batch while the marker does not exist creates it and kills itself (SIGKILL), once per marker
MODEL_FILES = ("model.safetensors", "config.json")
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class WorkerStats:
    peak_rss: int  # bytes, the actor's own peak resident set (peak_rss)
    rows: int
    busy_seconds: float  # inside predict: sampling, featurisation and the model, not start-up
    batches: int  # calls served by this actor, which loaded the model once, before the first

    @property
    def entities_per_s(self) -> float:
        return self.rows / self.busy_seconds if self.busy_seconds > 0 else 0.0


@dataclass
class ScoreReport:
    run_id: str
    rows: int
    table: str  # path or URI
    version: int
    previous_version: int | None
    model_name: str
    model_version: str
    anchor_ns: int
    seconds: float
    entities_per_s: float
    workers: int
    workers_seen: dict[int, WorkerStats]  # by actor pid (a restarted actor is a new pid)
    mlflow_run_id: str
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def peak_rss_per_worker(self) -> dict[int, int]:
        return {pid: w.peak_rss for pid, w in self.workers_seen.items()}

    @property
    def steady_entities_per_s(self) -> float:
        """Throughput once actors are up: the sum of each worker's rows / busy time."""
        return sum(w.entities_per_s for w in self.workers_seen.values())


def peak_rss() -> int:
    """This process's peak resident set, in bytes: VmHWM where Linux reports it, else getrusage.

    getrusage's ru_maxrss survives fork + exec (a process spawned by a large parent reports at least the
    parent's size), VmHWM belongs to the process's own address space."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux and BSD: KiB


def model_bundle(folder: Path) -> dict[str, bytes]:
    """The model's files as bytes: they travel to the actors through Ray's object store."""
    return {name: (folder / name).read_bytes() for name in MODEL_FILES if (folder / name).is_file()}


class ScoreWorker:
    """A Ray Data actor: graph and model loaded once, then one batch of entities per call."""

    def __init__(
        self,
        graph: str,
        bundle: Any,
        query: str | None,
        anchor: int,
        context_size: int,
        env: dict[str, str],
        threads: int,
        fault_marker: str | None = None,
        use_gpu: bool = False,
    ) -> None:
        ray_cluster.apply_env(env)
        import ray
        import torch

        torch.set_num_threads(max(threads, 1))
        if isinstance(bundle, ray.ObjectRef):
            bundle = ray.get(bundle)
        self.folder = Path(tempfile.mkdtemp(prefix="relfm-model-"))
        weakref.finalize(self, shutil.rmtree, self.folder, True)
        for name, data in bundle.items():
            (self.folder / name).write_bytes(data)
        from pipelines.scorers import open_scorer

        self.scorer = open_scorer(Graph.open(graph), self.folder, query, anchor, context_size, use_gpu)
        self.fault_marker = fault_marker
        self.calls = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.fault_marker and self.calls == 2:
            marker = Path(self.fault_marker)
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                fd = -1
            if fd >= 0:
                os.write(fd, str(os.getpid()).encode())
                os.close(fd)
                os.kill(os.getpid(), signal.SIGKILL)
        t0 = time.perf_counter()
        cols = self.scorer.predict(batch["entity_row"], batch["anchor"])
        n = len(batch["pos"])
        busy = (time.perf_counter() - t0) / max(n, 1)
        rss = peak_rss()
        return {
            "pos": batch["pos"],
            **cols,
            "worker_pid": np.full(n, os.getpid(), dtype=np.int64),
            "worker_peak_rss": np.full(n, rss, dtype=np.int64),
            "worker_busy_s": np.full(n, busy, dtype=np.float64),  # per row: sums to the batch's time
            "worker_call": np.full(n, self.calls, dtype=np.int64),
        }


def entity_rows(cfg: ScoreStageConfig, graph: Graph, engine: LabelEngine, anchor: int) -> np.ndarray:
    """The rows to score: every entity of the query at the anchor, a list of keys, or a Parquet file."""
    view = graph.table(engine.entity_table)
    key = view.info.primary_key or engine.query.entity.key
    if cfg.entities is None:
        return np.asarray(engine.entity_rows(anchor), dtype=np.int64)
    if isinstance(cfg.entities, list):
        keys: np.ndarray = np.array(cfg.entities, dtype=object)
        where = "entities"
    else:
        path = cfg.path(cfg.entities)
        if not path.is_file():
            raise DataError(f"entities file {path}: file not found")
        col = cfg.entity_column or key
        try:
            table = pq.read_table(path, columns=[col])
        except (pa.ArrowInvalid, KeyError, OSError):
            raise DataError(
                f"entities file {path}: cannot read column '{col}' (the key of '{engine.entity_table}')"
            ) from None
        keys = np.asarray(table.column(col).to_numpy(zero_copy_only=False))
        where = f"entities file {path}"
    rows = np.asarray(view.lookup(keys), dtype=np.int64)
    unknown = np.flatnonzero(rows < 0)
    if len(unknown):
        raise DataError(
            f"{where}: unknown key {keys[unknown[0]]!r} in '{engine.entity_table}.{key}' ({len(unknown)} unknown)"
        )
    _, first = np.unique(rows, return_index=True)
    return rows[np.sort(first)]


def _dataset(ray: Any, rows: np.ndarray, anchors: np.ndarray, block_rows: int) -> Any:
    pos = np.arange(len(rows), dtype=np.int64)
    tables = [
        pa.table(
            {
                "pos": pos[s : s + block_rows],
                "entity_row": rows[s : s + block_rows],
                "anchor": anchors[s : s + block_rows],
            }
        )
        for s in range(0, len(rows), block_rows)
    ]
    return ray.data.from_arrow(tables)


def score_pairs(
    cfg: ScoreStageConfig,
    graph: Graph,
    folder: Path,
    query: str | None,
    rows: np.ndarray,
    anchors: np.ndarray,
    anchor: int,
    progress: Progress | None = None,
) -> tuple[dict[str, np.ndarray], dict[int, WorkerStats]]:
    """Predictions for (rows, anchors) in input order, from a Ray Data actor pool; checks that every
    pair was scored exactly once. Also what each worker (by pid) did."""
    n = len(rows)
    if n == 0:  # nothing to score (e.g. a WHERE that no entity passes): an empty run, no actors
        return {"prediction": np.zeros(0)}, {}
    ray = ray_cluster.connect(cfg.ray_address)
    from ray.data import ActorPoolStrategy

    block_rows = max(cfg.batch_size, min(cfg.batch_size * 8, -(-n // max(cfg.workers * 4, 1))))
    ds = _dataset(ray, rows, anchors, block_rows)
    remote_args: dict[str, Any] = {"max_restarts": cfg.max_restarts, "max_task_retries": cfg.max_restarts}
    threads = max(int(cfg.cpus_per_worker), 1)
    with warnings.catch_warnings():
        # restart limits have no named parameter in map_batches yet (Ray 2.60): they go as remote args
        warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
        scored = ds.map_batches(
            ScoreWorker,
            fn_constructor_kwargs={
                "graph": str(graph.path),
                "bundle": ray.put(model_bundle(folder)),
                "query": query,
                "anchor": anchor,
                "context_size": cfg.context_size,
                "env": ray_cluster.worker_env(),
                "threads": threads,
                "fault_marker": os.environ.get(FAULT_ENV),
                "use_gpu": cfg.use_gpu,
            },
            batch_size=cfg.batch_size,
            batch_format="numpy",
            compute=ActorPoolStrategy(size=cfg.workers),
            num_cpus=cfg.cpus_per_worker,
            num_gpus=cfg.gpus_per_worker if cfg.use_gpu else None,
            **remote_args,
        )
    parts: dict[str, list[np.ndarray]] = {}
    done = 0
    if progress is not None:
        progress(0, n)
    for batch in scored.iter_batches(batch_size=None, batch_format="numpy"):
        for k, v in batch.items():
            parts.setdefault(k, []).append(v)
        done += len(batch["pos"])
        if progress is not None:
            progress(min(done, n), n)
    cols = {k: np.concatenate(v) for k, v in parts.items()}
    pos = cols.get("pos", np.zeros(0, dtype=np.int64))
    if len(pos) != n or (n and len(np.unique(pos)) != n):
        raise RelfmError(
            f"scoring returned {len(pos)} predictions ({len(np.unique(pos))} distinct) for {n} entities; nothing written"
        )
    order = np.argsort(pos, kind="stable")
    pids = cols.pop("worker_pid")
    stats: dict[int, WorkerStats] = {}
    for pid in np.unique(pids).tolist():
        mine = pids == pid
        stats[pid] = WorkerStats(
            int(cols["worker_peak_rss"][mine].max()),
            int(mine.sum()),
            float(cols["worker_busy_s"][mine].sum()),
            len(np.unique(cols["worker_call"][mine])),
        )
    for k in ("pos", "worker_peak_rss", "worker_busy_s", "worker_call"):
        cols.pop(k)
    return {k: v[order] for k, v in cols.items()}, stats


def run(
    cfg: ScoreStageConfig,
    progress: Progress | None = None,
    before_commit: Callable[[], None] | None = None,
    log: Callable[[str], None] = print,
) -> ScoreReport:
    """Scores, commits once, tracks. `before_commit` runs after scoring and before the write (the last
    point where stopping the job leaves the table untouched)."""
    from pipelines import registry
    from pipelines.scorers import query_of

    uri = tracking.setup(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)
    run_id = cfg.resolved_run_id()
    run_date = cfg.resolved_run_date()
    table_path = cfg.output_location()
    graph = ensure_graph(cfg.path(cfg.graph))
    from graph_engine.cache import relfm_home

    model = registry.resolve(
        cfg.model if cfg.model.startswith("models:/") else str(cfg.path(cfg.model)), _models_dir(relfm_home())
    )
    query = query_of(model.folder, cfg.query)
    engine = LabelEngine(graph, query)
    anchor = to_ns(cfg.anchor_time) if cfg.anchor_time is not None else graph.max_time()
    rows = entity_rows(cfg, graph, engine, anchor)
    anchors = np.full(len(rows), anchor, dtype=np.int64)
    previous = prediction_table.current_version(table_path)
    view = graph.table(engine.entity_table)
    key_name = view.info.primary_key or engine.query.entity.key
    log(
        f"scoring {len(rows)} {engine.entity_table} at {np.datetime64(anchor, 'ns')} with {model.name} "
        f"version {model.version} on {cfg.workers} worker(s), run id {run_id}"
    )
    with tracking.run(
        f"score-{cfg.name}",
        experiment=cfg.mlflow.experiment,
        tracking=uri,
        tags={"relfm.stage": "score", "relfm.run_id": run_id},
    ) as r:
        tracking.log_params(
            {
                "stage": "score",
                "query": query,
                "config": json.dumps(cfg.model_dump(mode="json"), sort_keys=True),
                "model": cfg.model,
                "model_name": model.name,
                "model_version": model.version,
                "anchor_time": str(np.datetime64(anchor, "ns")),
                "entities": len(rows),
                "batch_size": cfg.batch_size,
                "workers": cfg.workers,
                "run_id": run_id,
                "run_date": run_date.isoformat(),
            }
        )
        tracking.log_graph(graph)
        t0 = time.perf_counter()
        preds, seen = score_pairs(
            cfg,
            graph,
            model.folder,
            cfg.query if not _is_finetuned(model.folder) else None,
            rows,
            anchors,
            anchor,
            progress,
        )
        seconds = time.perf_counter() - t0
        keys = np.asarray(view.key_values(rows))
        table = prediction_table.build(
            key_name, keys, anchors, preds, model.name, model.version, run_id, run_date
        )
        if before_commit is not None:
            before_commit()
        version = prediction_table.commit(
            table_path,
            table,
            run_id,
            {"relfm.mlflow_run_id": r.info.run_id, "relfm.model": f"{model.name}/{model.version}"},
        )
        import mlflow

        mlflow.log_metrics(
            {
                "seconds": seconds,
                "entities_per_s": len(rows) / seconds if seconds > 0 else 0.0,
                "peak_rss_per_worker_max": float(max((w.peak_rss for w in seen.values()), default=0)),
                "steady_entities_per_s": sum(w.entities_per_s for w in seen.values()),
            }
        )
        tracking.log_table(table_path, version, table.num_rows)
        stats = tracking.log_predictions(preds["prediction"], f"{query} — run {run_id}")
        return ScoreReport(
            run_id,
            table.num_rows,
            table_path,
            version,
            previous,
            model.name,
            model.version,
            anchor,
            seconds,
            len(rows) / seconds if seconds > 0 else 0.0,
            cfg.workers,
            seen,
            r.info.run_id,
            stats,
        )


def _is_finetuned(folder: Path) -> bool:
    from relfm_core.finetune import is_finetuned

    return is_finetuned(folder)


def _models_dir(home: Path) -> Path:
    d = home / "models"
    d.mkdir(parents=True, exist_ok=True)
    return d
