"""Typed configuration of a synthetic relational database.

A config is the whole recipe: the schema (tables, keys, links, columns) and the generative story behind
it (latent traits, event processes, churn, noise). It is plain data so that the pretraining prior can
sample it, tests can tweak it, and `synthetic.json` next to a generated database records exactly what
produced it. Everything that changes the content is here; `chunk_rows` is the one field that does not
(it only sets how many rows are written at a time).

Latent sources named in `loading` maps:
- ``self``: the row's own latent vector (entity, dimension and occasion tables);
- a static foreign-key column (``country_id``): the parent row's latent vector;
- ``actor``: the latent vector of the entity whose process generated the event (event tables);
- a choice foreign-key column (``item_id``), also one of a parent event's choices for child events;
- ``season``: [cos(day of year), sin(day of year), weekend] of the row's own time.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from graph_engine.errors import RelfmError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_SPAN_DAYS = 40 * 366


class SyntheticConfigError(RelfmError):
    """A synthetic-database config is inconsistent (names the table or column at fault)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


ColumnKind = Literal["float", "int", "category", "bool", "tags", "text", "timestamp", "embedding"]
Dist = Literal["normal", "lognormal", "uniform", "round", "poisson", "rank", "bucket"]
_FLOAT_DISTS = {"normal", "lognormal", "uniform"}
_INT_DISTS = {"round", "poisson", "rank", "bucket"}


class ColumnConfig(_Strict):
    """One feature column: a noisy function of latent sources, typed by `kind`.

    The column's score is ``sum(loading[src] . z_src) + noise * eps``, standardised to unit variance, so
    ``|loading|^2 / (|loading|^2 + noise^2)`` is the share of the column that carries signal. An empty
    `loading` makes a pure-noise column.
    """

    name: str
    kind: ColumnKind
    loading: dict[str, list[float]] = Field(default_factory=dict)
    noise: float = Field(default=1.0, ge=0.0)
    missing_rate: float | None = Field(default=None, ge=0.0, le=1.0)
    # float / int
    dist: Dist | None = None
    loc: float = 0.0
    scale: float = 1.0
    low: int | None = None
    high: int | None = None
    decimals: int | None = Field(default=2, ge=0, le=9)
    # category / tags
    values: list[str] = Field(default_factory=list)
    probs: list[float] = Field(default_factory=list)
    p_true: float = Field(default=0.5, gt=0.0, lt=1.0)
    mean_tags: float = Field(default=2.0, gt=0.0)
    # text
    topic: str = "generic"
    min_words: int = Field(default=3, ge=1)
    max_words: int = Field(default=10, ge=1)
    # timestamp: base + score * scale days
    base: datetime | None = None
    # embedding
    dim: int = Field(default=8, ge=1, le=4096)

    @model_validator(mode="after")
    def _kind_fields(self) -> ColumnConfig:
        where = f"column '{self.name}'"
        if not _NAME.match(self.name):
            raise ValueError(f"{where}: not a valid identifier")
        if self.dist is None:
            self.dist = "normal" if self.kind == "float" else "round" if self.kind == "int" else None
        if self.kind == "float" and self.dist not in _FLOAT_DISTS:
            raise ValueError(f"{where}: float columns take dist normal, lognormal or uniform")
        if self.kind == "int" and self.dist not in _INT_DISTS:
            raise ValueError(f"{where}: int columns take dist round, poisson, rank or bucket")
        if self.kind == "int" and self.dist in ("rank", "bucket") and (self.high is None or self.high < 1):
            raise ValueError(f"{where}: dist '{self.dist}' needs high >= 1")
        if self.kind in ("category", "tags") and len(self.values) < 2:
            raise ValueError(f"{where}: {self.kind} columns need at least two values")
        if self.kind in ("category", "tags") and len(set(self.values)) != len(self.values):
            raise ValueError(f"{where}: values must be distinct")
        if self.probs and self.kind == "category" and len(self.probs) != len(self.values):
            raise ValueError(f"{where}: probs must have one entry per value")
        bucket = self.kind == "int" and self.dist == "bucket"
        if self.probs and bucket and self.high is not None and len(self.probs) != self.high:
            raise ValueError(f"{where}: probs must have `high` entries")
        if any(p <= 0 for p in self.probs):
            raise ValueError(f"{where}: probs must be positive")
        if self.max_words < self.min_words:
            raise ValueError(f"{where}: max_words < min_words")
        if self.base is not None:
            self.base = _naive_utc(self.base)
        return self


