"""Running the real `relfm` command line in a subprocess: exit codes and stderr are what users see."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

RelfmRunner = Callable[..., subprocess.CompletedProcess[str]]


def relfm_command() -> list[str]:
    script = Path(sys.executable).parent / "relfm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "jobs.cli"]


@pytest.fixture
def relfm(tmp_path: Path) -> RelfmRunner:
    """`relfm(*args)` in tmp_path, with RELFM_HOME in tmp_path and a wide terminal (no table wrapping)."""

    def run(
        *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        full_env = {
            **os.environ,
            "RELFM_HOME": str(tmp_path / "home"),
            "COLUMNS": "250",
            "NO_COLOR": "1",
            **(env or {}),
        }
        full_env.pop("RELFM_DEBUG", None)
        return subprocess.run(
            [*relfm_command(), *args],
            cwd=cwd or tmp_path,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    return run
