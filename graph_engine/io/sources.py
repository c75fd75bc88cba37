"""Reading warehouse tables: Delta (delta-rs), Parquet, CSV, SQLite and DuckDB.

A source string names one table. Its format is detected from the path, or given by a prefix:

    warehouse/orders            a Delta table (folder with _delta_log), or a folder of Parquet/CSV files
    warehouse/orders@12         a Delta table pinned to version 12
    data/orders.parquet         a Parquet file            data/orders.csv    a CSV file
    shop.sqlite#orders          a table of a SQLite file  shop.duckdb#orders a table of a DuckDB file
    delta:s3://bucket/orders    an explicit format prefix (delta: parquet: csv: sqlite: duckdb:)
    catalog:main.sales.orders   a catalog table, readable only by the Spark builder on a cluster

Every read also yields a `SourceVersion`, recorded in manifests so every artefact names the exact data it
came from: the Delta version for Delta tables, a fingerprint of file names, sizes and mtimes otherwise.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.dataset as pads

from graph_engine.errors import SourceError

# Ergast writes SQL NULL as \N; R packages write NA. Both are nulls, as are pyarrow's defaults.
CSV_NULLS = ["", "NA", "N/A", "NULL", "null", "NaN", "nan", "\\N", "#N/A", "None"]


class SourceFormat(StrEnum):
    delta = "delta"
    parquet = "parquet"
    csv = "csv"
    sqlite = "sqlite"
    duckdb = "duckdb"
    catalog = "catalog"


_SUFFIXES = {
    ".parquet": SourceFormat.parquet,
    ".pq": SourceFormat.parquet,
    ".csv": SourceFormat.csv,
    ".tsv": SourceFormat.csv,
    ".gz": SourceFormat.csv,
    ".zip": SourceFormat.csv,
    ".sqlite": SourceFormat.sqlite,
    ".sqlite3": SourceFormat.sqlite,
    ".db": SourceFormat.sqlite,
    ".duckdb": SourceFormat.duckdb,
    ".ddb": SourceFormat.duckdb,
}


@dataclass(frozen=True)
class SourceRef:
    """A parsed source string."""

    format: SourceFormat
    location: str
    table: str | None = None
    version: int | None = None

    @property
    def is_remote(self) -> bool:
        return "://" in self.location and not self.location.startswith("file://")

    def __str__(self) -> str:
        s = f"{self.format.value}:{self.location}"
        if self.table:
            s += f"#{self.table}"
        if self.version is not None:
            s += f"@{self.version}"
        return s


@dataclass(frozen=True)
class SourceVersion:
    """What exactly was read: recorded in manifests and MLflow so results name their inputs."""

    format: str
    location: str
    table: str | None
    version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_source(source: str) -> SourceRef:
    """Turns a source string into a `SourceRef` (format detection, `@version`, `#table`)."""
    s = source.strip()
    if s.startswith("catalog:"):
        return SourceRef(SourceFormat.catalog, s[len("catalog:") :])
    fmt: SourceFormat | None = None
    for f in SourceFormat:
        if s.startswith(f.value + ":") and not s.startswith(f.value + "://"):
            fmt, s = f, s[len(f.value) + 1 :]
            break
    version: int | None = None
    m = re.fullmatch(r"(.+)@(\d+)", s)
    if m:
        s, version = m.group(1), int(m.group(2))
    table: str | None = None
    if "#" in s:
        s, table = s.rsplit("#", 1)
    if s.startswith("file://"):
        s = s[len("file://") :]
    if fmt is None:
        fmt = _detect_format(s, table)
    if version is not None and fmt != SourceFormat.delta:
        raise SourceError(f"source '{source}': '@{version}' pins a Delta version, but this is {fmt.value}")
    if fmt in (SourceFormat.sqlite, SourceFormat.duckdb) and not table:
        raise SourceError(f"source '{source}': name the table of the {fmt.value} file as 'file#table'")
    return SourceRef(fmt, s, table, version)


def _detect_format(location: str, table: str | None) -> SourceFormat:
    if "://" in location:
        suffix = Path(location.split("?")[0]).suffix.lower()
        return _SUFFIXES.get(suffix, SourceFormat.delta)
    p = Path(location)
    if p.is_dir():
        if (p / "_delta_log").is_dir():
            return SourceFormat.delta
        files = _data_files(p)
        if files and all(f.suffix.lower() in (".csv", ".tsv", ".gz") for f in files):
            return SourceFormat.csv
        return SourceFormat.parquet
    if not p.exists():
        raise SourceError(f"source '{location}': no such file or folder")
    suffix = p.suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    raise SourceError(f"source '{location}': cannot tell its format; prefix it with delta:, parquet: or csv:")


class TableSource:
    """One opened source table: schema, version, and chunked reads (so big tables never sit in memory)."""

    def __init__(self, ref: SourceRef, name: str = "") -> None:
        self.ref = ref
        self.name = name or ref.table or Path(ref.location).stem
        if ref.format == SourceFormat.catalog:
            raise SourceError(
                f"table '{self.name}': catalog source '{ref.location}' can only be read by the Spark builder "
                "on a cluster (relfm graph build --engine spark)"
            )
        if not ref.is_remote and not Path(ref.location).exists():
            raise SourceError(f"table '{self.name}': source '{ref.location}' does not exist")
        self._delta: Any = None
        self._dataset: pads.Dataset | None = None
        self._csv_table: pa.Table | None = None
        self._schema: pa.Schema | None = None

    # ------------------------------------------------------------------ format-specific openers
    def _open_delta(self) -> Any:
        if self._delta is None:
            from deltalake import DeltaTable

            try:
                self._delta = DeltaTable(self.ref.location, version=self.ref.version)
            except Exception as e:  # delta-rs raises several types; all mean "cannot open this table"
                first = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise SourceError(
                    f"table '{self.name}': cannot open Delta table {self.ref}: {first}"
                ) from None
        return self._delta

    def _open_dataset(self) -> pads.Dataset:
        if self._dataset is None:
            if self.ref.format == SourceFormat.delta:
                self._dataset = self._open_delta().to_pyarrow_dataset()
            elif self.ref.format == SourceFormat.parquet:
                try:
                    self._dataset = pads.dataset(self.ref.location, format="parquet")
                except (pa.ArrowInvalid, OSError) as e:
                    raise SourceError(
                        f"table '{self.name}': cannot read Parquet {self.ref.location}: {e}"
                    ) from None
            else:
                self._dataset = pads.dataset(self._read_csv())
        return self._dataset

    def _read_csv(self) -> pa.Table:
        # CSV is not the scale path: it is read whole, with types inferred over the whole file.
        if self._csv_table is None:
            p = Path(self.ref.location)
            # Like Parquet datasets, skip hidden and marker files (Spark's _SUCCESS, .crc checksums).
            files = sorted(_data_files(p)) if p.is_dir() else [p]
            if not files:
                raise SourceError(f"table '{self.name}': no CSV files in {p}")
            parts = []
            for f in files:
                try:
                    parts.append(_read_csv_file(f))
                except pa.ArrowInvalid as e:
                    msg = str(e).splitlines()[0]
                    raise SourceError(f"table '{self.name}': cannot parse CSV {f}: {msg}") from None
            try:
                self._csv_table = pa.concat_tables(parts, promote_options="permissive")
            except pa.ArrowInvalid as e:
                raise SourceError(f"table '{self.name}': CSV files disagree on columns: {e}") from None
        return self._csv_table

    # ------------------------------------------------------------------ public API
    @property
    def schema(self) -> pa.Schema:
        if self._schema is None:
            if self.ref.format == SourceFormat.sqlite:
                with database_errors(self.ref, f"table '{self.name}': "):
                    self._schema = _sqlite_schema(self.ref)
            elif self.ref.format == SourceFormat.duckdb:
                with database_errors(self.ref, f"table '{self.name}': "):
                    self._schema = _duckdb_schema(self.ref)
            else:
                self._schema = self._open_dataset().schema
        return self._schema

    def num_rows(self) -> int:
        if self.ref.format in (SourceFormat.sqlite, SourceFormat.duckdb):
            return sum(b.num_rows for b in self.batches(columns=[self.schema.names[0]]))
        return int(self._open_dataset().count_rows())

    def version(self) -> SourceVersion:
        if self.ref.format == SourceFormat.delta:
            v = f"delta:{self._open_delta().version()}"
        elif self.ref.is_remote:
            v = "unversioned"
        else:
            v = "files:" + _fingerprint(Path(self.ref.location))
        return SourceVersion(self.ref.format.value, self.ref.location, self.ref.table, v)

    def files(self) -> list[str]:
        """The data files of this snapshot (what a local Spark job reads for a Delta table)."""
        if self.ref.format == SourceFormat.delta:
            return list(self._open_delta().file_uris())
        if self.ref.format in (SourceFormat.parquet, SourceFormat.csv):
            ds = self._open_dataset()
            return list(ds.files) if isinstance(ds, pads.FileSystemDataset) else [self.ref.location]
        raise SourceError(f"table '{self.name}': {self.ref.format.value} sources have no file list")

    def batches(
        self, columns: list[str] | None = None, batch_rows: int = 1 << 20
    ) -> Iterator[pa.RecordBatch]:
        """Streams the table in record batches in a stable order (file order, then row order)."""
        self._check_columns(columns)
        if self.ref.format == SourceFormat.sqlite:
            schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
            with database_errors(self.ref, f"table '{self.name}': "):
                yield from _sqlite_batches(self.ref, schema, batch_rows)
        elif self.ref.format == SourceFormat.duckdb:
            names = columns or self.schema.names
            with database_errors(self.ref, f"table '{self.name}': "):
                yield from _duckdb_batches(self.ref, names, batch_rows)
        else:
            yield from self._open_dataset().to_batches(columns=columns, batch_size=batch_rows)

    def read(self, columns: list[str] | None = None, limit: int | None = None) -> pa.Table:
        self._check_columns(columns)
        if limit is None and self._is_dataset():
            return self._open_dataset().to_table(columns=columns)
        out: list[pa.RecordBatch] = []
        n = 0
        for b in self.batches(columns, batch_rows=min(limit or (1 << 20), 1 << 20)):
            out.append(b)
            n += b.num_rows
            if limit is not None and n >= limit:
                break
        if not out:
            return self._empty(columns)
        t = pa.Table.from_batches(out)
        return t.slice(0, limit) if limit is not None else t

    # ------------------------------------------------------------------ helpers
    def _is_dataset(self) -> bool:
        """Delta, Parquet and CSV are read through pyarrow datasets; SQLite and DuckDB through queries."""
        return self.ref.format not in (SourceFormat.sqlite, SourceFormat.duckdb)

    def _empty(self, columns: list[str] | None) -> pa.Table:
        schema = self.schema
        return schema.empty_table().select(columns) if columns else schema.empty_table()

    def _check_columns(self, columns: list[str] | None) -> None:
        if not columns:
            return
        names = self.schema.names
        for c in columns:
            if c not in names:
                from graph_engine.spec import suggest

                raise SourceError(f"unknown column '{self.name}.{c}'{suggest(c, names)}")


def open_source(source: str | SourceRef, name: str = "") -> TableSource:
    ref = parse_source(source) if isinstance(source, str) else source
    return TableSource(ref, name)


def _read_csv_file(path: Path) -> pa.Table:
    delimiter = "\t" if path.suffix.lower() == ".tsv" or path.name.endswith(".tsv.gz") else ","
    convert = pacsv.ConvertOptions(
        null_values=CSV_NULLS, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    parse = pacsv.ParseOptions(delimiter=delimiter)
    read = pacsv.ReadOptions(block_size=1 << 26)
    if path.suffix.lower() == ".zip":
        import io
        import zipfile

        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if not n.endswith("/")]
            data = z.read(names[0])
        return pacsv.read_csv(
            io.BytesIO(data), read_options=read, parse_options=parse, convert_options=convert
        )
    return pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)


def _data_files(folder: Path) -> list[Path]:
    """Data files under a folder, skipping hidden and marker files and folders (`.crc`, `_SUCCESS`,
    `_delta_log`), as pyarrow datasets do."""
    return [
        f
        for f in folder.rglob("*")
        if f.is_file() and not any(part.startswith((".", "_")) for part in f.relative_to(folder).parts)
    ]


def _fingerprint(path: Path) -> str:
    """Cheap content fingerprint: names, sizes and modification times of the files behind a source."""
    files = sorted(f for f in path.rglob("*") if f.is_file()) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        rel = os.path.relpath(f, path) if path.is_dir() else f.name
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def database_errors(ref: SourceRef, prefix: str = "") -> Iterator[None]:
    """SQLite and DuckDB errors (not a database, locked, corrupt) as one-line `SourceError`s."""
    kinds: tuple[type[BaseException], ...] = (sqlite3.Error,)
    if ref.format == SourceFormat.duckdb:
        import duckdb

        kinds = (duckdb.Error,)
    try:
        yield
    except kinds as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SourceError(f"{prefix}cannot read {ref.format.value} file {ref.location}: {first}") from None


def _sqlite_connect(ref: SourceRef) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{ref.location}?mode=ro", uri=True)


def _sqlite_schema(ref: SourceRef) -> pa.Schema:
    """One Arrow type per column for the whole table, so every batch (and an empty table) has the same
    schema: SQLite types values, not columns, so we look at the storage classes actually present and fall
    back to the declared type's affinity for columns that hold only nulls."""
    assert ref.table is not None
    con = _sqlite_connect(ref)
    try:
        info = [(r[1], str(r[2] or "")) for r in con.execute(f"PRAGMA table_info({_quote_ident(ref.table)})")]
        if not info:
            tables = [
                r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type IN ('table','view')")
            ]
            from graph_engine.spec import suggest

            raise SourceError(f"table '{ref.table}' not found in {ref.location}{suggest(ref.table, tables)}")
        fields = []
        for col, declared in info:
            q = f"SELECT DISTINCT typeof({_quote_ident(col)}) FROM {_quote_ident(ref.table)}"
            kinds = {r[0] for r in con.execute(q)} - {"null"}
            fields.append(pa.field(col, _sqlite_type(kinds, declared)))
        return pa.schema(fields)
    finally:
        con.close()


