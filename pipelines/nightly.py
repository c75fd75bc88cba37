"""The nightly job: warehouse → graph (later stages are added by their own issues)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph_engine.cache import open_or_build
from graph_engine.datasets import nycflights13
from graph_engine.spec import GraphSpec, expand_vars


@dataclass
class StepResult:
    step: str
    status: str  # "done" | "skipped"
    output: str
    detail: str = ""


@dataclass
class JobPlan:
    home: Path
    warehouse: Path | None
    spec: Path
    engine: str
    steps: list[StepResult] = field(default_factory=list)


def run_job(
    home: Path, warehouse: Path | None, spec_path: Path, engine: str, log: Callable[[str], None] = print
) -> list[StepResult]:
    results: list[StepResult] = []
    if warehouse is not None:
        existed = all((warehouse / t / "_delta_log").is_dir() for t in nycflights13.TABLES)
        versions = nycflights13.write_warehouse(warehouse)
        results.append(
            StepResult(
                "warehouse",
                "skipped" if existed else "done",
                str(warehouse),
                ", ".join(f"{t}@{v.version}" for t, v in versions.items()),
            )
        )
    spec = GraphSpec.from_yaml(spec_path)
    cache = home / "graphs"
    from graph_engine.cache import spec_graph_id

    _, gid = spec_graph_id(spec)
    existed = (cache / gid / "manifest.json").is_file()
    builder: Any = None
    if engine == "spark":
        from graph_engine.shards.spark_builder import build_spark

        builder = build_spark
    graph = open_or_build(spec, cache_dir=cache, builder=builder, progress=lambda m: log(f"  graph: {m}"))
    c = graph.manifest["counts"]
    results.append(
        StepResult(
            "graph",
            "skipped" if existed else "done",
            str(graph.path),
            f"{c['rows']} rows, {c['edges']} edges, {c['missing_links']} missing links"
            + (f", {c['added_parent_rows']} key-only parent rows" if c.get("added_parent_rows") else ""),
        )
    )
    return results


def home_dir(value: str) -> Path:
    p = Path(expand_vars(value)).expanduser().resolve()
    p.mkdir(parents=True, exist_ok=True)
    return p
