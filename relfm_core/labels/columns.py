"""Reading a table's columns from the graph shards as `Vec`s over all of its rows, parents included.

Keys, times and foreign keys are not feature columns in the shard format, so they are read from the
structure arrays: a primary key is a CODE whose codes are the row ids (the key array is sorted, so it is
its own vocabulary), a foreign key a CODE whose codes are the parent's row ids (null where the link is
missing: a foreign-key value without a parent row reads as null, the graph keeps no other trace of it),
and the time column TIME (null for unknown times). Text columns are factorised once into a sorted
vocabulary, so every string operator runs per distinct value.

A parent path (`orders.product_id->products.category`) maps each row through the foreign-key arrays and
reads the parent's column there; a missing link anywhere on the way gives null. Parent rows are read
whatever their own time: a parent path is a static lookup.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graph_engine.shards.format import TIME_NULL, TIME_STATIC
from graph_engine.shards.reader import Column, Graph
from graph_engine.spec import SemanticType
from relfm_core.labels.values import Int64Array, Kind, Multi, Vec, Vocab
from relfm_core.pql import Hop
from relfm_core.pql.errors import QueryError


class ColumnReader:
    """Column vectors of a graph's tables, cached: a query reads each column once, whatever the pairs."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._columns: dict[tuple[str, str], Vec] = {}
        self._paths: dict[tuple[str, tuple[Hop, ...]], Int64Array] = {}
        self._keys: dict[str, Vocab] = {}

    def num_rows(self, table: str) -> int:
        return self.graph.table(table).num_rows

    # ------------------------------------------------------------------ keys
    def key_vocab(self, table: str) -> Vocab:
        """A table's primary keys in row order (int64, or str for string keys), loaded on first use."""
        if table not in self._keys:
            view = self.graph.table(table)

            def load() -> np.ndarray:
                keys = view.keys
                if keys is None:
                    raise QueryError(f"table '{table}' has no primary key")
                if keys.dtype.kind == "S":
                    return np.array([k.decode("utf-8") for k in keys.tolist()], dtype=object)
                return np.asarray(keys, dtype=np.int64)

            self._keys[table] = Vocab(load)
        return self._keys[table]

    # ------------------------------------------------------------------ paths
    def path_rows(self, table: str, path: tuple[Hop, ...]) -> Int64Array:
        """For each row of `table`, its row in the path's last table (-1 where a link is missing)."""
        key = (table, path)
        if key not in self._paths:
            rows: Int64Array = np.arange(self.num_rows(table), dtype=np.int64)
            current = table
            for hop in path:
                fk = np.asarray(self.graph.table(current).fk(hop.fk), dtype=np.int64)
                rows = np.where(rows >= 0, fk[np.maximum(rows, 0)], -1) if len(fk) else rows
                current = hop.table
            self._paths[key] = rows
        return self._paths[key]

    def ref(self, table: str, path: tuple[Hop, ...], column: str) -> Vec:
        """`column` of the path's last table, for every row of `table`."""
        final = path[-1].table if path else table
        vec = self.column(final, column)
        if not path:
            return vec
        return vec.take(self.path_rows(table, path))

    # ------------------------------------------------------------------ columns
    def column(self, table: str, column: str) -> Vec:
        key = (table, column)
        if key not in self._columns:
            self._columns[key] = self._read(table, column)
        return self._columns[key]

    def _read(self, table: str, column: str) -> Vec:
        view = self.graph.table(table)
        info = view.info
        n = view.num_rows
        if column == info.primary_key:
            return Vec(Kind.CODE, np.arange(n, dtype=np.int64), np.ones(n, dtype=bool), self.key_vocab(table))
        if column in (info.time_column, info.end_time_column):
            times = view.time if column == info.time_column else view.end_time
            assert times is not None
            t = np.asarray(times, dtype=np.int64)
            return Vec(Kind.TIME, t, (t != TIME_NULL) & (t != TIME_STATIC))
        if column in info.foreign_keys:
            rows = np.asarray(view.fk(column), dtype=np.int64)
            return Vec(Kind.CODE, rows, rows >= 0, self.key_vocab(info.foreign_keys[column]))
        stype = info.column(column).stype
        if stype is SemanticType.id:
            raise QueryError(
                f"'{table}.{column}' is an id column, which the graph does not store (only keys, "
                "foreign keys and feature columns are)"
            )
        col = view.column(column)
        valid = np.asarray(col.valid, dtype=bool)
        if stype is SemanticType.numerical:
            assert col.value is not None
            return Vec(Kind.NUM, np.asarray(col.value, dtype=np.float64), valid)
        if stype is SemanticType.timestamp:
            assert col.value is not None
            return Vec(Kind.TIME, np.asarray(col.value, dtype=np.int64), valid)
        if stype is SemanticType.categorical:
            assert col.value is not None
            vocab = _vocab_array(col.vocab or [])
            # int32 codes as stored (no 8-byte copy of a large event column); -1 where null.
            return Vec(Kind.CODE, np.asarray(col.value), valid, Vocab.of(vocab))
        if stype is SemanticType.text:
            codes, vocab = factorize_text(col, n)
            return Vec(Kind.CODE, codes, valid, Vocab.of(vocab))
        if stype is SemanticType.multicategorical:
            assert col.start is not None and col.count is not None and col.items is not None
            multi = Multi(
                np.asarray(col.start, dtype=np.int64),
                np.asarray(col.count, dtype=np.int64),
                np.asarray(col.items, dtype=np.int32),
                Vocab.of(_vocab_array(col.vocab or [])),
            )
            return Vec(Kind.MULTI, np.arange(n, dtype=np.int64), valid, multi=multi)
        return Vec(Kind.OPAQUE, np.arange(n, dtype=np.int64), valid)

    def distinct_values(self, table: str, path: tuple[Hop, ...], column: str) -> np.ndarray:
        """Sorted distinct non-null values of a NUM column (CLASSIFY over int64 values: the classes)."""
        final = path[-1].table if path else table
        vec = self.column(final, column)
        return np.unique(np.asarray(vec.value)[vec.valid])