class KeyConfig(_Strict):
    """How primary-key values look: ``start + i * step`` (ints) or ``prefix`` + that number (strings)."""

    type: Literal["int", "string"] = "int"
    start: int = Field(default=0, ge=0)
    step: int = Field(default=1, ge=1)
    prefix: str = ""


class StaticLink(_Strict):
    """A static foreign key (users.country_id -> countries); the child inherits `inherit` of its latent."""

    column: str
    parent: str
    inherit: float = Field(default=0.5, ge=0.0, le=0.95)


class SignupConfig(_Strict):
    """When entities appear: a share at the very start, the rest spread over the span with growth."""

    initial_fraction: float = Field(default=0.3, ge=0.0, le=1.0)
    growth: float = Field(default=0.0, ge=-10.0, le=10.0)


class ChurnConfig(_Strict):
    """Entities stop all activity at an exponential time whose hazard depends on their latent."""

    hazard_per_year: float = Field(default=0.3, ge=0.0)
    loading: list[float] = Field(default_factory=list)


class ChoiceLink(_Strict):
    """An event's foreign key to a dimension (picked by taste and popularity) or occasion (by time)."""

    column: str
    parent: str
    affinity: float = Field(default=1.0, ge=0.0)
    segments: int = Field(default=8, ge=1, le=256)
    repeat_prob: float = Field(default=0.0, ge=0.0, le=1.0)


class ProcessConfig(_Strict):
    """The event process of one actor: Poisson immigrants modulated in time, plus Hawkes offspring.

    Immigrant rate = ``rate_per_year * exp(rate_loading . z - |rate_loading|^2 / 2) * m(t)`` with m the
    trend/weekly/yearly/daily/burst modulation (mean 1 over the span). Each event has
    ``Poisson(eta)`` offspring after an exponential delay, ``eta = 0.9 * sigmoid(logit(excitation/0.9) +
    excitation_loading . x)``, where x are the latent vectors of the event's actor and chosen parents:
    this is how traits of rows two hops away change an entity's future (also see memory below).
    """

    rate_per_year: float = Field(default=12.0, ge=0.0)
    rate_loading: list[float] = Field(default_factory=list)
    trend: float = Field(default=0.0, ge=-5.0, le=5.0)
    weekly_amplitude: float = Field(default=0.0, ge=0.0, lt=1.0)
    weekly_peak_day: float = 5.0
    yearly_amplitude: float = Field(default=0.0, ge=0.0, lt=1.0)
    yearly_peak_day: float = 330.0
    daily_amplitude: float = Field(default=0.0, ge=0.0, lt=1.0)
    daily_peak_hour: float = 19.0
    bursts: int = Field(default=0, ge=0, le=1000)
    burst_amplitude: float = Field(default=2.0, ge=0.0)
    burst_days: float = Field(default=2.0, gt=0.0)
    excitation: float = Field(default=0.0, ge=0.0, lt=0.9)
    excitation_loading: dict[str, list[float]] = Field(default_factory=dict)
    excitation_delay_days: float = Field(default=7.0, gt=0.0)
    # Memory: the actor's rate is multiplied by exp(state), state being an exponentially weighted mean of
    # `memory_loading . x` over its own past events (x as for excitation). Events are then simulated one
    # after another per actor, so an entity's future follows what it did and picked, for as long as it
    # lasts ("users who bought premium items keep buying"). Exclusive with excitation.
    memory_loading: dict[str, list[float]] = Field(default_factory=dict)
    memory_decay: float = Field(default=0.5, gt=0.0, le=1.0)
    max_events_per_actor: int = Field(default=100_000, ge=1)


class ChildConfig(_Strict):
    """Events spawned by the rows of a parent event table (reviews of orders, lines of a basket)."""

    parent_event: str
    link_column: str | None = None
    inherit: list[str] = Field(default_factory=list)
    count: Literal["bernoulli", "poisson", "one_plus_poisson"] = "bernoulli"
    mean: float = Field(default=0.3, ge=0.0)
    loading: list[float] = Field(default_factory=list)
    delay_days: float = Field(default=0.0, ge=0.0)
    min_delay_days: float = Field(default=0.0, ge=0.0)


