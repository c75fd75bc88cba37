"""Stage configs (YAML, pydantic, one-line errors) and the Delta prediction table's commit semantics."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import DeltaTable

from graph_engine.errors import RelfmError
from pipelines import prediction_table
from pipelines.configs import FinetuneStageConfig, ScoreStageConfig, load_config

pytestmark = pytest.mark.unit


def test_finetune_config_paths_and_deepspeed(tmp_path: Path) -> None:
    (tmp_path / "ft.yaml").write_text(
        "graph: graphs/shop.yaml\nquery: PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id\n"
        "deepspeed: {zero_stage: 3, offload_param: true, extra: {bf16: {enabled: true}}}\n"
        "train: {batch_size: 16}\nworkers: 4\n"
    )
    cfg = load_config(tmp_path / "ft.yaml", FinetuneStageConfig, {"launcher": "local", "workers": None})
    assert cfg.path(cfg.graph) == tmp_path / "graphs" / "shop.yaml"  # relative to the config file
    assert (cfg.launcher, cfg.workers, cfg.alias) == ("local", 4, "champion")
    assert cfg.deepspeed is not None
    ds = cfg.deepspeed.to_deepspeed(16, 1.0)
    assert ds["zero_optimization"] == {"stage": 3, "offload_param": {"device": "cpu"}}
    assert ds["train_micro_batch_size_per_gpu"] == 16 and ds["bf16"] == {"enabled": True}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "graph: g\nquery: q\ndeepspeed: {zero_stage: 2, offload_param: true}\n",
            "deepspeed: offload_param needs zero_stage 3",
        ),
        ("graph: g\nquery: q\ntrain: {epochs: 0}\n", "train.epochs: Input should be greater than 0"),
        ("graph: g\nquery: q\nlauncher: slurm\n", "launcher: Input should be 'ray' or 'local'"),
        (
            "graph: g\nquery: q\ntable: {num_anchors: 2, bogus: 1}\n",
            "table.bogus: Extra inputs are not permitted",
        ),
        ("graph: [g\n", "invalid YAML at"),
    ],
)
def test_finetune_config_errors_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "ft.yaml").write_text(text)
    with pytest.raises(RelfmError) as e:
        load_config(tmp_path / "ft.yaml", FinetuneStageConfig)
    assert expected in e.value.message and "\n" not in e.value.message


def test_score_config_run_id(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(
        "graph: g\nmodel: models:/m@champion\noutput: out\nrun_date: 2024-03-01\n"
    )
    cfg = load_config(tmp_path / "s.yaml", ScoreStageConfig)
    assert cfg.resolved_run_id() == "score-2024-03-01" and cfg.path(cfg.output) == tmp_path / "out"
    with pytest.raises(RelfmError, match="run_id: 'a b' may only hold"):
        load_config(tmp_path / "s.yaml", ScoreStageConfig, {"run_id": "a b"})
    with pytest.raises(RelfmError, match=r"score config .*: file not found"):
        load_config(tmp_path / "missing.yaml", ScoreStageConfig)


def test_score_output_may_be_a_uri(tmp_path: Path) -> None:
    """A cluster writes predictions to object storage: a URI is kept as given, a path is relative to
    the config; delta-rs commits through either (file:// stands in for s3:// here)."""
    (tmp_path / "s.yaml").write_text("graph: g\nmodel: m\noutput: file://${PREDS}/preds\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PREDS", str(tmp_path / "store"))
        cfg = load_config(tmp_path / "s.yaml", ScoreStageConfig)
        uri = cfg.output_location()
    assert uri == f"file://{tmp_path}/store/preds"
    cfg.output = "out/preds"
    assert cfg.output_location() == str(tmp_path / "out" / "preds")
    (tmp_path / "store").mkdir()
    assert prediction_table.commit(uri, _predictions([1, 2], 0.5, "r1", date(2024, 1, 1)), "r1") == 0
    assert prediction_table.current_version(uri) == 0
    assert len(DeltaTable(str(tmp_path / "store" / "preds")).to_pandas()) == 2


def _predictions(keys: list[int], value: float, run_id: str, day: date) -> pa.Table:
    n = len(keys)
    return prediction_table.build(
        "user_id",
        np.array(keys),
        np.full(n, 1_700_000_000 * 10**9),
        {"prediction": np.full(n, value)},
        "m",
        "3",
        run_id,
        day,
    )


def test_prediction_table_replaces_a_run_in_one_commit(tmp_path: Path) -> None:
    path = tmp_path / "preds"
    assert prediction_table.current_version(path) is None
    assert prediction_table.commit(path, _predictions([1, 2, 3], 0.1, "r1", date(2024, 1, 1)), "r1") == 0
    assert prediction_table.commit(path, _predictions([4, 5], 0.2, "r2", date(2024, 1, 2)), "r2") == 1
    assert prediction_table.commit(path, _predictions([1, 2, 3], 0.3, "r1", date(2024, 1, 1)), "r1") == 2
    dt = DeltaTable(str(path))
    df = dt.to_pandas().sort_values("user_id")
    assert df["user_id"].tolist() == [1, 2, 3, 4, 5]  # r1 replaced, never duplicated; r2 untouched
    assert df["prediction"].tolist() == [0.3, 0.3, 0.3, 0.2, 0.2]
    assert dt.metadata().partition_columns == ["run_date"]
    assert str(df["anchor_time"].dt.tz) == "UTC"
    assert dt.history(1)[0]["relfm.run_id"] == "r1"
    wrong = prediction_table.build(
        "user_id",
        np.array([1]),
        np.zeros(1),
        {"prediction": np.array(["a"], dtype=object), "prob_a": np.ones(1)},
        "m",
        "1",
        "r3",
        date(2024, 1, 3),
    )
    with pytest.raises(RelfmError, match="has no column 'prob_a'"):
        prediction_table.commit(path, wrong, "r3")
    assert prediction_table.current_version(path) == 2


def test_demo_stage_configs_validate() -> None:
    demo = Path(__file__).resolve().parents[2] / "jobs" / "demo"
    ft = load_config(demo / "finetune-idle-planes.yaml", FinetuneStageConfig)
    sc = load_config(demo / "score-idle-planes.yaml", ScoreStageConfig)
    assert ft.path(ft.graph) == sc.path(sc.graph) == demo / "nycflights13.graph.yaml"
    assert sc.model == f"models:/{ft.registered_model_name}@{ft.alias}"


def test_metrics_follower_logs_each_line_once(tmp_path: Path) -> None:
    """The driver logs the ranks' step metrics from the run folder: every complete line once, across
    restarts of the follower (a resumed run), skipping a line a killed rank left unreadable."""
    import json

    from mlflow import MlflowClient

    from pipelines.tracking import MetricsFollower

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("t")).info.run_id
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "metrics": {"loss": 1.0 / s}}) + "\n" for s in (1, 2)))
    with MetricsFollower(path, run_id, uri, every_s=60):
        pass
    with path.open("a") as f:
        f.write('{"step": 3, "metr\n' + json.dumps({"step": 3, "metrics": {"loss": 0.3}}) + "\n")
        f.write('{"step": 4')  # still being written: waits for the next flush
    assert MetricsFollower(path, run_id, uri).flush() == 1
    assert MetricsFollower(path, run_id, uri).flush() == 0
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == [1, 2, 3]


def test_a_broken_pretrain_config_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("name: x\nmodel: {d: 128\n")
    from pipelines.pretrain import load_config as load_pretrain_config

    with pytest.raises(RelfmError, match=r"^pretrain config .*p\.yaml: invalid YAML at 3:1$"):
        load_pretrain_config(tmp_path / "p.yaml")
