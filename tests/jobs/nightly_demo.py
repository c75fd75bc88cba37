"""The demo nightly job's first night, for the tests that need a finished night (test_cli_run's
end-to-end checks and the Airflow DAG test).

Each of those tests gets a night of its own: the end-to-end test checks the state right after the first
night (one night's predictions, one nightly MLflow run), and the Airflow test runs the second night on
top of it, so a shared night would make the outcome depend on which test ran first.

The job is jobs/demo/nightly.yaml as shipped, lightened through the environment overrides it documents
(the same code paths: a hashed text encoder instead of MiniLM, a smaller backtest sample), and run with
secrets in its environment that must never appear in anything it writes or prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEMO_JOB = ROOT / "jobs" / "demo" / "nightly.yaml"
RUN_DATE = "2025-01-01"  # a fixed night, so reruns and the Airflow test know which run ids exist
SECRET = "relfm-test-secret-7f3a9c1e5b"  # declared in the job (secrets:) through an env override
HINTED_SECRET = "dapi-relfm-test-4d2b8e6f0a"  # not declared: redacted because its name says TOKEN
LIGHT = {"RELFM_JOB__BACKTEST__MAX_ENTITIES": "500", "RELFM_TEXT_ENCODER": "hashed"}
SECRETS = {
    "RELFM_TEST_MLFLOW_TOKEN": SECRET,
    "RELFM_JOB__SECRETS__MLFLOW_TRACKING_TOKEN": "env:RELFM_TEST_MLFLOW_TOKEN",
    "DATABRICKS_TOKEN": HINTED_SECRET,
}


def relfm_command() -> list[str]:
    script = Path(sys.executable).parent / "relfm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "jobs.cli"]


@dataclass
class DemoRun:
    root: Path
    env: dict[str, str]
    first: subprocess.CompletedProcess[str]
    seconds: float
    outputs: list[str] = field(default_factory=list)  # stdout + stderr of every run, for the secret scan

    @property
    def home(self) -> Path:
        return self.root / "home"

    def relfm(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            [*relfm_command(), *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        self.outputs += [r.stdout, r.stderr]
        return r


def demo_env(root: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "RELFM_HOME": str(root / "home"),
        "COLUMNS": "250",
        "NO_COLOR": "1",
        **LIGHT,
        **SECRETS,
    }
    for k in ("RELFM_DEBUG", "MLFLOW_TRACKING_URI", "RAY_ADDRESS"):
        env.pop(k, None)
    return env


_RUNS: dict[str, DemoRun] = {}


def demo_run(tmp_path_factory: pytest.TempPathFactory, owner: str) -> DemoRun:
    """The first night of the demo job (from scratch) in a folder of `owner`'s own, run once per owner."""
    if owner not in _RUNS:
        root = tmp_path_factory.mktemp(f"nightly-demo-{owner}")
        run = DemoRun(root, demo_env(root), subprocess.CompletedProcess([], 0), 0.0)
        t0 = time.perf_counter()
        run.first = run.relfm("run", str(DEMO_JOB), "--run-date", RUN_DATE, "--summary-json", "first.json")
        run.seconds = time.perf_counter() - t0
        _RUNS[owner] = run
    return _RUNS[owner]


Runner = Callable[..., subprocess.CompletedProcess[str]]


def statuses(stdout: str) -> dict[str, str]:
    """step → status from the printed summary table."""
    names = ("warehouse", "graph", "finetune", "score", "backtest", "publish")
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")]
        cells = [c for c in cells if c]
        if len(cells) >= 2 and cells[0] in names:
            out[cells[0]] = cells[1]
    return out