class _TableBase(_Strict):
    name: str
    primary_key: str
    key: KeyConfig = Field(default_factory=KeyConfig)
    columns: list[ColumnConfig] = Field(default_factory=list)
    missing_rate: float | None = Field(default=None, ge=0.0, le=1.0)


class EntityTable(_TableBase):
    """Rows that act (users, drivers): streamed block by block, optional creation time, churn."""

    kind: Literal["entity"] = "entity"
    n_rows: int = Field(ge=1)
    latent_dim: int = Field(default=4, ge=1, le=64)
    time_column: str | None = None
    parents: list[StaticLink] = Field(default_factory=list)
    signup: SignupConfig = Field(default_factory=SignupConfig)
    churn: ChurnConfig | None = None


class DimensionTable(_TableBase):
    """Static rows that events pick (items, circuits); held in memory as latent vectors only."""

    kind: Literal["dimension"] = "dimension"
    n_rows: int = Field(ge=1)
    latent_dim: int = Field(default=4, ge=1, le=64)
    parents: list[StaticLink] = Field(default_factory=list)
    popularity: float = Field(default=0.0, ge=0.0, le=5.0)


class OccasionTable(_TableBase):
    """Timestamped shared happenings (races, campaigns) that events attach to by time."""

    kind: Literal["occasion"] = "occasion"
    time_column: str
    every_days: float = Field(default=7.0, gt=0.0)
    jitter_days: float = Field(default=0.0, ge=0.0)
    months: list[int] = Field(default_factory=list)
    hour: float = Field(default=12.0, ge=0.0, lt=24.0)
    latent_dim: int = Field(default=4, ge=1, le=64)
    parents: list[StaticLink] = Field(default_factory=list)


class EventTable(_TableBase):
    """Timestamped rows generated by an actor's process, or spawned by a parent event (`child`)."""

    kind: Literal["event"] = "event"
    time_column: str
    actor: str | None = None
    actor_column: str | None = None
    choices: list[ChoiceLink] = Field(default_factory=list)
    process: ProcessConfig = Field(default_factory=ProcessConfig)
    child: ChildConfig | None = None


TableConfig = Annotated[
    EntityTable | DimensionTable | OccasionTable | EventTable, Field(discriminator="kind")
]
NodeTable = EntityTable | DimensionTable | OccasionTable


class PlantedSignal(_Strict):
    """Documents the one column that drives a planted database's label (for explanation tests)."""

    entity_table: str
    event_table: str
    table: str
    column: str
    noise_columns: list[str]
    path: list[str]
    query: str
    description: str


class SyntheticConfig(_Strict):
    """The whole recipe of a synthetic database. Same config => same tables, whatever `chunk_rows`."""

    name: str = "synthetic"
    seed: int = Field(default=0, ge=0)
    start: datetime = datetime(2021, 1, 1)
    end: datetime = datetime(2024, 1, 1)
    tables: list[TableConfig]
    # Rows of a node table generated together with one seed: part of the content (changing it changes
    # the data), unlike chunk_rows.
    block_rows: int = Field(default=1024, ge=1)
    chunk_rows: int = Field(default=100_000, ge=1)
    missing_rate: float = Field(default=0.05, ge=0.0, le=1.0)
    orphan_rate: float = Field(default=0.0, ge=0.0, le=0.5)
    queries: list[str] = Field(default_factory=list)
    planted: PlantedSignal | None = None

    @field_validator("start", "end")
    @classmethod
    def _naive(cls, v: datetime) -> datetime:
        return _naive_utc(v)

    @model_validator(mode="after")
    def _consistent(self) -> SyntheticConfig:
        from graph_engine.synthetic.validate import check_config

        check_config(self)
        return self

    def table(self, name: str) -> TableConfig:
        for t in self.tables:
            if t.name == name:
                return t
        raise SyntheticConfigError(f"synthetic config: unknown table '{name}'")

    @property
    def span_days(self) -> float:
        return (self.end - self.start).total_seconds() / 86_400.0


def _naive_utc(v: datetime) -> datetime:
    return v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo is not None else v


def load_config(data: dict[str, Any] | str) -> SyntheticConfig:
    """A config from a dict or JSON text, with a one-line `SyntheticConfigError` instead of pydantic's."""
    try:
        if isinstance(data, str):
            return SyntheticConfig.model_validate_json(data)
        return SyntheticConfig.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise SyntheticConfigError(f"synthetic config: {where}: {msg}" if where else msg) from None
