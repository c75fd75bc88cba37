"""Inferring what a spec leaves out: primary keys, time columns, foreign keys and semantic types.

Users point relfm at a folder of tables and expect it to see what a human would: `raceId` in results
links to races, `origin` in flights holds airport codes, `dob` is a birth date and not the time a driver
row appeared. Heuristics are name-based first and checked against the values (uniqueness, containment),
because names alone mislead (`number` columns look like keys) and values alone mislead more (every small
integer column is "contained" in a 0..n-1 key range). Whatever is inferred is printed back as a complete
spec the user can pin; explicit choices in a spec are never overridden.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graph_engine.errors import SpecError
from graph_engine.io.normalize import normalize_column, storage_dtype
from graph_engine.io.sources import TableSource, list_tables, open_source
from graph_engine.schema import ColumnInfo, DType, GraphSchema, TableInfo
from graph_engine.spec import GraphSpec, SemanticType, TableSpec

SAMPLE_ROWS = 200_000
# Names that say "when this row happened".
_TIME_NAMES = ("timestamp", "time", "date", "datetime", "created_at", "event_time", "time_hour", "ts")
# Timestamps that describe the entity rather than when the row appeared (a birth date is not a row time).
# Matched against the words of a column name (`birthDate` -> birth, date), so `calendar_date` or
# `vendor_time` do not count as ends just because they contain "end".
_NOT_ROW_TIME = re.compile(
    r"^(birth\w*|dob|born|expir\w*|deadline|due|until|valid_?to|end|ends|ended|ending|finish\w*|closed?"
    r"|deleted|updated|modified)$"
)
_END_TIME = re.compile(r"^(until|valid_?to|expir\w*|end|ends|ended|ending|finish\w*|closed?)$")
# `enddate`, `birthdate`, `close_ts`: the word before a time suffix is what the name is about.
_TIME_SUFFIX = re.compile(r"(date|time|datetime|timestamp|ts|day)$")
# ISO-like date strings (SQLite has no timestamp type; CSVs carry non-ISO separators pyarrow leaves as text).
_DATE_STRING = r"^\d{4}[-/]\d{1,2}[-/]\d{1,2}([ T]\d{1,2}:\d{2}(:\d{2}(\.\d+)?)?)?\s*(Z|[+-]\d{2}:?\d{2})?$"
# Case matters: `raceId`, `user_id`, `ID` are ids; `grid` and `paid` are not.
_ID_LIKE = re.compile(r"(^[Ii][Dd]$|_[Ii][Dd]$|[a-z0-9]Id$|ID$|_key$|Key$|_pk$|_fk$)")


@dataclass
class ColumnProfile:
    name: str
    dtype: DType | None
    rows: int
    nulls: int
    distinct: int
    mean_len: float = 0.0
    mean_tokens: float = 0.0
    # A string column whose values are all dates or date-times: a time-column candidate, parsed on build.
    temporal: bool = False

    @property
    def is_time(self) -> bool:
        return self.dtype == "timestamp" or self.temporal


@dataclass
class TableProfile:
    name: str
    source: str
    rows: int
    sample: pa.Table
    columns: dict[str, ColumnProfile] = field(default_factory=dict)

    def unique(self, col: str) -> bool:
        c = self.columns[col]
        return c.nulls == 0 and c.distinct == min(self.rows, self.sample.num_rows)


def profile_table(name: str, source: TableSource, sample_rows: int = SAMPLE_ROWS) -> TableProfile:
    sample = source.read(limit=sample_rows)
    prof = TableProfile(name=name, source=str(source.ref), rows=sample.num_rows, sample=sample)
    if sample.num_rows == sample_rows:
        prof.rows = source.num_rows()
    for col in sample.column_names:
        arr = sample.column(col)
        dtype = storage_dtype(arr.type)
        cp = ColumnProfile(col, dtype, sample.num_rows, arr.null_count, 0)
        if dtype is not None and dtype not in ("list_string", "list_float"):
            try:
                cp.distinct = len(pc.unique(arr.drop_null()))
            except pa.ArrowNotImplementedError:
                cp.distinct = 0
        if dtype == "string" and sample.num_rows:
            s = arr.drop_null().cast(pa.large_string())
            if len(s):
                lens = pc.utf8_length(s).to_numpy(zero_copy_only=False)
                cp.mean_len = float(np.mean(lens))
                tokens = pc.list_value_length(pc.utf8_split_whitespace(s)).to_numpy(zero_copy_only=False)
                cp.mean_tokens = float(np.mean(tokens))
                cp.temporal = _all_dates(s)
        prof.columns[col] = cp
    return prof


def _all_dates(values: pa.Array | pa.ChunkedArray) -> bool:
    """Whether every (non-null) string looks like a date and parses as one."""
    if not pc.all(pc.match_substring_regex(values, _DATE_STRING)).as_py():
        return False
    import pandas as pd

    head = pd.Series(values.slice(0, 1000).to_pylist(), dtype="object").str.strip()
    parsed = pd.to_datetime(head, utc=True, format="mixed", errors="coerce")
    return bool(parsed.notna().all())


# ---------------------------------------------------------------------------------------------- names
def _words(name: str) -> list[str]:
    """`raceId` -> race, id; `time_hour` -> time, hour; `DOB` -> dob."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    return [w for w in re.split(r"[^a-z0-9]+", spaced.lower()) if w]


