"""`relfm finetune` and `relfm score`: bad configs are one red line and exit code 2 (the stages
themselves run in tests/pipelines)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

RelfmRunner = Callable[..., subprocess.CompletedProcess[str]]


def test_score_config_errors(relfm: RelfmRunner, tmp_path: Path) -> None:
    (tmp_path / "score.yaml").write_text("graph: g\nmodel: models:/m@champion\noutput: out\nbatch_size: 0\n")
    r = relfm("score", "score.yaml", "--run-id", "nightly-1")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: score config score.yaml: batch_size: Input should be greater than 0"
    ]
    r = relfm("score", "score.yaml", "--run-id", "bad id", "--batch-size", "4")  # overrides validate too
    assert r.returncode == 2 and "run_id: 'bad id' may only hold letters" in r.stderr


def test_finetune_config_errors(relfm: RelfmRunner, tmp_path: Path) -> None:
    (tmp_path / "ft.yaml").write_text("graph: g\nquery: q\ndeepspeed: {zero_stage: 1, offload_param: true}\n")
    r = relfm("finetune", "ft.yaml")
    assert r.returncode == 2, r.stderr
    assert (
        len(r.stderr.strip().splitlines()) == 1 and "deepspeed: offload_param needs zero_stage 3" in r.stderr
    )
