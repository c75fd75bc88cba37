"""The Databricks asset bundle (databricks.yml + resources/ + infra/databricks/cluster.yml): what the
Databricks CLI and the Jobs service act on, checked without a workspace.

Structure: every include resolves, every `${var.x}` is declared, the job has a nightly schedule and
parameters, a task per stage wired as the nightly job's steps depend on each other, a Spark task for the
graph build and wheel tasks for the rest, CPU and GPU job clusters. Entry points: the Spark task's file
exists, every wheel task's entry point is one of jobs.databricks.entry's and is declared in pyproject's
[project.scripts], and each one runs the stage it is named for.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.databricks import entry
from pipelines.nightly_steps import DEPENDS

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
BUNDLE = ROOT / "databricks.yml"
STAGES = ("graph", "finetune", "score", "backtest", "publish")
VAR = re.compile(r"\$\{var\.([A-Za-z0-9_]+)\}")


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def closure(edges: dict[str, set[str]], node: str) -> set[str]:
    """Every task `node` waits for, directly or not (fails on a cycle)."""
    seen: set[str] = set()
    todo = list(edges[node])
    while todo:
        n = todo.pop()
        assert n != node, f"cycle through {node}"
        if n not in seen:
            seen.add(n)
            todo.extend(edges.get(n, ()))
    return seen


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    """databricks.yml with its includes merged (top-level mappings), as the CLI assembles it."""
    root = load(BUNDLE)
    files = [ROOT / p for pattern in root.get("include", []) for p in sorted(ROOT.glob(pattern))]
    assert files, "includes match no file"
    merged = dict(root)
    for f in files:
        for key, value in load(f).items():
            if isinstance(value, dict):
                for k, v in value.items():
                    if isinstance(v, dict) and isinstance(merged.get(key, {}).get(k), dict):
                        merged[key][k] = {**merged[key][k], **v}
                    else:
                        merged.setdefault(key, {})[k] = v
            else:
                merged[key] = value
    merged["_files"] = [BUNDLE, *files]
    return merged


@pytest.fixture(scope="module")
def job(bundle: dict[str, Any]) -> dict[str, Any]:
    jobs = bundle["resources"]["jobs"]
    assert list(jobs) == ["relfm_nightly"]
    return dict(jobs["relfm_nightly"])


def test_includes_targets_and_variables(bundle: dict[str, Any]) -> None:
    assert bundle["bundle"]["name"] == "relfm"
    for pattern in load(BUNDLE)["include"]:
        assert list(ROOT.glob(pattern)), f"include {pattern} matches nothing"
    assert bundle["targets"]["dev"]["mode"] == "development" and bundle["targets"]["dev"]["default"] is True
    assert bundle["targets"]["prod"]["mode"] == "production"
    declared = set(bundle["variables"])
    used = {m for f in bundle["_files"] for m in VAR.findall(f.read_text())}
    assert used <= declared, f"undeclared variables: {sorted(used - declared)}"
    for name, var in bundle["variables"].items():
        assert "default" in var and var.get("description"), (
            f"variable {name}: needs a default and a description"
        )


def test_schedule_and_parameters(job: dict[str, Any]) -> None:
    s = job["schedule"]
    fields = s["quartz_cron_expression"].split()
    assert (
        len(fields) in (6, 7) and fields[:3] == ["0", "0", "2"] and fields[3:6] == ["*", "*", "?"]
    )  # 02:00 daily
    assert s["timezone_id"] == "UTC" and s["pause_status"] == "${var.schedule_pause_status}"
    assert job["max_concurrent_runs"] == 1
    params = {p["name"]: p["default"] for p in job["parameters"]}
    assert params == {"job_config": "${var.job_config}", "run_date": "{{job.start_time.iso_date}}"}


def test_a_task_per_stage_wired_like_the_nightly_steps(job: dict[str, Any]) -> None:
    tasks = {t["task_key"]: t for t in job["tasks"]}
    assert tuple(tasks) == STAGES
    edges = {k: {d["task_key"] for d in t.get("depends_on", [])} for k, t in tasks.items()}
    # the bundle orders tasks as the nightly job's steps depend on each other (warehouse belongs to graph)
    assert {k: closure(edges, k) for k in STAGES} == {
        k: closure({n: set(d) for n, d in DEPENDS.items()}, k) - {"warehouse"} for k in STAGES
    }
    for key, task in tasks.items():
        assert edges[key] <= set(tasks)
        assert task.get("max_retries", 0) >= 1 and task.get("timeout_seconds", 0) > 0
        args = task.get("spark_python_task", {}).get("parameters") or list(
            task.get("python_wheel_task", {}).get("named_parameters", {}).values()
        )
        assert "{{job.parameters.job_config}}" in args and "{{job.parameters.run_date}}" in args, key


def test_clusters(job: dict[str, Any], bundle: dict[str, Any]) -> None:
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    assert set(clusters) == {"graph_build", "cpu", "gpu"}
    assert clusters["graph_build"] == "${var.relfm_graph_build_cluster}"
    assert bundle["variables"]["relfm_graph_build_cluster"]["type"] == "complex"
    cpu, gpu = clusters["cpu"], clusters["gpu"]
    assert "gpu" not in cpu["spark_version"] and "-gpu-ml-" in gpu["spark_version"]
    assert gpu["node_type_id"] == "${var.gpu_node_type}" and bundle["variables"]["gpu_node_type"][
        "default"
    ].startswith("g")
    assert gpu["spark_env_vars"]["RELFM_JOB__FINETUNE__USE_GPU"] == "true"
    for c in (cpu, gpu):
        env = c["spark_env_vars"]
        assert env["RELFM_HOME"] == "${var.relfm_home}" and env["MLFLOW_TRACKING_URI"] == "databricks"
        assert c["init_scripts"], "relfm is installed by an init script"
        # secrets only as secret-scope references
        for k, v in env.items():
            if any(h in k for h in ("TOKEN", "PASSWORD", "SECRET")):
                assert re.fullmatch(r"\{\{secrets/[\w.-]+/[\w.-]+\}\}", str(v)), k
    tasks = {t["task_key"]: t for t in job["tasks"]}
    assert tasks["graph"]["job_cluster_key"] == "graph_build"
    assert tasks["finetune"]["job_cluster_key"] == "gpu"
    assert {tasks[s]["job_cluster_key"] for s in ("score", "backtest", "publish")} == {"cpu"}


def test_entry_points_exist(job: dict[str, Any]) -> None:
    tasks = {t["task_key"]: t for t in job["tasks"]}
    spark = tasks["graph"]["spark_python_task"]
    assert (
        ROOT / "resources" / spark["python_file"]
    ).resolve() == ROOT / "jobs" / "databricks" / "build_graph.py"
    assert (ROOT / "jobs" / "databricks" / "build_graph.py").is_file()
    for stage in STAGES[1:]:
        wheel = tasks[stage]["python_wheel_task"]
        assert (
            wheel["package_name"] == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
        )
        target = entry.ENTRY_POINTS[wheel["entry_point"]]
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func))
        assert func == stage, f"{wheel['entry_point']} runs {func}, not {stage}"
        assert tasks[stage]["libraries"] == [{"whl": "${var.relfm_wheel}"}]


def test_entry_points_are_declared_in_pyproject() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"].get("scripts", {})
    declared = {k: v for k, v in scripts.items() if k in entry.ENTRY_POINTS}
    assert declared == entry.ENTRY_POINTS


def test_entry_point_runs_its_stage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Named parameters arrive as --name=value; the stage runs through the `relfm run` command line."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("RELFM_HOME", str(tmp_path / "home"))
    pq.write_table(pa.table({"id": [1, 2, 3]}), tmp_path / "t.parquet")
    (tmp_path / "spec.yaml").write_text("tables:\n  t: {source: t.parquet}\n")
    (tmp_path / "job.yaml").write_text("name: dbx\ngraph: {spec: spec.yaml}\n")
    with pytest.raises(SystemExit) as done:
        entry.graph(
            [
                f"--job={tmp_path / 'job.yaml'}",
                "--run-date=2025-01-01",
                f"--summary-json={tmp_path / 's.json'}",
            ]
        )
    assert done.value.code in (0, None)
    import json

    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["run_id"] == "dbx-2025-01-01" and [s["status"] for s in summary["steps"]] == ["done"]
