"""Feature columns as noisy functions of latent traits, one Arrow array per column and block.

Every kind starts from one standardised score per row (see `ColumnConfig`), so a column's strength of
signal is set by its loading and noise alone, whatever its type; the kind only decides how the score is
shown (a price, a category, a sentence, a tag list).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import ndtr, ndtri

from graph_engine.synthetic.config import ColumnConfig
from graph_engine.synthetic.latent import LatentSource
from graph_engine.synthetic.names import FILLER, NEGATIVE, POSITIVE, TEXT_TOPICS
from graph_engine.synthetic.randomness import rng_for
from graph_engine.synthetic.timeline import Timeline

TIMESTAMP = pa.timestamp("us")


def arrow_type(col: ColumnConfig) -> pa.DataType:
    return {
        "float": pa.float64(),
        "int": pa.int64(),
        "category": pa.string(),
        "bool": pa.bool_(),
        "tags": pa.list_(pa.string()),
        "text": pa.string(),
        "timestamp": TIMESTAMP,
        "embedding": pa.list_(pa.float32(), col.dim),
    }[col.kind]


class ColumnMaker:
    """Builds one column's blocks; its fixed random parts (projections, tag slopes) are drawn once."""

    def __init__(self, col: ColumnConfig, seed: int, table: str, missing_rate: float, timeline: Timeline):
        self.col = col
        self.seed = seed
        self.table = table
        self.missing_rate = missing_rate
        self.timeline = timeline
        static = rng_for(seed, "column-static", table, col.name)
        self._proj = {
            src: static.standard_normal((len(w), col.dim)) / np.sqrt(max(len(w), 1))
            for src, w in sorted(col.loading.items())
        }
        self._topic_dir = {src: static.standard_normal(len(w)) for src, w in sorted(col.loading.items())}
        if col.kind == "tags":
            signs = np.where(np.arange(len(col.values)) % 2 == 0, 1.0, -1.0)
            self._tag_rho = signs * static.uniform(0.4, 0.9, len(col.values))
            self._tag_perm = static.permutation(len(col.values))

    def make(self, sources: Mapping[str, LatentSource], n: int, block: int) -> pa.Array:
        col = self.col
        rng = rng_for(self.seed, "column", self.table, col.name, block)
        missing = rng.random(n) < self.missing_rate if self.missing_rate > 0 else None
        if col.kind == "embedding":
            return self._embedding(sources, n, rng, missing)
        s = self._score(sources, n, rng)
        if col.kind == "float":
            return _float(col, s, missing)
        if col.kind == "int":
            return _int(col, s, rng, missing)
        if col.kind == "category":
            idx = _bucket(s, _probs(col.probs, len(col.values)))
            return pa.array(col.values).take(pa.array(idx, mask=missing))
        if col.kind == "bool":
            return pa.array(s > ndtri(1 - col.p_true), mask=missing)
        if col.kind == "tags":
            return self._tags(s, n, rng, missing)
        if col.kind == "text":
            return self._text(sources, s, n, rng, missing)
        return self._timestamp(s, missing)

    def _embedding(
        self,
        sources: Mapping[str, LatentSource],
        n: int,
        rng: np.random.Generator,
        missing: np.ndarray | None,
    ) -> pa.Array:
        col = self.col
        x = np.zeros((n, col.dim))
        for src, w in sorted(col.loading.items()):
            if w:
                x += sources[src].project(
                    self._key(src, "embedding"), np.asarray(w)[:, None] * self._proj[src]
                )
        if col.noise > 0:
            x += col.noise * rng.standard_normal((n, col.dim))
        flat = pa.array(x.astype(np.float32).reshape(-1))
        mask = pa.array(missing) if missing is not None else None
        return pa.FixedSizeListArray.from_arrays(flat, col.dim, mask=mask)

    def _tags(self, s: np.ndarray, n: int, rng: np.random.Generator, missing: np.ndarray | None) -> pa.Array:
        col = self.col
        k = len(col.values)
        p = min(col.mean_tags / k, 0.95)
        thr = ndtri(1 - p)
        rho = self._tag_rho
        own = rng.standard_normal((n, k))
        on = (s[:, None] * rho + own * np.sqrt(1 - rho**2)) > thr
        on = on[:, self._tag_perm]
        rows, tags = np.nonzero(on)
        counts = np.bincount(rows, minlength=n)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        values = pa.array(col.values).take(pa.array(tags))
        mask = pa.array(missing) if missing is not None else None
        return pa.ListArray.from_arrays(pa.array(offsets), values, mask=mask)

    def _text(
        self,
        sources: Mapping[str, LatentSource],
        s: np.ndarray,
        n: int,
        rng: np.random.Generator,
        missing: np.ndarray | None,
    ) -> pa.Array:
        col = self.col
        groups = TEXT_TOPICS[col.topic]
        topic = 0.5 * rng.standard_normal(n)
        var = 0.25
        for src, w in sorted(col.loading.items()):
            direction = self._topic_dir[src] * (np.asarray(w) != 0)
            if direction.size:
                topic += sources[src].project(self._key(src, "topic"), direction)
                var += float(direction @ direction)
        group = np.minimum((ndtr(topic / np.sqrt(var)) * len(groups)).astype(np.int64), len(groups) - 1)
        n_words = rng.integers(col.min_words, col.max_words + 1, n)
        total = int(n_words.sum())
        row = np.repeat(np.arange(n), n_words)
        u = rng.random((4, total))
        vocab = [*FILLER, *POSITIVE, *NEGATIVE]
        g_start = np.zeros(len(groups), dtype=np.int64)
        g_size = np.zeros(len(groups), dtype=np.int64)
        for i, g in enumerate(groups):
            g_start[i], g_size[i] = len(vocab), len(g)
            vocab.extend(g)
        positive = u[1] < 1 / (1 + np.exp(-2.0 * s[row]))
        sentiment = np.where(
            positive,
            len(FILLER) + (u[2] * len(POSITIVE)).astype(np.int64),
            len(FILLER) + len(POSITIVE) + (u[2] * len(NEGATIVE)).astype(np.int64),
        )
        g = group[row]
        topical = g_start[g] + (u[2] * g_size[g]).astype(np.int64)
        filler = (u[3] * len(FILLER)).astype(np.int64)
        word = np.where(u[0] < 0.25, sentiment, np.where(u[0] < 0.6, topical, filler))
        words = pa.array(vocab).take(pa.array(word))
        offsets = np.concatenate([[0], np.cumsum(n_words)]).astype(np.int32)
        sentences = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), words), " ")
        sentences = pc.binary_join_element_wise(pc.utf8_capitalize(sentences), ".", "")
        if missing is not None:
            sentences = pc.if_else(pa.array(missing), pa.scalar(None, pa.string()), sentences)
        return sentences

    def _key(self, src: str, purpose: str) -> tuple[str, str, str, str]:
        return (self.table, self.col.name, src, purpose)

    def _score(self, sources: Mapping[str, LatentSource], n: int, rng: np.random.Generator) -> np.ndarray:
        """The standardised score: loading . z + noise * eps, divided by its standard deviation."""
        col = self.col
        s = np.zeros(n)
        var = 0.0
        for src, w in sorted(col.loading.items()):
            wv = np.asarray(w, dtype=np.float64)
            if wv.size:
                s += sources[src].project(self._key(src, "score"), wv)
                var += float(wv @ wv)
        if col.noise > 0:
            s += col.noise * rng.standard_normal(n)
            var += col.noise**2
        return s / np.sqrt(var) if var > 0 else s

    def _timestamp(self, s: np.ndarray, missing: np.ndarray | None) -> pa.Array:
        col = self.col
        base = col.base if col.base is not None else datetime(self.timeline.start.year - 10, 1, 1)
        days = self.timeline.days_of(base) + col.loc + col.scale * s
        us = self.timeline.to_us(days)
        return pa.array(us.view("datetime64[us]"), type=TIMESTAMP, mask=missing)


