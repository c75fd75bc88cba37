"""The pretraining prior: `random_config(seed)` samples a whole plausible database recipe.

Schemas vary in size (3-8 tables), shape (entities acting through event tables that also point to
dimensions = many-to-many; dimensions chained to further dimensions = parents two hops away; occasion
tables such as races that events attach to by time; child events such as reviews of orders) and in
columns (every kind, pure noise or loaded on latent traits). The generative story keeps the signal
real tasks have: an entity's own history (heterogeneous, self-exciting rates, churn), its static
attributes, traits of rows two hops away (they excite future events and shape event values), and
calendar effects (trend, weekly/yearly cycles, bursts). Names come from domain themes so a schema
reads like one warehouse. Sizes are calibrated so the total event rows land near a target
at most `max_events`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np

from graph_engine.synthetic.config import (
    SyntheticConfig,
    SyntheticConfigError,
)
from graph_engine.synthetic.layout import SEASON_DIM
from graph_engine.synthetic.names import CATEGORY_VALUES, COLUMN_NAMES, TAG_VALUES, THEMES
from graph_engine.synthetic.queries import suggest_queries
from graph_engine.synthetic.randomness import rng_for

_PILOT_ROWS = 200
_TIME_NAMES = ["timestamp", "date", "created_at", "event_time", "occurred_at"]
_KIND_WEIGHTS = {
    "float": 0.22,
    "int": 0.14,
    "category": 0.2,
    "bool": 0.1,
    "tags": 0.07,
    "text": 0.12,
    "timestamp": 0.08,
    "embedding": 0.07,
}


def singular(name: str) -> str:
    if name.endswith("ies"):
        return name[:-3] + "y"
    if name.endswith(("ches", "shes", "sses", "xes")):
        return name[:-2]
    if name.endswith("s") and not name.endswith("ss"):
        return name[:-1]
    return name


class _Names:
    """Draws distinct names from pools, falling back to numbered ones."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def pick(self, pool: list[str], fallback: str) -> str:
        free = [p for p in pool if p not in self.used]
        if free:
            name = free[int(self.rng.integers(len(free)))]
        else:
            i = 1
            while f"{fallback}_{i}" in self.used:
                i += 1
            name = f"{fallback}_{i}"
        self.used.add(name)
        return name


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _vector(rng: np.random.Generator, dim: int, norm: float) -> list[float]:
    """A random direction of length `norm` over a random number of leading dims (sparse-ish)."""
    k = int(rng.integers(1, dim + 1))
    v = rng.standard_normal(k)
    v *= norm / max(float(np.linalg.norm(v)), 1e-9)
    return [round(float(x), 3) for x in v]


