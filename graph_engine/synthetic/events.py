"""Event processes of one block of actors: when events happen and which parent rows they point to.

Root events are a Hawkes process in its cluster form, which vectorises: Poisson immigrants from the
time-modulated rate within each actor's active window (signup to churn), then generation after
generation of offspring, each event having Poisson(eta) children after an exponential delay, eta
depending on the latent traits of the event's actor and chosen parents. Child events (reviews of
orders) are spawned per parent row. Nothing here builds Arrow arrays; `tables` does that.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from graph_engine.synthetic.config import EventTable
from graph_engine.synthetic.latent import LatentSource, loading_sum
from graph_engine.synthetic.nodes import ChoiceSampler, Materialized, NodeBlock
from graph_engine.synthetic.timeline import YEAR_DAYS, IntensityGrid

ETA_CAP = 0.9
MAX_GENERATIONS = 60


@dataclass
class EventRows:
    """One event table's rows for one actor block, sorted by time; keys filled in by `tables`."""

    aidx: np.ndarray  # actor row within the block
    days: np.ndarray
    choice_idx: dict[str, np.ndarray]  # choice column (own and ancestors') -> parent row
    src: np.ndarray | None = None  # child events: row of the parent event
    pk: pa.Array | None = None
    fk: dict[str, pa.Array] | None = None
    orphan: dict[str, np.ndarray | None] = field(default_factory=dict)  # rows given a key with no parent

    @property
    def n(self) -> int:
        return len(self.days)

    def take(self, order: np.ndarray) -> EventRows:
        return EventRows(
            aidx=self.aidx[order],
            days=self.days[order],
            choice_idx={k: v[order] for k, v in self.choice_idx.items()},
            src=None if self.src is None else self.src[order],
        )


@dataclass
class EventModel:
    """Everything fixed about one event table while generating: grid, samplers, parents."""

    table: EventTable
    grid: IntensityGrid | None
    samplers: dict[str, ChoiceSampler]
    occasion: tuple[str, Materialized] | None
    parents: dict[str, Materialized]  # choice column -> parent table (own and ancestors')
    span: float


def root_events(model: EventModel, actor: NodeBlock, rng: np.random.Generator) -> EventRows:
    ev = model.table
    proc = ev.process
    assert model.grid is not None
    w = np.asarray(proc.rate_loading, dtype=np.float64)
    log_mu = np.log(max(proc.rate_per_year, 1e-300) / YEAR_DAYS) + np.zeros(actor.n)
    if w.size:
        log_mu += actor.z[:, : w.size] @ w - 0.5 * float(w @ w)
    a, b = actor.active_from, np.minimum(actor.active_to, model.span)
    ca = model.grid.cum_at(a)
    cb = model.grid.cum_at(np.maximum(a, b))
    lam = np.exp(log_mu) * (cb - ca) if proc.rate_per_year > 0 else np.zeros(actor.n)
    cdfs = {col: s.actor_cdf(actor.z) for col, s in model.samplers.items()}
    if proc.memory_loading:
        gens = _with_memory(model, actor, np.exp(log_mu), ca, cb, cdfs, rng)
    else:
        counts = rng.poisson(lam)
        aidx = np.repeat(np.arange(actor.n, dtype=np.int64), counts)
        days = model.grid.inverse(ca[aidx] + rng.random(aidx.size) * (cb - ca)[aidx])
        choices = {col: model.samplers[col].sample(cdfs[col][aidx], rng) for col in model.samplers}
        gens = [(aidx, days, choices)]
    if proc.excitation > 0:
        base = np.log(proc.excitation / ETA_CAP) - np.log1p(-proc.excitation / ETA_CAP)
        repeat = {ch.column: ch.repeat_prob for ch in ev.choices}
        for _ in range(MAX_GENERATIONS):
            p_aidx, p_days, p_choices = gens[-1]
            if p_aidx.size == 0:
                break
            logit = base + _marks(model, "excitation", proc.excitation_loading, actor, p_aidx, p_choices)
            eta = ETA_CAP / (1 + np.exp(-logit))
            kids = rng.poisson(eta)
            src = np.repeat(np.arange(p_aidx.size), kids)
            c_aidx = p_aidx[src]
            c_days = p_days[src] + rng.exponential(proc.excitation_delay_days, src.size)
            keep = c_days < b[c_aidx]
            src, c_aidx, c_days = src[keep], c_aidx[keep], c_days[keep]
            c_choices = {}
            for col, sampler in model.samplers.items():
                fresh = sampler.sample(cdfs[col][c_aidx], rng)
                again = rng.random(src.size) < repeat[col]
                c_choices[col] = np.where(again, p_choices[col][src], fresh)
            gens.append((c_aidx, c_days, c_choices))
    aidx = np.concatenate([g[0] for g in gens])
    days = np.concatenate([g[1] for g in gens])
    choices = {col: np.concatenate([g[2][col] for g in gens]) for col in model.samplers}
    rows = EventRows(aidx, days, choices)
    if model.occasion is not None:
        rows = _snap_to_occasions(rows, model.occasion, b)
    order = np.lexsort((rows.aidx, rows.days))
    return rows.take(order)


