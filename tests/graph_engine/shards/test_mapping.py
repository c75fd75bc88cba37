"""Shard files mapped back to back: one contiguous, read-only array equal to their concatenation."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import numba
import numpy as np
import pytest

from graph_engine.shards.mapping import ALIGN, map_array

pytestmark = pytest.mark.unit


def _write_shards(root: Path, data: np.ndarray, rows_per_file: int) -> list[Path]:
    files = []
    for i, lo in enumerate(range(0, len(data), rows_per_file)):
        f = root / f"{i:06d}.bin"
        f.write_bytes(np.ascontiguousarray(data[lo : lo + rows_per_file]).tobytes())
        files.append(f)
    return files


def _mapped_files() -> set[str]:
    with open("/proc/self/maps") as f:
        return {line.split()[-1] for line in f if line.rstrip().endswith(".bin")}


@pytest.mark.parametrize(
    ("dtype", "shape"),
    [("int64", (3 * 8192 + 5,)), ("uint8", (2 * ALIGN + 1,)), ("float32", (16384 + 3, 4)), ("S4", (40000,))],
)
def test_shards_map_to_their_concatenation(tmp_path: Path, dtype: str, shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, size=int(np.prod(shape)) * np.dtype(dtype).itemsize, dtype=np.uint8)
    data = raw.view(dtype).reshape(shape)
    per_file = ALIGN * 2 // (np.dtype(dtype).itemsize * int(np.prod(shape[1:])))  # 128 KiB per file
    files = _write_shards(tmp_path, data, per_file)
    assert len(files) >= 2 and all(f.stat().st_size % ALIGN == 0 for f in files[:-1])
    arr = map_array(files, np.dtype(dtype), shape)
    assert arr.shape == shape and arr.dtype == np.dtype(dtype)
    assert arr.flags.c_contiguous and not arr.flags.writeable
    assert arr.tobytes() == b"".join(f.read_bytes() for f in files)  # bytes: random floats hold NaNs
    assert np.array_equal(arr[-1:].view(np.uint8), data[-1:].view(np.uint8))
    with pytest.raises(ValueError):
        arr[0] = arr[1]


@numba.njit(cache=True)
def _checksum(a: np.ndarray) -> int:
    s = 0
    for i in range(len(a)):
        s = (s * 31 + a[i]) & 0xFFFFFFFF
    return s


def test_compiled_loops_read_across_shard_boundaries(tmp_path: Path) -> None:
    data = np.arange(5 * 8192 + 17, dtype=np.int64) * 7 - 3
    files = _write_shards(tmp_path, data, 8192)
    arr = map_array(files, np.dtype(np.int64), data.shape)
    assert _checksum(arr) == _checksum(data)
    idx = np.array([0, 8191, 8192, 16383, 16384, len(data) - 1])
    assert arr[idx].tolist() == data[idx].tolist()


def test_unaligned_shards_fall_back_to_a_copy(tmp_path: Path) -> None:
    data = np.arange(1000, dtype=np.int32)
    files = _write_shards(tmp_path, data, 300)  # 1200-byte files: not multiples of ALIGN
    arr = map_array(files, np.dtype(np.int32), data.shape)
    assert np.array_equal(arr, data)


def test_single_file_empty_array_and_short_files(tmp_path: Path) -> None:
    data = np.arange(10, dtype=np.float64)
    files = _write_shards(tmp_path, data, 100)
    assert np.array_equal(map_array(files, np.dtype(np.float64), (10,)), data)
    assert map_array(files, np.dtype(np.float64), (0,)).shape == (0,)
    with pytest.raises(OSError, match="hold 80 bytes, expected 88"):
        map_array(files, np.dtype(np.float64), (11,))


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="needs /proc")
def test_mapping_is_released_with_the_last_view(tmp_path: Path) -> None:
    data = np.arange(3 * 8192, dtype=np.int64)
    files = _write_shards(tmp_path, data, 8192)
    arr = map_array(files, np.dtype(np.int64), data.shape)
    view = arr[8000:9000]
    assert {str(f) for f in files} <= _mapped_files()
    del arr
    gc.collect()
    assert int(view[0]) == 8000  # a view keeps the region alive
    del view
    gc.collect()
    assert not {str(f) for f in files} & _mapped_files()
