"""MLflow tracking for every stage: the embedded default is SQLite plus a local artifact store.

`MLFLOW_TRACKING_URI` (or a job config's `mlflow.tracking_uri`) points the same code at a tracking
server. Runs carry the query, config, graph manifest hash and source versions as parameters and tags.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from graph_engine.cache import relfm_home


def tracking_uri(configured: str | None = None) -> str:
    if configured:
        return configured
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    home = relfm_home()
    home.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{home / 'mlflow.db'}"


def artifact_root() -> str:
    return (relfm_home() / "mlartifacts").resolve().as_uri()


def setup(configured: str | None = None, experiment: str = "relfm") -> str:
    """Points MLflow at the tracking store and makes sure `experiment` exists (with a local artifact
    root when the store is the embedded SQLite one).

    The experiment is not made the process's active one (`mlflow.set_experiment` would also export
    MLFLOW_EXPERIMENT_ID): a later store in the same process, or a child process, would then look for
    an experiment id it does not have. `run` names the experiment explicitly instead."""
    experiment_id(configured, experiment)
    return tracking_uri(configured)


def experiment_id(configured: str | None = None, experiment: str = "relfm") -> str:
    """The id of `experiment` in the tracking store (created when missing), MLflow pointed at it."""
    import logging

    import mlflow

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our own progress is enough
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    uri = tracking_uri(configured)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return str(found.experiment_id)
    kw: dict[str, Any] = {}
    if uri.startswith("sqlite:"):
        kw["artifact_location"] = artifact_root()
    return str(mlflow.create_experiment(experiment, **kw))


@contextmanager
def run(
    name: str,
    experiment: str = "relfm",
    tracking: str | None = None,
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
) -> Iterator[Any]:
    import mlflow

    exp = experiment_id(tracking, experiment)
    # a resumed run keeps its own experiment
    with mlflow.start_run(
        run_name=name, run_id=run_id, tags=tags, experiment_id=None if run_id else exp
    ) as r:
        yield r


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    flat: dict[str, str] = {}
    for k, v in params.items():
        s = str(v)
        flat[k] = s if len(s) <= 6000 else s[:5997] + "..."
    if flat:
        mlflow.log_params(flat)


def metrics_logger() -> Any:
    """A (step, metrics) callback that logs to the active MLflow run."""
    import math

    import mlflow

    def log(step: int, metrics: dict[str, float]) -> None:
        clean = {k.replace("@", "_at_"): float(v) for k, v in metrics.items() if math.isfinite(float(v))}
        if clean:
            mlflow.log_metrics(clean, step=step)

    return log


def log_artifact(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_graph(graph: Any) -> None:
    """The graph a stage ran on: its manifest hash (graph id) and the version of every source table."""
    import mlflow

    sources = graph.manifest.get("sources", {})
    mlflow.set_tags(
        {
            "relfm.graph_id": graph.graph_id,
            "relfm.graph_path": str(graph.path),
            **{f"relfm.source.{t}": str(s.get("version")) for t, s in sources.items()},
        }
    )
    log_params(
        {"graph_id": graph.graph_id, "source_versions": json.dumps(source_versions(graph), sort_keys=True)}
    )


def source_versions(graph: Any) -> dict[str, str]:
    return {t: str(s.get("version")) for t, s in graph.manifest.get("sources", {}).items()}


QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def prediction_stats(values: Any) -> dict[str, float]:
    """Distribution of numeric predictions: mean, std, min, max and quantiles (NaN-free values)."""
    import numpy as np

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"pred_count": 0.0}
    out = {
        "pred_count": float(len(v)),
        "pred_mean": float(v.mean()),
        "pred_std": float(v.std()),
        "pred_min": float(v.min()),
        "pred_max": float(v.max()),
    }
    for q, x in zip(QUANTILES, np.quantile(v, QUANTILES), strict=True):
        out[f"pred_p{round(q * 100):02d}"] = float(x)
    return out


def log_predictions(values: Any, title: str) -> dict[str, float]:
    """Logs the distribution of predictions as metrics and as a histogram (PNG artifact)."""
    import tempfile

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import mlflow
    import numpy as np

    stats = prediction_stats(values)
    mlflow.log_metrics(stats)
    v = np.asarray(values)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if v.dtype.kind in "fiub":
        finite = v[np.isfinite(v.astype(np.float64))]
        ax.hist(finite, bins=50)
        ax.set_xlabel("prediction")
    else:  # class predictions: counts per class
        labels, counts = np.unique(v.astype(str), return_counts=True)
        ax.bar(labels, counts)
        ax.set_xlabel("predicted class")
        for c, n in zip(labels, counts, strict=True):
            mlflow.log_metric(f"pred_class_{c}", float(n))
    ax.set_ylabel("entities")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "predictions.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        mlflow.log_artifact(str(path), artifact_path="plots")
    return stats


def log_table(path: str | Path, version: int, rows: int) -> None:
    """Where a stage's output went: the Delta table's path and the version its commit created."""
    import mlflow

    mlflow.set_tags({"relfm.prediction_table": str(path), "relfm.prediction_table_version": str(version)})
    log_params({"prediction_table": str(path), "prediction_table_version": version})
    mlflow.log_metrics({"prediction_rows": float(rows), "prediction_table_version": float(version)})


class MetricsFollower:
    """Logs to an MLflow run the step metrics that training ranks append to a JSONL file, while they
    train (a background thread) and once more when they are done.

    The ranks never talk to the tracking store (see pipelines.train_loop.StepMetrics); the driver owns
    the run. The byte offset already logged is kept beside the file, so a run resumed after a kill does
    not log the killed attempt's lines twice."""

    def __init__(
        self,
        path: str | Path,
        run_id: str,
        tracking: str | None = None,
        every_s: float = 2.0,
        on_step: Callable[[int], None] | None = None,
    ) -> None:
        import threading

        self.on_step = on_step  # told the latest step logged (a progress bar)
        self.path = Path(path)
        self.offset_file = self.path.with_name(self.path.name + ".logged")
        self.run_id = run_id
        self.tracking = tracking
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="relfm-metrics", daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> MetricsFollower:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()

    def _loop(self) -> None:
        import contextlib

        while not self._stop.wait(self.every_s):
            # a tracking hiccup must not stop training; the final flush retries
            with contextlib.suppress(Exception):
                self.flush()

    def flush(self) -> int:
        """Logs the complete lines not logged yet; returns how many metric values were logged."""
        from mlflow import MlflowClient
        from mlflow.entities import Metric

        with self._lock:
            if not self.path.is_file():
                return 0
            start = int(self.offset_file.read_text()) if self.offset_file.is_file() else 0
            with self.path.open("rb") as f:
                f.seek(start)
                data = f.read()
            end = data.rfind(b"\n") + 1  # a line still being written waits for the next flush
            if end == 0:
                return 0
            now = int(time.time() * 1000)
            batch = []
            for line in data[:end].splitlines():
                try:
                    rec = json.loads(line)
                    batch += [Metric(k, float(v), now, int(rec["step"])) for k, v in rec["metrics"].items()]
                except (ValueError, KeyError, TypeError):  # a line cut short by a killed rank
                    continue
            client = MlflowClient(self.tracking)
            for s in range(0, len(batch), 1000):  # MLflow's limit per batch
                client.log_batch(self.run_id, metrics=batch[s : s + 1000])
            if batch and self.on_step is not None:
                self.on_step(max(m.step for m in batch))
            tmp = self.offset_file.with_name(self.offset_file.name + ".tmp")
            tmp.write_text(str(start + end))
            os.replace(tmp, self.offset_file)
            return len(batch)
