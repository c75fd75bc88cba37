"""Batch scoring with Ray Data into a Delta table: one row per entity, one commit per run, a killed actor
changes nothing, re-running a run id (through `relfm score`) replaces its rows, and a job stopped before
its commit leaves the table as it was.

Every scoring run starts its actors (a Python process each, importing torch), so the module runs three:
the first run doubles as the fault drill (one of its two actors is killed mid-run), the second re-scores
the same run id from the command line, and the third is stopped before its commit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from deltalake import DeltaTable

from graph_engine.shards.reader import Graph
from pipelines import score
from pipelines.configs import ScoreStageConfig, validate_config
from relfm_core.labels import LabelEngine

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.xdist_group("ray"),
    pytest.mark.usefixtures("stage_env"),
]

BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"


def _settings(graph: Path, table: Path, **over: Any) -> dict[str, Any]:
    return {
        "name": "nightly",
        "graph": str(graph),
        "model": "models:/shop-buy@champion",
        "batch_size": 8,
        "workers": 2,
        "output": str(table),
        "run_date": "2024-01-02",
        **over,
    }


def _config(home: Path, graph: Path, table: Path, **over: Any) -> ScoreStageConfig:
    return validate_config(_settings(graph, table, **over), ScoreStageConfig, "test", home)


def _relfm_command() -> list[str]:
    script = Path(sys.executable).parent / "relfm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "jobs.cli"]


def _entities(graph: Path) -> set[int]:
    g = Graph.open(graph)
    engine = LabelEngine(g, BUY)
    return set(g.table("users").key_values(engine.entity_rows(g.max_time())).tolist())


def _rows(table: Path, run_id: str) -> pd.DataFrame:
    df = DeltaTable(str(table)).to_pandas()
    return df[df["run_id"] == run_id].sort_values("user_id").reset_index(drop=True)


@dataclass
class FirstRun:
    report: Any  # pipelines.score.ScoreReport
    table: Path
    killed_pid: int
    progress: list[tuple[int, int]]
    rows: pd.DataFrame


@pytest.fixture(scope="module")
def first_run(finetuned: Any, stage_env: Path, shop_graph: Path) -> FirstRun:
    """Every entity scored with shop-buy@champion by two actors, one of which kills itself (SIGKILL)
    on its second batch, as a node lost mid-run would."""
    table = stage_env / "predictions"
    marker = stage_env / "killed-actor"
    seen: list[tuple[int, int]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(score.FAULT_ENV, str(marker))
        report = score.run(
            _config(stage_env, shop_graph, table, run_id="nightly-1"),
            progress=lambda d, n: seen.append((d, n)),
            log=lambda m: None,
        )
    assert marker.is_file(), "no scoring actor was killed"
    return FirstRun(report, table, int(marker.read_text()), seen, _rows(table, "nightly-1"))


def test_killed_actor_still_gives_one_prediction_per_entity(first_run: FirstRun, shop_graph: Path) -> None:
    entities = _entities(shop_graph)
    df, report = first_run.rows, first_run.report
    assert len(df) == report.rows == len(entities) and df["user_id"].is_unique  # exactly one per entity
    assert set(df["user_id"]) == entities
    assert (report.previous_version, report.version) == (None, 0)
    assert first_run.progress[-1] == (len(entities), len(entities))  # progress reached every entity
    # the actors that finished the run loaded the model once and then served several batches each
    survivors = {pid: w for pid, w in report.workers_seen.items() if pid != first_run.killed_pid}
    assert survivors and sum(w.rows for w in report.workers_seen.values()) == len(entities)
    assert max(w.batches for w in survivors.values()) > 1
    assert all(w.peak_rss > 0 for w in report.workers_seen.values())


def test_prediction_table_layout(first_run: FirstRun, shop_graph: Path) -> None:
    dt = DeltaTable(str(first_run.table))
    assert dt.metadata().partition_columns == ["run_date"]
    assert list(first_run.rows.columns) == [
        "user_id",
        "anchor_time",
        "prediction",
        "model_name",
        "model_version",
        "run_id",
        "run_date",
    ]
    df = first_run.rows
    anchor = pd.Timestamp(Graph.open(shop_graph).max_time(), unit="ns", tz="UTC")
    assert set(df["anchor_time"]) == {anchor}
    assert set(df["model_name"]) == {"shop-buy"} and set(df["model_version"]) == {
        first_run.report.model_version
    }
    assert set(df["run_date"].astype(str)) == {"2024-01-02"}
    assert df["prediction"].between(0, 1).all()
    assert dt.history(1)[0]["relfm.run_id"] == "nightly-1"  # the commit names its run


def test_rescoring_a_run_id_replaces_its_rows(
    first_run: FirstRun, stage_env: Path, shop_graph: Path, ray_session: Any
) -> None:
    """`relfm score` with the same run id, one worker this time, connected to this session's cluster."""
    from mlflow import MlflowClient

    from pipelines import tracking

    config = stage_env / "score.yaml"
    config.write_text(yaml.safe_dump(_settings(shop_graph, first_run.table, workers=2)))
    before = DeltaTable(str(first_run.table)).version()
    env = {
        **os.environ,
        "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
        "NO_COLOR": "1",
        "COLUMNS": "250",
    }
    env.pop("RELFM_DEBUG", None)
    r = subprocess.run(
        [*_relfm_command(), "score", str(config), "--run-id", "nightly-1", "--workers", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"Delta version {before + 1}, run id nightly-1" in r.stdout, r.stdout[-2000:]

    dt = DeltaTable(str(first_run.table))
    assert dt.version() == before + 1  # one commit
    again = _rows(first_run.table, "nightly-1")
    assert len(again) == len(first_run.rows) and again["user_id"].is_unique  # replaced, not appended
    assert len(dt.to_pandas()) == len(again)
    np.testing.assert_allclose(  # whatever the number of actors, and with one killed
        again["prediction"].to_numpy(), first_run.rows["prediction"].to_numpy(), rtol=1e-5, atol=1e-6
    )

    # tracked: query and config, the graph and its sources, the table's path and version, the distribution
    tracking.setup()
    mlflow_run = MlflowClient().get_run(r.stdout.rsplit("MLflow run", 1)[1].split()[0])
    tags, params, metrics = mlflow_run.data.tags, mlflow_run.data.params, mlflow_run.data.metrics
    assert tags["relfm.prediction_table"] == str(first_run.table)
    assert tags["relfm.prediction_table_version"] == str(before + 1)
    assert tags["relfm.graph_id"] == Graph.open(shop_graph).graph_id
    assert set(json.loads(params["source_versions"])) == {"users", "items", "orders", "reviews"}
    assert params["query"] == BUY and params["model_name"] == "shop-buy" and params["run_id"] == "nightly-1"
    assert {"pred_mean", "pred_p50", "pred_p95", "entities_per_s", "prediction_rows"} <= set(metrics)
    assert metrics["pred_count"] == len(again)


def test_a_job_stopped_before_its_commit_leaves_the_table_unchanged(
    first_run: FirstRun, stage_env: Path, shop_graph: Path
) -> None:
    before = DeltaTable(str(first_run.table)).version()
    rows_before = len(DeltaTable(str(first_run.table)).to_pandas())
    keys = sorted(_entities(shop_graph))[:5]

    def stop() -> None:  # after scoring, the last moment before the write: an operator's Ctrl-C
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score.run(
            _config(stage_env, shop_graph, first_run.table, run_id="nightly-2", workers=1, entities=keys),
            before_commit=stop,
            log=lambda m: None,
        )
    dt = DeltaTable(str(first_run.table))
    assert dt.version() == before and len(dt.to_pandas()) == rows_before
    assert _rows(first_run.table, "nightly-2").empty
