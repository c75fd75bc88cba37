"""The fine-tuned model in MLflow: logged as a pyfunc model, registered, aliased, resolved for scoring.

The relfm artefact folder (model.safetensors + config.json, relfm_core.finetune) is logged as an
artifact of an MLflow pyfunc model, so the same registered version is both
  * loadable with `mlflow.pyfunc.load_model("models:/<name>@champion")` and `.predict(frame,
    params={"graph": ...})` (a frame of entity keys and anchor times), and
  * resolvable to the raw folder (`resolve`) that the batch scorer's actors load.
Registered versions carry what nightly scoring and audits ask about as tags: the query, the graph's
manifest hash, the source table versions and the validation metrics.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from graph_engine.errors import RelfmError

ARTIFACT = "relfm_model"  # the artefact folder's key in the pyfunc model's artifacts


class RelfmPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[misc,name-defined]
    """Scores (entity key, anchor_time) rows of the graph given in `params["graph"]`."""

    def load_context(self, context: Any) -> None:
        self.folder = Path(context.artifacts[ARTIFACT])
        self.meta = json.loads((self.folder / "config.json").read_text())
        self._scorers: dict[str, Any] = {}

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from pipelines.build_graph import ensure_graph
        from pipelines.scorers import FinetunedScorer

        graph_src = (params or {}).get("graph")
        if not graph_src:
            raise RelfmError("relfm model: pass the graph to score on as params={'graph': <spec or folder>}")
        if graph_src not in self._scorers:
            self._scorers[graph_src] = FinetunedScorer(ensure_graph(graph_src), self.folder)
        scorer = self._scorers[graph_src]
        frame = pd.DataFrame(model_input)
        view = scorer.engine.graph.table(scorer.engine.entity_table)
        key = view.info.primary_key
        if key not in frame.columns or "anchor_time" not in frame.columns:
            raise RelfmError(f"relfm model: input needs columns '{key}' and 'anchor_time'")
        rows = view.lookup(frame[key].to_numpy())
        if (rows < 0).any():
            bad = frame[key].to_numpy()[int((rows < 0).argmax())]
            raise RelfmError(f"relfm model: unknown {scorer.engine.entity_table}.{key} value {bad!r}")
        anchors = pd.to_datetime(frame["anchor_time"])
        if getattr(anchors.dt, "tz", None) is not None:
            anchors = anchors.dt.tz_convert("UTC").dt.tz_localize(None)
        cols = scorer.predict(rows, anchors.to_numpy("datetime64[ns]").astype("int64"))
        out = frame[[key, "anchor_time"]].reset_index(drop=True)
        for name, values in cols.items():
            out[name] = values
        return out


def _signature(key: str, key_type: str, task: str, classes: list[Any]) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, ParamSchema, ParamSpec, Schema

    outputs: list[Any] = [ColSpec(key_type, key), ColSpec("datetime", "anchor_time")]
    outputs.append(ColSpec("string" if task == "multiclass" else "double", "prediction"))
    outputs += [ColSpec("double", f"prob_{c}") for c in classes]
    return ModelSignature(
        inputs=Schema([ColSpec(key_type, key), ColSpec("datetime", "anchor_time")]),
        outputs=Schema(outputs),
        params=ParamSchema([ParamSpec("graph", "string", "")]),
    )


def log_model(folder: Path, key: str, key_type: str, name: str = "model") -> Any:
    """Logs the artefact folder as a pyfunc model of the active run; returns MLflow's ModelInfo."""
    meta = json.loads((folder / "config.json").read_text())
    from importlib.metadata import version

    try:
        reqs = [f"relfm=={version('relfm')}"]
    except Exception:  # not installed as a distribution: let the environment provide it
        reqs = []
    with warnings.catch_warnings():
        # an input example would be run through predict at logging time, which needs a graph
        warnings.filterwarnings("ignore", message=".*input example was not provided.*")
        return _log(folder, key, key_type, meta, reqs, name)


def _log(folder: Path, key: str, key_type: str, meta: dict[str, Any], reqs: list[str], name: str) -> Any:
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(Path(__file__).with_name("mlflow_pyfunc.py")),  # models from code: no pickle
        artifacts={ARTIFACT: str(folder)},
        signature=_signature(key, key_type, str(meta["task_type"]), list(meta.get("classes") or [])),
        pip_requirements=reqs,  # explicit: inferring them would load the model in a subprocess
        metadata={"relfm_kind": str(meta.get("kind")), "query": str(meta.get("query"))},
    )


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    alias: str | None
    uri: str


def register(model_uri: str, name: str, tags: dict[str, str], alias: str | None) -> RegisteredModel:
    """A new version of `name` from a logged model, tagged; `alias` (e.g. champion) moved onto it."""
    from mlflow import MlflowClient

    mv = mlflow.register_model(model_uri, name, tags=tags)
    client = MlflowClient()
    if alias:
        client.set_registered_model_alias(name, alias, mv.version)
    return RegisteredModel(
        name, str(mv.version), alias, f"models:/{name}@{alias}" if alias else f"models:/{name}/{mv.version}"
    )


@dataclass(frozen=True)
class ResolvedModel:
    folder: Path  # the relfm artefact folder (fine-tuned) or a pretrained checkpoint folder
    name: str
    version: str


def resolve(model: str, dst: Path) -> ResolvedModel:
    """A `models:/<name>@<alias>`, `models:/<name>/<version>` URI or a local folder → the folder to load.

    Registry models are downloaded under `dst/<name>/<version>` (once; versions never change)."""
    if not model.startswith("models:/"):
        p = Path(model)
        if not (p / "config.json").is_file():
            raise RelfmError(f"model {p}: no config.json (expected a relfm model folder or models:/ URI)")
        return ResolvedModel(p.resolve(), p.resolve().name, "local")
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    ref = model.removeprefix("models:/")
    client = MlflowClient()
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, _, ver = ref.partition("/")
            mv = client.get_model_version(name, ver)
    except MlflowException as e:
        first = str(e.message).splitlines()[0] if getattr(e, "message", None) else type(e).__name__
        raise RelfmError(f"model {model}: not found in the MLflow registry ({first})") from None
    target = dst / name / str(mv.version)
    if not (target / "config.json").is_file():
        dst.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dst))
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{name}/{mv.version}", dst_path=str(tmp)
                )
            )
            found = local / _artifact_subpath(local)
            if not (found / "config.json").is_file():
                raise RelfmError(f"model {model}: version {mv.version} holds no relfm artefact")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(found), str(target))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return ResolvedModel(target, name, str(mv.version))


def _artifact_subpath(local: Path) -> str:
    """Where the MLmodel file says the relfm artefact lives inside the downloaded model."""
    import yaml

    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    arts = mlmodel["flavors"]["python_function"].get("artifacts", {})
    return str(arts[ARTIFACT]["path"]) if ARTIFACT in arts else f"artifacts/{ARTIFACT}"
