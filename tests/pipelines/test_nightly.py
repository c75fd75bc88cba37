"""The nightly job's machinery on small inputs: the graph step's skip rule, the state file, the fine-tune
schedule against a real MLflow registry, `--step` and dry-run rules, secrets and their redaction.

The whole job on the demo (fine-tune, Ray scoring, backtest, MLflow) runs in tests/jobs/test_cli_run.py.
"""

from __future__ import annotations

import json
import threading
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph_engine.errors import RelfmError
from pipelines import nightly
from pipelines.nightly_config import NightlyConfig, parse_every
from pipelines.nightly_secrets import MASK, Redactor, hinted, resolve, secret_env
from pipelines.nightly_state import KEEP, JobState, fingerprint
from pipelines.nightly_steps import Ctx, FinetuneStep, StepResult

pytestmark = pytest.mark.unit

QUERY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"


class Lines:
    """A reporter that keeps what it is told."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.results: list[StepResult] = []

    def start(self, step: str, reason: str) -> None:
        self.lines.append(f"start {step}: {reason}")

    def log(self, message: str) -> None:
        self.lines.append(message)

    def status(self, message: str) -> None:
        self.lines.append(message)

    def progress(self, done: int, total: int | None) -> None:
        pass

    def finish(self, result: StepResult) -> None:
        self.results.append(result)


def job(tmp_path: Path, **extra: Any) -> NightlyConfig:
    data = {"name": "t", "home": str(tmp_path / "home"), "graph": {"spec": "spec.yaml"}, **extra}
    return NightlyConfig.model_validate(data).with_base_dir(tmp_path)


def write_table(tmp_path: Path, n: int) -> None:
    pq.write_table(pa.table({"id": list(range(n)), "x": [0.5 * i for i in range(n)]}), tmp_path / "t.parquet")
    (tmp_path / "spec.yaml").write_text("tables:\n  t: {source: t.parquet}\n")


# ------------------------------------------------------------------------------------------------ graph
def test_graph_step_runs_once_then_skips_until_a_source_changes(tmp_path: Path) -> None:
    write_table(tmp_path, 2)
    cfg = job(tmp_path)
    first = nightly.run_job(cfg, date(2026, 1, 1), reporter=Lines())
    assert first.error is None
    assert [(r.step, r.status, r.reason) for r in first.steps] == [("graph", "done", "no graph built yet")]
    graph_dir = Path(first.steps[0].output)
    assert graph_dir.parent == tmp_path / "home" / "graphs"
    assert first.steps[0].detail == "2 rows, 0 edges, 0 missing links"

    second = nightly.run_job(cfg, date(2026, 1, 2), reporter=Lines())
    assert [(r.step, r.status, r.output) for r in second.steps] == [("graph", "skipped", str(graph_dir))]
    assert (
        second.steps[0].reason.startswith("graph ")
        and "built for these source versions" in second.steps[0].reason
    )

    write_table(tmp_path, 3)  # a new version of the source (new file fingerprint)
    plan = nightly.run_job(cfg, date(2026, 1, 3), dry_run=True, reporter=Lines())
    assert plan.steps[0].status == "would run" and plan.steps[0].reason.startswith("new source versions: t ")
    third = nightly.run_job(cfg, date(2026, 1, 3), reporter=Lines())
    assert third.steps[0].status == "done" and third.steps[0].output != str(graph_dir)

    state = json.loads((tmp_path / "home" / "jobs" / "t" / "state.json").read_text())
    assert len(state["steps"]["graph"]) == 2  # one record per graph id, each with its source versions
    assert all(set(r["inputs"]["sources"]) == {"t"} for r in state["steps"]["graph"].values())


def test_forced_graph_is_rebuilt_into_the_same_id(tmp_path: Path) -> None:
    write_table(tmp_path, 2)
    cfg = job(tmp_path)
    first = nightly.run_job(cfg, date(2026, 1, 1), reporter=Lines())
    manifest = Path(first.steps[0].output) / "manifest.json"
    before = manifest.stat().st_mtime_ns
    forced = nightly.run_job(cfg, date(2026, 1, 1), force=["graph"], reporter=Lines())
    assert forced.steps[0].status == "done" and forced.steps[0].reason.startswith("forced (--force graph)")
    assert forced.steps[0].output == first.steps[0].output and manifest.stat().st_mtime_ns != before


def test_dry_run_touches_nothing(tmp_path: Path) -> None:
    write_table(tmp_path, 2)
    report = nightly.run_job(job(tmp_path), date(2026, 1, 1), dry_run=True, reporter=Lines())
    assert [(r.step, r.status) for r in report.steps] == [("graph", "would run")]
    assert not (tmp_path / "home").exists()


def test_step_names_are_checked(tmp_path: Path) -> None:
    write_table(tmp_path, 2)
    with pytest.raises(
        RelfmError, match=r"--step 'scores': not a step of the nightly job .* did you mean 'score'"
    ):
        nightly.run_job(job(tmp_path), steps=["scores"], reporter=Lines())
    with pytest.raises(RelfmError, match=r"--force 'graf'"):
        nightly.run_job(job(tmp_path), force=["graf"], reporter=Lines())


def test_a_step_needs_its_inputs_up_to_date(tmp_path: Path) -> None:
    write_table(tmp_path, 2)
    cfg = job(
        tmp_path,
        query=QUERY,
        model={"name": "m"},
        score={"output": "preds"},
    )
    with pytest.raises(
        RelfmError, match=r"step 'score' needs 'graph' first \(no graph built yet\); run it with --step graph"
    ):
        nightly.run_job(cfg, date(2026, 1, 1), steps=["score"], reporter=Lines())
    graph_only = nightly.run_job(cfg, date(2026, 1, 1), steps=["graph"], reporter=Lines())
    assert [(r.step, r.status) for r in graph_only.steps] == [("graph", "done")]


def test_a_failed_step_ends_the_job_and_later_steps_are_not_run(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text("tables:\n  t: {source: missing.parquet}\n")
    report = nightly.run_job(job(tmp_path), date(2026, 1, 1), reporter=Lines())
    assert isinstance(report.error, RelfmError)
    assert report.steps[0].step == "graph" and report.steps[0].status == "failed"
    assert "missing.parquet" in report.steps[0].reason


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize(("value", "days"), [("7d", 7), ("1w", 7), (" 14d ", 14), (3, 3), (None, None)])
def test_every(value: Any, days: int | None) -> None:
    got = parse_every(value)
    assert (got.days if got else None) == days


@pytest.mark.parametrize("value", ["7", "2h", "0d", "weekly", -1])
def test_every_rejects(value: Any) -> None:
    with pytest.raises(ValueError):
        parse_every(value)


def test_query_model_and_score_go_together(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'model' is missing"):
        job(tmp_path, query=QUERY, score={"output": "p"})


def test_secrets_are_references_never_values(tmp_path: Path) -> None:
    ok = job(
        tmp_path, secrets={"MLFLOW_TRACKING_TOKEN": "env:MY_TOKEN", "DATABRICKS_TOKEN": "scope:relfm/db"}
    )
    assert ok.secrets["DATABRICKS_TOKEN"] == "scope:relfm/db"
    with pytest.raises(ValueError, match="give a reference") as e:
        job(tmp_path, secrets={"MLFLOW_TRACKING_TOKEN": "dapi-0123456789abcdef"})
    assert "dapi-0123456789abcdef" not in str(e.value)
    with pytest.raises(ValueError, match="tracking_uri holds credentials"):
        job(tmp_path, mlflow={"tracking_uri": "https://me:pw@mlflow.example.com"})


# ------------------------------------------------------------------------------------------------ secrets
def test_resolve_and_redact() -> None:
    env = {"SRC_TOKEN": "s3cr3t-value-1", "OTHER": "x"}
    assert resolve({"MLFLOW_TRACKING_TOKEN": "env:SRC_TOKEN"}, env) == {
        "MLFLOW_TRACKING_TOKEN": "s3cr3t-value-1"
    }
    with pytest.raises(RelfmError, match=r"secret X: environment variable NOPE is not set"):
        resolve({"X": "env:NOPE"}, env)
    hints = {
        "AWS_SECRET_ACCESS_KEY": "abcd1234efgh",
        "MLFLOW_TRACKING_PASSWORD": "pw",  # too short to redact safely
        "SOME_TOKEN_ENABLED": "true",  # a flag, not a credential
        "DB_PASSWORD_PORT": "54321234",
        "HOME": "/root",
    }
    assert hinted(hints) == ["abcd1234efgh"]
    r = Redactor(["s3cr3t", "s3cr3t-value-1"])
    assert r("token=s3cr3t-value-1;") == f"token={MASK};"
    assert r.deep({"a": ["x s3cr3t y", 3], "s3cr3t": None}) == {"a": [f"x {MASK} y", 3], MASK: None}


def test_secret_env_is_set_while_the_job_runs_and_masked_in_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import os

    monkeypatch.delenv("RELFM_TEST_SECRET", raising=False)
    r = Redactor(["hunter2-hunter2"])
    root = logging.getLogger()
    handler = logging.StreamHandler()
    root.addHandler(handler)
    try:
        with secret_env({"RELFM_TEST_SECRET": "hunter2-hunter2"}, r):
            assert os.environ["RELFM_TEST_SECRET"] == "hunter2-hunter2"
            record = logging.LogRecord(
                "x", logging.WARNING, "f", 1, "connecting with %s", ("hunter2-hunter2",), None
            )
            for f in handler.filters:
                f.filter(record)  # type: ignore[union-attr]
            assert record.getMessage() == f"connecting with {MASK}"
        assert "RELFM_TEST_SECRET" not in os.environ and not handler.filters
    finally:
        root.removeHandler(handler)


# ------------------------------------------------------------------------------------------------ state
def test_state_records_lookups_and_trimming(tmp_path: Path) -> None:
    s = JobState(tmp_path / "j", "j")
    assert s.latest("score") is None and s.lookup("score", "x") is None
    fp = fingerprint({"b": 1, "a": [1, 2]})
    assert fp == fingerprint({"a": [1, 2], "b": 1}) and len(fp) == 16
    s.record("score", fp, {"a": [1, 2], "b": 1}, {"rows": 3}, 1.5)
    rec = s.lookup("score", fp)
    assert rec is not None and rec.outputs == {"rows": 3} and rec.inputs["b"] == 1
    for i in range(KEEP + 5):
        s.record("score", f"fp{i}", {}, {"i": i}, 0.0)
    data = json.loads((tmp_path / "j" / "state.json").read_text())
    assert len(data["steps"]["score"]) == KEEP
    latest = s.latest("score")
    assert latest is not None and latest.outputs["i"] == KEEP + 4
    s.forget("score", f"fp{KEEP + 4}")
    assert s.lookup("score", f"fp{KEEP + 4}") is None


def test_state_survives_concurrent_writers(tmp_path: Path) -> None:
    s = JobState(tmp_path / "j", "j")

    def write(step: str) -> None:
        for i in range(20):
            s.record(step, f"{step}{i}", {}, {"i": i}, 0.0)

    threads = [threading.Thread(target=write, args=(name,)) for name in ("score", "backtest")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    data = json.loads(s.path.read_text())
    assert len(data["steps"]["score"]) == 20 and len(data["steps"]["backtest"]) == 20


def test_one_process_per_step(tmp_path: Path) -> None:
    s = JobState(tmp_path / "j", "j")
    with s.step_lock("score"), pytest.raises(RelfmError, match="step 'score' is already running"):
        other = JobState(tmp_path / "j", "j")
        with other.step_lock("score"):
            pass


def test_unreadable_state_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "state.json").write_text("{half")
    with pytest.raises(RelfmError, match=r"unreadable \(delete it to start the job afresh\)"):
        JobState(tmp_path / "j", "j").latest("graph")


# ------------------------------------------------------------------------------------------------ finetune schedule
@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real MLflow SQLite store under the job's home, with a registered model `m` (no versions yet)."""
    from mlflow import MlflowClient

    monkeypatch.setenv("RELFM_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "home").mkdir()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'home' / 'mlflow.db'}")
    client.create_registered_model("m")
    return client


