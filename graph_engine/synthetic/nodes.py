"""Latent traits of node rows (entities, dimensions, occasions) and how events pick dimension rows.

A node table is generated in fixed blocks of `block_rows` rows, each from its own random stream, so a
block can be regenerated anywhere (an entity block is made once, written and dropped; a dimension is
kept whole, as latent vectors only, because events pick from all of it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from graph_engine.synthetic.config import (
    ChoiceLink,
    DimensionTable,
    EntityTable,
    NodeTable,
    OccasionTable,
    SyntheticConfig,
    SyntheticConfigError,
)
from graph_engine.synthetic.randomness import rng_for
from graph_engine.synthetic.timeline import YEAR_DAYS, Timeline


@dataclass
class NodeBlock:
    """Rows [lo, hi) of a node table: latent vectors, chosen static parents, time and activity window."""

    lo: int
    hi: int
    z: np.ndarray
    parent_idx: dict[str, np.ndarray]
    time_days: np.ndarray | None
    active_from: np.ndarray
    active_to: np.ndarray

    @property
    def n(self) -> int:
        return self.hi - self.lo


@dataclass
class Materialized:
    """A whole dimension or occasion table held as arrays (latent, parents, times, popularity)."""

    table: NodeTable
    block_rows: int
    z: np.ndarray
    parent_idx: dict[str, np.ndarray]
    time_days: np.ndarray | None
    active_from: np.ndarray
    active_to: np.ndarray
    _cum_pop: np.ndarray = field(init=False)
    # Projections of `z` by column and process loadings, computed once per run (see latent.py).
    cache: dict[Any, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        skew = self.table.popularity if isinstance(self.table, DimensionTable) else 0.0
        w = np.exp(skew * self.z[:, 0]) if skew > 0 else np.ones(len(self.z))
        self._cum_pop = np.cumsum(w)

    @property
    def n(self) -> int:
        return len(self.z)

    def popular(self, rng: np.random.Generator, m: int) -> np.ndarray:
        """`m` row indices drawn by popularity."""
        target = rng.random(m) * self._cum_pop[-1]
        idx = np.minimum(np.searchsorted(self._cum_pop, target, side="right"), self.n - 1)
        return np.asarray(idx, dtype=np.int64)

    def weights(self) -> np.ndarray:
        return np.diff(self._cum_pop, prepend=0.0)

    def block(self, b: int) -> NodeBlock:
        lo, hi = b * self.block_rows, min(self.n, (b + 1) * self.block_rows)
        return NodeBlock(
            lo=lo,
            hi=hi,
            z=self.z[lo:hi],
            parent_idx={k: v[lo:hi] for k, v in self.parent_idx.items()},
            time_days=None if self.time_days is None else self.time_days[lo:hi],
            active_from=self.active_from[lo:hi],
            active_to=self.active_to[lo:hi],
        )


def occasion_schedule(cfg: SyntheticConfig, t: OccasionTable, timeline: Timeline) -> np.ndarray:
    """Sorted occasion times (float days): a regular cadence with jitter, optionally only some months."""
    rng = rng_for(cfg.seed, "schedule", t.name)
    span = timeline.span_days
    k = np.arange(int(np.floor(span / t.every_days)) + 1, dtype=np.float64)
    days = rng.uniform(0, t.every_days) + k * t.every_days
    if t.jitter_days > 0:
        days = days + rng.normal(0.0, t.jitter_days, days.size)
    # Occasions happen at a fixed hour of the day.
    _, _, hour = timeline.calendar(days)
    days = days - hour / 24.0 + t.hour / 24.0
    days = np.unique(days[(days >= 0) & (days < span)])
    if t.months:
        days = days[np.isin(timeline.month(days), t.months)]
    if days.size == 0:
        raise SyntheticConfigError(f"occasion table '{t.name}' gets no rows in the configured time span")
    return days


def n_rows(t: NodeTable, schedules: dict[str, np.ndarray]) -> int:
    return len(schedules[t.name]) if isinstance(t, OccasionTable) else t.n_rows


def node_block(
    cfg: SyntheticConfig,
    t: NodeTable,
    b: int,
    n: int,
    mats: dict[str, Materialized],
    schedules: dict[str, np.ndarray],
    timeline: Timeline,
) -> NodeBlock:
    """Generates block `b` of node table `t` (its parents must be materialized)."""
    lo, hi = b * cfg.block_rows, min(n, (b + 1) * cfg.block_rows)
    m = hi - lo
    rng = rng_for(cfg.seed, "node", t.name, b)
    d = t.latent_dim
    z = np.zeros((m, d))
    own_var = np.ones(d)
    parent_idx: dict[str, np.ndarray] = {}
    for link in t.parents:
        par = mats[link.parent]
        idx = par.popular(rng, m)
        parent_idx[link.column] = idx
        k = min(d, par.z.shape[1])
        z[:, :k] += link.inherit * par.z[idx, :k]
        own_var[:k] -= link.inherit**2
    z += rng.standard_normal((m, d)) * np.sqrt(np.clip(own_var, 0.05, 1.0))
    span = timeline.span_days
    time_days: np.ndarray | None = None
    active_from = np.zeros(m)
    active_to = np.full(m, span)
    if isinstance(t, OccasionTable):
        time_days = schedules[t.name][lo:hi]
    elif isinstance(t, EntityTable):
        created = _signup_days(t, rng, m, span)
        time_days = created if t.time_column is not None else None
        active_from = created if t.time_column is not None else active_from
        if t.churn is not None and t.churn.hazard_per_year > 0:
            w = np.asarray(t.churn.loading, dtype=np.float64)
            log_h = np.log(t.churn.hazard_per_year) + (z[:, : w.size] @ w - 0.5 * w @ w if w.size else 0.0)
            life = rng.exponential(1.0, m) / np.exp(log_h) * YEAR_DAYS
            active_to = np.minimum(active_from + life, span)
    return NodeBlock(lo, hi, z, parent_idx, time_days, active_from, active_to)


def _signup_days(t: EntityTable, rng: np.random.Generator, m: int, span: float) -> np.ndarray:
    """Creation times: `initial_fraction` in the first 30 days, the rest with exponential growth."""
    u = rng.random(m)
    early = rng.random(m) < t.signup.initial_fraction
    g = t.signup.growth
    later = span * (np.log1p(u * np.expm1(g)) / g if abs(g) > 1e-9 else u)
    first = u * min(30.0, span)
    return np.minimum(np.where(early, first, later), np.nextafter(span, 0))


def materialize(
    cfg: SyntheticConfig,
    t: NodeTable,
    n: int,
    mats: dict[str, Materialized],
    schedules: dict[str, np.ndarray],
    timeline: Timeline,
) -> Materialized:
    n_blocks = -(-n // cfg.block_rows)
    blocks = [node_block(cfg, t, b, n, mats, schedules, timeline) for b in range(n_blocks)]
    return Materialized(
        table=t,
        block_rows=cfg.block_rows,
        z=np.concatenate([bl.z for bl in blocks]),
        parent_idx={k: np.concatenate([bl.parent_idx[k] for bl in blocks]) for k in blocks[0].parent_idx},
        time_days=None if blocks[0].time_days is None else np.concatenate([bl.time_days for bl in blocks]),  # type: ignore[misc]
        active_from=np.concatenate([bl.active_from for bl in blocks]),
        active_to=np.concatenate([bl.active_to for bl in blocks]),
    )


class ChoiceSampler:
    """Picks dimension rows for events: a taste segment from the actor's latent, then by popularity.

    Segments are fixed random directions in the dimension's latent space; an actor's preference over
    them is a softmax of ``affinity * z_actor @ M``. So who buys what is learnable from both sides'
    traits (link prediction), while sampling stays O(events x segments).
    """

    def __init__(self, cfg: SyntheticConfig, event: str, link: ChoiceLink, mat: Materialized, actor_dim: int):
        rng = rng_for(cfg.seed, "choice-static", event, link.column)
        k = max(1, min(link.segments, mat.n))
        d = mat.z.shape[1]
        seg = np.argmax(mat.z @ rng.standard_normal((d, k)), axis=1) if k > 1 else np.zeros(mat.n, np.int64)
        self._perm = np.argsort(seg, kind="stable")
        self._cum = np.cumsum(mat.weights()[self._perm])
        counts = np.bincount(seg, minlength=k)
        self._end = np.cumsum(counts)
        self._begin = self._end - counts
        before = np.concatenate([[0.0], self._cum])
        self._lo = before[self._begin]
        self._tot = before[self._end] - self._lo
        with np.errstate(divide="ignore"):
            self._log_prior = np.log(self._tot / self._cum[-1])
        self._m = rng.standard_normal((actor_dim, k)) / np.sqrt(actor_dim)
        self.affinity = link.affinity
        self.k = k

    def actor_cdf(self, z_actor: np.ndarray) -> np.ndarray:
        """Per-actor cumulative segment probabilities (actors x segments)."""
        logits = self._log_prior + self.affinity * (z_actor[:, : self._m.shape[0]] @ self._m)
        logits = logits - logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        cdf = np.cumsum(p, axis=1)
        return np.asarray(cdf / cdf[:, -1:], dtype=np.float64)

    def sample(self, cdf_rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n = len(cdf_rows)
        u = rng.random((2, n))
        seg = np.minimum((cdf_rows < u[0][:, None]).sum(axis=1), self.k - 1)
        target = self._lo[seg] + u[1] * self._tot[seg]
        pos = np.searchsorted(self._cum, target, side="right")
        pos = np.clip(pos, self._begin[seg], self._end[seg] - 1)
        return np.asarray(self._perm[pos], dtype=np.int64)
