"""Building a graph with PySpark: the same bytes as the local builder, for tables that outgrow one machine.

Run it three ways::

    build_spark(spec, out, BuildConfig())                       # from Python (a local[*] session here)
    spark-submit graph_engine/shards/spark_builder.py --spec graph.yaml --out DIR [--rows-per-shard N]
    relfm graph build graph.yaml --out DIR --engine spark

`out` must be a POSIX path every executor can write (a local folder in local mode; /dbfs/..., /Volumes/...
or a shared mount on a cluster): executors write the shard files, the driver writes the manifest.

Why the bytes match. Rows are ordered canonically (format.py), so row ids depend only on the data, not on
how Spark partitions it; every array is produced by the same `encode.*` functions the local builder calls,
on the same Arrow values in the same row order, one shard per task; segment padding uses the same
`segment_bases`. Source columns reach tasks as Arrow, are cast back to the type the local reader sees (the
source's Arrow schema: Spark reads unsigned integers as decimals, dictionaries as plain strings, ...) and
go through the same `normalize_column`; only keys and times, which Spark itself sorts and joins on, are
normalised with Spark expressions (integers to long, timestamps to UTC ns with the session in UTC).

How the work maps onto Spark (the wide rows of a table pass through one shuffle; the driver collects only
numbers per partition and shard, vocabularies and file entries):

- Keys: a narrow frame per table (primary key, times in ns, foreign-key values). Orphan foreign-key values
  come from anti-joins and, with `add_missing_parents`, are unioned into the parent's keys as key-only
  rows (time TIME_STATIC).
- Row ids: a sort (by primary key; tables without one by every scalar column, nulls first, then source
  position), persisted with partition id and position in partition. Big tables are range-partitioned;
  tables whose source metadata says they are small (`single_partition_rows`) are sorted by one task, which
  spares Spark the sampling job of a range partitioning. One map pass over the sorted partitions
  (`partition_stats`) counts rows, giving each partition's offset (row id = offset + position), and checks
  the primary key on the way: nulls, and duplicates, which sorting makes adjacent. For keyed tables only
  the narrow frame is sorted; the key at each shard start (one per shard, collected) then assigns source
  rows to shards without joining them to their row ids.
- Foreign keys: joins of the narrow rows with the parent's (key, row id); no match is -1, counted.
- Features: distinct values of categorical columns and embedding widths are collected (one job per table),
  then sorted by `encode.categorical_vocab`. Each table's source rows (grouped by shard) are co-grouped
  with its narrow rows (same shard): one task per shard writes every row array and segment array of that
  shard (`applyInArrow`) and returns its file entries (path, bytes, sha256), segment item counts and stats
  (time range, missing links, edges). One Spark job writes every table.
- P→F CSR: edges (parent row, child time, child row) grouped by parent shard; each task sorts its edges by
  (parent, time, child) and writes the child/time segments and per-parent counts (one job for all links).
- Segment starts need the padded global bases of earlier shards: the driver computes them from the item
  counts the tasks returned (`segment_bases`), and a last job turns each shard's count file into its start
  file. The driver writes the manifest with `finish_manifest(engine="spark")`.

Reading. Parquet sources and, without Delta jars, Delta tables (the snapshot's file list from delta-rs,
`TableSource.files()`, read with `spark.read.parquet`; partitioned tables and column mapping need the
native reader) are read by Spark. When the session has Delta (a cluster or Databricks: the
DeltaSparkSessionExtension is configured or its classes load, or RELFM_SPARK_DELTA=native), Delta paths are
read with `format("delta")` at the version delta-rs reports (or `path@N`), and `catalog:` sources with
`spark.table`; RELFM_SPARK_DELTA=files forces the file-list reader. CSV, SQLite and DuckDB are not the
scale path: they are read on the driver by the same `TableSource` as the local builder (so types and
nulls match exactly) and handed to Spark as Arrow.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graph_engine.errors import DataError, RelfmError, SourceError, SpecError
from graph_engine.infer import complete_spec, schema_from_spec
from graph_engine.io.normalize import normalize_column, storage_dtype
from graph_engine.io.sources import SourceFormat, SourceVersion, TableSource, parse_source
from graph_engine.schema import ColumnInfo, GraphSchema, TableInfo
from graph_engine.shards import encode
from graph_engine.shards.format import (
    DEFAULT_ROWS_PER_SHARD,
    TIME_NULL,
    TIME_STATIC,
    ArrayFile,
    ArrayInfo,
    check_rows_per_shard,
    col_array,
    fk_array,
    pk_array,
    rev_array,
    segment_bases,
    time_array,
    write_shard_file,
)
from graph_engine.shards.local_builder import (
    BuildConfig,
    check_columns,
    check_fk_type,
    finish_manifest,
    spec_is_complete,
    time_stats,
)
from graph_engine.spec import GraphSpec, SemanticType

Progress = Callable[[str], None]

# Session settings the build relies on (set for the build, restored after): times in UTC, Parquet
# nanosecond timestamps as their int64 value (Spark's own timestamps are microseconds).
SESSION_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.legacy.parquet.nanosAsLong": "true",
    # A table linking to itself joins its row ids with themselves; columns are only ever named by string,
    # so Spark's guard against ambiguous Dataset-qualified references only gets in the way.
    "spark.sql.analyzer.failAmbiguousSelfJoin": "false",
}
# Tables up to this many rows are sorted by a single task (no sampling job); see `_dense_ids`.
SINGLE_PARTITION_ROWS = 1_000_000
_US_MIN = -(2**63) // 1000 + 1  # microsecond times whose nanoseconds fit int64 (1677-2262)
_US_MAX = (2**63 - 1) // 1000
_ENTRY_SCHEMA = (
    "table string, array string, shard long, path string, nbytes long, sha256 string, dtype string, "
    "dim long, items long, stats string"
)
_ENTRY_ARROW = pa.schema(
    [
        ("table", pa.string()),
        ("array", pa.string()),
        ("shard", pa.int64()),
        ("path", pa.string()),
        ("nbytes", pa.int64()),
        ("sha256", pa.string()),
        ("dtype", pa.string()),
        ("dim", pa.int64()),
        ("items", pa.int64()),
        ("stats", pa.string()),
    ]
)
_TASK_ERROR = re.compile(r"graph_engine\.errors\.(\w+): (.+)")
_ERRORS: dict[str, type[RelfmError]] = {
    "SpecError": SpecError,
    "DataError": DataError,
    "SourceError": SourceError,
}


# ---------------------------------------------------------------------------------------------- session
def get_spark(spark: SparkSession | None = None) -> SparkSession:
    """The given session, the active one, or a new one (local[*] from Python; spark-submit's master)."""
    if spark is not None:
        return spark
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    # Python workers must run this interpreter (it has pyarrow and relfm), not whatever `python3` is.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.appName("relfm-graph-build").config(
        "spark.ui.showConsoleProgress", "false"
    )
    for k, v in SESSION_CONF.items():
        builder = builder.config(k, v)
    return builder.getOrCreate()


@contextmanager
def _session_conf(spark: SparkSession) -> Iterator[None]:
    """Sets SESSION_CONF for the build and restores what the caller had."""
    old: dict[str, str | None] = {}
    for k, v in SESSION_CONF.items():
        old[k] = spark.conf.get(k, None)
        spark.conf.set(k, v)
    try:
        yield
    finally:
        for k, prev in old.items():
            if prev is None:
                spark.conf.unset(k)
            else:
                spark.conf.set(k, prev)


def delta_is_native(spark: SparkSession) -> bool:
    """Whether this session reads Delta itself (cluster jars); otherwise Delta goes through file lists."""
    forced = os.environ.get("RELFM_SPARK_DELTA", "auto").lower()
    if forced in ("native", "files"):
        return forced == "native"
    conf = " ".join(
        str(spark.conf.get(k, "") or "") for k in ("spark.sql.extensions", "spark.sql.catalog.spark_catalog")
    )
    if "delta" in conf.lower():
        return True
    try:
        jvm = spark.sparkContext._jvm
    except Exception:  # Spark Connect (Databricks serverless): no JVM handle, and Delta is built in
        return True
    try:
        assert jvm is not None
        jvm.org.apache.spark.util.Utils.classForName("org.apache.spark.sql.delta.DeltaLog", True, False)
        return True
    except Exception:
        return False