def _time_words(name: str) -> set[str]:
    """The words of a column name, each also without a time suffix (`enddate` -> enddate, end) and with
    adjacent pairs joined (`valid_to` -> validto), for matching the role patterns above."""
    words = _words(name)
    out = set(words) | {a + b for a, b in itertools.pairwise(words)}
    out |= {_TIME_SUFFIX.sub("", w) for w in words if _TIME_SUFFIX.sub("", w)}
    return out


def _describes_entity(name: str) -> bool:
    return any(_NOT_ROW_TIME.match(w) for w in _time_words(name))


def _is_end_time(name: str) -> bool:
    words = _time_words(name)
    return any(_END_TIME.match(w) for w in words) and not any(re.match(r"^(birth\w*|dob)$", w) for w in words)


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _singular(name: str) -> str:
    n = _norm(name)
    if n.endswith("ies"):
        return n[:-3] + "y"
    if n.endswith(("ses", "xes")):
        return n[:-2]
    if n.endswith("s") and not n.endswith("ss"):
        return n[:-1]
    return n


# ---------------------------------------------------------------------------------------------- primary keys
def infer_primary_key(prof: TableProfile) -> str | None:
    table_forms = {_norm(prof.name), _singular(prof.name)}
    best: tuple[int, str] | None = None
    for i, (col, cp) in enumerate(prof.columns.items()):
        if cp.dtype not in ("int64", "string") or not prof.unique(col) or prof.rows == 0:
            continue
        if cp.dtype == "string" and cp.mean_tokens > 1.5:
            continue  # unique free text (names, titles) is not a key
        n = _norm(col)
        score = 0
        if n in {f + "id" for f in table_forms} or n in {f + "key" for f in table_forms}:
            score = 5
        elif n == "id":
            score = 4
        elif _ID_LIKE.search(col):
            score = 2
        if cp.temporal and score < 2:
            continue  # unique date strings are when rows happened, not what they are called
        if i == 0:
            score += 1
        if score > 0 and (best is None or score > best[0]):
            best = (score, col)
    return best[1] if best else None


# ---------------------------------------------------------------------------------------------- time columns
def infer_time_columns(prof: TableProfile, primary_key: str | None = None) -> tuple[str | None, str | None]:
    # A table keyed by a date string (a calendar) is a dimension: its key is not also its row time.
    candidates = [c for c, cp in prof.columns.items() if cp.is_time and c != primary_key]
    start = [c for c in candidates if not _describes_entity(c)]
    ends = [c for c in candidates if _is_end_time(c)]

    def score(c: str) -> int:
        n = c.lower()
        if n in _TIME_NAMES:
            return 3
        if n.endswith(("_at", "_time", "_date", "date", "time")):
            return 2
        return 1

    time_col = max(start, key=score) if start else None
    end_col = ends[0] if time_col and ends else None
    return time_col, end_col


