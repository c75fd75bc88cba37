"""The graph spec of a generated database: every key, link, time column and semantic type pinned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from graph_engine.spec import GraphSpec, SemanticType
from graph_engine.synthetic.config import ColumnConfig, SyntheticConfig
from graph_engine.synthetic.layout import foreign_keys

_STYPE: dict[str, SemanticType] = {
    "float": SemanticType.numerical,
    "int": SemanticType.numerical,
    "category": SemanticType.categorical,
    "bool": SemanticType.categorical,
    "tags": SemanticType.multicategorical,
    "text": SemanticType.text,
    "timestamp": SemanticType.timestamp,
    "embedding": SemanticType.embedding,
}


def semantic_type(col: ColumnConfig) -> SemanticType:
    return _STYPE[col.kind]


def spec_dict(cfg: SyntheticConfig, sources: dict[str, str]) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for t in cfg.tables:
        fks = foreign_keys(cfg, t)
        time_col = getattr(t, "time_column", None)
        stypes = {t.primary_key: SemanticType.id.value}
        stypes.update(dict.fromkeys(fks, SemanticType.id.value))
        if time_col is not None:
            stypes[time_col] = SemanticType.timestamp.value
        stypes.update({c.name: semantic_type(c).value for c in t.columns})
        tables[t.name] = {
            "source": sources[t.name],
            "primary_key": t.primary_key,
            "time_column": time_col,
            "foreign_keys": fks,
            "semantic_types": stypes,
        }
    return {"name": cfg.name, "tables": tables}


def build_spec(cfg: SyntheticConfig, sources: dict[str, str], base_dir: str | Path | None) -> GraphSpec:
    return GraphSpec.from_dict(spec_dict(cfg, sources), base_dir=base_dir)
