"""Where generated blocks go: Parquet/Delta/CSV files written chunk by chunk, or memory.

Blocks of any size are buffered and written `chunk_rows` rows at a time, so memory stays bounded by
the chunk size while the content (which comes from blocks) does not depend on it. File writes (Parquet
encoding, Delta commits) run on one background thread, overlapping generation; its queue is short, so
at most a few chunks wait in memory.
"""

from __future__ import annotations

import json
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Literal, Protocol

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

Format = Literal["parquet", "delta", "csv"]


class Sink(Protocol):
    def write(self, table: pa.Table) -> None: ...
    def close(self) -> None: ...


class BackgroundWriter:
    """Runs write jobs in order on one thread; the first failure is raised to the producer."""

    def __init__(self, depth: int = 3) -> None:
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="synthetic-writer", daemon=True)
        self._thread.start()

    def submit(self, job: Callable[[], None]) -> None:
        if self._error is not None:
            raise self._error
        self._jobs.put(job)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            if self._error is None:
                try:
                    job()
                except BaseException as e:  # handed to the producer thread
                    self._error = e

    def close(self) -> None:
        """Waits for every submitted job; raises the first failure."""
        self._jobs.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _Chunked(ABC):
    """Buffers tables and hands `_flush` slices of exactly `chunk_rows` rows (the last may be shorter)."""

    def __init__(self, schema: pa.Schema, chunk_rows: int) -> None:
        self.schema = schema
        self.chunk_rows = chunk_rows
        self._parts: list[pa.Table] = []
        self._rows = 0
        self.written = 0

    def write(self, table: pa.Table) -> None:
        self._parts.append(table)
        self._rows += table.num_rows
        while self._rows >= self.chunk_rows:
            buf = pa.concat_tables(self._parts)
            self._emit(buf.slice(0, self.chunk_rows))
            rest = buf.slice(self.chunk_rows)
            self._parts, self._rows = ([rest] if rest.num_rows else []), rest.num_rows

    def close(self) -> None:
        if self._rows or not self.written:
            self._emit(pa.concat_tables(self._parts) if self._parts else self.schema.empty_table())
        self._parts, self._rows = [], 0
        self._finish()

    def _emit(self, table: pa.Table) -> None:
        self._flush(table.combine_chunks())
        self.written += table.num_rows

    @abstractmethod
    def _flush(self, table: pa.Table) -> None:
        """Writes one chunk: each sink (Parquet, Delta) says how."""

    def _finish(self) -> None:
        return None


class ParquetSink(_Chunked):
    """One Parquet file per table, one row group per chunk."""

    def __init__(self, path: Path, schema: pa.Schema, chunk_rows: int, bg: BackgroundWriter) -> None:
        super().__init__(schema, chunk_rows)
        self._writer = pq.ParquetWriter(path, schema)
        self._bg = bg

    def _flush(self, table: pa.Table) -> None:
        if table.num_rows:
            self._bg.submit(lambda: self._writer.write_table(table, row_group_size=table.num_rows))

    def _finish(self) -> None:
        self._bg.submit(self._writer.close)


class DeltaSink(_Chunked):
    """One Delta table per folder; every chunk is one append commit."""

    def __init__(self, path: Path, schema: pa.Schema, chunk_rows: int, bg: BackgroundWriter) -> None:
        super().__init__(schema, chunk_rows)
        self._path = path
        self._bg = bg

    def _flush(self, table: pa.Table) -> None:
        from deltalake import write_deltalake

        self._bg.submit(lambda: write_deltalake(str(self._path), table, mode="append"))


class CsvSink(_Chunked):
    """One CSV file per table; list columns are written as JSON arrays (CSV has no list type)."""

    def __init__(self, path: Path, schema: pa.Schema, chunk_rows: int) -> None:
        super().__init__(schema, chunk_rows)
        self._lists = [
            f.name for f in schema if pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
        ]
        csv_schema = pa.schema(
            [pa.field(f.name, pa.string()) if f.name in self._lists else f for f in schema]
        )
        self._writer = pacsv.CSVWriter(str(path), csv_schema)

    def _flush(self, table: pa.Table) -> None:
        for name in self._lists:
            i = table.schema.get_field_index(name)
            encoded = [None if v is None else json.dumps(v) for v in table.column(i).to_pylist()]
            table = table.set_column(i, pa.field(name, pa.string()), pa.array(encoded, pa.string()))
        self._writer.write_table(table)

    def _finish(self) -> None:
        self._writer.close()


class MemorySink(_Chunked):
    """Collects everything in memory (small databases for tests)."""

    def __init__(self, schema: pa.Schema, chunk_rows: int) -> None:
        super().__init__(schema, chunk_rows)
        self.parts: list[pa.Table] = []

    def _flush(self, table: pa.Table) -> None:
        self.parts.append(table)

    def result(self) -> pa.Table:
        return pa.concat_tables(self.parts) if self.parts else self.schema.empty_table()


def source_for(fmt: Format, table: str) -> str:
    """The spec `source` of a table written in `fmt` (relative to the output folder)."""
    return {"parquet": f"{table}.parquet", "delta": f"delta:{table}", "csv": f"{table}.csv"}[fmt]


def open_sink(
    fmt: Format, out_dir: Path, table: str, schema: pa.Schema, chunk_rows: int, bg: BackgroundWriter
) -> Sink:
    if fmt == "parquet":
        return ParquetSink(out_dir / f"{table}.parquet", schema, chunk_rows, bg)
    if fmt == "delta":
        return DeltaSink(out_dir / table, schema, chunk_rows, bg)
    return CsvSink(out_dir / f"{table}.csv", schema, chunk_rows)
