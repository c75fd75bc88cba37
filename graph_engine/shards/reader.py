"""Opening a built graph: every array memory-mapped lazily, so opening costs only the manifest parse.

`Graph.open(path)` reads `manifest.json` and nothing else; arrays are mapped on first use (zero-copy,
read-only) and pages load as the sampler touches them, so resident memory tracks what is sampled, not
the size of the graph. Ray actors and Spark executors each open the same folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from graph_engine.errors import SourceError
from graph_engine.schema import GraphSchema, TableInfo
from graph_engine.shards.format import (
    FORMAT_NAME,
    MANIFEST,
    ArrayInfo,
    col_array,
    fk_array,
    pk_array,
    rev_array,
    time_array,
)
from graph_engine.shards.mapping import map_array
from graph_engine.spec import GraphSpec, SemanticType


@dataclass(frozen=True)
class CSR:
    """Children of each parent row through one foreign key, sorted by time, with their times."""

    start: np.ndarray
    count: np.ndarray
    child: np.ndarray
    time: np.ndarray


@dataclass(frozen=True)
class Column:
    name: str
    stype: SemanticType
    valid: np.ndarray
    value: np.ndarray | None = None  # numerical / categorical codes / timestamp / embedding [n, d]
    start: np.ndarray | None = None  # text and multicategorical
    count: np.ndarray | None = None
    items: np.ndarray | None = None  # text bytes (uint8) / multicategorical codes (int32)
    vocab: list[Any] | None = None

    def text(self, rows: np.ndarray) -> list[str | None]:
        """Decoded strings of a text column for some rows."""
        assert self.start is not None and self.count is not None and self.items is not None
        out: list[str | None] = []
        for r in np.asarray(rows, dtype=np.int64):
            if not self.valid[r]:
                out.append(None)
                continue
            s, c = int(self.start[r]), int(self.count[r])
            out.append(bytes(self.items[s : s + c]).decode("utf-8", errors="replace"))
        return out


class TableView:
    def __init__(self, graph: Graph, name: str) -> None:
        self.graph = graph
        self.name = name
        self.meta: dict[str, Any] = graph.manifest["tables"][name]
        self.info: TableInfo = graph.schema.tables[name]
        self.num_rows: int = int(self.meta["rows"])
        self._cache: dict[str, np.ndarray] = {}

    def array(self, name: str) -> np.ndarray:
        if name not in self._cache:
            if name not in self.meta["arrays"]:
                raise KeyError(f"table '{self.name}' has no array '{name}'")
            ai = ArrayInfo.from_dict(self.meta["arrays"][name])
            try:
                self._cache[name] = map_array(
                    [self.graph.path / f.path for f in ai.files], np.dtype(ai.dtype), tuple(ai.shape)
                )
            except OSError as e:  # a shard file missing or cut short: a damaged copy, not a crash
                raise SourceError(
                    f"graph {self.graph.path}: cannot map array '{name}' of table '{self.name}' "
                    f"({e.strerror or e})"
                ) from None
        return self._cache[name]

    def has(self, name: str) -> bool:
        return name in self.meta["arrays"]

    @property
    def time(self) -> np.ndarray | None:
        return self.array(time_array()) if self.has(time_array()) else None

    @property
    def end_time(self) -> np.ndarray | None:
        return self.array(time_array(True)) if self.has(time_array(True)) else None

    @property
    def keys(self) -> np.ndarray | None:
        """Primary keys in row order (int64 or UTF-8 bytes)."""
        return self.array(pk_array()) if self.has(pk_array()) else None

    def fk(self, col: str) -> np.ndarray:
        return self.array(fk_array(col))

    def csr(self, child: str, fk: str) -> CSR:
        return CSR(
            self.array(rev_array(child, fk, "start")),
            self.array(rev_array(child, fk, "count")),
            self.array(rev_array(child, fk, "child")),
            self.array(rev_array(child, fk, "time")),
        )

    def csr_fk(self, child: str, fk: str, other: str) -> np.ndarray | None:
        """The parent rows of `child`'s other foreign key `other` beside the children of the CSR through
        `fk` (None in graphs of format version 1, which do not store them)."""
        name = rev_array(child, fk, f"fk.{other}")
        return self.array(name) if self.has(name) else None

    def column(self, col: str) -> Column:
        stype = self.info.column(col).stype
        vocab = self.meta.get("vocab", {}).get(col)
        valid = self.array(col_array(col, "valid"))
        if stype == SemanticType.text:
            return Column(
                col,
                stype,
                valid,
                None,
                self.array(col_array(col, "start")),
                self.array(col_array(col, "count")),
                self.array(col_array(col, "bytes")),
            )
        if stype == SemanticType.multicategorical:
            return Column(
                col,
                stype,
                valid,
                None,
                self.array(col_array(col, "start")),
                self.array(col_array(col, "count")),
                self.array(col_array(col, "codes")),
                vocab,
            )
        return Column(col, stype, valid, self.array(col_array(col, "value")), vocab=vocab)

    def lookup(self, keys: Any) -> np.ndarray:
        """Original primary-key values → row ids (-1 where unknown)."""
        pk = self.keys
        if pk is None:
            raise SourceError(f"table '{self.name}' has no primary key to look up")
        k = np.asarray(keys)
        if pk.dtype.kind == "S":
            k = (
                np.array([str(v).encode("utf-8") for v in k.tolist()], dtype=bytes)
                if k.dtype.kind != "S"
                else k
            )
        else:
            k = k.astype(np.int64)
        if len(pk) == 0:
            return np.full(len(k), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(pk, k), len(pk) - 1)
        return np.where(pk[pos] == k, pos, -1).astype(np.int64)

    def key_values(self, rows: np.ndarray) -> np.ndarray:
        """Row ids → original primary-key values (str for string keys)."""
        pk = self.keys
        if pk is None:
            return np.asarray(rows)
        vals = pk[np.asarray(rows, dtype=np.int64)]
        if pk.dtype.kind == "S":
            return np.array([v.decode("utf-8") for v in vals], dtype=object)
        return vals


class Graph:
    """A built relational graph, opened read-only from its folder."""

    def __init__(self, path: Path, manifest: dict[str, Any]) -> None:
        self.path = path
        self.manifest = manifest
        self.schema = GraphSchema.from_dict(manifest["schema"])
        self._tables: dict[str, TableView] = {}

    @classmethod
    def open(cls, path: str | Path) -> Graph:
        p = Path(path)
        mf = p / MANIFEST
        if not mf.is_file():
            raise SourceError(f"graph {p}: no {MANIFEST} (build it with `relfm graph build SPEC --out {p}`)")
        manifest = json.loads(mf.read_text())
        if manifest.get("format") != FORMAT_NAME:
            raise SourceError(f"graph {p}: not a relfm graph")
        return cls(p.resolve(), manifest)

    @cached_property
    def spec(self) -> GraphSpec:
        return GraphSpec.from_dict(self.manifest["spec"], base_dir=self.manifest.get("spec_dir"))

    @property
    def graph_id(self) -> str:
        return str(self.manifest["graph_id"])

    @property
    def table_names(self) -> list[str]:
        return list(self.manifest["tables"])

    def table(self, name: str) -> TableView:
        if name not in self._tables:
            self.schema.table(name)  # raises a one-line error with a suggestion
            self._tables[name] = TableView(self, name)
        return self._tables[name]

    def __getitem__(self, name: str) -> TableView:
        return self.table(name)

    def max_time(self) -> int:
        """The latest row time in the graph (int64 ns): 'now' for predictions at the latest time."""
        times = [t["time_max"] for t in self.manifest["tables"].values() if t.get("time_max") is not None]
        if not times:
            raise SourceError(f"graph {self.path}: no table has a time column")
        return int(max(times))

    def min_time(self) -> int:
        times = [t["time_min"] for t in self.manifest["tables"].values() if t.get("time_min") is not None]
        if not times:
            raise SourceError(f"graph {self.path}: no table has a time column")
        return int(min(times))