# ---------------------------------------------------------------------------------------------- foreign keys
@dataclass
class _ParentKey:
    table: str
    column: str
    dtype: DType
    values: pa.Array


def _name_score(col: str, parent: str, pk: str) -> int:
    c, k = _norm(col), _norm(pk)
    forms = {_norm(parent), _singular(parent)}
    if c == k and k not in ("id", "key"):
        return 3
    if c in {f + "id" for f in forms} or c in forms or c in {f + "key" for f in forms}:
        return 3
    if k not in ("id", "key") and len(k) >= 4 and c.endswith(k):
        return 2
    return 0


def infer_foreign_keys(
    prof: TableProfile, pk: str | None, parents: list[_ParentKey], time_col: str | None
) -> dict[str, str]:
    out: dict[str, str] = {}
    for col, cp in prof.columns.items():
        if cp.dtype not in ("int64", "string") or col == time_col:
            continue
        values = prof.sample.column(col).drop_null()
        if len(values) == 0:
            continue
        distinct = pc.unique(values)
        best: tuple[float, str] | None = None
        for par in parents:
            if par.table == prof.name and col == pk:
                continue
            if par.dtype != cp.dtype:
                continue
            ns = _name_score(col, par.table, par.column)
            if par.table == prof.name:
                # A table linking to itself (manager_id → employees) says so with a qualified key name;
                # a bare `flight` column in flights is a flight number, not a link.
                c, k = _norm(col), _norm(par.column)
                ns = 2 if (c != k and c.endswith(k) and len(c) > len(k)) else 0
                if ns == 0:
                    continue
            if col == pk and ns < 3:
                continue  # a key is only also a link when its name says so (one-to-one extension tables)
            if ns == 0 and (cp.dtype != "string" or cp.mean_tokens > 1.2 or len(distinct) < 2):
                continue  # value containment alone is trusted only for code-like strings
            contained = pc.sum(pc.is_in(distinct, value_set=par.values)).as_py() or 0
            share = contained / len(distinct)
            needed = {3: 0.5, 2: 0.8, 0: 0.9}[ns]
            if share >= needed:
                rank = ns + share
                if best is None or rank > best[0]:
                    best = (rank, par.table)
        if best is not None:
            out[col] = best[1]
    return out


# ---------------------------------------------------------------------------------------------- semantic types
def infer_semantic_type(cp: ColumnProfile, is_key: bool) -> SemanticType:
    if is_key:
        return SemanticType.id
    d = cp.dtype
    if cp.is_time:
        return SemanticType.timestamp
    if d == "bool":
        return SemanticType.categorical
    if d == "list_string":
        return SemanticType.multicategorical
    if d == "list_float":
        return SemanticType.embedding
    present = max(cp.rows - cp.nulls, 1)
    ratio = cp.distinct / present
    if d in ("int64", "float64"):
        if _ID_LIKE.search(cp.name):
            # Codes such as statusId are categories; high-cardinality ids carry no signal as numbers.
            return SemanticType.categorical if cp.distinct <= 1000 and ratio <= 0.05 else SemanticType.id
        return SemanticType.numerical
    if d == "string":
        # Delimited strings ("a|b") stay strings: multicategorical is for list<string> columns, which is
        # what the builders encode; splitting is the user's call (a view or a list column).
        if (cp.distinct <= 200 or ratio <= 0.05) and cp.mean_len < 200:
            return SemanticType.categorical  # few distinct values: a category even when multi-word
        if cp.mean_tokens >= 3 or cp.mean_len >= 40:
            return SemanticType.text
        return SemanticType.text if cp.mean_tokens > 1.5 else SemanticType.id
    return SemanticType.id