def test_finetune_schedule(tmp_path: Path, registry: Any) -> None:
    today = date.today()
    cfg = job(tmp_path, query=QUERY, model={"name": "m"}, score={"output": "p"}, finetune={"every": "7d"})
    state = JobState(tmp_path / "home" / "jobs" / "t", "t")
    step = FinetuneStep()

    def plan(run_date: date, c: NightlyConfig = cfg) -> Any:
        ctx = Ctx(c, tmp_path / "home", run_date, state, Redactor(), Lines())
        ctx.outputs["graph"] = {"graph_id": "g1", "path": "unused", "fp": "g1"}
        return step.plan(ctx)

    first = plan(today)
    assert (first.action, first.reason) == ("run", "no version of m@champion registered yet")
    mv = registry.create_model_version("m", source=str(tmp_path), run_id=None)
    registry.set_registered_model_alias("m", "champion", mv.version)

    # a version someone else registered today: its creation date starts the schedule
    d = plan(today)
    assert (
        d.action == "skip"
        and d.reason
        == f"m@champion is version 1 (fine-tuned {today}); next fine-tune due {today + timedelta(days=7)}"
    )
    assert d.outputs == {"name": "m", "alias": "champion", "version": "1"}
    later = plan(today + timedelta(days=7))
    assert (
        later.action == "run" and later.reason == f"version 1 was fine-tuned 7 days ago on {today} (every 1w)"
    )

    # the job's own fine-tune of version 1, recorded on a run date: the schedule counts from that date
    settings = fingerprint(step.settings(ctx_for(cfg, tmp_path, state)))
    state.record(
        "finetune",
        "x",
        {"graph_id": "g1", "settings": settings, "run_date": "2026-03-01"},
        {"version": "1"},
        1.0,
    )
    assert plan(date(2026, 3, 7)).action == "skip"
    assert plan(date(2026, 3, 8)).action == "run"

    changed = job(
        tmp_path, query=QUERY, model={"name": "m"}, score={"output": "p"}, finetune={"every": "7d", "seed": 1}
    )
    assert plan(date(2026, 3, 2), changed).reason == "fine-tuning settings changed since version 1"
    scaled = job(
        tmp_path,
        query=QUERY,
        model={"name": "m"},
        score={"output": "p"},
        finetune={"every": "7d", "launcher": "local"},
    )
    assert plan(date(2026, 3, 2), scaled).action == "skip"  # how it runs is not what it learns

    never = job(tmp_path, query=QUERY, model={"name": "m"}, score={"output": "p"})
    assert plan(date(2030, 1, 1), never).reason.endswith("no schedule: only when needed)")
    forced = Ctx(never, tmp_path / "home", today, state, Redactor(), Lines(), force=frozenset({"finetune"}))
    forced.outputs["graph"] = {"graph_id": "g1", "path": "unused"}
    assert step.plan(forced).reason == "forced (--force finetune)"