@contextmanager
def _user_errors() -> Iterator[None]:
    """A relfm error raised inside a Spark task reaches the driver as a Python worker traceback: raise it
    again as itself, one line, so users and the CLI see what the local builder would have said."""
    try:
        yield
    except RelfmError:
        raise
    except Exception as e:
        found = _TASK_ERROR.findall(str(e))
        if not found:
            raise
        name, msg = found[-1]
        raise _ERRORS.get(name, RelfmError)(msg.strip()) from None


# ---------------------------------------------------------------------------------------------- reading
def _safe(i: int) -> str:
    """Spark-side column name of source column i (source names may hold dots, spaces or clash by case)."""
    return f"c{i}"


class _CatalogVersion:
    """What `finish_manifest` needs of a source Spark alone can read (catalog tables, native Delta)."""

    def __init__(self, version: SourceVersion) -> None:
        self._version = version

    def version(self) -> SourceVersion:
        return self._version


@dataclass
class _Read:
    """One source table as Spark reads it, plus the Arrow schema the local builder would see."""

    name: str
    names: list[str]
    ref_schema: pa.Schema
    reader: Callable[[bool], DataFrame]  # with_positions -> columns c0.. (and __src_file, __src_row)
    versioned: Any  # TableSource or _CatalogVersion
    n_source: int | None = None  # rows, where the source's metadata says so cheaply

    _frames: dict[bool, DataFrame] = field(default_factory=dict)

    def frame(self, positions: bool) -> DataFrame:
        """The table as a DataFrame (made once: every `spark.read` costs a schema-inference job)."""
        if positions not in self._frames:
            self._frames[positions] = self.reader(positions)
        return self._frames[positions]

    def safe(self, col: str) -> str:
        return _safe(self.names.index(col))

    def ref_type(self, col: str) -> pa.DataType:
        return self.ref_schema.field(col).type


