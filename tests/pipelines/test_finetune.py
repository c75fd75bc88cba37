"""Fine-tuning with two ranks (DeepSpeed ZeRO-2 on CPU, gloo): `relfm finetune` killed after its first
checkpoint, restarted through Ray Train, resumed at that step; tracked and registered in MLflow with an
alias, and loaded back both as an MLflow model and as the folder the batch scorer loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

pytestmark = [
    pytest.mark.ray,
    pytest.mark.slow,
    pytest.mark.xdist_group("ray"),
    pytest.mark.usefixtures("stage_env"),
]

BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"


def test_finetune_resumes_after_kill_and_registers(
    finetuned: Any, shop_graph: Path, stage_home: Path
) -> None:
    import mlflow
    from mlflow import MlflowClient

    from graph_engine.shards.reader import Graph
    from pipelines import registry, tracking
    from pipelines.scorers import FinetunedScorer
    from relfm_core.finetune import load_finetuned

    # killed after a checkpoint, restarted: resumed at the latest checkpoint and ran to the end
    assert "2 worker(s), DeepSpeed ZeRO-2" in finetuned.killed_log
    assert finetuned.killed_at >= 1
    assert finetuned.report.resumed_from == finetuned.killed_at
    assert f"resumed from step {finetuned.killed_at}" in finetuned.log
    assert (finetuned.run_dir / "checkpoints" / "deepspeed").is_dir()  # DeepSpeed's own checkpoints
    assert finetuned.final_step == finetuned.report.steps > finetuned.killed_at
    assert finetuned.report.extra["world_size"] == 2  # two ranks, each with its share of the rows
    assert finetuned.report.registered_name == "shop-buy" and finetuned.report.alias == "champion"

    tracking.setup()
    client = MlflowClient()
    mv = client.get_model_version_by_alias("shop-buy", "champion")
    assert mv.tags["query"].startswith("PREDICT COUNT(orders.*")
    art = load_finetuned(finetuned.run_dir / "model")
    assert (
        mv.tags["graph_id"]
        == art.meta["graph_id"]
        == json.loads((shop_graph / "manifest.json").read_text())["graph_id"]
    )
    assert set(json.loads(mv.tags["source_versions"])) == {"users", "items", "orders", "reviews"}
    assert 0.0 <= float(mv.tags["metric.val_score"]) <= 1.0
    assert mv.run_id is not None

    # the run: parameters, the graph and its sources, metrics, and the ranks' step metrics (followed
    # from the run folder by the driver) from both attempts
    run = client.get_run(mv.run_id)
    assert run.data.tags["relfm.graph_id"] == mv.tags["graph_id"]
    assert run.data.params["query"] == BUY and run.data.params["deepspeed_zero_stage"] == "2"
    assert json.loads(run.data.params["config"])["workers"] == 2
    assert set(json.loads(run.data.params["source_versions"])) == set(json.loads(mv.tags["source_versions"]))
    assert {"val_score", "samples_per_s", "resumed_from_step"} <= set(run.data.metrics)
    losses = client.get_metric_history(mv.run_id, "loss")
    assert {m.step for m in losses} == set(range(1, finetuned.final_step + 1))
    assert len(client.get_metric_history(mv.run_id, "val_score")) >= 3  # per epoch, then the summary

    # loadable back as an MLflow model, and resolvable to the raw folder the batch scorer loads
    graph = Graph.open(shop_graph)
    keys = graph.table("users").key_values(np.array([0, 1, 2])).tolist()
    pyfunc = mlflow.pyfunc.load_model("models:/shop-buy@champion")
    frame = pd.DataFrame({"user_id": keys, "anchor_time": pd.to_datetime(["2023-06-01"] * 3)})
    out = pyfunc.predict(frame, params={"graph": str(shop_graph)})
    assert list(out["user_id"]) == keys and out["prediction"].between(0, 1).all()
    resolved = registry.resolve("models:/shop-buy@champion", stage_home / "resolved")
    assert (resolved.name, resolved.version) == ("shop-buy", str(mv.version))
    direct = FinetunedScorer(graph, resolved.folder).predict(
        np.array([0, 1, 2]), pd.to_datetime(frame["anchor_time"]).to_numpy("datetime64[ns]").astype(np.int64)
    )
    np.testing.assert_allclose(direct["prediction"], out["prediction"].to_numpy(), rtol=1e-6)