def _sqlite_type(kinds: set[str], declared: str) -> pa.DataType:
    # A column mixing integers and reals is float; anything holding text is string (the type check
    # against the spec happens in validation).
    if kinds:
        if kinds == {"integer"}:
            return pa.int64()
        if kinds <= {"integer", "real"}:
            return pa.float64()
        if kinds == {"blob"}:
            return pa.binary()
        return pa.string()
    d = declared.upper()  # SQLite's affinity rules (https://sqlite.org/datatype3.html, 3.1)
    if "INT" in d:
        return pa.int64()
    if any(k in d for k in ("CHAR", "CLOB", "TEXT")):
        return pa.string()
    if any(k in d for k in ("REAL", "FLOA", "DOUB")):
        return pa.float64()
    return pa.string()


def _sqlite_batches(ref: SourceRef, schema: pa.Schema, batch_rows: int) -> Iterator[pa.RecordBatch]:
    assert ref.table is not None
    con = _sqlite_connect(ref)
    try:
        sel = ", ".join(_quote_ident(c) for c in schema.names)
        # rowid order is insertion order for ordinary tables; views and WITHOUT ROWID tables have no rowid.
        try:
            cur = con.execute(f"SELECT {sel} FROM {_quote_ident(ref.table)} ORDER BY rowid")
        except sqlite3.OperationalError:
            cur = con.execute(f"SELECT {sel} FROM {_quote_ident(ref.table)}")
        while True:
            rows = cur.fetchmany(batch_rows)
            if not rows:
                break
            arrays = [_sqlite_column([r[i] for r in rows], f.type) for i, f in enumerate(schema)]
            yield pa.RecordBatch.from_arrays(arrays, schema=schema)
    finally:
        con.close()


