"""Warehouse I/O: read Delta/Parquet/CSV/SQLite/DuckDB tables, write Delta, normalise types."""

from graph_engine.io.sources import (
    SourceRef,
    SourceVersion,
    TableSource,
    list_tables,
    open_source,
    parse_source,
)

__all__ = ["SourceRef", "SourceVersion", "TableSource", "list_tables", "open_source", "parse_source"]