def _restore_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def _restore(arr: pa.Array | pa.ChunkedArray, t: pa.DataType) -> pa.Array | pa.ChunkedArray:
    """Spark's Arrow for a column → the type the local reader sees, so `normalize_column` gets the same
    input (Spark reads uint64 as decimal(20,0), nanosecond timestamps as int64, large types as small)."""
    target = _restore_type(t)
    if arr.type == target:
        return arr
    try:
        return arr.cast(target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return arr


def _transport(name: str, table: pa.Table) -> pa.Table:
    """An Arrow table read on the driver, in types `createDataFrame` accepts; `_restore` undoes it."""
    from pyspark.sql.pandas.types import from_arrow_type

    cols: list[pa.ChunkedArray] = []
    for f, col in zip(table.schema, table.columns, strict=True):
        t = f.type
        if pa.types.is_dictionary(t):
            col, t = col.cast(t.value_type), t.value_type
        if pa.types.is_timestamp(t) and t.unit == "ns":
            col = col.cast(pa.int64())  # Spark timestamps are microseconds: keep every nanosecond
        elif pa.types.is_large_string(t) or pa.types.is_string_view(t):
            col = col.cast(pa.string())
        elif pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            col = col.cast(pa.list_(t.value_type))
        try:
            from_arrow_type(col.type)
        except Exception:
            # Types Spark cannot hold (uint64, time-of-day, null): hand over what the builder would use.
            col = normalize_column(name, f.name, col)
            if pa.types.is_large_string(col.type):
                col = col.cast(pa.string())
            elif pa.types.is_large_list(col.type):
                col = col.cast(pa.list_(col.type.value_type))
        cols.append(col)
    return pa.table(cols, names=table.schema.names)


def _positions_from_metadata(df: DataFrame) -> DataFrame:
    return df.select("*", F.col("_metadata.file_path").alias("__src_path"), F.col("_metadata.row_index"))


def _norm_path_col(c: Column) -> Column:
    return F.url_decode(F.regexp_replace(c, r"^file:(//)?", ""))


def _norm_path(p: str) -> str:
    from urllib.parse import unquote

    return unquote(re.sub(r"^file:(//)?", "", p))


def _file_list_frame(
    spark: SparkSession, name: str, files: list[str], empty: pa.Schema
) -> Callable[[bool], DataFrame]:
    """Reading a snapshot's files in their listed order: positions are (index in the list, row in file),
    the order the local builder's pyarrow dataset reads them in."""
    n_cols = len(empty)

    def frame(positions: bool) -> DataFrame:
        if not files:  # an empty snapshot
            return _driver_frame(spark, name, empty.empty_table())(positions)
        raw = spark.read.parquet(*files)
        if not positions:
            return raw.toDF(*[_safe(i) for i in range(n_cols)])
        raw = _positions_from_metadata(raw).toDF(
            *[_safe(i) for i in range(n_cols)], "__src_path", "__src_row"
        )
        ordinals = spark.createDataFrame(
            [(_norm_path(f), i) for i, f in enumerate(files)], "__path string, __src_file long"
        )
        joined = raw.join(
            F.broadcast(ordinals), _norm_path_col(raw["__src_path"]) == ordinals["__path"], "left"
        )
        # A path we could not match (an unusual file system) still orders deterministically, by path.
        return joined.select(
            *[_safe(i) for i in range(n_cols)],
            F.coalesce(F.col("__src_file"), F.lit(-1)).alias("__src_file"),
            F.col("__src_path"),
            F.col("__src_row"),
        )

    return frame


def _spark_frame(df: DataFrame, n_cols: int) -> Callable[[bool], DataFrame]:
    """A table Spark reads natively (catalog, Delta with jars): positions are (file path, row in file)."""

    def frame(positions: bool) -> DataFrame:
        if not positions:
            return df.toDF(*[_safe(i) for i in range(n_cols)])
        try:
            out = _positions_from_metadata(df).toDF(
                *[_safe(i) for i in range(n_cols)], "__src_path", "__src_row"
            )
            return out.withColumn("__src_file", F.lit(0).cast("long"))
        except Exception:  # no file metadata: order of ties among identical rows is then arbitrary
            out = df.toDF(*[_safe(i) for i in range(n_cols)])
            return (
                out.withColumn("__src_file", F.lit(0).cast("long"))
                .withColumn("__src_path", F.lit(""))
                .withColumn("__src_row", F.monotonically_increasing_id())
            )

    return frame


def _driver_frame(spark: SparkSession, name: str, table: pa.Table) -> Callable[[bool], DataFrame]:
    """A table read on the driver (CSV, SQLite, DuckDB): positions are its row numbers."""
    n = table.num_rows
    moved = _transport(name, table).rename_columns([_safe(i) for i in range(table.num_columns)])
    moved = moved.append_column("__src_row", pa.array(np.arange(n, dtype=np.int64)))
    df = spark.createDataFrame(moved)

    def frame(positions: bool) -> DataFrame:
        if not positions:
            return df.drop("__src_row")
        return df.withColumn("__src_file", F.lit(0).cast("long")).withColumn("__src_path", F.lit(""))

    return frame


def _delta_version_from_history(spark: SparkSession, target: str) -> int | None:
    try:
        row = spark.sql(f"DESCRIBE HISTORY {target} LIMIT 1").select("version").first()
    except Exception:
        return None
    return None if row is None else int(row[0])


def _check_file_list_readable(table: str, location: str, delta: Any) -> None:
    """A snapshot's Parquet files hold its rows as written only without partition columns (kept in the
    log), column mapping (physical names) and deletion vectors (deleted rows still in the files)."""
    meta = delta.metadata()
    features = set(delta.protocol().reader_features or [])
    why = None
    if meta.partition_columns:
        why = f"is partitioned by {list(meta.partition_columns)}"
    elif str(meta.configuration.get("delta.columnMapping.mode", "none")) != "none":
        why = "uses column mapping"
    elif "deletionVectors" in features:
        why = "has deletion vectors"
    if why:
        raise SourceError(
            f"table '{table}': Delta table {location} {why}; without Delta jars the Spark builder reads "
            "plain file lists only (on a cluster with Delta, RELFM_SPARK_DELTA=native) — or use --engine local"
        )


def read_source(spark: SparkSession, spec: GraphSpec, table: str, native_delta: bool) -> _Read:
    """One table of the spec as a Spark DataFrame, by the rules in the module docstring."""
    ref = parse_source(spec.resolve_source(table))
    if ref.format == SourceFormat.catalog:
        df = spark.table(ref.location)
        version = _delta_version_from_history(spark, ref.location)
        sv = SourceVersion(
            "catalog", ref.location, None, "unversioned" if version is None else f"delta:{version}"
        )
        return _from_spark(table, df, _CatalogVersion(sv))
    if ref.format == SourceFormat.delta and native_delta:
        reader = spark.read.format("delta")
        src: Any
        try:
            src = TableSource(ref, table)
            pinned: int | None = int(src.version().version.split(":", 1)[1])
        except (RelfmError, ValueError, IndexError):
            pinned = ref.version
            if pinned is None:
                pinned = _delta_version_from_history(spark, f"delta.`{ref.location}`")
            sv = SourceVersion(
                "delta", ref.location, None, f"delta:{pinned}" if pinned is not None else "unversioned"
            )
            src = _CatalogVersion(sv)
        if pinned is not None:
            reader = reader.option("versionAsOf", pinned)
        return _from_spark(table, reader.load(ref.location), src)
    src = TableSource(ref, table)
    schema = src.schema
    if ref.format in (SourceFormat.delta, SourceFormat.parquet):
        if ref.format == SourceFormat.delta:
            _check_file_list_readable(table, ref.location, src._open_delta())
        files = src.files()
        frame = _file_list_frame(spark, table, files, schema)
        return _Read(table, schema.names, schema, frame, src, n_source=src.num_rows())
    data = src.read()
    return _Read(table, schema.names, schema, _driver_frame(spark, table, data), src, n_source=data.num_rows)


def _from_spark(table: str, df: DataFrame, versioned: Any) -> _Read:
    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(df.schema, timezone="UTC")
    return _Read(table, df.columns, schema, _spark_frame(df, len(df.columns)), versioned)


def _schema_from_reads(spec: GraphSpec, reads: dict[str, _Read]) -> GraphSchema:
    """`infer.schema_from_spec` for sources only Spark can read (same rules, schemas from Spark)."""
    tables = {}
    for t, ts in spec.tables.items():
        cols = {}
        for f in reads[t].ref_schema:
            dtype = storage_dtype(f.type)
            if f.name in (ts.time_column, ts.end_time_column) or (
                ts.semantic_types.get(f.name) == SemanticType.timestamp
            ):
                dtype = "timestamp"
            if dtype is None or f.name not in ts.semantic_types:
                continue
            cols[f.name] = ColumnInfo(f.name, dtype, ts.semantic_types[f.name])
        tables[t] = TableInfo(
            t, cols, ts.primary_key, ts.time_column, ts.end_time_column, dict(ts.foreign_keys)
        )
    return GraphSchema(tables)


# ---------------------------------------------------------------------------------------------- expressions
def _key_expr(c: Column, ref_type: pa.DataType) -> Column:
    """A primary/foreign key as Spark joins and sorts it: long for integers, string otherwise."""
    return c.cast("long") if storage_dtype(ref_type) == "int64" else c.cast("string")


def _string_time_udf(table: str, column: str) -> Callable[[Column], Column]:
    """Strings → int64 ns by `normalize_column` itself (pandas' parser; errors name the column)."""

    def parse(arr: pa.Array) -> pa.Array:
        ts = normalize_column(table, column, arr, as_time=True).combine_chunks()
        return ts.cast(pa.int64())

    arrow_udf = getattr(F, "arrow_udf", None)
    if arrow_udf is not None:  # Spark >= 4.1
        return arrow_udf(parse, T.LongType())  # type: ignore[no-any-return]

    import pandas as pd
    from pyspark.sql.pandas.functions import pandas_udf

    def parse_pandas(s: pd.Series) -> pd.Series:
        return parse(pa.array(s, type=pa.large_string(), from_pandas=True)).to_pandas()

    return pandas_udf(parse_pandas, T.LongType())  # type: ignore[call-overload, no-any-return]


def _time_expr(
    table: str, column: str, c: Column, dt: T.DataType, ref_type: pa.DataType
) -> tuple[Column, Column]:
    """A time column as UTC ns (null stays null) and a flag for values outside the ns range."""
    if isinstance(dt, T.StringType):
        return _string_time_udf(table, column)(c), F.lit(False)
    if isinstance(dt, T.LongType) and pa.types.is_timestamp(ref_type):
        return c, F.lit(False)  # nanoseconds already (Parquet ns timestamps, ns timestamps from the driver)
    if isinstance(dt, T.TimestampType):
        us = F.unix_micros(c)
    elif isinstance(dt, T.TimestampNTZType):
        us = F.unix_micros(c.cast("timestamp"))  # the session is UTC: naive values are taken as UTC
    elif isinstance(dt, T.DateType):
        us = F.unix_date(c).cast("long") * F.lit(86_400_000_000)
    else:  # normalize_column on the source type raised already; this is a safety net
        raise DataError(
            f"table '{table}' column '{column}': a time column must hold timestamps, dates or ISO-8601 "
            f"strings, not {ref_type}"
        )
    ok = us.between(_US_MIN, _US_MAX)
    return F.when(ok, us * F.lit(1000)), c.isNotNull() & ~ok


def _order_keys(c: Column, dt: T.DataType) -> list[Column]:
    """Sort keys matching pyarrow's ascending sort with nulls at start: nulls, then NaN, then values,
    -0.0 equal to 0.0 (ties fall through to later columns and to source position, as a stable sort)."""
    if isinstance(dt, T.FloatType | T.DoubleType):
        cls = F.when(c.isNull(), 0).when(F.isnan(c), 1).otherwise(2)
        return [cls.asc(), F.when(c == 0, F.lit(0.0)).otherwise(c.cast("double")).asc_nulls_first()]
    return [c.asc_nulls_first()]


def _shard_of_key(k: Column, starts: list[Any], lo: int, hi: int) -> Column:
    """Shard of a primary key given the key at each shard start: a balanced CASE tree, log2(shards) deep."""
    if lo == hi:
        return F.lit(lo).cast("long")
    mid = (lo + hi + 1) // 2
    return F.when(k < F.lit(starts[mid]), _shard_of_key(k, starts, lo, mid - 1)).otherwise(
        _shard_of_key(k, starts, mid, hi)
    )


# ---------------------------------------------------------------------------------------------- task plans
@dataclass(frozen=True)
class _Feature:
    name: str
    safe: str
    stype: SemanticType
    restore: pa.DataType
    vocab: list[Any] | None = None
    dim: int = 0


@dataclass(frozen=True)
class _TablePlan:
    out: str
    table: str
    rows_per_shard: int
    n_rows: int
    n_shards: int
    keyed: bool
    key_width: int  # string keys: the width of the fixed-width bytes array; 0 for integer keys
    times: tuple[tuple[str, str, bool], ...]  # (time column, L column, is end time)
    fks: tuple[str, ...]  # foreign-key columns; their parent rows are L columns __p<i>
    features: tuple[_Feature, ...]


@dataclass(frozen=True)
class _CsrPlan:
    out: str
    parent: str
    child: str
    fk: str
    rows_per_shard: int
    n_parent: int
    n_shards: int
    others: tuple[str, ...]  # the child's other foreign keys: their parent rows go beside the children


def _entry(
    table: str, array: str, shard: int, f: ArrayFile, dtype: np.dtype, dim: int, items: int
) -> dict[str, Any]:
    return {
        "table": table,
        "array": array,
        "shard": shard,
        "path": f.path,
        "nbytes": f.bytes,
        "sha256": f.sha256,
        "dtype": str(dtype),
        "dim": dim,
        "items": items,
        "stats": None,
    }


def _sorted_by(table: pa.Table, col: str) -> pa.Table:
    return table.take(pc.sort_indices(table, sort_keys=[(col, "ascending")])) if table.num_rows else table


def encode_feature(
    table: str, f: _Feature, arr: pa.Array | pa.ChunkedArray
) -> tuple[dict[str, np.ndarray], tuple[str, np.ndarray] | None]:
    """The arrays of one feature column for some rows (row arrays, and a segment array with its name):
    the dispatch of `LocalBuilder._write_feature`, with vocabularies and embedding width fixed globally."""
    arr = normalize_column(table, f.name, _restore(arr, f.restore), as_time=f.stype == SemanticType.timestamp)
    st = f.stype
    if st == SemanticType.numerical:
        values, valid = encode.encode_numerical(arr)
    elif st == SemanticType.timestamp:
        values, valid = encode.encode_timestamp(arr)
    elif st == SemanticType.categorical:
        values, valid = encode.encode_categorical(arr, f.vocab or [])
    elif st == SemanticType.embedding:
        values, valid = encode.encode_embedding(table, f.name, arr)
        if values.shape[1] != f.dim:  # a shard with no vectors: zeros of the table's width
            values = np.zeros((len(valid), f.dim), dtype=np.float32)
    elif st == SemanticType.text:
        counts, raw, valid = encode.encode_text(arr)
        return {"count": counts, "valid": valid}, ("bytes", raw)
    elif st == SemanticType.multicategorical:
        counts, codes, valid = encode.encode_multicategorical(arr, f.vocab or [])
        return {"count": counts, "valid": valid}, ("codes", codes)
    else:
        return {}, None
    return {"value": values, "valid": valid}, None


def write_table_shard(plan: _TablePlan, w: pa.Table, lrows: pa.Table) -> pa.Table:
    """Task: every array of one table shard, and the shard's stats. `lrows` holds the shard's rows with
    their row ids (added key-only rows included), `w` the source rows of the same shard with features."""
    rps = plan.rows_per_shard
    lrows = _sorted_by(lrows, "__row")
    rows = np.asarray(lrows.column("__row").to_numpy(), dtype=np.int64)
    shard = int(rows[0] // rps) if len(rows) else 0
    lo, hi = shard * rps, min(shard * rps + rps, plan.n_rows)
    if len(rows) != hi - lo or (len(rows) and (rows[0] != lo or rows[-1] != hi - 1)):
        raise DataError(f"table '{plan.table}': shard {shard} received rows out of order (internal error)")
    last = shard == plan.n_shards - 1
    out = Path(plan.out)
    entries: list[dict[str, Any]] = []

    def put(name: str, data: np.ndarray, segment: bool = False) -> None:
        f = write_shard_file(out, plan.table, name, shard, data, pad=segment and not last)
        dim = int(data.shape[1]) if data.ndim == 2 else -1
        entries.append(_entry(plan.table, name, shard, f, data.dtype, dim, len(data) if segment else -1))

    n = len(rows)
    stats: dict[str, Any] = {}
    idx: pa.Array | None = None
    if plan.keyed:
        added = np.asarray(lrows.column("__added").to_numpy(zero_copy_only=False), dtype=bool)
        keys = lrows.column("k")
        w = _sorted_by(w, "k")
        source_keys = keys.filter(pa.array(~added))
        aligned = w.num_rows == 0 or bool(pc.all(pc.equal(w.column("k"), source_keys)).as_py())
        if w.num_rows != len(source_keys) or not aligned:
            raise DataError(f"table '{plan.table}': shard {shard} keys do not line up (internal error)")
        pk = encode.encode_keys(keys.combine_chunks())
        if plan.key_width:
            pk = pk.astype(f"S{plan.key_width}") if len(pk) else np.empty(0, dtype=f"S{plan.key_width}")
        put(pk_array(), pk)
        take = np.full(n, -1, dtype=np.int64)
        take[~added] = np.arange(w.num_rows, dtype=np.int64)
        idx = pa.array(take, mask=take < 0)
    else:
        w = _sorted_by(w, "__row")
    for source_col, col, end in plan.times:
        if pc.any(lrows.column(col + "_bad")).as_py():
            raise DataError(f"table '{plan.table}' column '{source_col}': timestamps outside 1677-2262")
        times = np.asarray(lrows.column(col).to_numpy(), dtype=np.int64)
        if not end:
            stats.update(time_stats(times))
        put(time_array(end), times)
    stats["missing_links"], stats["edges"] = [], []
    for i, fk in enumerate(plan.fks):
        parent = np.asarray(pc.fill_null(lrows.column(f"__p{i}"), -1).to_numpy(), dtype=np.int64)
        stats["missing_links"].append(int(pc.sum(lrows.column(f"__m{i}").cast(pa.int64())).as_py() or 0))
        stats["edges"].append(int((parent >= 0).sum()))
        put(fk_array(fk), parent)
    for f in plan.features:
        arr = w.column(f.safe)
        if idx is not None:
            arr = arr.take(idx)
        row_arrays, segment = encode_feature(plan.table, f, arr)
        for part, data in row_arrays.items():
            put(col_array(f.name, part), data)
        if segment is not None:
            put(col_array(f.name, segment[0]), segment[1], segment=True)
    entries.append({**_entry(plan.table, "", shard, ArrayFile("", 0, ""), np.dtype(np.int8), -1, -1)})
    entries[-1]["stats"] = json.dumps(stats)
    return pa.Table.from_pylist(entries, schema=_ENTRY_ARROW)


def write_csr_shard(plan: _CsrPlan, edges: pa.Table) -> pa.Table:
    """Task: the P→F CSR of one parent shard: children sorted by (parent, time, child row), as build_csr."""
    rps = plan.rows_per_shard
    shard = int(pc.max(edges.column("__pshard")).as_py())
    real = edges.filter(pc.greater_equal(edges.column("c"), 0))
    parents = np.asarray(real.column("p").to_numpy(), dtype=np.int64)
    children = np.asarray(real.column("c").to_numpy(), dtype=np.int64)
    times = np.asarray(real.column("tm").to_numpy(), dtype=np.int64)
    order = np.lexsort((children, times, parents))
    via = [
        (
            f"fk.{o}",
            np.asarray(pc.fill_null(real.column(f"o{j}"), -1).to_numpy(), dtype=np.int64)[order],
            True,
        )
        for j, o in enumerate(plan.others)
    ]
    lo, hi = shard * rps, min(shard * rps + rps, plan.n_parent)
    counts = np.bincount(parents - lo, minlength=max(hi - lo, 0)).astype(np.int64)
    if len(counts) != hi - lo:
        raise DataError(f"table '{plan.parent}': CSR shard {shard} holds foreign rows (internal error)")
    last = shard == plan.n_shards - 1
    out = Path(plan.out)
    entries = []
    for part, data, segment in (
        ("child", children[order], True),
        ("time", times[order], True),
        *via,
        ("count", counts, False),
    ):
        name = rev_array(plan.child, plan.fk, part)
        f = write_shard_file(out, plan.parent, name, shard, data, pad=segment and not last)
        entries.append(_entry(plan.parent, name, shard, f, data.dtype, -1, len(data) if segment else -1))
    return pa.Table.from_pylist(entries, schema=_ENTRY_ARROW)


def write_starts(
    out: str, jobs: list[dict[str, Any]], batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """Task: start = base + exclusive running sum of the shard's count file, for the jobs whose index
    comes in `batches` (a spark.range, so no shuffle is needed to spread the small job list)."""
    for b in batches:
        entries = []
        for i in b.column(0).to_pylist():
            r = jobs[i]
            counts = np.fromfile(Path(out) / r["count_path"], dtype=np.int64)
            starts = (int(r["base"]) + np.cumsum(counts) - counts).astype(np.int64)
            f = write_shard_file(Path(out), r["table"], r["start"], int(r["shard"]), starts, pad=False)
            entries.append(_entry(r["table"], r["start"], int(r["shard"]), f, starts.dtype, -1, -1))
        yield pa.RecordBatch.from_pylist(entries, schema=_ENTRY_ARROW)


_STATS_SCHEMA = "pid long, n long, present long, dups long, width long, added long"


def partition_stats(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Task: one sorted partition's row count, and for keyed tables its non-null keys, adjacent equal
    keys (duplicates), widest key in UTF-8 bytes and key-only rows."""
    pid, prev = None, None
    n = present = dups = width = added = 0
    for b in batches:
        if b.num_rows == 0:
            continue
        pid = b.column(0)[0].as_py()
        n += b.num_rows
        if b.num_columns == 1:
            continue
        keys = b.column(1).drop_null()
        present += len(keys)
        if len(keys):
            dups += int(
                pc.sum(pc.equal(keys.slice(1), keys.slice(0, len(keys) - 1)).cast(pa.int64())).as_py() or 0
            )
            dups += int(prev is not None and keys[0].as_py() == prev)
            prev = keys[-1].as_py()
            if not pa.types.is_integer(keys.type):
                width = max(width, int(pc.max(pc.binary_length(keys)).as_py() or 0))
        added += int(pc.sum(b.column(2).cast(pa.int64())).as_py() or 0)
    if pid is not None:
        yield pa.RecordBatch.from_pylist(
            [{"pid": pid, "n": n, "present": present, "dups": dups, "width": width, "added": added}]
        )


# Task functions as closures with type hints: Spark picks the UDF kind from the hints and argument count
# (a functools.partial defeats both), and cloudpickle ships the closure, which calls into this module.
def _table_task(plan: _TablePlan) -> Callable[[pa.Table, pa.Table], pa.Table]:
    def task(w: pa.Table, lrows: pa.Table) -> pa.Table:
        return write_table_shard(plan, w, lrows)

    return task


def _csr_task(plan: _CsrPlan) -> Callable[[pa.Table], pa.Table]:
    def task(edges: pa.Table) -> pa.Table:
        return write_csr_shard(plan, edges)

    return task


def _starts_task(
    out: str, jobs: list[dict[str, Any]]
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    def task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        return write_starts(out, jobs, batches)

    return task


def _union(frames: list[DataFrame]) -> DataFrame:
    return functools.reduce(DataFrame.unionByName, frames)


# ---------------------------------------------------------------------------------------------- the build
@dataclass
class _Table:
    """What the driver knows of one table as the build goes."""

    read: _Read
    keys: DataFrame | None = None  # narrow, source order: k, __t, __e (+ range flags), __fk<i>
    added: DataFrame | None = None  # key-only parent rows (k)
    ids: DataFrame | None = None  # canonical order with __row and __added (narrow if keyed, wide if not)
    n_rows: int = 0
    n_added: int = 0
    key_width: int = 0
    shard_starts: list[Any] = field(default_factory=list)  # keyed: the key of each shard's first row
    rows: DataFrame | None = None  # narrow rows as written: __row, __shard, __added, [k], times, __p/__m<i>
    features: list[_Feature] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    edges: dict[str, int] = field(default_factory=dict)


class SparkBuilder:
    """One build. Spark jobs are few on purpose (each costs a scheduling round trip): per table one sort
    (plus its sampling job) whose per-partition counts also check the primary key, one vocabulary job;
    then one job writes every table, one every CSR, one every segment start array."""

    def __init__(
        self,
        spec: GraphSpec,
        out: str | Path,
        config: BuildConfig | None = None,
        spark: SparkSession | None = None,
        progress: Progress | None = None,
        single_partition_rows: int = SINGLE_PARTITION_ROWS,
    ) -> None:
        self.cfg = config or BuildConfig()
        self.single_partition_rows = single_partition_rows
        check_rows_per_shard(self.cfg.rows_per_shard)
        self.spark = get_spark(spark)
        self.out = Path(out).resolve()
        self.progress = progress or (lambda msg: None)
        self.spec = spec
        self._cached: list[DataFrame] = []
        self._int_links: set[tuple[str, str]] = set()  # all-null foreign keys typed as their parent's key

    # ------------------------------------------------------------------ helpers
    def _persist(self, df: DataFrame) -> DataFrame:
        df = df.persist(StorageLevel.MEMORY_AND_DISK)
        self._cached.append(df)
        return df

    def _n_shards(self, n: int) -> int:
        return max(1, -(-n // self.cfg.rows_per_shard))

    def _shard_col(self, row: str = "__row") -> Column:
        return F.expr(f"{row} div {self.cfg.rows_per_shard}").cast("long")

    def _dense_ids(
        self, df: DataFrame, order: list[Column], keyed: bool, rows_hint: int | None
    ) -> tuple[DataFrame, int, dict[str, int]]:
        """Row ids 0..n-1 in `order`: a range-partitioned sort, persisted with each row's partition and
        position in it (monotonically_increasing_id = partition << 33 | position); per-partition counts
        give offsets, and row id = offset + position. The counting pass (one map stage, no shuffle) also
        checks keys: nulls, and duplicates, which the range partitioning keeps adjacent in one partition."""
        if rows_hint is not None and rows_hint <= self.single_partition_rows:
            # Small tables: one task sorts them; a range partitioning would first run a sampling job
            # over the whole input (its anti-joins included) only to find one partition is enough.
            ordered = df.repartition(1).sortWithinPartitions(*order)
        else:
            ordered = df.orderBy(*order)
        tagged = self._persist(
            ordered.withColumn("__pid", F.spark_partition_id()).withColumn(
                "__mono", F.monotonically_increasing_id()
            )
        )
        cols = ["__pid", "k", "__added"] if keyed else ["__pid"]
        got = tagged.select(*cols).mapInArrow(partition_stats, schema=_STATS_SCHEMA).toArrow().to_pylist()
        counts = {int(r["pid"]): int(r["n"]) for r in got}
        sums = {k: sum(int(r[k]) for r in got) for k in ("present", "dups", "added")}
        sums["width"] = max((int(r["width"]) for r in got), default=0)
        offsets, total = [], 0
        for pid in range(max(counts, default=-1) + 1):
            offsets.append(total)
            total += counts.get(pid, 0)
        if not offsets:
            return tagged.withColumn("__row", F.lit(0).cast("long")).drop("__pid", "__mono"), 0, sums
        off = F.element_at(F.array(*[F.lit(o).cast("long") for o in offsets]), F.col("__pid") + 1)
        pos = F.col("__mono") - F.shiftleft(F.col("__pid").cast("long"), 33)
        return tagged.withColumn("__row", off + pos).drop("__pid", "__mono"), total, sums

    # ------------------------------------------------------------------ phase 1: sources and key types
    def _open(self) -> None:
        spec = self.spec
        native = delta_is_native(self.spark)
        if not spec_is_complete(spec):
            if any(parse_source(spec.resolve_source(t)).format == SourceFormat.catalog for t in spec.tables):
                raise SpecError(
                    "graph spec: catalog sources need a complete spec (pin primary_key, time_column, "
                    "foreign_keys and semantic_types of every table; `relfm graph infer` prints one)"
                )
            spec = complete_spec(spec)
        self.spec = spec
        self.reads = {t: read_source(self.spark, spec, t, native) for t in spec.tables}
        check_columns(spec, {t: r.ref_schema for t, r in self.reads.items()})
        if all(isinstance(r.versioned, TableSource) for r in self.reads.values()):
            self.schema = schema_from_spec(spec)
        else:
            self.schema = _schema_from_reads(spec, self.reads)
        self.tables = {t: _Table(r) for t, r in self.reads.items()}

    def _normalized_type(self, t: str, col: str, as_time: bool = False) -> pa.DataType:
        """A column's normalised type; type-level errors exactly as the local builder raises them."""
        ref = self.reads[t].ref_type(col)
        return normalize_column(t, col, pa.chunked_array([], type=ref), as_time=as_time).type

    def _key_exprs(self, t: str, df: DataFrame) -> list[Column]:
        """k (primary key), __t/__e (times in ns, null stays null) with range flags, __fk<i> (foreign keys)."""
        ts = self.spec.tables[t]
        r = self.reads[t]
        cols: list[Column] = []
        if ts.primary_key:
            cols.append(_key_expr(F.col(r.safe(ts.primary_key)), r.ref_type(ts.primary_key)).alias("k"))
        for name, col in (("__t", ts.time_column), ("__e", ts.end_time_column)):
            if col:
                c = r.safe(col)
                ns, bad = _time_expr(t, col, F.col(c), df.schema[c].dataType, r.ref_type(col))
                cols += [ns.alias(name), bad.alias(name + "_bad")]
        for i, col in enumerate(ts.foreign_keys):
            ref = pa.int64() if (t, col) in self._int_links else r.ref_type(col)
            cols.append(_key_expr(F.col(r.safe(col)), ref).alias(f"__fk{i}"))
        return cols

    def _check_types(self) -> None:
        """The type-level checks of the local `_read_keys`: key and time column types, link types.
        (Null and duplicate keys are checked by the sort that numbers the rows, `_order_keyed`.)"""
        for t, ts in self.spec.tables.items():
            for col in (ts.primary_key, *ts.foreign_keys):
                if col:
                    self._normalized_type(t, col)
            for col in (ts.time_column, ts.end_time_column):
                if col:
                    self._normalized_type(t, col, as_time=True)
        for child, col, parent in self.spec.edges():
            pk = self.spec.tables[parent].primary_key
            child_type = self._normalized_type(child, col)
            parent_keys = None
            if pk:
                kind = storage_dtype(self._normalized_type(parent, pk))
                parent_keys = np.empty(0, dtype=np.int64 if kind == "int64" else "S1")
                if kind == "int64" and storage_dtype(child_type) != "int64" and self._all_null(child, col):
                    # As the local builder: a foreign key with no values takes its parent's key type.
                    child_type = pa.int64()
                    self._int_links.add((child, col))
            check_fk_type(child, col, pa.chunked_array([], type=child_type), parent, pk, parent_keys)
        linked = {child for child, _, _ in self.spec.edges()} if self.spec.add_missing_parents else set()
        for t, tb in self.tables.items():
            raw = tb.read.frame(False)
            tb.keys = raw.select(*self._key_exprs(t, raw))
            if t in linked:  # read again by every parent's orphan check: keep the narrow frame
                tb.keys = self._persist(tb.keys)

    def _all_null(self, t: str, col: str) -> bool:
        r = self.reads[t]
        return r.frame(False).where(F.col(r.safe(col)).isNotNull()).limit(1).count() == 0

    def _add_missing_parents(self) -> None:
        """Key-only parent rows for foreign-key values with no parent (distinct, unioned over links)."""
        if not self.spec.add_missing_parents:
            return
        for parent, ts in self.spec.tables.items():
            pt = self.tables[parent]
            if not ts.primary_key or pt.keys is None:
                continue
            missing: list[DataFrame] = []
            for child, col, p in self.spec.edges():
                if p != parent:
                    continue
                i = list(self.spec.tables[child].foreign_keys).index(col)
                ck = self.tables[child].keys
                assert ck is not None
                vals = ck.select(F.col(f"__fk{i}").alias("k")).where(F.col("k").isNotNull())
                missing.append(vals.join(pt.keys.select("k"), "k", "left_anti"))
            if missing:
                pt.added = _union(missing).distinct()

    # ------------------------------------------------------------------ phase 2: row ids and links
    def _order_keyed(self, t: str) -> None:
        """Rows (and key-only rows) by primary key; the same pass checks the key for nulls and duplicates."""
        tb = self.tables[t]
        ts = self.spec.tables[t]
        assert tb.keys is not None and ts.primary_key
        frame = tb.keys.withColumn("__added", F.lit(False))
        if tb.added is not None:
            extra = tb.added.withColumn("__added", F.lit(True))
            for f in frame.schema.fields:
                if f.name not in ("k", "__added"):
                    extra = extra.withColumn(f.name, F.lit(None).cast(f.dataType))
            frame = frame.unionByName(extra)
        string_key = storage_dtype(self.reads[t].ref_type(ts.primary_key)) == "string"
        hint = tb.read.n_source
        tb.ids, tb.n_rows, sums = self._dense_ids(frame, [F.col("k").asc()], keyed=True, rows_hint=hint)
        if tb.n_rows != sums["present"]:
            raise DataError(
                f"table '{t}' primary key '{ts.primary_key}' has {tb.n_rows - sums['present']} null values"
            )
        if sums["dups"]:
            self._duplicate_key_error(t, ts.primary_key)
        tb.n_added = sums["added"]
        tb.key_width = max(1, sums["width"]) if string_key else 0
        if tb.n_rows > self.cfg.rows_per_shard:
            got = tb.ids.where(F.col("__row") % self.cfg.rows_per_shard == 0).select("__row", "k").collect()
            tb.shard_starts = [r[1] for r in sorted(got, key=lambda r: int(r[0]))]

    def _duplicate_key_error(self, t: str, col: str) -> None:
        """The local builder's message: how many values repeat, and the repeated value met first in source
        order (pyarrow's value_counts order)."""
        r = self.reads[t]
        pos = r.frame(True).select(
            _key_expr(F.col(r.safe(col)), r.ref_type(col)).alias("k"),
            F.struct("__src_file", "__src_path", "__src_row").alias("pos"),
        )
        dups = (
            pos.groupBy("k")
            .agg(F.count(F.lit(1)).alias("n"), F.min("pos").alias("pos"))
            .where(F.col("n") > 1)
        )
        first = dups.orderBy("pos").select("k").first()
        n = dups.count()
        example = None if first is None else first[0]
        raise DataError(f"table '{t}' primary key '{col}' has {n} duplicate values (e.g. {example!r})")

    def _order_unkeyed(self, t: str) -> None:
        """Every scalar source column ascending, nulls first (the time column as parsed ns), then source
        position: where pyarrow's stable sort in the local builder leaves rows that tie."""
        tb = self.tables[t]
        r = tb.read
        ts = self.spec.tables[t]
        df = r.frame(True)
        wide = df.select("*", *self._key_exprs(t, df))
        order: list[Column] = []
        for f in r.ref_schema:
            if storage_dtype(f.type) in (None, "list_string", "list_float"):
                continue
            if f.name == ts.time_column:
                order.append(F.col("__t").asc_nulls_first())
            else:
                c = r.safe(f.name)
                order += _order_keys(F.col(c), df.schema[c].dataType)
        order += [F.col(c).asc() for c in ("__src_file", "__src_path", "__src_row")]
        hint = None if r.n_source is None else r.n_source * 4  # wide rows cost more than keys
        ids, tb.n_rows, _ = self._dense_ids(wide, order, keyed=False, rows_hint=hint)
        tb.ids = ids.withColumn("__added", F.lit(False))

    def _link(self, t: str) -> None:
        """The table's narrow rows as written: row id, shard, times, parent row of every foreign key (by
        join on the parent's key; no match is null, written as -1) and whether a value was missing."""
        tb = self.tables[t]
        ts = self.spec.tables[t]
        assert tb.ids is not None
        cols: list[Column] = [F.col("__row"), self._shard_col().alias("__shard"), F.col("__added")]
        if ts.primary_key:
            cols.append(F.col("k"))
        for name, col, out in (("__t", ts.time_column, "__time"), ("__e", ts.end_time_column, "__end")):
            if col:
                written = F.when(F.col("__added"), F.lit(TIME_STATIC)).otherwise(
                    F.coalesce(F.col(name), F.lit(TIME_NULL))
                )
                cols += [
                    written.alias(out),
                    F.coalesce(F.col(name + "_bad"), F.lit(False)).alias(out + "_bad"),
                ]
        cols += [F.col(f"__fk{i}") for i in range(len(ts.foreign_keys))]
        rows = tb.ids.select(*cols)
        for i, parent in enumerate(ts.foreign_keys.values()):
            pids = self.tables[parent].ids
            assert pids is not None
            rows = rows.join(
                pids.select(F.col("k").alias(f"__fk{i}"), F.col("__row").alias(f"__p{i}")), f"__fk{i}", "left"
            )
            rows = rows.withColumn(f"__m{i}", F.col(f"__fk{i}").isNotNull() & F.col(f"__p{i}").isNull())
            rows = rows.drop(f"__fk{i}")
        tb.rows = self._persist(rows)

    # ------------------------------------------------------------------ phase 3: features and writing
    def _source_rows(self, t: str) -> DataFrame:
        """The wide rows the shard tasks encode: shard, alignment key (k or __row), feature columns."""
        tb = self.tables[t]
        r = tb.read
        ts = self.spec.tables[t]
        safe = [r.safe(c) for c in self.schema.tables[t].feature_columns]
        if ts.primary_key:
            raw = r.frame(False)
            k = _key_expr(F.col(r.safe(ts.primary_key)), r.ref_type(ts.primary_key))
            starts = tb.shard_starts
            shard = _shard_of_key(k, starts, 0, len(starts) - 1) if len(starts) > 1 else F.lit(0)
            return raw.select(k.alias("k"), shard.cast("long").alias("__shard"), *safe)
        assert tb.ids is not None
        return tb.ids.select("__row", self._shard_col().alias("__shard"), *safe)

    def _features(self, t: str, src: DataFrame) -> list[_Feature]:
        """Feature plans with their global vocabularies and embedding widths: one job for every
        categorical and embedding column of the table (collect_set), one per multicategorical column."""
        ti = self.schema.tables[t]
        r = self.reads[t]
        aggs: list[Column] = []
        for col in ti.feature_columns:
            stype = ti.columns[col].stype
            c = F.col(r.safe(col))
            if stype == SemanticType.categorical:
                if isinstance(src.schema[r.safe(col)].dataType, T.FloatType | T.DoubleType):
                    # Spark's sets hold -0.0 and 0.0 as one value, pyarrow's unique as two: collect floats
                    # as text (Spark's float and double text round-trips exactly), parsed on the driver.
                    aggs.append(F.collect_set(c.cast("string")).alias(col))
                else:
                    aggs.append(F.collect_set(c).alias(col))
            elif stype == SemanticType.embedding:
                aggs.append(F.collect_set(F.when(c.isNotNull(), F.size(c))).alias(col))
        got = src.agg(*aggs).toArrow() if aggs else None
        out = []
        for col in ti.feature_columns:
            stype = ti.columns[col].stype
            safe, ref = r.safe(col), r.ref_type(col)
            vocab: list[Any] | None = None
            dim = 0
            if stype == SemanticType.categorical:
                assert got is not None
                values = got.column(col).combine_chunks().flatten()
                spark_type = src.schema[safe].dataType
                if isinstance(spark_type, T.FloatType | T.DoubleType):
                    parse = np.float32 if isinstance(spark_type, T.FloatType) else np.float64
                    floats = [parse(v) for v in values.to_pylist()]
                    values = pa.array(floats, type=pa.float32() if parse is np.float32 else pa.float64())
                vocab = encode.categorical_vocab(
                    normalize_column(t, col, _restore(values, ref)).combine_chunks()
                )
            elif stype == SemanticType.multicategorical:
                elems = src.select(F.explode(F.col(safe)).alias("v")).where(F.col("v").isNotNull()).distinct()
                vocab = encode.categorical_vocab(
                    elems.toArrow().column("v").cast(pa.large_string()).combine_chunks()
                )
            elif stype == SemanticType.embedding:
                assert got is not None
                dims = sorted(got.column(col).combine_chunks().flatten().to_pylist())
                if len(dims) > 1:
                    raise DataError(f"table '{t}' column '{col}': embeddings of different lengths {dims[:3]}")
                dim = int(dims[0]) if dims else 0
            elif stype not in (SemanticType.numerical, SemanticType.timestamp, SemanticType.text):
                continue
            out.append(_Feature(col, safe, stype, _restore_type(ref), vocab, dim))
        return out

    def _table_writer(self, t: str) -> tuple[DataFrame, _TablePlan, DataFrame, DataFrame]:
        tb = self.tables[t]
        ts = self.spec.tables[t]
        assert tb.rows is not None
        src = self._source_rows(t)
        tb.features = self._features(t, tb.read.frame(False) if ts.primary_key else src)
        times = tuple(
            (col, out, end)
            for col, out, end in ((ts.time_column, "__time", False), (ts.end_time_column, "__end", True))
            if col
        )
        plan = _TablePlan(
            out=str(self.out),
            table=t,
            rows_per_shard=self.cfg.rows_per_shard,
            n_rows=tb.n_rows,
            n_shards=self._n_shards(tb.n_rows),
            keyed=bool(ts.primary_key),
            key_width=tb.key_width,
            times=times,
            fks=tuple(ts.foreign_keys),
            features=tuple(tb.features),
        )
        narrow = tb.rows.select(
            "__row",
            "__shard",
            "__added",
            *(["k"] if ts.primary_key else []),
            *[c for _, out, _ in times for c in (out, out + "_bad")],
            *[c for i in range(len(ts.foreign_keys)) for c in (f"__p{i}", f"__m{i}")],
        )
        wide = src.select("__shard", "k" if ts.primary_key else "__row", *[f.safe for f in tb.features])
        job = (
            wide.groupBy("__shard")
            .cogroup(narrow.groupBy("__shard"))
            .applyInArrow(_table_task(plan), schema=_ENTRY_SCHEMA)
        )
        return job, plan, wide, narrow

    def _write_tables(self) -> list[dict[str, Any]]:
        """Every table's shards in one Spark job (a union of one co-grouped writer per table)."""
        jobs, empty = [], []
        for t in self.spec.tables:
            job, plan, wide, narrow = self._table_writer(t)
            if self.tables[t].n_rows:
                jobs.append(job)
            else:  # no rows, no groups: the one empty shard is written here
                empty.append(write_table_shard(plan, wide.limit(0).toArrow(), narrow.limit(0).toArrow()))
        entries: list[dict[str, Any]] = [e for tbl in empty for e in tbl.to_pylist()]
        if jobs:
            entries += _union(jobs).toArrow().to_pylist()
        return entries

    def _csr_writer(self, child: str, col: str, parent: str) -> DataFrame:
        ct, pt = self.tables[child], self.tables[parent]
        assert ct.rows is not None
        fks = list(self.spec.tables[child].foreign_keys)
        i = fks.index(col)
        others = [(j, o) for j, o in enumerate(fks) if o != col]
        tm = F.col("__time") if self.spec.tables[child].time_column else F.lit(TIME_STATIC)
        edges = ct.rows.where(F.col(f"__p{i}").isNotNull()).select(
            F.col("__row").alias("c"),
            F.col(f"__p{i}").alias("p"),
            tm.cast("long").alias("tm"),
            *[F.col(f"__p{j}").cast("long").alias(f"o{k}") for k, (j, _) in enumerate(others)],
        )
        edges = edges.withColumn("__pshard", self._shard_col("p"))
        n_shards = self._n_shards(pt.n_rows)
        # One empty marker per parent shard, so shards whose parents have no children are written too.
        markers = self.spark.range(n_shards).select(
            F.lit(-1).cast("long").alias("c"),
            F.lit(-1).cast("long").alias("p"),
            F.lit(0).cast("long").alias("tm"),
            *[F.lit(-1).cast("long").alias(f"o{k}") for k in range(len(others))],
            F.col("id").alias("__pshard"),
        )
        plan = _CsrPlan(
            str(self.out),
            parent,
            child,
            col,
            self.cfg.rows_per_shard,
            pt.n_rows,
            n_shards,
            tuple(o for _, o in others),
        )
        return (
            edges.unionByName(markers).groupBy("__pshard").applyInArrow(_csr_task(plan), schema=_ENTRY_SCHEMA)
        )

    def _write_csrs(self) -> list[dict[str, Any]]:
        jobs = [self._csr_writer(child, col, parent) for child, col, parent in self.spec.edges()]
        entries: list[dict[str, Any]] = _union(jobs).toArrow().to_pylist() if jobs else []
        return entries

    def _write_starts(
        self, segments: dict[tuple[str, str], ArrayInfo], items: dict[tuple[str, str], list[int]]
    ) -> list[dict[str, Any]]:
        """Start arrays of every segment array, from the shard count files and the padded bases."""
        jobs = []
        for (table, name), info in segments.items():
            if name.startswith("rev.") and not name.endswith(".child"):
                continue  # `.time` and `.fk.<other>` share their starts with `.child`
            stem = name.rsplit(".", 1)[0]
            bases = segment_bases(items[(table, name)], np.dtype(info.dtype).itemsize)
            for shard, base in enumerate(bases):
                count = f"tables/{table}/{stem}.count/{shard:06d}.bin"
                jobs.append(
                    {
                        "table": table,
                        "start": f"{stem}.start",
                        "count_path": count,
                        "shard": shard,
                        "base": base,
                    }
                )
        if not jobs:
            return []
        ids = self.spark.range(0, len(jobs), 1, numPartitions=min(len(jobs), 64))
        got = ids.mapInArrow(_starts_task(str(self.out), jobs), schema=_ENTRY_SCHEMA)
        entries: list[dict[str, Any]] = got.toArrow().to_pylist()
        return entries

    # ------------------------------------------------------------------ manifest
    def _assemble(
        self, entries: list[dict[str, Any]]
    ) -> tuple[dict[tuple[str, str], ArrayInfo], dict[tuple[str, str], list[int]]]:
        by_array: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for e in entries:
            by_array.setdefault((e["table"], e["array"]), []).append(e)
        infos: dict[tuple[str, str], ArrayInfo] = {}
        items: dict[tuple[str, str], list[int]] = {}
        for (table, name), es in by_array.items():
            es.sort(key=lambda e: int(e["shard"]))
            n_shards = self._n_shards(self.tables[table].n_rows)
            if [int(e["shard"]) for e in es] != list(range(n_shards)):
                raise DataError(
                    f"table '{table}' array '{name}': shards missing from the build (internal error)"
                )
            if not name:
                self._collect_stats(table, [json.loads(e["stats"]) for e in es])
                continue
            files = [ArrayFile(e["path"], int(e["nbytes"]), e["sha256"]) for e in es]
            dtype = es[0]["dtype"]
            if int(es[0]["items"]) >= 0:
                counts = [int(e["items"]) for e in es]
                bases = segment_bases(counts, np.dtype(dtype).itemsize)
                infos[(table, name)] = ArrayInfo(dtype, [bases[-1] + counts[-1]], "segments", files)
                items[(table, name)] = counts
            else:
                n = self.tables[table].n_rows
                dim = int(es[0]["dim"])
                infos[(table, name)] = ArrayInfo(dtype, [n] if dim < 0 else [n, dim], "rows", files)
        return infos, items

    def _collect_stats(self, t: str, shards: list[dict[str, Any]]) -> None:
        """The table's manifest entry from its shards' stats (what the local `_write_table` records)."""
        tb = self.tables[t]
        ts = self.spec.tables[t]
        meta: dict[str, Any] = {"rows": tb.n_rows, "added_parent_rows": tb.n_added}
        if ts.time_column:
            mins = [s["time_min"] for s in shards if s["time_min"] is not None]
            maxs = [s["time_max"] for s in shards if s["time_max"] is not None]
            meta["null_times"] = sum(int(s["null_times"]) for s in shards)
            meta["time_min"] = min(mins) if mins else None
            meta["time_max"] = max(maxs) if maxs else None
        meta["missing_links"] = {
            col: sum(int(s["missing_links"][i]) for s in shards) for i, col in enumerate(ts.foreign_keys)
        }
        tb.edges = {col: sum(int(s["edges"][i]) for s in shards) for i, col in enumerate(ts.foreign_keys)}
        meta["vocab"] = {f.name: f.vocab for f in tb.features if f.vocab is not None}
        tb.meta = meta

    def build(self) -> dict[str, Any]:
        t0 = time.time()
        with _session_conf(self.spark), _user_errors():
            try:
                return self._build(t0)
            finally:
                for df in self._cached:
                    df.unpersist()

    def _build(self, t0: float) -> dict[str, Any]:
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress("reading sources")
        self._open()
        self._check_types()
        self._add_missing_parents()
        for t, ts in self.spec.tables.items():
            self.progress(f"ordering {t}")
            if ts.primary_key:
                self._order_keyed(t)
            else:
                self._order_unkeyed(t)
        for t in self.spec.tables:
            self._link(t)
        self.progress("writing tables")
        entries = self._write_tables()
        self.progress("writing links")
        entries += self._write_csrs()
        infos, items = self._assemble(entries)
        segments = {k: v for k, v in infos.items() if v.layout == "segments"}
        self.progress("writing segment starts")
        starts, _ = self._assemble(self._write_starts(segments, items))
        infos.update(starts)
        tables: dict[str, dict[str, Any]] = {}
        for t, tb in self.tables.items():
            arrays = {name: info.to_dict() for (table, name), info in sorted(infos.items()) if table == t}
            tables[t] = {**tb.meta, "arrays": arrays}
        edges = [
            {
                "child": child,
                "fk": col,
                "parent": parent,
                "edges": self.tables[child].edges[col],
                "missing_links": self.tables[child].meta["missing_links"][col],
            }
            for child, col, parent in self.spec.edges()
        ]
        versions = {t: r.versioned for t, r in self.reads.items()}
        return finish_manifest(
            self.spec,
            self.schema,
            versions,
            tables,
            edges,
            self.cfg.rows_per_shard,
            self.out,
            engine="spark",
            seconds=time.time() - t0,
        )


def build_spark(
    spec: GraphSpec,
    out: str | Path,
    config: BuildConfig | None = None,
    spark: SparkSession | None = None,
    progress: Progress | None = None,
    single_partition_rows: int = SINGLE_PARTITION_ROWS,
) -> dict[str, Any]:
    """Builds `spec` into `out` with Spark; same files as `build_local`, manifest "build" aside.
    Tables of at most `single_partition_rows` rows (by source metadata) are numbered by one task."""
    return SparkBuilder(spec, out, config, spark, progress, single_partition_rows).build()


# ---------------------------------------------------------------------------------------------- spark-submit
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="spark_builder.py",
        description="Build a relfm graph with Spark (spark-submit graph_engine/shards/spark_builder.py ...).",
    )
    parser.add_argument("--spec", required=True, help="graph spec (YAML)")
    parser.add_argument("--out", required=True, help="output folder, visible to every executor")
    parser.add_argument("--rows-per-shard", type=int, default=DEFAULT_ROWS_PER_SHARD)
    args = parser.parse_args(argv)
    try:
        spec = GraphSpec.from_yaml(args.spec)
        manifest = build_spark(
            spec,
            args.out,
            BuildConfig(rows_per_shard=args.rows_per_shard),
            progress=lambda msg: print(f"relfm: {msg}", file=sys.stderr, flush=True),
        )
    except RelfmError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return e.exit_code
    summary = {k: manifest[k] for k in ("graph_id", "checksum", "counts", "build")}
    print(json.dumps({"out": str(Path(args.out).resolve()), **summary}, sort_keys=True))
    return 0


if __name__ == "__main__":
    # Run as a script (spark-submit): use the package module, so tasks pickle references to it.
    from graph_engine.shards import spark_builder as _module

    sys.exit(_module.main())
