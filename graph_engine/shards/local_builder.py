"""Building a graph on one machine with Arrow and NumPy.

The build reads one column at a time from the sources (Delta, Parquet, CSV, SQLite, DuckDB), so memory is
bounded by a table's key columns (primary key, time, foreign keys) plus one feature column, not by the
database. It validates as it goes (unknown columns, null or duplicate keys, unparseable timestamps,
foreign keys of the wrong type), counts foreign-key values with no parent and keeps them as missing links
(-1), and writes the shard format described in `format`. The Spark builder produces the same bytes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graph_engine.errors import DataError, SpecError
from graph_engine.infer import complete_spec, schema_from_spec
from graph_engine.io.normalize import normalize_column, storage_dtype
from graph_engine.io.sources import TableSource, open_source
from graph_engine.schema import GraphSchema
from graph_engine.shards import encode
from graph_engine.shards.format import (
    DEFAULT_ROWS_PER_SHARD,
    FORMAT_NAME,
    FORMAT_VERSION,
    TIME_STATIC,
    ArrayInfo,
    check_rows_per_shard,
    col_array,
    content_checksum,
    dump_manifest,
    fk_array,
    graph_id,
    pk_array,
    rev_array,
    segment_bases,
    time_array,
    write_shard_file,
)
from graph_engine.spec import GraphSpec, SemanticType, suggest

Progress = Callable[[str], None]


@dataclass
class BuildConfig:
    rows_per_shard: int = DEFAULT_ROWS_PER_SHARD


@dataclass
class _TableKeys:
    """What phase one learns about a table: its keys, its canonical row order and its times."""

    n_source: int
    keys: np.ndarray | None = None  # encoded primary keys, source order
    added: np.ndarray | None = None  # key-only rows appended for orphan foreign keys
    order: np.ndarray | None = None  # row id → source index (>= n_source: an added row)
    row_keys: np.ndarray | None = None  # primary keys in row order
    fk_values: dict[str, pa.ChunkedArray] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return self.n_source + (0 if self.added is None else len(self.added))


def spec_is_complete(spec: GraphSpec) -> bool:
    return all(
        t.given("primary_key") and t.given("time_column") and t.given("foreign_keys") and t.semantic_types
        for t in spec.tables.values()
    )


class LocalBuilder:
    def __init__(
        self, spec: GraphSpec, out: Path, config: BuildConfig, progress: Progress | None = None
    ) -> None:
        check_rows_per_shard(config.rows_per_shard)
        self.spec = spec if spec_is_complete(spec) else complete_spec(spec)
        self.out = Path(out)
        self.cfg = config
        self.progress = progress or (lambda msg: None)
        self.sources: dict[str, TableSource] = {
            t: open_source(self.spec.resolve_source(t), t) for t in self.spec.tables
        }
        check_columns(self.spec, {t: s.schema for t, s in self.sources.items()})
        self.schema: GraphSchema = schema_from_spec(self.spec)
        self.keys: dict[str, _TableKeys] = {}
        self.manifest_tables: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ reading
    def _column(self, table: str, col: str, as_time: bool = False) -> pa.ChunkedArray:
        arr = self.sources[table].read(columns=[col]).column(col)
        return normalize_column(table, col, arr, as_time=as_time)

    # ------------------------------------------------------------------ phase 1: keys and order
    def _read_keys(self) -> None:
        for t, ts in self.spec.tables.items():
            n = self.sources[t].num_rows()
            tk = _TableKeys(n_source=n)
            if ts.primary_key:
                pk = self._column(t, ts.primary_key)
                check_primary_key(t, ts.primary_key, pk)
                tk.keys = encode.encode_keys(pk)
            for col in ts.foreign_keys:
                tk.fk_values[col] = self._column(t, col)
            self.keys[t] = tk
        for child, col, parent in self.spec.edges():
            vals, pkeys = self.keys[child].fk_values[col], self.keys[parent].keys
            if pkeys is not None and pkeys.dtype.kind == "i" and vals.null_count == len(vals):
                # A foreign key with no values (yet) has no type of its own: it takes its parent's.
                self.keys[child].fk_values[col] = vals.cast(pa.int64())
            check_fk_type(
                child,
                col,
                self.keys[child].fk_values[col],
                parent,
                self.spec.tables[parent].primary_key,
                self.keys[parent].keys,
            )

    def _add_missing_parents(self) -> dict[str, int]:
        added: dict[str, int] = {}
        if not self.spec.add_missing_parents:
            return added
        for parent in self.spec.tables:
            pk = self.keys[parent].keys
            if pk is None:
                continue
            missing: list[np.ndarray] = []
            for child, col, p in self.spec.edges():
                if p != parent:
                    continue
                vals = encode.encode_keys(self.keys[child].fk_values[col].drop_null())
                missing.append(np.setdiff1d(vals, pk))
            if missing:
                extra = np.unique(np.concatenate(missing))
                if len(extra):
                    self.keys[parent].added = extra
                    added[parent] = len(extra)
        return added

    def _order(self) -> None:
        for t, ts in self.spec.tables.items():
            tk = self.keys[t]
            if tk.keys is not None:
                # np.concatenate widens fixed-width byte keys to the longest (casting to the parent's width
                # would truncate a longer orphan key into a wrong, possibly duplicate, parent key).
                allkeys = tk.keys if tk.added is None else np.concatenate([tk.keys, tk.added])
                tk.order = np.argsort(allkeys, kind="stable")
                tk.row_keys = allkeys[tk.order]
            else:
                tk.order = canonical_order_without_key(self._scalar_table(t, ts.time_column))

    def _scalar_table(self, t: str, time_col: str | None) -> pa.Table:
        cols = {}
        for f in self.sources[t].schema:
            dt = storage_dtype(f.type)
            if dt in (None, "list_string", "list_float"):
                continue
            cols[f.name] = self._column(t, f.name, as_time=f.name == time_col)
        return pa.table(cols)

    # ------------------------------------------------------------------ phase 2: writing
    def _take(self, t: str, arr: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
        """Source-order column → row order, with nulls for key-only added rows."""
        tk = self.keys[t]
        assert tk.order is not None
        if tk.added is not None and len(tk.added):
            arr = pa.chunked_array([*arr.chunks, pa.nulls(len(tk.added), type=arr.type)], type=arr.type)
        return arr.take(pa.array(tk.order))

    def _write_rows(self, t: str, name: str, data: np.ndarray, arrays: dict[str, ArrayInfo]) -> None:
        rps = self.cfg.rows_per_shard
        info = ArrayInfo(str(data.dtype), list(data.shape), "rows")
        n = data.shape[0]
        for s, lo in enumerate(range(0, max(n, 1), rps)):
            info.files.append(write_shard_file(self.out, t, name, s, data[lo : lo + rps], pad=False))
        arrays[name] = info

    def _write_segments(
        self, t: str, name: str, counts: np.ndarray, values: np.ndarray, arrays: dict[str, ArrayInfo]
    ) -> np.ndarray:
        """Writes a segment array and returns the per-row global starts."""
        rps = self.cfg.rows_per_shard
        n = len(counts)
        shard_rows = [(lo, min(lo + rps, n)) for lo in range(0, max(n, 1), rps)]
        local_off = np.concatenate([[0], np.cumsum(counts)])
        shard_counts = [int(local_off[hi] - local_off[lo]) for lo, hi in shard_rows]
        bases = segment_bases(shard_counts, values.dtype.itemsize)
        starts = np.empty(n, dtype=np.int64)
        info = ArrayInfo(str(values.dtype), [0], "segments")
        total = 0
        for s, ((lo, hi), base) in enumerate(zip(shard_rows, bases, strict=True)):
            a, b = int(local_off[lo]), int(local_off[hi])
            starts[lo:hi] = base + (local_off[lo:hi] - a)
            last = s == len(shard_rows) - 1
            info.files.append(write_shard_file(self.out, t, name, s, values[a:b], pad=not last))
            total = base + (b - a)
        info.shape = [total]
        arrays[name] = info
        return starts

    def _write_table(self, t: str) -> dict[str, Any]:
        ts = self.spec.tables[t]
        ti = self.schema.tables[t]
        tk = self.keys[t]
        n = tk.n_rows
        arrays: dict[str, ArrayInfo] = {}
        meta: dict[str, Any] = {"rows": n, "added_parent_rows": 0 if tk.added is None else len(tk.added)}
        if tk.row_keys is not None:
            self._write_rows(t, pk_array(), tk.row_keys, arrays)
        n_added = meta["added_parent_rows"]
        for end, col in ((False, ts.time_column), (True, ts.end_time_column)):
            if not col:
                continue
            times = encode.time_values(self._take(t, self._column(t, col, as_time=True)), n)
            if n_added:
                assert tk.order is not None
                times = times.copy()  # time_values may be a read-only view of Arrow memory
                times[tk.order >= tk.n_source] = TIME_STATIC
            if not end:
                meta.update(time_stats(times))
            self._write_rows(t, time_array(end), times, arrays)
        meta["missing_links"] = {}
        for col, parent in ts.foreign_keys.items():
            fk_rows, orphans = resolve_foreign_key(
                encode.encode_keys(
                    pc.fill_null(self.keys[t].fk_values[col], _fill_for(self.keys[t].fk_values[col]))
                ),
                encode.valid_mask(self.keys[t].fk_values[col]).astype(bool),
                self.keys[parent].row_keys,
            )
            meta["missing_links"][col] = orphans
            fk_rows = np.concatenate([fk_rows, np.full(n_added, -1, np.int64)])
            assert tk.order is not None
            self._write_rows(t, fk_array(col), fk_rows[tk.order], arrays)
        vocabs: dict[str, list[Any]] = {}
        for col in ti.feature_columns:
            stype = ti.columns[col].stype
            # Timestamp features may be stored as strings (SQLite, CSV with non-ISO dates): parse them.
            arr = self._take(t, self._column(t, col, as_time=stype == SemanticType.timestamp))
            self.progress(f"{t}.{col}")
            self._write_feature(t, col, stype, arr, arrays, vocabs)
        meta["vocab"] = vocabs
        meta["arrays"] = {k: v.to_dict() for k, v in arrays.items()}
        return meta

    def _write_feature(
        self,
        t: str,
        col: str,
        stype: SemanticType,
        arr: pa.ChunkedArray | pa.Array,
        arrays: dict[str, ArrayInfo],
        vocabs: dict[str, list[Any]],
    ) -> None:
        if stype == SemanticType.numerical:
            values, valid = encode.encode_numerical(arr)
        elif stype == SemanticType.timestamp:
            values, valid = encode.encode_timestamp(arr)
        elif stype == SemanticType.categorical:
            vocab = encode.categorical_vocab(arr)
            vocabs[col] = vocab
            values, valid = encode.encode_categorical(arr, vocab)
        elif stype == SemanticType.embedding:
            values, valid = encode.encode_embedding(t, col, arr)
        elif stype == SemanticType.text:
            counts, raw, valid = encode.encode_text(arr)
            starts = self._write_segments(t, col_array(col, "bytes"), counts, raw, arrays)
            self._write_rows(t, col_array(col, "start"), starts, arrays)
            self._write_rows(t, col_array(col, "count"), counts, arrays)
            self._write_rows(t, col_array(col, "valid"), valid, arrays)
            return
        elif stype == SemanticType.multicategorical:
            vocab = encode.multicat_vocab(arr)
            vocabs[col] = vocab
            counts, codes, valid = encode.encode_multicategorical(arr, vocab)
            starts = self._write_segments(t, col_array(col, "codes"), counts, codes, arrays)
            self._write_rows(t, col_array(col, "start"), starts, arrays)
            self._write_rows(t, col_array(col, "count"), counts, arrays)
            self._write_rows(t, col_array(col, "valid"), valid, arrays)
            return
        else:
            return
        self._write_rows(t, col_array(col, "value"), values, arrays)
        self._write_rows(t, col_array(col, "valid"), valid, arrays)

    def _write_reverse(self, child: str, col: str, parent: str) -> int:
        """The P→F CSR of one foreign key, children sorted by (time, child row) within each parent."""
        parent_arrays = {k: ArrayInfo.from_dict(v) for k, v in self.manifest_tables[parent]["arrays"].items()}
        fk_rows = read_array(self.out, self.manifest_tables[child]["arrays"][fk_array(col)])
        child_time = (
            read_array(self.out, self.manifest_tables[child]["arrays"][time_array()])
            if self.spec.tables[child].time_column
            else np.full(len(fk_rows), TIME_STATIC, dtype=np.int64)
        )
        counts, children, times = build_csr(fk_rows, child_time, self.keys[parent].n_rows)
        starts = self._write_segments(parent, rev_array(child, col, "child"), counts, children, parent_arrays)
        self._write_segments(parent, rev_array(child, col, "time"), counts, times, parent_arrays)
        for other in self.spec.tables[child].foreign_keys:
            if other != col:
                via = read_array(self.out, self.manifest_tables[child]["arrays"][fk_array(other)])[children]
                self._write_segments(parent, rev_array(child, col, f"fk.{other}"), counts, via, parent_arrays)
        self._write_rows(parent, rev_array(child, col, "start"), starts, parent_arrays)
        self._write_rows(parent, rev_array(child, col, "count"), counts, parent_arrays)
        self.manifest_tables[parent]["arrays"] = {k: v.to_dict() for k, v in parent_arrays.items()}
        return len(children)

    # ------------------------------------------------------------------ driver
    def validate(self) -> dict[str, Any]:
        """Every data check of a build, without writing: rows, missing links, null times per table."""
        self._read_keys()
        report: dict[str, Any] = {"tables": {}, "missing_links": {}}
        for t, ts in self.spec.tables.items():
            tk = self.keys[t]
            entry: dict[str, Any] = {"rows": tk.n_source}
            if ts.time_column:
                times = encode.time_values(self._column(t, ts.time_column, as_time=True), tk.n_source)
                entry.update(time_stats(times))
            ti = self.schema.tables[t]
            for col in [ts.end_time_column, *ti.feature_columns]:
                if col and (col == ts.end_time_column or ti.columns[col].stype == SemanticType.timestamp):
                    self._column(t, col, as_time=True)  # the build parses these too: same errors, earlier
            report["tables"][t] = entry
        for child, col, parent in self.spec.edges():
            vals = self.keys[child].fk_values[col]
            pkeys = self.keys[parent].keys
            _, orphans = resolve_foreign_key(
                encode.encode_keys(pc.fill_null(vals, _fill_for(vals))),
                encode.valid_mask(vals).astype(bool),
                None if pkeys is None else np.sort(pkeys),
            )
            report["missing_links"][f"{child}.{col}"] = orphans
        return report

    def build(self) -> dict[str, Any]:
        t0 = time.time()
        self.out.mkdir(parents=True, exist_ok=True)
        self.progress("reading keys")
        self._read_keys()
        self._add_missing_parents()
        self._order()
        for t in self.spec.tables:
            self.progress(f"writing {t}")
            self.manifest_tables[t] = self._write_table(t)
        edges = []
        for child, col, parent in self.spec.edges():
            self.progress(f"linking {child}.{col} -> {parent}")
            n_edges = self._write_reverse(child, col, parent)
            edges.append(
                {
                    "child": child,
                    "fk": col,
                    "parent": parent,
                    "edges": n_edges,
                    "missing_links": self.manifest_tables[child]["missing_links"][col],
                }
            )
        for tk in self.keys.values():
            tk.fk_values.clear()
        return finish_manifest(
            self.spec,
            self.schema,
            self.sources,
            self.manifest_tables,
            edges,
            self.cfg.rows_per_shard,
            self.out,
            engine="local",
            seconds=time.time() - t0,
        )


# ---------------------------------------------------------------------------------------------- shared pieces
def check_columns(spec: GraphSpec, schemas: dict[str, pa.Schema]) -> None:
    """Every column the spec names exists in its source (one-line error with a suggestion otherwise)."""
    for t, ts in spec.tables.items():
        names = schemas[t].names
        for col in [*ts.key_columns(), *ts.semantic_types]:
            if col not in names:
                raise SpecError(f"table '{t}': unknown column '{col}'{suggest(col, names)}")
        for col, stype in ts.semantic_types.items():
            dt = storage_dtype(schemas[t].field(col).type)
            if dt is None:
                raise DataError(f"table '{t}' column '{col}': unsupported type {schemas[t].field(col).type}")
            if stype == SemanticType.embedding and dt != "list_float":
                raise SpecError(f"table '{t}' column '{col}': embedding needs a list of floats, found {dt}")
            if stype == SemanticType.multicategorical and dt != "list_string":
                raise SpecError(
                    f"table '{t}' column '{col}': multicategorical needs a list of strings, found {dt}"
                )
        pk = ts.primary_key
        if pk and storage_dtype(schemas[t].field(pk).type) not in ("int64", "string"):
            raise DataError(f"table '{t}' primary key '{pk}' must be an integer or string column")


def check_primary_key(table: str, col: str, arr: pa.ChunkedArray) -> None:
    nulls = arr.null_count
    if nulls:
        raise DataError(f"table '{table}' primary key '{col}' has {nulls} null values")
    counts = pc.value_counts(arr.combine_chunks())
    dup = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(dup):
        first = dup.field("values")[0].as_py()
        raise DataError(
            f"table '{table}' primary key '{col}' has {len(dup)} duplicate values (e.g. {first!r})"
        )


def check_fk_type(
    child: str, col: str, values: pa.ChunkedArray, parent: str, pk: str | None, parent_keys: np.ndarray | None
) -> None:
    if pk is None or parent_keys is None:
        raise SpecError(f"table '{child}' foreign key '{col}' points to '{parent}', which has no primary key")
    child_t = storage_dtype(values.type)
    parent_t = "int64" if parent_keys.dtype.kind == "i" else "string"
    if child_t != parent_t:
        raise DataError(f"table '{child}' foreign key '{col}' is {child_t} but '{parent}.{pk}' is {parent_t}")


def time_stats(times: np.ndarray) -> dict[str, int | None]:
    """Null-time count and the range of real times, so readers never scan time arrays."""
    real = times[(times != np.iinfo(np.int64).max) & (times != TIME_STATIC)]
    return {
        "null_times": int((times == np.iinfo(np.int64).max).sum()),
        "time_min": int(real.min()) if len(real) else None,
        "time_max": int(real.max()) if len(real) else None,
    }


def _fill_for(arr: pa.ChunkedArray) -> Any:
    return 0 if pa.types.is_integer(arr.type) else ""


def resolve_foreign_key(
    values: np.ndarray, valid: np.ndarray, parent_keys: np.ndarray | None
) -> tuple[np.ndarray, int]:
    """Child key values → parent row ids (-1 where null or without parent), and the orphan count."""
    out = np.full(len(values), -1, dtype=np.int64)
    if parent_keys is None or len(parent_keys) == 0:
        return out, int(valid.sum())
    pos = np.searchsorted(parent_keys, values)
    pos_c = np.minimum(pos, len(parent_keys) - 1)
    hit = valid & (parent_keys[pos_c] == values)
    out[hit] = pos_c[hit]
    return out, int((valid & ~hit).sum())


def build_csr(
    fk_rows: np.ndarray, child_time: np.ndarray, n_parent: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count per parent, child rows sorted by (parent, time, child row), their times)."""
    linked = np.flatnonzero(fk_rows >= 0)
    parents = fk_rows[linked]
    times = child_time[linked]
    order = np.lexsort((linked, times, parents))
    counts = np.bincount(parents, minlength=n_parent).astype(np.int64)
    return counts, linked[order].astype(np.int64), times[order].astype(np.int64)