def _sqlite_column(values: list[Any], typ: pa.DataType) -> pa.Array:
    if pa.types.is_string(typ):
        return pa.array([None if v is None else str(v) for v in values], type=typ)
    if pa.types.is_floating(typ):
        return pa.array([None if v is None else float(v) for v in values], type=typ)
    return pa.array(values, type=typ)


def _duckdb_schema(ref: SourceRef) -> pa.Schema:
    import duckdb

    assert ref.table is not None
    con = duckdb.connect(ref.location, read_only=True)
    try:
        try:
            return con.sql(f"SELECT * FROM {_quote_ident(ref.table)} LIMIT 0").to_arrow_table().schema
        except duckdb.Error:
            tables = [r[0] for r in con.execute("SHOW TABLES").fetchall()]
            from graph_engine.spec import suggest

            raise SourceError(
                f"table '{ref.table}' not found in {ref.location}{suggest(ref.table, tables)}"
            ) from None
    finally:
        con.close()


def _duckdb_batches(ref: SourceRef, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    import duckdb

    assert ref.table is not None
    con = duckdb.connect(ref.location, read_only=True)
    try:
        sel = ", ".join(_quote_ident(c) for c in columns)
        yield from con.sql(f"SELECT {sel} FROM {_quote_ident(ref.table)}").to_arrow_reader(batch_rows)
    finally:
        con.close()


def list_tables(location: str) -> dict[str, str]:
    """Table name → source string for everything under a folder or inside a SQLite/DuckDB file.

    This is what `relfm graph infer SOURCE` starts from.
    """
    p = Path(location).resolve()
    if not p.exists():
        raise SourceError(f"source '{location}': no such file or folder")
    if p.is_file():
        fmt = _SUFFIXES.get(p.suffix.lower())
        if fmt == SourceFormat.sqlite:
            with database_errors(SourceRef(fmt, str(p)), f"source '{location}': "):
                con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
                try:
                    names = [
                        r[0]
                        for r in con.execute(
                            "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
                            " ORDER BY name"
                        )
                    ]
                finally:
                    con.close()
            return {n: f"sqlite:{p}#{n}" for n in names}
        if fmt == SourceFormat.duckdb:
            import duckdb

            with database_errors(SourceRef(fmt, str(p)), f"source '{location}': "):
                con2 = duckdb.connect(str(p), read_only=True)
                try:
                    names = sorted(r[0] for r in con2.execute("SHOW TABLES").fetchall())
                finally:
                    con2.close()
            return {n: f"duckdb:{p}#{n}" for n in names}
        return {_table_name(p): str(p)}
    out: dict[str, str] = {}
    if (p / "_delta_log").is_dir():
        return {p.name: str(p)}
    for child in sorted(p.iterdir()):
        if child.name.startswith((".", "_")):
            continue
        if child.is_dir():
            if (child / "_delta_log").is_dir() or any(
                f.suffix.lower() in (".parquet", ".pq", ".csv", ".tsv", ".gz") for f in _data_files(child)
            ):
                out[child.name] = str(child)
        elif child.suffix.lower() in (".parquet", ".pq", ".csv", ".tsv", ".gz", ".zip"):
            out[_table_name(child)] = str(child)
    if not out:
        raise SourceError(f"source '{location}': no Delta, Parquet or CSV tables found")
    return out


def _table_name(p: Path) -> str:
    name = p.name
    for suffix in (".gz", ".zip", ".parquet", ".pq", ".csv", ".tsv"):
        name = name.removesuffix(suffix)
    return name
