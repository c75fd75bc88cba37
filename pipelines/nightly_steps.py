"""The steps of the nightly job, each as `plan` (run or skip, and why, from metadata only) and `run`.

warehouse → graph → finetune → score → backtest → publish. `plan` looks at the step's inputs (source
versions, graph id, the model version holding the alias, the run date, the settings that shape the
output), looks them up in the job state and checks that the recorded outputs still exist; it never does
the work, so `--dry-run` calls only `plan`. `run` does the work through the stage pipelines and returns
the outputs the state records and later steps read.

Fingerprints leave out what cannot change a result (workers, batch sizes, launchers), so scaling a job
up or down does not redo finished work.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from graph_engine.errors import RelfmError
from pipelines.nightly_config import NightlyConfig
from pipelines.nightly_secrets import Redactor
from pipelines.nightly_state import JobState, fingerprint

RUN, SKIP = "run", "skip"


class Reporter(Protocol):
    """Where a running job reports: the CLI draws progress bars, tests collect lines."""

    def start(self, step: str, reason: str) -> None: ...
    def log(self, message: str) -> None: ...
    def status(self, message: str) -> None: ...  # transient: what a long step is doing right now
    def progress(self, done: int, total: int | None) -> None: ...
    def finish(self, result: StepResult) -> None: ...


@dataclass
class StepResult:
    step: str
    status: str  # done | skipped | failed | not run | would run | would skip | disabled
    reason: str
    output: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class Decision:
    action: str  # RUN | SKIP
    reason: str
    fp: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)  # recorded outputs, when skipping


@dataclass
class Ctx:
    """One run of the job: its config, date, state, and what earlier steps produced."""

    cfg: NightlyConfig
    home: Path
    run_date: date
    state: JobState
    redact: Redactor
    reporter: Reporter
    force: frozenset[str] = frozenset()
    dry_run: bool = False
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    pending: set[str] = field(default_factory=set)  # dry run: steps that would run (outputs unknown)

    @property
    def run_id(self) -> str:
        return f"{self.cfg.name}-{self.run_date.isoformat()}"

    @property
    def job_dir(self) -> Path:
        return self.state.folder

    def upstream(self, step: str) -> dict[str, Any] | None:
        """What an earlier step produced (None while a dry run only knows that it would run)."""
        out = self.outputs.get(step)
        return None if out is None or out.get("pending") else out

    def upstream_fp(self, step: str) -> str | None:
        """An earlier step's input fingerprint: known in a dry run even when the step would run."""
        out = self.outputs.get(step)
        return None if out is None else out.get("fp")


class Step(Protocol):
    name: str

    def applies(self, ctx: Ctx) -> bool: ...
    def plan(self, ctx: Ctx) -> Decision: ...
    def run(self, ctx: Ctx, decision: Decision) -> dict[str, Any]: ...
    def describe(self, ctx: Ctx, outputs: dict[str, Any]) -> tuple[str, str]: ...


def _after(step: str) -> Decision:
    return Decision(RUN, f"after {step} runs (its output is not known yet)")


def _skip_or_force(ctx: Ctx, name: str, decision: Decision) -> Decision:
    if name in ctx.force and decision.action == SKIP:
        return Decision(RUN, f"forced (--force {name}); {decision.reason}", decision.fp, decision.inputs)
    return decision


# ------------------------------------------------------------------------------------------------ warehouse
class WarehouseStep:
    """The demo warehouse (nycflights13 Delta tables): written once, never rewritten (a rewrite would be a
    new Delta version and invalidate every graph built from it)."""

    name = "warehouse"

    def applies(self, ctx: Ctx) -> bool:
        return ctx.cfg.warehouse.demo is not None

    def _path(self, ctx: Ctx) -> Path:
        return ctx.cfg.path(ctx.cfg.warehouse.path)

    def plan(self, ctx: Ctx) -> Decision:
        from graph_engine.datasets import nycflights13

        path = self._path(ctx)
        missing = [t for t in nycflights13.TABLES if not (path / t / "_delta_log").is_dir()]
        inputs = {"demo": ctx.cfg.warehouse.demo, "path": str(path)}
        if missing:
            return Decision(RUN, f"demo tables missing ({', '.join(missing)})", fingerprint(inputs), inputs)
        return Decision(
            SKIP, "demo tables present (never rewritten)", fingerprint(inputs), inputs, {"path": str(path)}
        )

    def run(self, ctx: Ctx, decision: Decision) -> dict[str, Any]:
        from graph_engine.datasets import nycflights13

        versions = nycflights13.write_warehouse(self._path(ctx))
        return {"path": str(self._path(ctx)), "versions": {t: v.version for t, v in versions.items()}}

    def describe(self, ctx: Ctx, outputs: dict[str, Any]) -> tuple[str, str]:
        versions = outputs.get("versions")
        detail = ", ".join(f"{t}@{v}" for t, v in versions.items()) if versions else "nycflights13"
        return str(outputs.get("path", "")), detail


