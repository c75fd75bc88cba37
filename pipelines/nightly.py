"""The nightly job: warehouse → graph → finetune → score → backtest → publish, resumable step by step.

Each step (pipelines.nightly_steps) first plans from metadata (run or skip, and why) and the job state
(pipelines.nightly_state) records what it produced for which inputs, so:
  * a rerun skips every finished step, and after a failure resumes at the failed one;
  * a deleted output (the prediction table, a graph) is rebuilt alone;
  * `dry_run` prints the plan and touches nothing;
  * `steps` runs only the named steps (how Airflow and Databricks run one task per stage): the steps they
    depend on must be up to date already, else the job says which to run first.

The job's home becomes RELFM_HOME while it runs, so the stages (graph cache, MLflow store, model
downloads) and the graph spec's `${RELFM_HOME}` paths all agree on one folder. Declared secrets are put
in the environment for the clients that read them and masked in everything the job writes.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from graph_engine.errors import RelfmError
from graph_engine.spec import expand_vars
from pipelines.nightly_config import NightlyConfig
from pipelines.nightly_secrets import Redactor, hinted, resolve, secret_env
from pipelines.nightly_state import JobState
from pipelines.nightly_steps import DEPENDS, NAMES, RUN, STEPS, Ctx, Decision, StepResult

METRIC_ORDER = (
    "auroc",
    "average_precision",
    "accuracy",
    "f1",
    "calibration_error",
    "mae",
    "rmse",
    "r2",
    "macro_f1",
)


class PrintReporter:
    """Plain lines (tests, logs of schedulers); the CLI uses progress bars instead."""

    def __init__(self, log: Callable[[str], None] = print) -> None:
        self._log = log

    def start(self, step: str, reason: str) -> None:
        self._log(f"{step}: running ({reason})")

    def log(self, message: str) -> None:
        self._log(f"  {message}")

    def status(self, message: str) -> None:
        self._log(f"  {message}")

    def progress(self, done: int, total: int | None) -> None:
        return None

    def finish(self, result: StepResult) -> None:
        self._log(f"{result.step}: {result.status} ({result.reason})")


class _Redacting:
    """Masks secrets in everything a reporter is given."""

    def __init__(self, inner: Any, redact: Redactor) -> None:
        self.inner, self.redact = inner, redact

    def start(self, step: str, reason: str) -> None:
        self.inner.start(step, self.redact(reason))

    def log(self, message: str) -> None:
        self.inner.log(self.redact(message))

    def status(self, message: str) -> None:
        self.inner.status(self.redact(message))

    def progress(self, done: int, total: int | None) -> None:
        self.inner.progress(done, total)

    def finish(self, result: StepResult) -> None:
        result.reason, result.output, result.detail = (
            self.redact(result.reason),
            self.redact(result.output),
            self.redact(result.detail),
        )
        self.inner.finish(result)


@dataclass
class JobReport:
    job: str
    home: Path
    run_date: date
    run_id: str
    dry_run: bool
    steps: list[StepResult] = field(default_factory=list)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: BaseException | None = None

    @property
    def facts(self) -> list[tuple[str, str]]:
        """The few lines people read after a night: what was scored with what, how well, where it went."""
        out: list[tuple[str, str]] = []
        o = self.outputs
        if "finetune" in o and o["finetune"].get("version"):
            m = o["finetune"]
            out.append(("model", f"models:/{m['name']}/{m['version']} (@{m.get('alias')})"))
        if "score" in o and "rows" in o["score"]:
            s = o["score"]
            out.append(
                (
                    "predictions",
                    f"{s['rows']} rows of run {s['run_id']} in {s['table']} (Delta version {s['version']})",
                )
            )
        if o.get("backtest", {}).get("metrics"):
            b = o["backtest"]
            m = b["metrics"]
            order = [k for k in METRIC_ORDER if k in m] + sorted(k for k in m if k not in METRIC_ORDER)
            shown = ", ".join(f"{k} {m[k]:.4f}" for k in order if k != "count")
            out.append(("backtest", f"{shown} — {b['rows']} entities labelled at {b['anchor']}"))
        if "publish" in o and o["publish"].get("mlflow_run_id"):
            p = o["publish"]
            d = p.get("drift")
            out.append(
                (
                    "drift",
                    f"PSI {d['drift_psi']:.4f}, KS {d['drift_ks']:.4f} against run {p.get('previous_run')}"
                    if d
                    else "no previous run in the prediction table",
                )
            )
            out.append(
                ("mlflow", f"run {p['mlflow_run_id']} in experiment {p['experiment']} ({p['tracking_uri']})")
            )
            if p.get("report"):
                out.append(("report", str(p["report"])))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "home": str(self.home),
            "run_date": self.run_date.isoformat(),
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "steps": [asdict(s) for s in self.steps],
            "outputs": self.outputs,
            "facts": dict(self.facts),
            "error": str(self.error) if self.error else None,
        }


def home_dir(value: str, create: bool = True) -> Path:
    p = Path(expand_vars(value)).expanduser().resolve()
    if create:
        p.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def _relfm_home(home: Path) -> Iterator[None]:
    before = os.environ.get("RELFM_HOME")
    os.environ["RELFM_HOME"] = str(home)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RELFM_HOME", None)
        else:
            os.environ["RELFM_HOME"] = before


def _upstream(names: Iterable[str]) -> set[str]:
    """Every step the named ones depend on, transitively."""
    seen: set[str] = set()
    todo = [d for n in names for d in DEPENDS[n]]
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo.extend(DEPENDS[n])
    return seen


def check_steps(names: Iterable[str], what: str) -> list[str]:
    out = []
    for n in names:
        if n not in NAMES:
            from graph_engine.spec import suggest

            raise RelfmError(
                f"{what} '{n}': not a step of the nightly job ({', '.join(NAMES)}){suggest(n, NAMES)}"
            )
        out.append(n)
    return out


def run_job(
    cfg: NightlyConfig,
    run_date: date | None = None,
    steps: Iterable[str] | None = None,
    force: Iterable[str] = (),
    dry_run: bool = False,
    reporter: Any = None,
) -> JobReport:
    """Plans and runs the job; a failed step ends it with `report.error` set (the caller decides how to
    show it) and the steps after it marked "not run"."""
    when = run_date or datetime.now(UTC).date()
    only = check_steps(steps or (), "--step")
    if "graph" in only and "warehouse" not in only:
        only.append("warehouse")  # the demo warehouse belongs to the graph's refresh
    forced = frozenset(check_steps(force, "--force"))
    home = home_dir(cfg.home, create=not dry_run)
    redact = Redactor(hinted())
    values = resolve(cfg.secrets)
    redact.add(list(values.values()))
    report = JobReport(cfg.name, home, when, f"{cfg.name}-{when.isoformat()}", dry_run)
    rep = _Redacting(reporter or PrintReporter(), redact)
    ray_was_up = _ray_up()
    with secret_env(values, redact), _relfm_home(home):
        state = JobState(home / "jobs" / cfg.name, cfg.name)
        ctx = Ctx(cfg, home, when, state, redact, rep, forced, dry_run)
        needed = _upstream(only) - set(only) if only else set()
        try:
            _run_steps(ctx, report, set(only), needed)
        finally:
            report.outputs = redact.deep(ctx.outputs)
            if not ray_was_up and _ray_up():
                import ray

                ray.shutdown()
    return report


def _ray_up() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def _run_steps(ctx: Ctx, report: JobReport, only: set[str], needed: set[str]) -> None:
    failed: str | None = None
    for step in STEPS:
        if not step.applies(ctx) or (only and step.name not in only | needed):
            continue
        if failed is not None:
            report.steps.append(StepResult(step.name, "not run", f"{failed} failed"))
            continue
        try:
            decision = step.plan(ctx)
        except Exception as e:  # a bad input found while planning ends the job like a failed step
            failed = _fail(ctx, report, step.name, e, 0.0)
            continue
        if step.name in needed:
            _use_upstream(ctx, report, step, decision, only)
            continue
        if ctx.dry_run:
            status = "would run" if decision.action == RUN else "would skip"
            if decision.action == RUN:
                ctx.pending.add(step.name)
                if decision.fp is not None:  # later steps may still know whether they would run
                    ctx.outputs[step.name] = {"fp": decision.fp, "pending": True}
            else:
                ctx.outputs[step.name] = {**decision.outputs, "fp": decision.fp}
            output, detail = step.describe(ctx, decision.outputs) if decision.outputs else ("", "")
            _finish(ctx, report, StepResult(step.name, status, decision.reason, output, detail))
            continue
        if decision.action != RUN:
            ctx.outputs[step.name] = {**decision.outputs, "fp": decision.fp}
            output, detail = step.describe(ctx, decision.outputs)
            status = "disabled" if decision.fp is None and not decision.outputs else "skipped"
            _finish(ctx, report, StepResult(step.name, status, decision.reason, output, detail))
            continue
        ctx.reporter.start(step.name, decision.reason)
        t0 = time.perf_counter()
        try:
            with ctx.state.step_lock(step.name):
                outputs = step.run(ctx, decision)
        except Exception as e:
            failed = _fail(ctx, report, step.name, e, time.perf_counter() - t0)
            continue
        seconds = time.perf_counter() - t0
        outputs = ctx.redact.deep(outputs)
        if decision.fp is not None:
            ctx.state.record(step.name, decision.fp, decision.inputs, outputs, seconds)
        ctx.outputs[step.name] = {**outputs, "fp": decision.fp}
        output, detail = step.describe(ctx, outputs)
        _finish(ctx, report, StepResult(step.name, "done", decision.reason, output, detail, seconds))


def _use_upstream(ctx: Ctx, report: JobReport, step: Any, decision: Decision, only: set[str]) -> None:
    """--step: a step the selected ones depend on must be up to date; its outputs are read, not rebuilt."""
    if decision.action == RUN:
        needing = [s for s in NAMES if s in only and step.name in _upstream([s])]
        first = needing[0] if needing else step.name
        raise RelfmError(
            f"job {ctx.cfg.name}: step '{first}' needs '{step.name}' first ({decision.reason}); "
            f"run it with --step {step.name}"
        )
    ctx.outputs[step.name] = {**decision.outputs, "fp": decision.fp}
    output, detail = step.describe(ctx, decision.outputs)
    _finish(ctx, report, StepResult(step.name, "up to date", decision.reason, output, detail))


def _finish(ctx: Ctx, report: JobReport, result: StepResult) -> None:
    report.steps.append(result)
    ctx.reporter.finish(result)


def _fail(ctx: Ctx, report: JobReport, name: str, e: Exception, seconds: float) -> str:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if not isinstance(e, RelfmError):
        first = f"{type(e).__name__}: {first}"
    _finish(ctx, report, StepResult(name, "failed", ctx.redact(first), seconds=seconds))
    report.error = e
    return name
