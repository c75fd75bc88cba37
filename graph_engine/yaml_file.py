"""Reading a YAML file a user wrote (graph spec, job or stage config), with the project's one-line errors.

Why one place: every config file must fail the same way, naming the file and the line and column where
the YAML breaks, never with a parser traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from graph_engine.errors import RelfmError


def read_yaml(path: str | Path, what: str, error: type[RelfmError] = RelfmError) -> Any:
    """The parsed document of `path`; `what` names the file in messages ("graph spec", "job config")."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} {p}: file not found")
    try:
        return yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        pos = f" at {mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise error(f"{what} {p}: invalid YAML{pos}") from None