# ------------------------------------------------------------------------------------------------ graph
def source_versions(spec: Any) -> dict[str, str]:
    from graph_engine.io.sources import open_source

    return {t: open_source(spec.resolve_source(t), t).version().version for t in spec.tables}


class GraphStep:
    """Rebuilt when any source table has a new version (or the spec changed); the graph cache is keyed by
    both (graph_engine.cache), so the graph id is the step's fingerprint."""

    name = "graph"

    def applies(self, ctx: Ctx) -> bool:
        return True

    def _cache(self, ctx: Ctx) -> Path:
        return ctx.home / "graphs"

    def plan(self, ctx: Ctx) -> Decision:
        from graph_engine.cache import spec_graph_id
        from graph_engine.spec import GraphSpec

        spec_path = ctx.cfg.path(ctx.cfg.graph.spec)
        spec = GraphSpec.from_yaml(spec_path)
        if "warehouse" in ctx.pending:
            return _after("warehouse")
        full, gid = spec_graph_id(spec)
        versions = source_versions(full)
        inputs = {
            "spec": str(spec_path),
            "graph_id": gid,
            "sources": versions,
            "engine": ctx.cfg.graph.engine,
        }
        target = self._cache(ctx) / gid
        if (target / "manifest.json").is_file():
            d = Decision(SKIP, f"graph {gid[:12]} is built for these source versions", gid, inputs)
            d.outputs = _graph_outputs(target)
            return _skip_or_force(ctx, self.name, d)
        last = ctx.state.latest(self.name)
        if last is None:
            reason = "no graph built yet"
        else:
            before = last.inputs.get("sources", {})
            changed = [f"{t} {before.get(t)}→{v}" for t, v in versions.items() if before.get(t) != v]
            reason = "new source versions: " + ", ".join(changed) if changed else "graph spec changed"
        return Decision(RUN, reason, gid, inputs)

    def run(self, ctx: Ctx, decision: Decision) -> dict[str, Any]:
        import shutil

        from graph_engine.cache import open_or_build
        from graph_engine.spec import GraphSpec

        spec = GraphSpec.from_yaml(ctx.cfg.path(ctx.cfg.graph.spec))
        builder: Any = None
        if ctx.cfg.graph.engine == "spark":
            from graph_engine.shards.spark_builder import build_spark

            builder = build_spark
        if decision.fp and "graph" in ctx.force:  # forced: build again into the same id
            shutil.rmtree(self._cache(ctx) / decision.fp, ignore_errors=True)
        graph = open_or_build(spec, cache_dir=self._cache(ctx), builder=builder, progress=ctx.reporter.status)
        return _graph_outputs(Path(graph.path))

    def describe(self, ctx: Ctx, outputs: dict[str, Any]) -> tuple[str, str]:
        c = outputs.get("counts", {})
        detail = f"{c.get('rows')} rows, {c.get('edges')} edges, {c.get('missing_links')} missing links"
        if c.get("added_parent_rows"):
            detail += f", {c['added_parent_rows']} key-only parent rows"
        return str(outputs.get("path", "")), detail


def _graph_outputs(path: Path) -> dict[str, Any]:
    manifest = json.loads((path / "manifest.json").read_text())
    from graph_engine.shards.reader import Graph

    g = Graph.open(path)
    return {
        "graph_id": g.graph_id,
        "path": str(path),
        "counts": manifest.get("counts", {}),
        "sources": {t: str(s.get("version")) for t, s in manifest.get("sources", {}).items()},
    }


# ------------------------------------------------------------------------------------------------ registry
@dataclass(frozen=True)
class AliasVersion:
    version: str
    created: date


