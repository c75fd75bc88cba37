"""Job configuration: YAML validated by pydantic (pipelines.nightly_config), with environment overrides
and clear one-line errors.

Overrides: `RELFM_JOB__<SECTION>__<FIELD>=value` sets `section.field` (any depth, `__` between levels,
case-insensitive), the value read as a YAML scalar or flow collection: `RELFM_JOB__SCORE__BATCH_SIZE=256`,
`RELFM_JOB__FINETUNE__EVERY=1d`, `RELFM_JOB__GRAPH__ENGINE=spark`, `RELFM_JOB__SCORE__ENTITIES=[N101, N102]`.
They are applied after the file and before validation, so a bad override fails like a bad file, naming
the variable. Secrets never go through here: `secrets:` holds references only (see nightly_config).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from graph_engine.errors import RelfmError
from graph_engine.yaml_file import read_yaml
from pipelines.nightly_config import NightlyConfig

JobConfig = NightlyConfig  # the schema lives with the pipeline that reads it
ENV_PREFIX = "RELFM_JOB__"


def env_overrides(environ: Mapping[str, str] | None = None) -> dict[tuple[str, ...], tuple[str, Any]]:
    """{field path: (variable, value)} from RELFM_JOB__* variables."""
    env = os.environ if environ is None else environ
    out: dict[tuple[str, ...], tuple[str, Any]] = {}
    for name, raw in sorted(env.items()):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        path = tuple(name[len(ENV_PREFIX) :].split("__"))
        if not path or any(not p for p in path):
            raise RelfmError(f"{name}: expected RELFM_JOB__<SECTION>__<FIELD> (one '__' between levels)")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        out[path] = (name, value)
    return out


def _key(node: dict[str, Any], segment: str, keep_case: bool) -> str:
    """The existing key the segment names (case-insensitively), else the field name it spells: lower
    case, except names of environment variables (the keys of `secrets`)."""
    for k in node:
        if isinstance(k, str) and k.lower() == segment.lower():
            return k
    return segment if keep_case else segment.lower()


def _apply(data: dict[str, Any], path: tuple[str, ...], value: Any, var: str, where: str) -> tuple[str, ...]:
    node = data
    keys: list[str] = []
    for i, segment in enumerate(path):
        key = _key(node, segment, keep_case=i > 0 and keys[0] == "secrets")
        keys.append(key)
        if i == len(path) - 1:
            node[key] = value
            break
        child = node.get(key)
        if child is None:
            child = node[key] = {}
        elif not isinstance(child, dict):
            raise RelfmError(f"{where}: {var}: '{'.'.join(keys)}' is not a section")
        node = child
    return tuple(keys)


def load_job(path: str | Path, environ: Mapping[str, str] | None = None) -> NightlyConfig:
    p = Path(path)
    where = f"job config {p}"
    data = read_yaml(p, "job config")
    if data is not None and not isinstance(data, dict):
        raise RelfmError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    data = dict(data or {})
    applied = {
        _apply(data, fp, value, var, where): var for fp, (var, value) in env_overrides(environ).items()
    }
    try:
        cfg = NightlyConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(str(x) for x in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ").splitlines()[0]
        by = [var for fp, var in applied.items() if loc[: len(fp)] == fp or fp[: len(loc)] == loc]
        suffix = f" (set by {by[0]})" if by else ""
        raise RelfmError(f"{where}: {'.'.join(loc) or '(top level)'}: {msg}{suffix}") from None
    return cfg.with_base_dir(p.parent.resolve())