def _vocab_array(values: list[object]) -> np.ndarray:
    """A manifest vocabulary as a searchable array: bool, int64, float64 or str objects."""
    if not values:
        return np.array([], dtype=object)
    if all(isinstance(v, bool) for v in values):
        return np.array(values, dtype=bool)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.int64)
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return np.array(values, dtype=np.float64)
    return np.array(values, dtype=object)


def factorize_text(col: Column, n: int) -> tuple[Int64Array, np.ndarray]:
    """Codes (-1 where null) into the sorted distinct strings of a text column."""
    assert col.start is not None and col.count is not None and col.items is not None
    count = np.asarray(col.count, dtype=np.int64)
    start = np.asarray(col.start, dtype=np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(count, out=offsets[1:])
    total = int(offsets[-1])
    items = np.asarray(col.items, dtype=np.uint8)
    if total:
        pos = np.repeat(start - offsets[:-1], count) + np.arange(total, dtype=np.int64)
        data = items[pos]
    else:
        data = np.empty(0, dtype=np.uint8)
    arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data.tobytes()))
    encoded = pc.dictionary_encode(arr)
    dictionary = encoded.dictionary
    order = np.asarray(pc.sort_indices(dictionary).to_numpy(), dtype=np.int64)
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order), dtype=np.int64)
    indices = np.asarray(encoded.indices.to_numpy(zero_copy_only=False), dtype=np.int64)
    codes = rank[indices] if len(indices) else np.empty(0, dtype=np.int64)
    codes = np.where(np.asarray(col.valid, dtype=bool), codes, -1)
    vocab = np.array(dictionary.take(pa.array(order)).to_pylist(), dtype=object)
    return codes, vocab
