"""Named random streams: every (seed, purpose, table, block) gets its own generator.

Content is a function of these names, never of the order or size of writes, which is what makes output
identical whatever `chunk_rows` is, and lets a column or table be added without reshuffling the others.
"""

from __future__ import annotations

import zlib

import numpy as np


def _key(k: str | int) -> int:
    if isinstance(k, int):
        if k < 0:
            raise ValueError("random stream keys must be non-negative")
        return k
    return zlib.crc32(k.encode("utf-8"))


def rng_for(seed: int, *keys: str | int) -> np.random.Generator:
    """An independent generator for the stream named by `keys` under `seed`."""
    ss = np.random.SeedSequence(seed, spawn_key=tuple(_key(k) for k in keys))
    return np.random.Generator(np.random.PCG64(ss))
