"""`relfm predict` through the real command line: predictions for pairs or every entity, one-line errors."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

RelfmRunner = Callable[..., subprocess.CompletedProcess[str]]
BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
SPEND = "PREDICT AVG(orders.amount, 0, 90, days) FOR EACH users.user_id"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(built graph folder, random model checkpoint folder) shared by the module's commands."""
    import torch

    from graph_engine.shards.local_builder import build_local
    from graph_engine.synthetic import default_config, generate
    from relfm_core.model import ModelConfig, RelationalFM
    from relfm_core.training import save_weights

    root = tmp_path_factory.mktemp("cli-predict")
    spec = generate(default_config("tiny"), root / "shop")
    build_local(spec, root / "graph")
    torch.manual_seed(0)
    cfg = ModelConfig(d=32, cell_dim=16, heads=2, graph_layers=1, icl_layers=1)
    (root / "model").mkdir()
    save_weights(RelationalFM(cfg), root / "model" / "model.safetensors")
    (root / "model" / "config.json").write_text(json.dumps({"model": cfg.to_dict()}))
    return root / "graph", root / "model"


def _pairs(path: Path, keys: list[int]) -> Path:
    ts = pa.array(["2023-06-01"] * len(keys)).cast(pa.timestamp("s"))
    pq.write_table(pa.table({"user_id": keys, "when": ts, "extra": [str(k) for k in keys]}), path)
    return path


@pytest.mark.unit
def test_predict_for_pairs(relfm: RelfmRunner, tmp_path: Path, shop: tuple[Path, Path]) -> None:
    graph, model = shop
    pairs = _pairs(tmp_path / "pairs.parquet", [0, 1, 2, 5])
    out = tmp_path / "out.parquet"
    res = relfm(
        "predict",
        str(graph),
        "--query",
        BUY,
        "--at",
        str(pairs),
        "--time-col",
        "when",
        "--model",
        str(model),
        "--out",
        str(out),
    )
    assert res.returncode == 0, res.stderr
    assert "wrote 4 predictions (binary, pretrained" in res.stdout and "context rows" in res.stdout
    table = pq.read_table(out)
    assert table.column_names == ["user_id", "when", "extra", "prediction"]
    p = np.asarray(table.column("prediction").to_pylist(), dtype=float)
    assert ((p > 0) & (p < 1)).all()


@pytest.mark.unit
def test_predict_every_entity_now(relfm: RelfmRunner, tmp_path: Path, shop: tuple[Path, Path]) -> None:
    graph, model = shop
    out = tmp_path / "now.parquet"
    res = relfm(
        "predict", str(graph), "-q", SPEND, "--model", str(model), "--run-mode", "fast", "-o", str(out)
    )
    assert res.returncode == 0, res.stderr
    assert "(regression, pretrained" in res.stdout and " at 2023-" in res.stdout
    table = pq.read_table(out)
    assert table.column_names == ["user_id", "anchor_time", "prediction"]
    assert len(set(table.column("anchor_time").to_pylist())) == 1
    assert np.isfinite(np.asarray(table.column("prediction").to_pylist(), dtype=float)).all()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("query", "pairs_cols", "extra", "message"),
    [
        ("PREDICT COUNT(ordrs.*, 0, 30, days) > 0 FOR EACH users.user_id", None, [], "unknown table 'ordrs'"),
        (BUY, {"uid": [1], "anchor_time": ["2023-01-01"]}, [], "has no column 'user_id'"),
        (BUY, {"user_id": [1, 424242], "anchor_time": ["2023-01-01"] * 2}, [], "unknown key 424242"),
        (BUY, None, ["--context", "ctx"], "has no label column 'label'"),
        (BUY, None, ["--run-mode", "turbo"], "unknown run mode 'turbo'"),
        (BUY, None, ["--model", "nowhere"], "no such checkpoint"),
    ],
)
def test_predict_errors_are_one_line_with_exit_code_2(
    relfm: RelfmRunner,
    tmp_path: Path,
    shop: tuple[Path, Path],
    query: str,
    pairs_cols: dict[str, list[object]] | None,
    extra: list[str],
    message: str,
) -> None:
    graph, model = shop
    args = ["predict", str(graph), "--query", query, "--out", str(tmp_path / "o.parquet")]
    if "--model" not in extra:
        args += ["--model", str(model)]
    if pairs_cols is not None:
        pq.write_table(pa.table(pairs_cols), tmp_path / "p.parquet")
        args += ["--at", str(tmp_path / "p.parquet")]
    if "ctx" in extra:
        pq.write_table(pa.table({"user_id": [1], "anchor_time": ["2022-01-01"]}), tmp_path / "ctx.parquet")
        extra = [str(tmp_path / "ctx.parquet") if e == "ctx" else e for e in extra]
    res = relfm(*args, *extra)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
    assert not (tmp_path / "o.parquet").exists()
