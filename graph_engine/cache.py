"""Build-or-reuse: every command that takes a graph also takes a spec.

A graph is identified by its complete spec, the versions of its sources and the format options
(`format.graph_id`). Given a spec, we compute that id from metadata only (Delta versions, file
fingerprints) and open the cached build if one exists; otherwise we build it into a temporary folder and
rename it into place, so a crashed build never leaves a half-written graph that later runs would trust.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from graph_engine.errors import SourceError
from graph_engine.infer import complete_spec
from graph_engine.io.sources import open_source
from graph_engine.shards.format import DEFAULT_ROWS_PER_SHARD, MANIFEST, graph_id
from graph_engine.shards.local_builder import BuildConfig, build_local, spec_is_complete
from graph_engine.shards.reader import Graph
from graph_engine.spec import GraphSpec, expand_vars

Builder = Callable[[GraphSpec, Path, BuildConfig], object]


def relfm_home() -> Path:
    return Path(expand_vars("${RELFM_HOME}")).resolve()


def default_cache_dir() -> Path:
    return relfm_home() / "graphs"


def spec_graph_id(spec: GraphSpec, rows_per_shard: int = DEFAULT_ROWS_PER_SHARD) -> tuple[GraphSpec, str]:
    """The complete spec and the id its build would have, from metadata only."""
    full = spec if spec_is_complete(spec) else complete_spec(spec)
    versions = {t: open_source(full.resolve_source(t), t).version().to_dict() for t in full.tables}
    return full, graph_id(full.to_dict(), versions, rows_per_shard)


def open_or_build(
    source: str | Path | GraphSpec | Graph,
    cache_dir: str | Path | None = None,
    config: BuildConfig | None = None,
    builder: Builder | None = None,
    progress: Callable[[str], None] | None = None,
) -> Graph:
    """A Graph from a built graph folder, a spec file, a GraphSpec, or a Graph (returned as is)."""
    if isinstance(source, Graph):
        return source
    if isinstance(source, str | Path):
        p = Path(source)
        if (p / MANIFEST).is_file():
            return Graph.open(p)
        if p.is_file() and p.suffix.lower() in (".yaml", ".yml"):
            source = GraphSpec.from_yaml(p)
        elif p.is_dir():
            raise SourceError(f"{p}: neither a built graph (no {MANIFEST}) nor a spec file")
        else:
            raise SourceError(f"{p}: no such graph or spec file")
    cfg = config or BuildConfig()
    spec, gid = spec_graph_id(source, cfg.rows_per_shard)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / gid
    if (target / MANIFEST).is_file():
        return Graph.open(target)
    tmp = root / f".tmp-{gid}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if builder is None:
            build_local(spec, tmp, cfg, progress)
        else:
            builder(spec, tmp, cfg)
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / MANIFEST).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Graph.open(target)