def alias_version(ctx: Ctx) -> AliasVersion | None:
    """The registered version holding the job's alias, or None (also when there is no tracking store
    yet: a dry run must not create one)."""
    from pipelines import tracking

    assert ctx.cfg.model is not None
    uri = tracking.tracking_uri(ctx.cfg.mlflow.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return None
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        mv = MlflowClient(tracking_uri=uri).get_model_version_by_alias(
            ctx.cfg.model.name, ctx.cfg.model.alias
        )
    except MlflowException:
        return None
    created = datetime.fromtimestamp(int(mv.creation_timestamp) / 1000, UTC).date()
    return AliasVersion(str(mv.version), created)


# ------------------------------------------------------------------------------------------------ finetune
def _every_text(every: timedelta) -> str:
    return f"{every.days // 7}w" if every.days % 7 == 0 else f"{every.days}d"


class FinetuneStep:
    """Fine-tunes (and registers, moving the alias) when no version holds the alias, when the fine-tuning
    settings changed since the last fine-tune, or when `finetune.every` has passed; otherwise the job
    scores with the version holding the alias. A failed fine-tune leaves no record, so the rerun
    fine-tunes again, and pipelines.finetune resumes from its latest checkpoint."""

    name = "finetune"

    def applies(self, ctx: Ctx) -> bool:
        return ctx.cfg.stages

    def settings(self, ctx: Ctx) -> dict[str, Any]:
        f = ctx.cfg.finetune
        return {
            "query": " ".join((ctx.cfg.query or "").split()),
            "model": ctx.cfg.model.model_dump() if ctx.cfg.model else None,
            **f.model_dump(mode="json", exclude={"enabled", "every", "launcher", "use_gpu"}),
            "train": f.train.model_dump(mode="json", exclude={"log_every", "threads_per_worker"}),
        }

    def plan(self, ctx: Ctx) -> Decision:
        assert ctx.cfg.model is not None
        f, model = ctx.cfg.finetune, ctx.cfg.model
        current = alias_version(ctx)
        graph = ctx.upstream("graph")
        settings = fingerprint(self.settings(ctx))
        inputs = {
            "graph_id": graph["graph_id"] if graph else None,
            "settings": settings,
            "run_date": ctx.run_date.isoformat(),
        }
        fp = fingerprint(inputs) if graph else None
        ref = f"{model.name}@{model.alias}"
        if not f.enabled:
            if current is None:
                raise RelfmError(f"finetune.enabled is false and no version of {ref} exists to score with")
            return Decision(SKIP, "fine-tuning disabled", fp, inputs, self._outputs(ctx, current))
        if "finetune" in ctx.force:
            return Decision(RUN, "forced (--force finetune)", fp, inputs)
        if current is None:
            return Decision(RUN, f"no version of {ref} registered yet", fp, inputs)
        last = ctx.state.latest(self.name)
        mine = last is not None and last.outputs.get("version") == current.version
        if mine and last is not None and last.inputs.get("settings") != settings:
            return Decision(RUN, f"fine-tuning settings changed since version {current.version}", fp, inputs)
        trained = date.fromisoformat(last.inputs["run_date"]) if mine and last else current.created
        if f.every is not None:
            due = trained + f.every
            age = (ctx.run_date - trained).days
            if ctx.run_date >= due:
                return Decision(
                    RUN,
                    f"version {current.version} was fine-tuned {age} days ago on {trained} (every {_every_text(f.every)})",
                    fp,
                    inputs,
                )
            why = f"{ref} is version {current.version} (fine-tuned {trained}); next fine-tune due {due}"
        else:
            why = f"{ref} is version {current.version} (fine-tuned {trained}; no schedule: only when needed)"
        return Decision(SKIP, why, fp, inputs, self._outputs(ctx, current))

    def _outputs(self, ctx: Ctx, current: AliasVersion) -> dict[str, Any]:
        assert ctx.cfg.model is not None
        return {"name": ctx.cfg.model.name, "alias": ctx.cfg.model.alias, "version": current.version}

    def stage_config(self, ctx: Ctx) -> Any:
        from pipelines.configs import FinetuneStageConfig, validate_config

        cfg, f = ctx.cfg, ctx.cfg.finetune
        assert cfg.model is not None and cfg.query is not None
        graph = ctx.upstream("graph")
        assert graph is not None
        data = {
            "name": cfg.name,
            "graph": graph["path"],
            "query": cfg.query,
            "base_model": f.base_model,
            "table": f.table.model_dump(),
            "train": f.train.model_dump(),
            "deepspeed": f.deepspeed.model_dump() if f.deepspeed else None,
            "workers": f.workers,
            "use_gpu": f.use_gpu,
            "launcher": f.launcher,
            "ray_address": cfg.ray_address,
            "checkpoint_dir": str(ctx.home / "finetune" / cfg.name),
            "registered_model_name": cfg.model.name,
            "alias": cfg.model.alias,
            "mlflow": cfg.mlflow.model_dump(),
            "seed": f.seed,
        }
        return validate_config(data, FinetuneStageConfig, f"job {cfg.name}: finetune", cfg.base_dir)

    def run(self, ctx: Ctx, decision: Decision) -> dict[str, Any]:
        from pipelines import finetune

        report = finetune.run(self.stage_config(ctx), log=ctx.reporter.log)
        if report.registered_version is None:
            raise RelfmError(f"job {ctx.cfg.name}: the fine-tuned model was not registered")
        return {
            "name": report.registered_name,
            "alias": report.alias,
            "version": report.registered_version,
            "mlflow_run_id": report.mlflow_run_id,
            "steps": report.steps,
            "val_score": report.metrics.get("val_score"),
        }

    def describe(self, ctx: Ctx, outputs: dict[str, Any]) -> tuple[str, str]:
        ref = f"models:/{outputs.get('name')}/{outputs.get('version')}"
        detail = f"@{outputs.get('alias')}"
        if outputs.get("val_score") is not None:
            detail += f", {outputs.get('steps')} steps, val_score {float(outputs['val_score']):.4f}"
        return ref, detail


def model_uri(outputs: dict[str, Any]) -> str:
    """The exact version (not the alias): score and backtest use the same model even if the alias moves."""
    return f"models:/{outputs['name']}/{outputs['version']}"


# ------------------------------------------------------------------------------------------------ score
def score_stage_config(ctx: Ctx, model: str) -> Any:
    from pipelines.configs import ScoreStageConfig, validate_config

    cfg, s = ctx.cfg, ctx.cfg.score
    assert s is not None
    graph = ctx.upstream("graph")
    assert graph is not None
    data = {
        "name": cfg.name,
        "graph": graph["path"],
        "model": model,
        "entities": s.entities,
        "entity_column": s.entity_column,
        "batch_size": s.batch_size,
        "workers": s.workers,
        "cpus_per_worker": s.cpus_per_worker,
        "use_gpu": s.use_gpu,
        "max_restarts": s.max_restarts,
        "output": str(cfg.path(s.output)),
        "run_id": ctx.run_id,
        "run_date": ctx.run_date,
        "ray_address": cfg.ray_address,
        "mlflow": cfg.mlflow.model_dump(),
    }
    return validate_config(data, ScoreStageConfig, f"job {cfg.name}: score", cfg.base_dir)


def rows_of_run(table: Path, run_id: str, run_date: date) -> int | None:
    """Rows of `run_id` in the Delta prediction table (its run_date partition only); None when the
    table is gone."""
    import pyarrow.dataset as ds
    from deltalake import DeltaTable

    if not DeltaTable.is_deltatable(str(table)):
        return None
    where = (ds.field("run_date") == run_date) & (ds.field("run_id") == run_id)
    return int(DeltaTable(str(table)).to_pyarrow_dataset().count_rows(filter=where))


class ScoreStep:
    """Every entity of the query at the graph's latest time, into the Delta prediction table (one commit,
    keyed by run id: a rerun of the night replaces its rows)."""

    name = "score"

    def applies(self, ctx: Ctx) -> bool:
        return ctx.cfg.stages

    def plan(self, ctx: Ctx) -> Decision:
        s = ctx.cfg.score
        assert s is not None
        graph, model = ctx.upstream("graph"), ctx.upstream("finetune")
        if graph is None:
            return _after("graph")
        if model is None or "version" not in model:
            return _after("finetune")
        table = ctx.cfg.path(s.output)
        inputs = {
            "graph_id": graph["graph_id"],
            "model": model_uri(model),
            "run_id": ctx.run_id,
            "run_date": ctx.run_date.isoformat(),
            "table": str(table),
            "entities": s.entities,
            "entity_column": s.entity_column,
        }
        fp = fingerprint(inputs)
        rec = ctx.state.lookup(self.name, fp)
        if rec is not None:
            rows = rows_of_run(table, ctx.run_id, ctx.run_date)
            if rows is not None and rows == rec.outputs.get("rows"):
                d = Decision(
                    SKIP,
                    f"run {ctx.run_id} is in the prediction table ({rows} rows)",
                    fp,
                    inputs,
                    rec.outputs,
                )
                return _skip_or_force(ctx, self.name, d)
            what = (
                "is gone"
                if rows is None
                else f"holds {rows} rows of run {ctx.run_id}, not {rec.outputs.get('rows')}"
            )
            return Decision(RUN, f"prediction table {what}: scoring again", fp, inputs)
        last = ctx.state.latest(self.name)
        if last is not None and last.inputs.get("run_id") == ctx.run_id:
            changed = [k for k in ("model", "graph_id") if last.inputs.get(k) != inputs[k]]
            return Decision(
                RUN, f"{' and '.join(changed) or 'inputs'} changed: run {ctx.run_id} is replaced", fp, inputs
            )
        return Decision(RUN, f"no predictions for run {ctx.run_id} yet", fp, inputs)

    def run(self, ctx: Ctx, decision: Decision) -> dict[str, Any]:
        from pipelines import score

        model = ctx.upstream("finetune")
        assert model is not None
        report = score.run(
            score_stage_config(ctx, model_uri(model)), progress=ctx.reporter.progress, log=ctx.reporter.log
        )
        return {
            "table": str(report.table),
            "version": report.version,
            "rows": report.rows,
            "run_id": report.run_id,
            "anchor": str(_ns_date(report.anchor_ns)),
            "model": f"{report.model_name}/{report.model_version}",
            "mlflow_run_id": report.mlflow_run_id,
            "entities_per_s": round(report.entities_per_s, 1),
        }

    def describe(self, ctx: Ctx, outputs: dict[str, Any]) -> tuple[str, str]:
        return str(outputs.get("table", "")), (
            f"{outputs.get('rows')} rows, run {outputs.get('run_id')}, Delta version {outputs.get('version')}"
        )


def _ns_date(ns: int) -> str:
    import numpy as np

    return str(np.datetime64(int(ns), "ns").astype("datetime64[s]"))


# ------------------------------------------------------------------------------------------------ backtest
class BacktestStep:
    """The model on the latest fully labelled window (see pipelines.nightly_backtest); redone only for a
    new model version or a new graph."""

    name = "backtest"

    def applies(self, ctx: Ctx) -> bool:
        return ctx.cfg.stages

    def plan(self, ctx: Ctx) -> Decision:
        graph, model = ctx.upstream("graph"), ctx.upstream("finetune")
        if not ctx.cfg.backtest.enabled:
            return Decision(SKIP, "backtest disabled", None, {}, {})
        if graph is None:
            return _after("graph")
        if model is None or "version" not in model:
            return _after("finetune")
        inputs = {
            "graph_id": graph["graph_id"],
            "model": model_uri(model),
            "settings": ctx.cfg.backtest.model_dump(mode="json"),
        }
        fp = fingerprint(inputs)
        rec = ctx.state.lookup(self.name, fp)
        if rec is not None and Path(str(rec.outputs.get("path"))).is_file():
            why = f"{model_uri(model)} is already backtested on graph {graph['graph_id'][:12]}"
            return _skip_or_force(ctx, self.name, Decision(SKIP, why, fp, inputs, rec.outputs))
        return Decision(
            RUN, f"{model_uri(model)} not backtested on graph {graph['graph_id'][:12]} yet", fp, inputs
        )

    def run(self, ctx: Ctx, decision: Decision) -> dict[str, Any]:
        from graph_engine.shards.reader import Graph
        from pipelines import registry, tracking
        from pipelines.nightly_backtest import backtest
        from pipelines.scorers import query_of

        graph, model = ctx.upstream("graph"), ctx.upstream("finetune")
        assert graph is not None and model is not None and decision.fp is not None
        tracking.setup(ctx.cfg.mlflow.tracking_uri, ctx.cfg.mlflow.experiment)
        resolved = registry.resolve(model_uri(model), ctx.home / "models")
        query = query_of(resolved.folder, ctx.cfg.query)
        b = ctx.cfg.backtest
        result = backtest(
            score_stage_config(ctx, model_uri(model)),
            Graph.open(graph["path"]),
            resolved.folder,
            query,
            ctx.job_dir / "backtests" / f"{decision.fp}.parquet",
            b.max_entities,
            b.seed,
            ctx.reporter.progress,
        )
        return {
            "path": str(result.path),
            "task_type": result.task_type,
            "anchor": _ns_date(result.anchor_ns),
            "rows": result.rows,
            "metrics": result.metrics,
        }

    def describe(self, ctx: Ctx, outputs: dict[str, Any]) -> tuple[str, str]:
        if not outputs:
            return "", ""
        m = outputs.get("metrics", {})
        head = [k for k in ("auroc", "average_precision", "mae", "r2", "accuracy", "macro_f1") if k in m][:2]
        shown = ", ".join(f"{k} {m[k]:.4f}" for k in head)
        return str(
            outputs.get("path", "")
        ), f"{shown} on {outputs.get('rows')} entities at {outputs.get('anchor')}"


# ------------------------------------------------------------------------------------------------ publish
class PublishStep:
    """One MLflow run per night: what was scored with what (query, graph id, source versions, model
    version, prediction table and version), the backtest metrics, the plots, and drift against the
    previous night's scores. Found again by a tag carrying its fingerprint, so a retried publish
    completes its own run instead of starting another."""

    name = "publish"

    def applies(self, ctx: Ctx) -> bool:
        return ctx.cfg.stages

    def plan(self, ctx: Ctx) -> Decision:
        score_fp = ctx.upstream_fp("score")
        if score_fp is None:
            return _after("score")
        if "backtest" not in ctx.outputs:
            return _after("backtest")
        inputs = {
            "score": score_fp,
            "backtest": ctx.upstream_fp("backtest"),
            "run_id": ctx.run_id,
            "publish": ctx.cfg.publish.model_dump(mode="json"),
            "experiment": ctx.cfg.mlflow.experiment,
        }
        fp = fingerprint(inputs)
        rec = ctx.state.lookup(self.name, fp)
        if rec is not None and _run_finished(ctx, str(rec.outputs.get("mlflow_run_id"))):
            why = f"published as MLflow run {rec.outputs.get('mlflow_run_id')}"
            return _skip_or_force(ctx, self.name, Decision(SKIP, why, fp, inputs, rec.outputs))
        return Decision(RUN, f"night {ctx.run_date} not published with these results yet", fp, inputs)

    def run(self, ctx: Ctx, decision: Decision) -> dict[str, Any]:
        from pipelines.nightly_publish import publish

        return publish(ctx, decision)

    def describe(self, ctx: Ctx, outputs: dict[str, Any]) -> tuple[str, str]:
        drift = outputs.get("drift")
        detail = (
            f"drift PSI {drift['drift_psi']:.3f}, KS {drift['drift_ks']:.3f} vs {outputs.get('previous_run')}"
            if drift
            else "no previous run to compare with"
        )
        plots = outputs.get("plots", [])
        return f"MLflow run {outputs.get('mlflow_run_id')}", f"{len(plots)} plots, report; {detail}"


def _run_finished(ctx: Ctx, run_id: str) -> bool:
    from pipelines import tracking

    uri = tracking.tracking_uri(ctx.cfg.mlflow.tracking_uri)
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        return False
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return bool(MlflowClient(tracking_uri=uri).get_run(run_id).info.status == "FINISHED")
    except MlflowException:
        return False


STEPS: tuple[Step, ...] = (
    WarehouseStep(),
    GraphStep(),
    FinetuneStep(),
    ScoreStep(),
    BacktestStep(),
    PublishStep(),
)
NAMES = tuple(s.name for s in STEPS)
DEPENDS: dict[str, tuple[str, ...]] = {
    "warehouse": (),
    "graph": ("warehouse",),
    "finetune": ("graph",),
    "score": ("graph", "finetune"),
    "backtest": ("graph", "finetune"),
    "publish": ("score", "backtest"),
}
