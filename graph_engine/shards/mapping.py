"""Presenting the shard files of one array as a single contiguous, read-only, memory-mapped array.

A graph is written as many shard files (one per row range, so Spark executors write them in parallel),
but the sampler and label engine are compiled loops that want one flat array per column: indexing a
list of arrays from numba is 15x slower, a tuple 2-3x (measured on this machine). Shard files are raw
binaries whose sizes are multiples of `ALIGN` (except the last), so on POSIX we reserve one address range
and map every file into it back to back with MAP_FIXED: numba sees a plain array, pages load lazily, and
resident memory stays flat whatever the graph's size. A single file is mapped with NumPy's memmap;
elsewhere (no MAP_FIXED) the shards are concatenated in memory as a fallback.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os
import weakref
from pathlib import Path

import numpy as np

# Shard byte sizes are multiples of this, which covers 4 KiB, 16 KiB and 64 KiB pages.
ALIGN = 1 << 16

_PROT_NONE = 0
_PROT_READ = 1
_MAP_SHARED = 0x01
_MAP_PRIVATE = 0x02
_MAP_FIXED = 0x10
_MAP_ANONYMOUS = 0x20 if os.uname().sysname == "Linux" else 0x1000
_MAP_FAILED = ctypes.c_void_p(-1).value

_libc: ctypes.CDLL | None = None


def _lib() -> ctypes.CDLL | None:
    global _libc
    if _libc is None and os.name == "posix":
        name = ctypes.util.find_library("c")
        lib = ctypes.CDLL(name, use_errno=True)
        lib.mmap.restype = ctypes.c_void_p
        lib.mmap.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_long,
        ]
        lib.munmap.restype = ctypes.c_int
        lib.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        _libc = lib
    return _libc


class _Region:
    """Owns one reserved address range; unmapped when the last array viewing it goes away."""

    def __init__(self, size: int) -> None:
        lib = _lib()
        assert lib is not None
        self.size = size
        addr = lib.mmap(None, size, _PROT_NONE, _MAP_PRIVATE | _MAP_ANONYMOUS, -1, 0)
        if addr in (None, _MAP_FAILED):
            raise OSError(ctypes.get_errno(), "cannot reserve address space for graph arrays")
        self.addr: int = addr

    def map_file(self, path: Path, offset: int, length: int) -> None:
        lib = _lib()
        assert lib is not None
        fd = os.open(path, os.O_RDONLY)
        try:
            got = lib.mmap(self.addr + offset, length, _PROT_READ, _MAP_SHARED | _MAP_FIXED, fd, 0)
        finally:
            os.close(fd)
        if got != self.addr + offset:
            raise OSError(ctypes.get_errno(), f"cannot map {path}")

    def release(self) -> None:
        lib = _lib()
        if lib is not None and self.addr:
            lib.munmap(self.addr, self.size)
            self.addr = 0


def map_array(files: list[Path], dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """One read-only array over `files` laid end to end (each but the last a multiple of ALIGN bytes)."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    sizes = [f.stat().st_size for f in files]
    if sum(sizes) < nbytes:
        raise OSError(f"shard files of {files[0].parent} hold {sum(sizes)} bytes, expected {nbytes}")
    if nbytes == 0:
        return np.empty(shape, dtype=dtype)
    if len(files) == 1:
        return np.memmap(files[0], dtype=dtype, mode="r", shape=shape)
    if _lib() is None or any(s % ALIGN for s in sizes[:-1]):
        parts = [np.fromfile(f, dtype=np.uint8) for f in files]
        return np.concatenate(parts)[:nbytes].view(dtype).reshape(shape)
    total = -(-sum(sizes) // mmap.PAGESIZE) * mmap.PAGESIZE
    region = _Region(total)
    offset = 0
    for f, size in zip(files, sizes, strict=True):
        if size:
            region.map_file(f, offset, size)
        offset += size
    buf = (ctypes.c_char * nbytes).from_address(region.addr)
    arr: np.ndarray = np.frombuffer(memoryview(buf), dtype=dtype).reshape(shape)
    arr.flags.writeable = False
    # The region lives as long as any view of the array does.
    weakref.finalize(buf, region.release)
    return arr
