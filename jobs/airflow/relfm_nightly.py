"""Airflow DAG: the relfm nightly job, one task per stage (TaskFlow API, Airflow 3).

    graph → finetune → score ┐
                    → backtest ┴→ publish

Each task runs `relfm run <job> --step <stage> --run-date <the night>` in a subprocess: relfm's
dependencies (torch, Ray, Spark, MLflow) stay out of Airflow's environment, which the two would conflict
over. Point the `relfm_bin` param (or RELFM_BIN) at relfm's executable, e.g. `/opt/relfm/.venv/bin/relfm`,
or run the workers in the relfm image. Because each step records what it produced for which inputs, a
retried or re-triggered task redoes only unfinished work, and score and backtest may run side by side.

Params: `job`, the job YAML (relative paths in it resolve against its folder); `relfm_bin`; `extra_args`
(e.g. `--force finetune`). The night is the run's logical date (`ds`). Job settings can also be overridden
per deployment with RELFM_JOB__* environment variables on the workers (docs/nightly.md), and secrets come
from the workers' environment (Airflow connections/variables exported as env, or a secrets backend).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowFailException

DEFAULT_JOB = os.environ.get("RELFM_NIGHTLY_JOB", "jobs/demo/nightly.yaml")
DEFAULT_BIN = os.environ.get("RELFM_BIN", "relfm")
BAD_INPUT = 2  # relfm's exit code for bad input (config, data, query): retrying cannot help


def run_step(step: str) -> dict[str, Any]:
    """`relfm run JOB --step STEP` for the current DAG run; the step's summary row goes to XCom."""
    ctx = get_current_context()
    params = ctx["params"]
    night = ctx.get("logical_date") or ctx["dag_run"].run_after
    with tempfile.TemporaryDirectory(prefix="relfm-airflow-") as d:
        summary = Path(d) / "summary.json"
        cmd = [
            *shlex.split(str(params["relfm_bin"])),
            "run",
            str(params["job"]),
            "--step",
            step,
            "--run-date",
            night.date().isoformat(),
            "--summary-json",
            str(summary),
            *shlex.split(str(params.get("extra_args") or "")),
        ]
        print("running:", shlex.join(cmd), flush=True)
        env = {**os.environ, "COLUMNS": os.environ.get("COLUMNS", "160"), "NO_COLOR": "1"}
        with subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        ) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:  # streamed: long steps show progress in the task log
                print(line, end="", flush=True)
            rc = proc.wait()
        report = json.loads(summary.read_text()) if summary.is_file() else {}
    if rc == BAD_INPUT:
        raise AirflowFailException(f"relfm run --step {step}: bad input (exit 2); see the log above")
    if rc != 0:
        raise RuntimeError(f"relfm run --step {step} failed with exit code {rc}; see the log above")
    row = next((s for s in report.get("steps", []) if s["step"] == step), {})
    return {
        "step": step,
        "status": row.get("status"),
        "reason": row.get("reason"),
        "output": row.get("output"),
        "run_id": report.get("run_id"),
        "facts": report.get("facts", {}),
    }


@dag(
    dag_id="relfm_nightly",
    description="relfm nightly scoring: graph, fine-tune when due, score, backtest, publish to MLflow",
    schedule="0 2 * * *",  # 02:00 UTC, after the warehouse's nightly loads
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "execution_timeout": timedelta(hours=2),
    },
    params={
        "job": Param(DEFAULT_JOB, type="string", description="the nightly job YAML"),
        "relfm_bin": Param(DEFAULT_BIN, type="string", description="relfm's executable (its own virtualenv)"),
        "extra_args": Param("", type="string", description="more `relfm run` arguments, e.g. --force score"),
    },
    tags=["relfm"],
    doc_md=__doc__,
)
def relfm_nightly() -> None:
    @task(task_id="graph")
    def graph() -> dict[str, Any]:
        """Demo warehouse (if configured) and the graph, rebuilt when a source table has a new version."""
        return run_step("graph")

    @task(task_id="finetune", retries=1, execution_timeout=timedelta(hours=6))
    def finetune(_: dict[str, Any]) -> dict[str, Any]:
        """Fine-tune and register when due (schedule, new settings, or no model with the alias)."""
        return run_step("finetune")

    @task(task_id="score")
    def score(_: dict[str, Any]) -> dict[str, Any]:
        """Every entity into the Delta prediction table (one commit per night)."""
        return run_step("score")

    @task(task_id="backtest")
    def backtest(_: dict[str, Any]) -> dict[str, Any]:
        """The model on the latest fully labelled window."""
        return run_step("backtest")

    @task(task_id="publish")
    def publish(scored: dict[str, Any], tested: dict[str, Any]) -> dict[str, Any]:
        """Metrics, plots and drift to MLflow."""
        return run_step("publish")

    tuned = finetune(graph())
    publish(score(tuned), backtest(tuned))


relfm_nightly()