class _Builder:
    """Holds the sampled schema while it is assembled (plain dicts, validated at the end)."""

    def __init__(self, seed: int, max_events: int) -> None:
        self.rng = rng_for(seed, "prior")
        self.seed = seed
        self.max_events = max_events
        theme_names = sorted(THEMES)
        self.theme_name = theme_names[int(self.rng.integers(len(theme_names)))]
        self.theme = THEMES[self.theme_name]
        self.tables: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []
        self.table_names = _Names(self.rng)
        rng = self.rng
        self.years = float(rng.uniform(1.0, 6.0))
        self.start = datetime(2000, 1, 1) + timedelta(days=int(rng.integers(0, 22 * 365)))
        self.end = self.start + timedelta(days=round(self.years * 365.25))
        self.missing_rate = float(rng.uniform(0.0, 0.1))
        self.orphan_rate = 0.0 if rng.random() < 0.7 else float(rng.uniform(0.0005, 0.01))

    # ------------------------------------------------------------------ structure
    def structure(self) -> None:
        rng = self.rng
        n_tables = int(rng.integers(3, 9))
        n_event = int(rng.integers(1, min(4, n_tables - 1) + 1))
        n_node = n_tables - n_event
        n_entity = 2 if n_node >= 2 and n_event >= 2 and rng.random() < 0.3 else 1
        n_other = n_node - n_entity
        p_occ = 0.7 if self.theme_name == "sports" else 0.35
        n_occ = 1 if n_other >= 1 and rng.random() < p_occ else 0
        n_dim = n_other - n_occ
        self.entities = [self._entity() for _ in range(n_entity)]
        self.dims = [self._dimension() for _ in range(n_dim)]
        self.occasions = [self._occasion() for _ in range(n_occ)]
        self.roots: list[str] = []
        self.events: list[str] = []
        for i in range(n_event):
            if i < n_entity:
                self._root_event(self.entities[i])
            elif rng.random() < 0.35:
                self._child_event(self.events[int(rng.integers(len(self.events)))])
            else:
                actor_pool = self.entities + (self.dims if rng.random() < 0.15 else [])
                self._root_event(actor_pool[int(rng.integers(len(actor_pool)))])
        for occ in self.occasions:
            root = self.roots[int(rng.integers(len(self.roots)))]
            self._choice(root, occ)
        for j, dim in enumerate(self.dims):
            self._attach_dimension(dim, self.dims[:j])
        for root in self.roots:
            self._marks(root)

    def _marks(self, event: str) -> None:
        """Lets the traits of picked rows (two hops from the actor) change the actor's future rate.

        Either Hawkes excitation depends on them, or (sometimes) the process keeps a memory of them.
        """
        rng = self.rng
        t = self.tables[event]
        proc = t["process"]
        dims = [c for c in t["choices"] if self.tables[c["parent"]]["kind"] == "dimension"]
        if not dims:
            return
        marks = {
            c["column"]: _vector(rng, self.tables[c["parent"]]["latent_dim"], float(rng.uniform(0.3, 1.5)))
            for c in dims
            if rng.random() < 0.7
        }
        if not marks:
            return
        if rng.random() < 0.3:
            proc["excitation"] = 0.0
            proc.pop("excitation_loading", None)
            proc["memory_loading"] = marks
            proc["memory_decay"] = float(rng.uniform(0.2, 0.9))
            proc["max_events_per_actor"] = 5_000
        elif proc["excitation"] > 0:
            proc.setdefault("excitation_loading", {}).update(marks)

    def _new_table(self, kind: str, role: str, **fields: Any) -> str:
        name = self.table_names.pick(self.theme[role], role)
        pk_type = "string" if self.rng.random() < 0.12 else "int"
        key: dict[str, Any] = {
            "type": pk_type,
            "start": int(self.rng.choice([0, 1, 1, 100, 1000, 10**6])),
            "step": int(self.rng.choice([1, 1, 1, 1, 2, 3, 7])),
        }
        if pk_type == "string":
            key["prefix"] = name[:2].upper() + "-"
        self.tables[name] = {
            "kind": kind,
            "name": name,
            "primary_key": f"{singular(name)}_id",
            "key": key,
            "columns": [],
            **fields,
        }
        self.order.append(name)
        return name

    def _entity(self) -> str:
        rng = self.rng
        fields: dict[str, Any] = {
            "n_rows": 1,
            "latent_dim": int(rng.integers(2, 9)),
            "signup": {
                "initial_fraction": float(rng.uniform(0.1, 1.0)),
                "growth": float(rng.uniform(-1, 2.5)),
            },
        }
        if rng.random() < 0.7:
            fields["time_column"] = str(rng.choice(["created_at", "signup_date", "registered_at", "joined"]))
        if rng.random() < 0.75:
            fields["churn"] = {
                "hazard_per_year": _logu(rng, 0.05, 1.5),
                "loading": _vector(rng, fields["latent_dim"], float(rng.uniform(0.0, 1.2))),
            }
        return self._new_table("entity", "entity", **fields)

    def _dimension(self) -> str:
        rng = self.rng
        return self._new_table(
            "dimension",
            "dimension",
            n_rows=1,
            latent_dim=int(rng.integers(2, 7)),
            popularity=float(rng.uniform(0.0, 1.5)),
        )

    def _occasion(self) -> str:
        rng = self.rng
        months: list[int] = []
        if self.theme_name == "sports" and rng.random() < 0.5:
            first = int(rng.integers(1, 6))
            months = list(range(first, first + int(rng.integers(6, 9))))
        return self._new_table(
            "occasion",
            "occasion",
            time_column=str(rng.choice(["date", "start_time", "scheduled_at"])),
            every_days=_logu(rng, 3.0, 30.0),
            jitter_days=float(rng.uniform(0.0, 2.0)),
            months=months,
            hour=float(rng.integers(8, 21)),
            latent_dim=int(rng.integers(2, 6)),
        )

    def _root_event(self, actor: str) -> None:
        rng = self.rng
        a = self.tables[actor]
        events_per_actor = _logu(rng, 3.0, 120.0)
        excitation = float(rng.uniform(0.0, 0.6)) if rng.random() < 0.7 else 0.0
        proc: dict[str, Any] = {
            "rate_per_year": events_per_actor * (1 - excitation) / self.years,
            "rate_loading": _vector(rng, a["latent_dim"], float(rng.uniform(0.2, 1.3))),
            "trend": float(np.clip(rng.normal(0, 0.6), -2, 2)),
            "excitation": excitation,
            "excitation_delay_days": _logu(rng, 0.5, 30.0),
        }
        if rng.random() < 0.7:
            proc |= {
                "weekly_amplitude": float(rng.uniform(0, 0.6)),
                "weekly_peak_day": float(rng.uniform(0, 7)),
            }
        if rng.random() < 0.6:
            proc |= {
                "yearly_amplitude": float(rng.uniform(0, 0.6)),
                "yearly_peak_day": float(rng.uniform(0, 365)),
            }
        if rng.random() < 0.5:
            proc |= {
                "daily_amplitude": float(rng.uniform(0, 0.8)),
                "daily_peak_hour": float(rng.uniform(0, 24)),
            }
        if rng.random() < 0.4:
            proc |= {
                "bursts": int(rng.integers(1, 7)),
                "burst_amplitude": float(rng.uniform(1, 5)),
                "burst_days": float(rng.uniform(0.5, 5)),
            }
        if excitation > 0 and rng.random() < 0.6:
            proc["excitation_loading"] = {
                "actor": _vector(rng, a["latent_dim"], float(rng.uniform(0.2, 1.0)))
            }
        name = self._new_table(
            "event",
            "event",
            time_column=str(rng.choice(_TIME_NAMES)),
            actor=actor,
            actor_column=a["primary_key"],
            choices=[],
            process=proc,
        )
        self.roots.append(name)
        self.events.append(name)

    def _child_event(self, parent: str) -> None:
        rng = self.rng
        p = self.tables[parent]
        parent_fks = self._fk_columns(parent)
        inherit = [c for i, c in enumerate(parent_fks) if rng.random() < (0.8 if i == 0 else 0.5)]
        link = p["primary_key"] if rng.random() < 0.7 or not inherit else None
        count = str(rng.choice(["bernoulli", "poisson", "one_plus_poisson"]))
        mean = {
            "bernoulli": float(rng.uniform(0.05, 0.6)),
            "poisson": float(rng.uniform(0.3, 2.5)),
            "one_plus_poisson": float(rng.uniform(1.2, 3.5)),
        }[count]
        actor_dim = self.tables[self._root_actor(parent)]["latent_dim"]
        delay = 0.0 if rng.random() < 0.4 else _logu(rng, 0.1, 30.0)
        name = self._new_table(
            "event",
            "child",
            time_column=str(rng.choice(_TIME_NAMES)),
            choices=[],
            child={
                "parent_event": parent,
                "link_column": link,
                "inherit": inherit,
                "count": count,
                "mean": mean,
                "loading": _vector(rng, actor_dim, float(rng.uniform(0, 0.8))),
                "delay_days": delay,
                "min_delay_days": 0.0 if delay == 0 else float(rng.uniform(0, 1)),
            },
        )
        self.events.append(name)

    def _root_actor(self, event: str) -> str:
        t = self.tables[event]
        while "child" in t:
            t = self.tables[t["child"]["parent_event"]]
        return str(t["actor"])

    def _fk_columns(self, event: str) -> list[str]:
        t = self.tables[event]
        cols: list[str] = []
        if "child" in t:
            if t["child"]["link_column"]:
                cols.append(t["child"]["link_column"])
            cols.extend(t["child"]["inherit"])
        else:
            cols.append(t["actor_column"])
        cols.extend(c["column"] for c in t["choices"])
        return cols

    def _parents_of(self, name: str) -> set[str]:
        t = self.tables[name]
        out = {c["parent"] for c in t.get("choices", [])} | {p["parent"] for p in t.get("parents", [])}
        if t.get("actor"):
            out.add(t["actor"])
        return out

    def _choice(self, event: str, parent: str) -> None:
        rng = self.rng
        self.tables[event]["choices"].append(
            {
                "column": self.tables[parent]["primary_key"],
                "parent": parent,
                "affinity": float(rng.uniform(0.0, 2.5)),
                "segments": int(rng.integers(2, 25)),
                "repeat_prob": float(rng.uniform(0.0, 0.5)) if rng.random() < 0.6 else 0.0,
            }
        )

    def _attach_dimension(self, dim: str, earlier: list[str]) -> None:
        """Makes something point at `dim`: an event's choice, an entity's static link, or a chain."""
        rng = self.rng
        r = rng.random()
        events = [
            e
            for e in self.events
            if dim not in self._parents_of(e)
            and sum(1 for c in self.tables[e]["choices"]) < 2
            and self.tables[self._root_actor(e)]["name"] != dim
        ]
        holders = [t for t in self.entities + earlier + self.occasions if dim not in self._parents_of(t)]
        if (r < 0.55 and events) or not holders:
            self._choice(events[int(rng.integers(len(events)))], dim)
            return
        if r < 0.8 or not earlier:
            pool = [h for h in holders if self.tables[h]["kind"] == "entity"] or holders
        else:
            pool = [h for h in holders if h in earlier] or holders
        child = pool[int(rng.integers(len(pool)))]
        self.tables[child].setdefault("parents", []).append(
            {
                "column": self.tables[dim]["primary_key"],
                "parent": dim,
                "inherit": float(rng.uniform(0.2, 0.8)),
            }
        )

    # ------------------------------------------------------------------ columns
    def columns(self) -> None:
        for name in self.order:
            t = self.tables[name]
            kind = t["kind"]
            lo, hi = {"entity": (1, 7), "dimension": (1, 7), "occasion": (0, 4)}.get(kind, (0, 6))
            if kind == "event" and "child" in t:
                lo, hi = 0, 4
            taken = {t["primary_key"], *self._fk_columns(name)} if kind == "event" else {t["primary_key"]}
            taken |= {p["column"] for p in t.get("parents", [])}
            if t.get("time_column"):
                taken.add(t["time_column"])
            names = _Names(self.rng)
            names.used |= taken
            sources = self._sources(name)
            cols = []
            paced = kind == "event" and any(
                self.tables[c["parent"]]["kind"] == "occasion" for c in t["choices"]
            )
            if paced and self.rng.random() < 0.8:
                cols.append(self._rank_column(names, sources["actor"]))
            for _ in range(int(self.rng.integers(lo, hi))):
                cols.append(self._column(names, sources, node=kind != "event"))
            t["columns"] = cols
            if self.rng.random() < 0.7:
                t["missing_rate"] = float(self.rng.uniform(0.0, 0.15))

    def _sources(self, name: str) -> dict[str, int]:
        t = self.tables[name]
        if t["kind"] != "event":
            out = {"self": t["latent_dim"]}
            out |= {p["column"]: self.tables[p["parent"]]["latent_dim"] for p in t.get("parents", [])}
            return out
        out = {"actor": self.tables[self._root_actor(name)]["latent_dim"], "season": SEASON_DIM}
        e: dict[str, Any] | None = t
        while e is not None:
            for c in e["choices"]:
                out.setdefault(c["column"], self.tables[c["parent"]]["latent_dim"])
            e = self.tables[e["child"]["parent_event"]] if "child" in e else None
        return out

    def _loading(self, sources: dict[str, int]) -> dict[str, list[float]]:
        rng = self.rng
        if rng.random() < 0.25:
            return {}
        names = sorted(sources)
        main = "self" if "self" in sources else "actor"
        chosen = {main} if rng.random() < 0.8 else set()
        for s in names:
            if s != main and rng.random() < (0.15 if s == "season" else 0.4):
                chosen.add(s)
        if not chosen:
            chosen = {names[int(rng.integers(len(names)))]}
        return {s: _vector(rng, sources[s], float(rng.uniform(0.3, 1.5))) for s in sorted(chosen)}

    def _rank_column(self, names: _Names, actor_dim: int) -> dict[str, Any]:
        rng = self.rng
        return {
            "name": names.pick(COLUMN_NAMES["rank"], "rank"),
            "kind": "int",
            "dist": "rank",
            "high": int(rng.integers(8, 30)),
            "loading": {"actor": _vector(rng, actor_dim, 1.0)},
            "noise": float(rng.uniform(0.3, 1.0)),
        }

    def _column(self, names: _Names, sources: dict[str, int], node: bool) -> dict[str, Any]:
        rng = self.rng
        kinds = [k for k in _KIND_WEIGHTS if node or k not in ("timestamp", "embedding")]
        w = np.array([_KIND_WEIGHTS[k] for k in kinds])
        kind = kinds[int(rng.choice(len(kinds), p=w / w.sum()))]
        col: dict[str, Any] = {"kind": kind, "loading": self._loading(sources)}
        col["noise"] = 1.0 if not col["loading"] else float(rng.uniform(0.3, 1.5))
        if kind == "int" and rng.random() < 0.3:
            col |= {
                "name": names.pick(COLUMN_NAMES["rating"], "rating"),
                "dist": "bucket",
                "high": int(rng.integers(3, 11)),
            }
            return col
        col["name"] = names.pick(COLUMN_NAMES[kind], kind)
        if kind == "float":
            dist = str(rng.choice(["normal", "lognormal", "uniform"]))
            loc, scale = {
                "normal": (float(rng.uniform(-100, 1000)), _logu(rng, 0.1, 100.0)),
                "lognormal": (float(rng.uniform(0, 5)), float(rng.uniform(0.2, 1.2))),
                "uniform": (float(rng.uniform(-10, 100)), _logu(rng, 1.0, 1000.0)),
            }[dist]
            col |= {"dist": dist, "loc": loc, "scale": scale, "decimals": int(rng.integers(0, 4))}
        elif kind == "int":
            if rng.random() < 0.5:
                col |= {
                    "dist": "round",
                    "loc": float(rng.uniform(0, 100)),
                    "scale": float(rng.uniform(1, 20)),
                }
                if rng.random() < 0.5:
                    col["low"] = 0
            else:
                col |= {
                    "dist": "poisson",
                    "loc": float(rng.uniform(-1, 3)),
                    "scale": float(rng.uniform(0.2, 1.0)),
                }
        elif kind == "category":
            values = CATEGORY_VALUES.get(col["name"])
            if values is None:
                k = int(rng.integers(2, 31))
                values = [f"{col['name'][:4]}_{i}" for i in range(k)]
            col["values"] = list(values)
        elif kind == "bool":
            col["p_true"] = float(rng.uniform(0.05, 0.95))
        elif kind == "tags":
            k = int(rng.integers(5, len(TAG_VALUES) + 1))
            col |= {
                "values": [str(v) for v in rng.permutation(TAG_VALUES)[:k]],
                "mean_tags": float(rng.uniform(1, 4)),
            }
        elif kind == "text":
            topics = self.theme["text"]
            lo = int(rng.integers(2, 7))
            col |= {
                "topic": topics[int(rng.integers(len(topics)))],
                "min_words": lo,
                "max_words": lo + int(rng.integers(2, 13)),
            }
        elif kind == "timestamp":
            col |= {
                "base": (self.start - timedelta(days=float(rng.uniform(0, 30 * 365)))).isoformat(),
                "scale": _logu(rng, 30.0, 5000.0),
                "decimals": None,
            }
        elif kind == "embedding":
            col |= {"dim": int(rng.choice([4, 8, 16, 32])), "missing_rate": 0.0}
        return col

    # ------------------------------------------------------------------ assembly
    def config(self, sizes: dict[str, int]) -> SyntheticConfig:
        tables = []
        for name in self.order:
            t = dict(self.tables[name])
            if name in sizes:
                t["n_rows"] = sizes[name]
            tables.append(t)
        return SyntheticConfig.model_validate(
            {
                "name": f"prior_{self.seed}_{self.theme_name}",
                "seed": self.seed,
                "start": self.start,
                "end": self.end,
                "tables": tables,
                "missing_rate": self.missing_rate,
                "orphan_rate": self.orphan_rate,
            }
        )