def _with_memory(
    model: EventModel,
    actor: NodeBlock,
    mu: np.ndarray,
    ca: np.ndarray,
    cb: np.ndarray,
    cdfs: dict[str, np.ndarray],
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """Events one after another per actor (all actors in lockstep), the rate following a state.

    Between events an actor's rate is constant up to the time modulation, so the next event is one
    exponential step in integrated-rate units; after it the state moves towards the event's mark.
    """
    proc = model.table.process
    assert model.grid is not None
    state = np.zeros(actor.n)
    pos = ca.copy()
    alive = np.flatnonzero(cb > ca)
    gens: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
    for _ in range(proc.max_events_per_actor):
        if alive.size == 0:
            break
        step = rng.exponential(1.0, alive.size) / (mu[alive] * np.exp(state[alive]))
        nxt = pos[alive] + step
        ok = nxt < cb[alive]
        alive = alive[ok]
        pos[alive] = nxt[ok]
        choices = {col: model.samplers[col].sample(cdfs[col][alive], rng) for col in model.samplers}
        mark = _marks(model, "memory", proc.memory_loading, actor, alive, choices)
        state[alive] = (1 - proc.memory_decay) * state[alive] + proc.memory_decay * mark
        gens.append((alive, model.grid.inverse(pos[alive]), choices))
    return gens or [(np.zeros(0, np.int64), np.zeros(0), {c: np.zeros(0, np.int64) for c in model.samplers})]


def _snap_to_occasions(rows: EventRows, occasion: tuple[str, Materialized], until: np.ndarray) -> EventRows:
    """Moves each event to the next occasion (a race after the urge to race), one per actor and occasion."""
    col, mat = occasion
    assert mat.time_days is not None
    times = mat.time_days
    occ = np.searchsorted(times, rows.days, side="left")
    ok = occ < times.size
    ok[ok] &= times[occ[ok]] < until[rows.aidx[ok]]
    rows = rows.take(np.flatnonzero(ok))
    occ = occ[ok]
    _, first = np.unique(rows.aidx * np.int64(times.size) + occ, return_index=True)
    first = np.sort(first)
    rows = rows.take(first)
    occ = occ[first]
    rows.days = times[occ]
    rows.choice_idx[col] = occ.astype(np.int64)
    return rows


def child_events(
    model: EventModel, parent: EventRows, actor: NodeBlock, rng: np.random.Generator
) -> EventRows:
    child = model.table.child
    assert child is not None
    za = actor.z[parent.aidx]
    w = np.asarray(child.loading, dtype=np.float64)
    shift = za[:, : w.size] @ w if w.size else np.zeros(parent.n)
    if child.count == "bernoulli":
        p0 = min(max(child.mean, 1e-9), 1 - 1e-9)
        prob = 1 / (1 + np.exp(-(np.log(p0 / (1 - p0)) + shift)))
        k = (rng.random(parent.n) < prob).astype(np.int64)
    else:
        extra = child.mean - (1.0 if child.count == "one_plus_poisson" else 0.0)
        lam = max(extra, 0.0) * np.exp(shift - 0.5 * float(w @ w))
        k = rng.poisson(lam) + (1 if child.count == "one_plus_poisson" else 0)
    src = np.repeat(np.arange(parent.n, dtype=np.int64), k)
    aidx = parent.aidx[src]
    days = parent.days[src] + child.min_delay_days
    if child.delay_days > 0:
        days = days + rng.exponential(child.delay_days, src.size)
    keep = days < np.minimum(actor.active_to[aidx], model.span)
    src, aidx, days = src[keep], aidx[keep], days[keep]
    choices = {col: v[src] for col, v in parent.choice_idx.items()}
    if model.samplers:
        for col, sampler in model.samplers.items():
            choices[col] = sampler.sample(sampler.actor_cdf(actor.z)[aidx], rng)
    rows = EventRows(aidx, days, choices, src=src)
    return rows.take(np.lexsort((rows.src, rows.days)))  # type: ignore[arg-type]


def _marks(
    model: EventModel,
    purpose: str,
    loading: dict[str, list[float]],
    actor: NodeBlock,
    aidx: np.ndarray,
    choices: dict[str, np.ndarray],
) -> np.ndarray:
    """``loading . x`` per event, x the latent vectors of its actor and picked rows."""
    sources = {"actor": LatentSource(actor.z, aidx)}
    for col, idx in choices.items():
        mat = model.parents[col]
        sources[col] = LatentSource(mat.z, idx, mat.cache)
    return loading_sum((model.table.name, purpose), loading, sources, aidx.size)