# ---------------------------------------------------------------------------------------------- whole specs
def infer_spec(location: str | Path, name: str | None = None) -> GraphSpec:
    """A complete spec for every table found in a folder or SQLite/DuckDB file."""
    tables = list_tables(str(location))
    base = Path(location).resolve()
    base_dir = base if base.is_dir() else base.parent
    spec = GraphSpec.from_dict(
        {"name": name or base.stem, "tables": {t: {"source": s} for t, s in tables.items()}},
        base_dir=base_dir,
    )
    return complete_spec(spec)


def complete_spec(spec: GraphSpec) -> GraphSpec:
    """Fills in every field the user left out; explicit fields are kept as given."""
    profiles = {t: profile_table(t, open_source(spec.resolve_source(t), t)) for t in spec.tables}
    for t, ts in spec.tables.items():
        for col in ts.key_columns() + list(ts.semantic_types):
            if col not in profiles[t].columns:
                from graph_engine.spec import suggest

                raise SpecError(f"table '{t}': unknown column '{col}'{suggest(col, profiles[t].columns)}")
    pks: dict[str, str | None] = {}
    times: dict[str, tuple[str | None, str | None]] = {}
    for t, ts in spec.tables.items():
        pks[t] = ts.primary_key if ts.given("primary_key") else infer_primary_key(profiles[t])
        inferred_time = infer_time_columns(profiles[t], pks[t])
        time_col = ts.time_column if ts.given("time_column") else inferred_time[0]
        # An inferred end only makes sense with a start (a user's `time_column: null` means static).
        end_col = inferred_time[1] if time_col is not None and time_col != inferred_time[1] else None
        times[t] = (time_col, ts.end_time_column if ts.given("end_time_column") else end_col)
    parents: list[_ParentKey] = []
    for t, pk in pks.items():
        if pk is None:
            continue
        dtype = profiles[t].columns[pk].dtype
        if dtype not in ("int64", "string"):
            continue
        full = open_source(spec.resolve_source(t), t).read(columns=[pk]).column(pk)
        parents.append(_ParentKey(t, pk, dtype, normalize_column(t, pk, full).combine_chunks()))
    new_tables: dict[str, TableSpec] = {}
    for t, ts in spec.tables.items():
        prof = profiles[t]
        pk = pks[t]
        time_col, end_col = times[t]
        if ts.given("foreign_keys"):
            fks = dict(ts.foreign_keys)
        else:
            fks = infer_foreign_keys(prof, pk, parents, time_col)
        keys = {c for c in (pk, time_col, end_col) if c} | set(fks)
        stypes = {}
        for col, cp in prof.columns.items():
            if col in ts.semantic_types:
                stypes[col] = ts.semantic_types[col]
            elif col in (time_col, end_col):
                stypes[col] = SemanticType.timestamp
            elif cp.dtype is None:
                continue
            else:
                stypes[col] = infer_semantic_type(cp, col in keys)
        new_tables[t] = TableSpec(
            source=ts.source,
            primary_key=pk,
            time_column=time_col,
            end_time_column=end_col,
            foreign_keys=fks,
            semantic_types=stypes,
        )
    out = GraphSpec.from_dict(
        {
            "name": spec.name,
            "tables": {t: v.model_dump() for t, v in new_tables.items()},
            "add_missing_parents": spec.add_missing_parents,
        },
        base_dir=spec.base_dir,
    )
    return out


def schema_from_spec(spec: GraphSpec) -> GraphSchema:
    """The resolved schema of a complete spec (every column typed), read from the sources' schemas."""
    tables = {}
    for t, ts in spec.tables.items():
        src = open_source(spec.resolve_source(t), t)
        cols = {}
        for f in src.schema:
            dtype = storage_dtype(f.type)
            if f.name in (ts.time_column, ts.end_time_column) or (
                ts.semantic_types.get(f.name) == SemanticType.timestamp
            ):
                dtype = "timestamp"  # parsed from strings where needed (normalize.to_timestamp)
            if dtype is None or f.name not in ts.semantic_types:
                continue
            cols[f.name] = ColumnInfo(f.name, dtype, ts.semantic_types[f.name])
        tables[t] = TableInfo(
            t, cols, ts.primary_key, ts.time_column, ts.end_time_column, dict(ts.foreign_keys)
        )
    return GraphSchema(tables)
