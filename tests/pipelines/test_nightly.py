"""The nightly job's graph step: done once, then skipped while spec and data are unchanged."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines import nightly

pytestmark = pytest.mark.unit


def test_graph_step_is_skipped_when_nothing_changed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELFM_HOME", str(tmp_path / "home"))
    home = nightly.home_dir("${RELFM_HOME}")
    assert home == tmp_path / "home" and home.is_dir()
    pq.write_table(pa.table({"id": [1, 2], "x": [0.5, 1.5]}), tmp_path / "t.parquet")
    (tmp_path / "spec.yaml").write_text("tables:\n  t: {source: t.parquet}\n")
    logged: list[str] = []

    first = nightly.run_job(home, None, tmp_path / "spec.yaml", "local", log=logged.append)
    assert [(r.step, r.status) for r in first] == [("graph", "done")]
    assert Path(first[0].output).parent == home / "graphs"
    assert first[0].detail == "2 rows, 0 edges, 0 missing links"
    assert "  graph: reading keys" in logged

    second = nightly.run_job(home, None, tmp_path / "spec.yaml", "local", log=logged.append)
    assert [(r.step, r.status, r.output) for r in second] == [("graph", "skipped", first[0].output)]

    pq.write_table(pa.table({"id": [1, 2, 3], "x": [0.5, 1.5, 2.5]}), tmp_path / "t.parquet")
    third = nightly.run_job(home, None, tmp_path / "spec.yaml", "local", log=logged.append)
    assert third[0].status == "done" and third[0].output != first[0].output