def random_config(seed: int, max_events: int = 100_000) -> SyntheticConfig:
    """A random database recipe from the pretraining prior, with at most about `max_events` events."""
    if seed < 0:
        raise SyntheticConfigError(f"random_config: seed {seed} must be non-negative")
    if max_events < 10:
        raise SyntheticConfigError(f"random_config: max_events {max_events} must be at least 10")
    from graph_engine.synthetic.generator import count_events
    from graph_engine.synthetic.layout import root_actor

    b = _Builder(seed, max_events)
    rng = b.rng
    b.structure()
    b.columns()

    target = _logu(rng, max(max_events / 8, 5.0), max_events * 0.8)
    shares = rng.dirichlet(np.ones(len(b.entities)))
    per_entity_guess = {e: target * s / 30.0 for e, s in zip(b.entities, shares, strict=True)}
    n_nodes_guess = max(sum(per_entity_guess.values()), 10.0)
    sizes: dict[str, int] = {e: _PILOT_ROWS for e in b.entities}
    for d in b.dims:
        sizes[d] = int(np.clip(round(n_nodes_guess * _logu(rng, 0.02, 0.5)), 3, 200_000))
    pilot = b.config(sizes)
    counts = count_events(pilot)
    per_row: dict[str, float] = dict.fromkeys(b.entities, 0.0)
    fixed = 0.0
    for ev, n in counts.items():
        actor = root_actor(pilot, pilot.table(ev))  # type: ignore[arg-type]
        if actor in per_row:
            per_row[actor] += n / _PILOT_ROWS
        else:
            fixed += n
    remaining = max(target - fixed, target * 0.1)
    for e, s in zip(b.entities, shares, strict=True):
        sizes[e] = int(np.clip(round(remaining * s / max(per_row[e], 1e-3)), 5, 50_000_000))
    cfg = b.config(sizes)
    cfg.queries = suggest_queries(cfg)
    return cfg
