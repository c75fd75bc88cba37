"""Typed configs of the fine-tuning and scoring stages, loaded from YAML with one-line errors.

Paths in a config (graph, checkpoints, output table) may use ${VARS} and are relative to the config
file, so a config travels with the specs it names. Everything a stage needs comes from here: the CLI
only overrides a few fields (run id, workers, model) and calls the stage.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from graph_engine.errors import RelfmError
from graph_engine.spec import expand_vars
from graph_engine.yaml_file import read_yaml
from relfm_core.labels import TableConfig

RUN_ID = re.compile(r"^[A-Za-z0-9_.:\-]+$")  # safe inside a Delta predicate and a file name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MlflowSettings(_Strict):
    """Where runs and models are tracked: None = MLFLOW_TRACKING_URI, else SQLite under RELFM_HOME."""

    tracking_uri: str | None = None
    experiment: str = "relfm"


class DeepSpeedSettings(_Strict):
    """The DeepSpeed knobs users change; `extra` is merged into the generated DeepSpeed config as is
    (e.g. `{bf16: {enabled: true}}` on GPUs)."""

    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False
    offload_param: bool = False
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _offload(self) -> DeepSpeedSettings:
        if self.offload_param and self.zero_stage != 3:
            raise ValueError("offload_param needs zero_stage 3")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3")
        return self

    def to_deepspeed(self, micro_batch: int, grad_clip: float) -> dict[str, Any]:
        """The DeepSpeed config dict: ZeRO stage and offload from here, batch and clipping from training.

        No optimizer section: the training loop hands DeepSpeed torch's AdamW (the same optimiser as the
        plain-torch path), which ZeRO partitions and offloads; DeepSpeed's own fused/CPU Adam would be
        JIT-compiled on first use (minutes) and the model is small enough for the step not to matter.
        """
        zero: dict[str, Any] = {"stage": self.zero_stage}
        if self.offload_optimizer:
            zero["offload_optimizer"] = {"device": "cpu"}
        if self.offload_param:
            zero["offload_param"] = {"device": "cpu"}
        cfg: dict[str, Any] = {
            "train_micro_batch_size_per_gpu": micro_batch,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "gradient_clipping": grad_clip,
            "zero_optimization": zero,
            "zero_force_ds_cpu_optimizer": False,
            "steps_per_print": 1 << 30,
            "wall_clock_breakdown": False,
        }
        return _merge(cfg, self.extra)


class TrainSettings(_Strict):
    """relfm_core.finetune.FinetuneConfig's fields plus checkpointing (steps, not epochs, so that a kill
    loses at most `checkpoint_every` steps)."""

    epochs: int = Field(default=20, gt=0)
    batch_size: int = Field(default=128, gt=0, description="per worker")
    lr: float = Field(default=3e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_steps: int = Field(default=50, ge=0)
    grad_clip: float = Field(default=1.0, gt=0)
    patience: int = Field(default=4, gt=0, description="epochs without validation gain before stopping")
    max_train_rows: int = Field(default=20_000, gt=0)
    train_rows: Literal["latest", "random"] = Field(
        default="latest", description="which rows beyond max_train_rows: the most recent or a random sample"
    )
    chunk_rows: int = Field(default=512, gt=0, description="rows sampled and featurised together")
    checkpoint_every: int = Field(default=50, gt=0, description="steps")
    keep_checkpoints: int = Field(default=2, gt=0)
    log_every: int = Field(default=10, gt=0)
    threads_per_worker: int | None = Field(default=None, gt=0)


class _StageConfig(_Strict):
    _base_dir: Path = Path(".")

    def path(self, value: str | Path) -> Path:
        """A config path: variables expanded, relative to the config file."""
        p = Path(expand_vars(str(value))).expanduser()
        return p if p.is_absolute() else (self._base_dir / p).resolve()


class FinetuneStageConfig(_StageConfig):
    name: str = "finetune"
    graph: str = Field(description="a graph spec (YAML) or a built graph folder")
    query: str
    anchor_time: datetime | None = Field(default=None, description="None = the graph's latest time")
    base_model: str | None = Field(default=None, description="pretrained checkpoint; None = shipped weights")
    table: TableConfig = TableConfig(num_anchors=8, val_anchors=1)
    train: TrainSettings = TrainSettings()
    deepspeed: DeepSpeedSettings | None = None
    workers: int = Field(default=1, gt=0)
    use_gpu: bool = False
    launcher: Literal["ray", "local"] = "ray"
    ray_address: str | None = None
    checkpoint_dir: str | None = Field(default=None, description="default ${RELFM_HOME}/finetune/<name>")
    output_dir: str | None = Field(default=None, description="default <checkpoint_dir>/model")
    registered_model_name: str | None = None
    alias: str | None = "champion"
    mlflow: MlflowSettings = MlflowSettings()
    seed: int = 0

    def checkpoint_path(self) -> Path:
        return self.path(self.checkpoint_dir or f"${{RELFM_HOME}}/finetune/{self.name}")

    def output_path(self) -> Path:
        return self.path(self.output_dir) if self.output_dir else self.checkpoint_path() / "model"


class ScoreStageConfig(_StageConfig):
    name: str = "score"
    graph: str = Field(description="a graph spec (YAML) or a built graph folder")
    model: str = Field(description="models:/<name>@<alias>, models:/<name>/<version> or a model folder")
    query: str | None = Field(default=None, description="only for a pretrained (zero-shot) model")
    entities: list[int | str] | str | None = Field(
        default=None, description="None = every entity of the query; a list of keys; or a Parquet file"
    )
    entity_column: str | None = Field(default=None, description="key column of the Parquet file")
    anchor_time: datetime | None = Field(default=None, description="None = the graph's latest time")
    batch_size: int = Field(default=512, gt=0)
    workers: int = Field(default=1, gt=0)
    cpus_per_worker: float = Field(default=1.0, gt=0)
    use_gpu: bool = False
    gpus_per_worker: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="with use_gpu: the share of a GPU each actor reserves (0.25 = four actors per GPU, "
        "each building its inputs on its own CPU)",
    )
    max_restarts: int = Field(default=3, ge=0, description="restarts of a dead scoring actor")
    output: str = Field(description="the Delta prediction table: a path or a URI (s3://, abfss://, gs://)")
    run_id: str | None = Field(default=None, description="default <name>-<run_date>")
    run_date: date | None = Field(default=None, description="default today (UTC)")
    context_size: int = Field(default=1024, gt=0, description="zero-shot: labelled context examples")
    ray_address: str | None = None
    mlflow: MlflowSettings = MlflowSettings()

    @field_validator("run_id")
    @classmethod
    def _run_id(cls, v: str | None) -> str | None:
        if v is not None and not RUN_ID.match(v):
            raise ValueError(f"'{v}' may only hold letters, digits and _ . : -")
        return v

    def output_location(self) -> str:
        """The prediction table: a URI as given (s3://, abfss://, gs://, file://: what a cluster's workers
        and the driver can all reach), else a path relative to the config file."""
        value = expand_vars(self.output)
        return value if "://" in value else str(self.path(value))

    def resolved_run_date(self) -> date:
        return self.run_date or datetime.now(UTC).date()

    def resolved_run_id(self) -> str:
        return self.run_id or f"{self.name}-{self.resolved_run_date().isoformat()}"


def to_ns(value: datetime | date | str) -> int:
    """A config time as int64 ns, UTC-naive like graph times."""
    ts = pd.Timestamp(value)
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
    return int(ts.value)


C = TypeVar("C", bound=_StageConfig)


def load_config(path: str | Path, cls: type[C], overrides: dict[str, Any] | None = None) -> C:
    """A stage config from YAML (+ CLI overrides), with a one-line error naming the field at fault."""
    what = "finetune" if cls is FinetuneStageConfig else "score"
    p = Path(path)
    data = read_yaml(p, f"{what} config")
    if data is not None and not isinstance(data, dict):
        raise RelfmError(f"{what} config {p}: expected a mapping of fields, got {type(data).__name__}")
    data = {**(data or {}), **{k: v for k, v in (overrides or {}).items() if v is not None}}
    return validate_config(data, cls, f"{what} config {p}", p.parent.resolve())


def validate_config(data: dict[str, Any], cls: type[C], where: str, base_dir: Path) -> C:
    try:
        cfg = cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ").splitlines()[0]
        raise RelfmError(f"{where}: {loc}: {msg}") from None
    cfg._base_dir = base_dir
    return cfg


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out
