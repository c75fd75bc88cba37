"""The graph stage: infer, validate and build graphs, locally or with Spark, with caching."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graph_engine.cache import open_or_build
from graph_engine.errors import RelfmError
from graph_engine.infer import infer_spec
from graph_engine.shards.local_builder import BuildConfig, LocalBuilder, build_local
from graph_engine.shards.reader import Graph
from graph_engine.spec import GraphSpec

ENGINES = ("local", "spark")


def infer(source: str, name: str | None = None) -> GraphSpec:
    return infer_spec(source, name)


def validate(spec_path: str | Path) -> dict[str, Any]:
    spec = GraphSpec.from_yaml(spec_path)
    return LocalBuilder(spec, Path("/nonexistent"), BuildConfig()).validate()


def _builder(engine: str) -> Any:
    if engine not in ENGINES:
        raise RelfmError(f"unknown engine '{engine}' (choose local or spark)")
    if engine == "spark":
        from graph_engine.shards.spark_builder import build_spark

        return build_spark
    return build_local


def build(
    spec_path: str | Path, out: str | Path, engine: str = "local", rows_per_shard: int = 1 << 22
) -> dict[str, Any]:
    spec = GraphSpec.from_yaml(spec_path)
    return dict(_builder(engine)(spec, Path(out), BuildConfig(rows_per_shard=rows_per_shard)))


def ensure_graph(
    source: str | Path | GraphSpec, engine: str = "local", cache_dir: Path | None = None
) -> Graph:
    """Open a built graph, or build-or-reuse the cached graph of a spec."""
    builder = None if engine == "local" else _builder(engine)
    return open_or_build(source, cache_dir=cache_dir, builder=builder)
