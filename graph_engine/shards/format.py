"""The on-disk graph format: memory-mapped CSR shards and a manifest.

Layout of a built graph folder::

    manifest.json
    tables/<table>/<array>/<shard:06d>.bin

Every array is a raw little-endian binary split into shards (no header, so files map at offset 0). The
manifest gives each array's dtype, shape, layout and per-file sha256.

Rows. Each table's rows get dense ids 0..n-1 in a canonical order: by primary key (integers numerically,
strings by UTF-8 bytes) or, for tables without one, by all scalar columns (nulls first). Both builders
use this order, which is what makes their output byte-identical. Shard `s` holds rows
[s * rows_per_shard, (s + 1) * rows_per_shard); rows_per_shard is a multiple of 65536, so every
row-aligned shard file but the last is a multiple of 64 KiB and the reader can map them back to back into
one contiguous array (see `mapping`).

Arrays of a table (layout "rows": one element, or one fixed-width vector, per row):

    __pk__                   primary keys in row order (int64, or fixed-width UTF-8 bytes `S<w>`); since
                             rows are sorted by key this is also the key → row index (binary search)
    __time__, __end_time__   int64 nanoseconds, UTC-naive; a null time is int64 max (never visible)
    fk.<col>                 int64 parent row id for foreign key <col> (F→P); -1 is a missing link
    col.<c>.valid            uint8, 1 where the value is present
    col.<c>.value            numerical float64 | categorical int32 code (-1 null) into the column's
                             vocabulary (sorted distinct values, in the manifest) | timestamp int64 ns |
                             embedding float32 [n, d]
    col.<c>.start/.count     text and multicategorical: int64 start and count into the segment array
    rev.<child>.<fk>.start/.count
                             P→F CSR for every foreign key pointing at this table: int64 start and count
                             of this parent's children in the segment arrays below

Segment arrays (layout "segments": shard s holds the items of the rows of shard s, padded with zeros to a
multiple of 64 KiB except in the last shard, so starts are global offsets into one contiguous array):

    col.<c>.bytes            text: UTF-8 bytes          col.<c>.codes   multicategorical: int32 codes
    rev.<child>.<fk>.child   child row ids, sorted by (time, child row) within each parent
    rev.<child>.<fk>.time    their times beside them, so "children of p before t" is one binary search
    rev.<child>.<fk>.fk.<other>
                             for each other foreign key of the child table, the child's parent row id
                             through it (-1 for a missing link) beside each child: a sampler going on
                             from the children to their other parents reads them from the segment's own
                             pages instead of one random page per child (format version 2)

The manifest also records the complete graph spec, the resolved schema, the source table versions, row
and edge counts, missing-link counts, key-only parent rows added, and a `graph_id` (hash of spec, source
versions and format options) under which builds are cached and reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from graph_engine.shards.mapping import ALIGN

FORMAT_NAME = "relfm-graph"
FORMAT_VERSION = 2  # 2: rev.<child>.<fk>.fk.<other> arrays
DEFAULT_ROWS_PER_SHARD = 1 << 22
TIME_NULL = np.iinfo(np.int64).max  # a row with unknown time is never visible
TIME_STATIC = np.iinfo(np.int64).min  # key-only parent rows: always visible
MANIFEST = "manifest.json"


def pk_array() -> str:
    return "__pk__"


def time_array(end: bool = False) -> str:
    return "__end_time__" if end else "__time__"


def fk_array(col: str) -> str:
    return f"fk.{col}"


def col_array(col: str, part: str) -> str:
    return f"col.{col}.{part}"


def rev_array(child: str, fk: str, part: str) -> str:
    return f"rev.{child}.{fk}.{part}"


def padded_length(count: int, itemsize: int) -> int:
    """Elements a non-final segment shard occupies once padded to a multiple of ALIGN bytes."""
    nbytes = count * itemsize
    return -(-nbytes // ALIGN) * ALIGN // itemsize


def segment_bases(counts: list[int], itemsize: int) -> list[int]:
    """Global offset of each shard's first item: every shard but the last is padded."""
    bases, acc = [], 0
    for i, c in enumerate(counts):
        bases.append(acc)
        acc += c if i == len(counts) - 1 else padded_length(c, itemsize)
    return bases


def check_rows_per_shard(rows_per_shard: int) -> None:
    from graph_engine.errors import SpecError

    if rows_per_shard <= 0 or rows_per_shard % ALIGN:
        raise SpecError(f"rows_per_shard must be a positive multiple of {ALIGN}, got {rows_per_shard}")


@dataclass
class ArrayFile:
    path: str
    bytes: int
    sha256: str


@dataclass
class ArrayInfo:
    dtype: str
    shape: list[int]
    layout: str  # "rows" | "segments"
    files: list[ArrayFile] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dtype": self.dtype,
            "shape": self.shape,
            "layout": self.layout,
            "files": [{"path": f.path, "bytes": f.bytes, "sha256": f.sha256} for f in self.files],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArrayInfo:
        return cls(d["dtype"], list(d["shape"]), d["layout"], [ArrayFile(**f) for f in d["files"]])


def write_shard_file(
    root: Path, table: str, array: str, shard: int, data: np.ndarray, pad: bool
) -> ArrayFile:
    """Writes one shard file (raw bytes, padded to ALIGN when `pad`) and returns its manifest entry."""
    rel = f"tables/{table}/{array}/{shard:06d}.bin"
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = np.ascontiguousarray(data).tobytes()
    if pad and len(raw) % ALIGN:
        raw += b"\0" * (ALIGN - len(raw) % ALIGN)
    path.write_bytes(raw)
    return ArrayFile(rel, len(raw), hashlib.sha256(raw).hexdigest())


def graph_id(spec: dict[str, Any], sources: dict[str, Any], rows_per_shard: int) -> str:
    """Identity of a build: same spec, same source versions, same options → same graph."""
    payload = json.dumps(
        {"spec": spec, "sources": sources, "rows_per_shard": rows_per_shard, "format": FORMAT_VERSION},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def dump_manifest(manifest: dict[str, Any], root: Path) -> None:
    (root / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True, default=str) + "\n")


def content_checksum(manifest: dict[str, Any]) -> str:
    """A hash over every array file's checksum: equal for byte-identical builds."""
    h = hashlib.sha256()
    for t in sorted(manifest["tables"]):
        arrays = manifest["tables"][t]["arrays"]
        for a in sorted(arrays):
            for f in arrays[a]["files"]:
                h.update(f"{f['path']}:{f['sha256']}\n".encode())
    return h.hexdigest()