def canonical_order_without_key(table: pa.Table) -> np.ndarray:
    """Row order of a table without primary key: all scalar columns ascending, nulls first."""
    if table.num_columns == 0 or table.num_rows == 0:
        return np.arange(table.num_rows, dtype=np.int64)
    keys = [(c, "ascending", "at_start") for c in table.column_names]
    idx = pc.sort_indices(table, sort_keys=keys)
    return np.asarray(idx.to_numpy(), dtype=np.int64)


def read_array(root: Path, info: dict[str, Any]) -> np.ndarray:
    from graph_engine.shards.mapping import map_array

    ai = ArrayInfo.from_dict(info)
    return map_array([root / f.path for f in ai.files], np.dtype(ai.dtype), tuple(ai.shape))


def finish_manifest(
    spec: GraphSpec,
    schema: GraphSchema,
    sources: dict[str, TableSource],
    tables: dict[str, dict[str, Any]],
    edges: list[dict[str, Any]],
    rows_per_shard: int,
    out: Path,
    engine: str,
    seconds: float,
) -> dict[str, Any]:
    spec_dict = spec.to_dict()
    versions = {t: s.version().to_dict() for t, s in sources.items()}
    manifest: dict[str, Any] = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "graph_id": graph_id(spec_dict, versions, rows_per_shard),
        "spec": spec_dict,
        "schema": schema.to_dict(),
        "sources": versions,
        "rows_per_shard": rows_per_shard,
        "tables": tables,
        "edges": edges,
        "counts": {
            "rows": sum(t["rows"] for t in tables.values()),
            "edges": sum(e["edges"] for e in edges),
            "missing_links": sum(e["missing_links"] for e in edges),
            "added_parent_rows": sum(int(t.get("added_parent_rows", 0)) for t in tables.values()),
        },
        # Where relative sources in `spec` resolve from (not part of the graph id: moving a spec and its
        # data together must not change what the graph is).
        "spec_dir": str(spec.base_dir),
    }
    manifest["checksum"] = content_checksum(manifest)
    manifest["build"] = {
        "engine": engine,
        "seconds": round(seconds, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    dump_manifest(manifest, out)
    return manifest


def build_local(
    spec: GraphSpec, out: str | Path, config: BuildConfig | None = None, progress: Progress | None = None
) -> dict[str, Any]:
    return LocalBuilder(spec, Path(out), config or BuildConfig(), progress).build()