def _probs(probs: list[float], k: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64) if probs else 1.0 / (np.arange(k) + 1.0) ** 0.7
    return np.asarray(p / p.sum(), dtype=np.float64)


def _bucket(s: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Index of the bucket of each score, buckets having probabilities `p` under a standard normal."""
    thresholds = ndtri(np.cumsum(p)[:-1])
    return np.searchsorted(thresholds, s).astype(np.int64)


def _float(col: ColumnConfig, s: np.ndarray, missing: np.ndarray | None) -> pa.Array:
    x = col.loc + col.scale * s
    if col.dist == "lognormal":
        x = np.exp(np.minimum(x, 700.0))
    elif col.dist == "uniform":
        x = col.loc + col.scale * ndtr(s)
    if col.decimals is not None:
        x = np.round(x, col.decimals)
    return pa.array(x, type=pa.float64(), mask=missing)


def _int(col: ColumnConfig, s: np.ndarray, rng: np.random.Generator, missing: np.ndarray | None) -> pa.Array:
    low = col.low
    if col.dist == "poisson":
        x = rng.poisson(np.exp(np.minimum(col.loc + col.scale * s, 20.0))) + (low or 0)
    elif col.dist == "rank":
        high = int(col.high or 1)
        x = 1 + np.floor(high * ndtr(-s)).astype(np.int64)
        low = 1 if low is None else low
    elif col.dist == "bucket":
        high = int(col.high or 1)
        x = (1 if low is None else low) + _bucket(s, _probs(col.probs, high))
        low = None
    else:
        x = np.round(col.loc + col.scale * s).astype(np.int64)
    if low is not None or col.high is not None:
        x = np.clip(x, low, col.high)
    return pa.array(np.asarray(x, dtype=np.int64), type=pa.int64(), mask=missing)
