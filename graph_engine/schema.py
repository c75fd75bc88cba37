"""The resolved shape of a graph: every column with its storage dtype and semantic type.

A `GraphSpec` may leave things out; a `GraphSchema` never does. It is produced by metadata inference
(from source data) and by a built graph's manifest, and it is what query validation and the model read,
so neither needs the raw data to know what a column is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from graph_engine.errors import SpecError
from graph_engine.spec import SemanticType, suggest

# Storage dtype families. Every source column maps to exactly one of them.
DType = Literal["int64", "float64", "bool", "string", "timestamp", "list_string", "list_float"]


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    dtype: DType
    stype: SemanticType


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: dict[str, ColumnInfo]
    primary_key: str | None = None
    time_column: str | None = None
    end_time_column: str | None = None
    foreign_keys: dict[str, str] = field(default_factory=dict)

    def column(self, name: str) -> ColumnInfo:
        if name not in self.columns:
            raise SpecError(f"unknown column '{self.name}.{name}'{suggest(name, self.columns)}")
        return self.columns[name]

    @property
    def feature_columns(self) -> list[str]:
        """Columns the model reads as features (keys and the time column are structure, not features)."""
        skip = {self.primary_key, self.time_column, *self.foreign_keys}
        return [c for c, info in self.columns.items() if c not in skip and info.stype != SemanticType.id]


@dataclass(frozen=True)
class GraphSchema:
    tables: dict[str, TableInfo]

    def table(self, name: str) -> TableInfo:
        if name not in self.tables:
            raise SpecError(f"unknown table '{name}'{suggest(name, self.tables)}")
        return self.tables[name]

    def edges(self) -> list[tuple[str, str, str]]:
        """(child table, foreign-key column, parent table) for every link."""
        return [(t, c, p) for t, ti in self.tables.items() for c, p in ti.foreign_keys.items()]

    def children_of(self, parent: str) -> list[tuple[str, str]]:
        """(child table, fk column) pairs whose foreign key points at `parent`."""
        return [(t, c) for t, c, p in self.edges() if p == parent]

    def to_dict(self) -> dict[str, Any]:
        return {
            name: {
                "primary_key": t.primary_key,
                "time_column": t.time_column,
                "end_time_column": t.end_time_column,
                "foreign_keys": dict(t.foreign_keys),
                "columns": {c: {"dtype": i.dtype, "stype": i.stype.value} for c, i in t.columns.items()},
            }
            for name, t in self.tables.items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GraphSchema:
        tables = {}
        for name, t in data.items():
            cols = {c: ColumnInfo(c, v["dtype"], SemanticType(v["stype"])) for c, v in t["columns"].items()}
            tables[name] = TableInfo(
                name=name,
                columns=cols,
                primary_key=t.get("primary_key"),
                time_column=t.get("time_column"),
                end_time_column=t.get("end_time_column"),
                foreign_keys=dict(t.get("foreign_keys", {})),
            )
        return cls(tables)