def test_finetune_disabled_needs_a_model(tmp_path: Path, registry: Any) -> None:
    cfg = job(tmp_path, query=QUERY, model={"name": "m"}, score={"output": "p"}, finetune={"enabled": False})
    ctx = ctx_for(cfg, tmp_path, JobState(tmp_path / "s", "t"))
    with pytest.raises(RelfmError, match=r"finetune\.enabled is false and no version of m@champion exists"):
        FinetuneStep().plan(ctx)


def ctx_for(cfg: NightlyConfig, tmp_path: Path, state: JobState) -> Ctx:
    return Ctx(cfg, tmp_path / "home", date.today(), state, Redactor(), Lines())


# ------------------------------------------------------------------------------------------------ plots
def test_log_plots_pairs_labels_with_the_labelled_predictions(tmp_path: Path) -> None:
    """Tonight's entities have no labels: ROC comes from the backtest's predictions, the distribution and
    drift from tonight's scores, which may be more (or fewer) than the labelled rows."""
    import mlflow
    import numpy as np

    from pipelines import plots

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'm.db'}")
    rng = np.random.default_rng(0)
    tonight, labelled = rng.uniform(0, 1, 300), rng.uniform(0, 1, 100)
    y = (rng.uniform(0, 1, 100) < labelled).astype(float)
    with mlflow.start_run():
        paths = plots.log_plots(
            "binary", tonight, y=y, previous=rng.uniform(0, 1, 200), out_dir=tmp_path, labelled_pred=labelled
        )
    assert set(paths) == {"score_distribution", "roc_curve", "calibration", "drift"}
