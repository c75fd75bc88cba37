"""Latent vectors of the rows a column or process reads, projected before they are gathered.

Events read the traits of their actor and of the rows they picked. Gathering those vectors row by row
and then projecting costs O(events x dims) per column; projecting the parent table once (cached for
materialized tables) and gathering one number per event is what keeps 10M-row runs fast.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class LatentSource:
    """Rows `idx` of latent matrix `base` (all of its rows when `idx` is None)."""

    def __init__(
        self, base: np.ndarray, idx: np.ndarray | None = None, cache: dict[Any, np.ndarray] | None = None
    ) -> None:
        self.base = base
        self.idx = idx
        self.cache = cache

    @property
    def n(self) -> int:
        return len(self.base) if self.idx is None else len(self.idx)

    def project(self, key: Any, w: np.ndarray) -> np.ndarray:
        """``base[idx, :k] @ w`` for w of shape (k,) or (k, m); `key` names w for the cache."""
        k = w.shape[0]
        if self.idx is None:
            return np.asarray(self.base[:, :k] @ w, dtype=np.float64)
        if self.cache is not None:
            full = self.cache.get(key)
            if full is None:
                full = self.cache[key] = np.asarray(self.base[:, :k] @ w, dtype=np.float64)
            return np.asarray(full[self.idx], dtype=np.float64)
        if len(self.base) <= len(self.idx):
            return np.asarray((self.base[:, :k] @ w)[self.idx], dtype=np.float64)
        return np.asarray(self.base[self.idx, :k] @ w, dtype=np.float64)


def loading_sum(
    key: Any, loading: dict[str, list[float]], sources: dict[str, LatentSource], n: int
) -> np.ndarray:
    """``sum over sources of loading[src] . z_src`` for `n` rows (zeros without loadings)."""
    out = np.zeros(n)
    for src, w in sorted(loading.items()):
        wv = np.asarray(w, dtype=np.float64)
        if wv.size:
            out += sources[src].project((key, src), wv)
    return out
