"""What each nightly step produced, for which inputs: the job's memory between runs.

One JSON file per job (`<home>/jobs/<job name>/state.json`). For every step it keeps records keyed by
the fingerprint of the step's inputs (source versions, graph id, model version, run date, the settings
that shape the output), each with the inputs in clear, the outputs and when it finished. A step whose
inputs have a record, and whose outputs are still there, is skipped; so a rerun after a failure resumes
at the step that failed, and a deleted output is rebuilt alone.

Steps of one job may run in parallel processes (an Airflow DAG runs score and backtest side by side):
every update re-reads the file under an exclusive lock and replaces it atomically, and each step holds
its own lock while it runs, so the same step never runs twice at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from graph_engine.errors import RelfmError

FORMAT = 1
KEEP = 30  # records per step: enough history to explain a decision, small enough to read


def fingerprint(inputs: dict[str, Any]) -> str:
    """A short, stable hash of a step's inputs (JSON with sorted keys)."""
    text = json.dumps(inputs, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Record:
    step: str
    fingerprint: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    finished_at: str
    seconds: float


class JobState:
    """The state file of one job, read fresh on every lookup (another process may have written it)."""

    def __init__(self, folder: Path, job: str) -> None:
        self.folder = folder
        self.job = job
        self.path = folder / "state.json"
        self._lock_path = folder / ".state.lock"

    # ------------------------------------------------------------------ reading
    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"format": FORMAT, "job": self.job, "steps": {}}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            raise RelfmError(
                f"job state {self.path}: unreadable (delete it to start the job afresh)"
            ) from None
        if data.get("format") != FORMAT:
            raise RelfmError(f"job state {self.path}: format {data.get('format')} is not {FORMAT}")
        return dict(data)

    def lookup(self, step: str, fp: str) -> Record | None:
        raw = self._read()["steps"].get(step, {}).get(fp)
        return _record(step, fp, raw) if raw else None

    def latest(self, step: str) -> Record | None:
        """The most recently finished record of a step, whatever its inputs."""
        records = self._read()["steps"].get(step, {})
        if not records:
            return None
        fp, raw = max(records.items(), key=lambda kv: int(kv[1].get("seq", 0)))
        return _record(step, fp, raw)

    # ------------------------------------------------------------------ writing
    def record(
        self, step: str, fp: str, inputs: dict[str, Any], outputs: dict[str, Any], seconds: float
    ) -> Record:
        finished = datetime.now(UTC).isoformat(timespec="seconds")
        with self._locked():
            data = self._read()
            seq = int(data.get("seq", 0)) + 1  # orders records; clocks and timestamps can tie
            data["seq"] = seq
            entry = {
                "inputs": inputs,
                "outputs": outputs,
                "finished_at": finished,
                "seconds": round(seconds, 3),
                "seq": seq,
            }
            steps = data.setdefault("steps", {})
            records = dict(steps.get(step, {}))
            records[fp] = entry
            if len(records) > KEEP:
                records = dict(sorted(records.items(), key=lambda kv: int(kv[1].get("seq", 0)))[-KEEP:])
            steps[step] = records
            self._write(data)
        return Record(step, fp, inputs, outputs, finished, seconds)

    def forget(self, step: str, fp: str) -> None:
        with self._locked():
            data = self._read()
            if data["steps"].get(step, {}).pop(fp, None) is not None:
                self._write(data)

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".state.{os.getpid()}.json")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
        tmp.replace(self.path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def step_lock(self, step: str) -> Iterator[None]:
        """Held while a step runs: a second process running the same step of this job fails at once."""
        locks = self.folder / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{step}.lock", "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RelfmError(
                    f"job {self.job}: step '{step}' is already running in another process ({locks / step}.lock)"
                ) from None
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)


def _record(step: str, fp: str, raw: dict[str, Any]) -> Record:
    return Record(
        step,
        fp,
        dict(raw.get("inputs", {})),
        dict(raw.get("outputs", {})),
        str(raw.get("finished_at", "")),
        float(raw.get("seconds", 0.0)),
    )
