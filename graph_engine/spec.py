"""The graph spec: which tables form the relational graph and how they link.

A spec is what a user pins in version control (YAML) or builds in Python. Anything left out is inferred
from the data by `graph_engine.infer` and printed back, so the user can pin it. Fields that were given
explicitly are remembered (pydantic's `model_fields_set`), so inference never overrides a user's choice,
including an explicit `time_column: null` meaning "this table is static".

Relative source paths are relative to the spec file, so a spec travels with its data.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from graph_engine.errors import SpecError
from graph_engine.yaml_file import read_yaml


class SemanticType(StrEnum):
    """How the model reads a column (the same vocabulary as KumoRFM's stypes)."""

    numerical = "numerical"
    categorical = "categorical"
    multicategorical = "multicategorical"
    text = "text"
    timestamp = "timestamp"
    id = "id"
    embedding = "embedding"


class TableSpec(BaseModel):
    """One table: its source and its keys. Omitted fields are inferred from the data."""

    model_config = ConfigDict(extra="forbid")

    source: str
    primary_key: str | None = None
    time_column: str | None = None
    end_time_column: str | None = None
    foreign_keys: dict[str, str] = Field(default_factory=dict)
    semantic_types: dict[str, SemanticType] = Field(default_factory=dict)

    @field_validator("source")
    @classmethod
    def _source_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("source must not be empty")
        return v.strip()

    def given(self, field: str) -> bool:
        """Whether the user set `field` (as opposed to leaving it for inference)."""
        return field in self.model_fields_set

    def key_columns(self) -> list[str]:
        cols = [c for c in (self.primary_key, self.time_column, self.end_time_column) if c]
        return cols + [c for c in self.foreign_keys if c not in cols]


class GraphSpec(BaseModel):
    """A relational graph: tables linked by primary/foreign keys, some with time columns."""

    model_config = ConfigDict(extra="forbid")

    name: str = "graph"
    tables: dict[str, TableSpec]
    # Warehouses hold foreign-key values with no parent row (tail numbers missing from planes). With this
    # on, the build adds key-only parent rows for them so those entities can still be predicted; the
    # manifest reports how many were added.
    add_missing_parents: bool = False

    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)

    @field_validator("tables")
    @classmethod
    def _at_least_one(cls, v: dict[str, TableSpec]) -> dict[str, TableSpec]:
        if not v:
            raise ValueError("a graph needs at least one table")
        return v

    # ------------------------------------------------------------------ construction and persistence
    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str | Path | None = None) -> GraphSpec:
        try:
            spec = cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise SpecError(f"graph spec: {where}: {err['msg']}") from None
        spec._base_dir = Path(base_dir).resolve() if base_dir is not None else Path.cwd()
        spec.check()
        return spec

    @classmethod
    def from_yaml(cls, path: str | Path) -> GraphSpec:
        p = Path(path)
        data = read_yaml(p, "graph spec", SpecError)
        if not isinstance(data, dict):
            raise SpecError(f"graph spec {p}: expected a mapping with 'tables'")
        return cls.from_dict(data, base_dir=p.parent)

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def with_base_dir(self, base_dir: str | Path) -> GraphSpec:
        out = self.model_copy(deep=True)
        out._base_dir = Path(base_dir).resolve()
        return out

    def to_dict(self) -> dict[str, Any]:
        """Every field that is set, explicitly: a completed spec (whose fields are all set) comes out
        complete so the user can pin it. Fields left for inference stay out, so that saving and loading
        a partial spec does not turn "infer this" into "there is none" (`foreign_keys: {}`)."""
        tables: dict[str, Any] = {}
        for name, t in self.tables.items():
            entry: dict[str, Any] = {"source": t.source}
            for f in ("primary_key", "time_column"):
                if t.given(f):
                    entry[f] = getattr(t, f)
            if t.end_time_column:
                entry["end_time_column"] = t.end_time_column
            if t.given("foreign_keys"):
                entry["foreign_keys"] = dict(t.foreign_keys)
            if t.given("semantic_types"):
                entry["semantic_types"] = {c: s.value for c, s in t.semantic_types.items()}
            tables[name] = entry
        out: dict[str, Any] = {"name": self.name, "tables": tables}
        if self.add_missing_parents:
            out["add_missing_parents"] = True
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    def save(self, path: str | Path) -> None:
        """Writes the spec with local sources made relative to the spec file, so it travels with its data."""
        target = Path(path).resolve()
        target.write_text(self.relative_to(target.parent).to_yaml())

    def relative_to(self, base_dir: str | Path) -> GraphSpec:
        """The same spec with every local source rewritten relative to `base_dir`.

        Sources written with variables (`${WAREHOUSE}/orders`) are kept as written when they still
        resolve to the same place from `base_dir` (always, for absolute expansions): the variable is the
        point of writing them so.
        """
        base = Path(base_dir).resolve()
        out = self.model_copy(deep=True)
        out._base_dir = base
        for name, t in out.tables.items():
            resolved = self.resolve_source(name)
            if "${" in t.source and out.resolve_source(name) == resolved:
                continue
            prefix, path = _split_prefix(resolved)
            if "://" in path or path.startswith(("catalog:", "memory:")):
                continue
            t.source = prefix + os.path.relpath(path, base)
        return out

    # ------------------------------------------------------------------ queries on the spec
    def table(self, name: str) -> TableSpec:
        if name not in self.tables:
            raise SpecError(f"unknown table '{name}'{_suggest(name, self.tables)}")
        return self.tables[name]

    def resolve_source(self, table: str) -> str:
        """The table's source with `${VAR:-default}` expanded and relative paths made absolute against
        the spec's folder."""
        src = expand_vars(self.table(table).source)
        if "://" in src or src.startswith(("catalog:", "memory:")):
            return src
        prefix, path = _split_prefix(src)
        p = Path(path).expanduser()
        if not p.is_absolute():
            p = self._base_dir / p
        # normpath: `specs/../data/x` and `data/x` are one source (and one graph id), symlinks kept.
        return prefix + os.path.normpath(p)

    def edges(self) -> list[tuple[str, str, str]]:
        """(child table, foreign-key column, parent table) for every link, in spec order."""
        return [(t, col, parent) for t, ts in self.tables.items() for col, parent in ts.foreign_keys.items()]

    def check(self) -> None:
        """Checks the spec is consistent with itself (checks against the data live in `validate`)."""
        for name, t in self.tables.items():
            for col, parent in t.foreign_keys.items():
                if parent not in self.tables:
                    raise SpecError(
                        f"table '{name}' foreign key '{col}' points to unknown table '{parent}'"
                        f"{_suggest(parent, self.tables)}"
                    )
                parent_spec = self.tables[parent]
                if parent_spec.given("primary_key") and parent_spec.primary_key is None:
                    raise SpecError(
                        f"table '{name}' foreign key '{col}' points to '{parent}', which has no primary key"
                    )
            if t.time_column is not None and t.time_column == t.primary_key:
                raise SpecError(f"table '{name}': time column '{t.time_column}' is also its primary key")
            if t.end_time_column is not None and t.time_column is None:
                raise SpecError(f"table '{name}': end_time_column needs a time_column")


_FORMAT_PREFIXES = ("delta:", "parquet:", "csv:", "sqlite:", "duckdb:")


def _split_prefix(source: str) -> tuple[str, str]:
    """('delta:', 'path') for an explicit format prefix, ('', source) otherwise."""
    for fmt in _FORMAT_PREFIXES:
        if source.startswith(fmt) and not source.startswith(fmt + "//"):
            return fmt, source[len(fmt) :]
    return "", source


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_vars(text: str) -> str:
    """`${NAME}` and `${NAME:-default}` from the environment, so checked-in specs and job configs can
    point at per-machine locations (the warehouse, the relfm home) without editing."""

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name == "RELFM_HOME" and name not in os.environ:
            return default if default is not None else str(Path(".relfm").resolve())
        value = os.environ.get(name, default)
        if value is None:
            raise SpecError(f"environment variable '{name}' is not set (used in '{text}')")
        return value

    return _VAR.sub(sub, text)


def _suggest(name: str, options: Any) -> str:
    import difflib

    close = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=0.6)
    return f" — did you mean '{close[0]}'?" if close else ""


def suggest(name: str, options: Any) -> str:
    """' — did you mean 'x'?' for the closest option, or ''. Shared by every error that names a choice."""
    return _suggest(name, options)
