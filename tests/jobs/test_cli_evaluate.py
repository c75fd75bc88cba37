"""`relfm evaluate` and `relfm predict --explain` through the real command line: a report on disk, an
explanation per entity, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

RelfmRunner = Callable[..., subprocess.CompletedProcess[str]]
BUY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
HASHED = {"RELFM_TEXT_ENCODER": "hashed"}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(built graph folder, small random model checkpoint folder)."""
    import torch

    from graph_engine.shards.local_builder import build_local
    from graph_engine.synthetic import default_config, generate
    from relfm_core.model import ModelConfig, RelationalFM
    from relfm_core.training import save_weights

    root = tmp_path_factory.mktemp("cli-evaluate")
    build_local(generate(default_config("tiny"), root / "shop"), root / "graph")
    torch.manual_seed(0)
    cfg = ModelConfig(d=32, cell_dim=16, heads=2, graph_layers=1, icl_layers=1)
    (root / "model").mkdir()
    save_weights(RelationalFM(cfg), root / "model" / "model.safetensors")
    (root / "model" / "config.json").write_text(json.dumps({"model": cfg.to_dict()}))
    return root / "graph", root / "model"


@pytest.mark.unit
def test_evaluate_writes_the_report(relfm: RelfmRunner, tmp_path: Path, shop: tuple[Path, Path]) -> None:
    graph, model = shop
    out = tmp_path / "eval"
    res = relfm(
        "evaluate",
        str(graph),
        "-q",
        BUY,
        "--model",
        str(model),
        "--out",
        str(out),
        "--max-entities",
        "40",
        "--no-mlflow",
        env=HASHED,
    )
    assert res.returncode == 0, res.stderr
    assert "binary backtest at" in res.stdout and "auroc" in res.stdout
    assert f"report: {out / 'report.html'}" in res.stdout and "MLflow run" not in res.stdout
    md = (out / "report.md").read_text()
    assert "| AUROC |" in md and "## Global explanation" in md
    assert (out / "plots" / "roc_curve.png").is_file() and (out / "report.html").stat().st_size > 10_000


@pytest.mark.unit
def test_predict_explain_adds_words_and_tables(
    relfm: RelfmRunner, tmp_path: Path, shop: tuple[Path, Path]
) -> None:
    graph, model = shop
    out = tmp_path / "pred.parquet"
    pairs = tmp_path / "pairs.parquet"
    when = pa.array(["2023-06-01"] * 4).cast(pa.timestamp("s"))
    pq.write_table(pa.table({"user_id": [0, 1, 2, 5], "anchor_time": when}), pairs)
    res = relfm(
        "predict", str(graph), "-q", BUY, "--model", str(model), "--at", str(pairs), "-o", str(out), "--explain",
        env=HASHED,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    table = pq.read_table(out)
    assert table.column_names == ["user_id", "anchor_time", "prediction", "explanation"]
    assert table.num_rows == 4
    words = table.column("explanation").to_pylist()
    assert all(1 <= len(w) <= 5 for w in words) and any(": +" in x or ": -" in x for w in words for x in w)
    per_column = pq.read_table(tmp_path / "pred-explanation.parquet").to_pandas()
    assert {"user_id", "anchor_time", "table", "column", "contribution", "importance", "rank"} <= set(
        per_column.columns
    )
    assert set(per_column["user_id"]) == set(table.column("user_id").to_pylist())
    cohorts = pq.read_table(tmp_path / "pred-cohorts.parquet").to_pandas()
    assert {"cohort", "count", "mean_prediction", "mean_label", "importance"} <= set(cohorts.columns)
    assert "wrote explanation to" in res.stdout


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-q", "PREDICT COUNT(ordrs.*, 0, 30, days) > 0 FOR EACH users.user_id"], "unknown table 'ordrs'"),
        (["-q", BUY, "--anchor", "soon"], "is not a time"),
    ],
)
def test_evaluate_errors_are_one_line_with_exit_code_2(
    relfm: RelfmRunner, tmp_path: Path, shop: tuple[Path, Path], args: list[str], message: str
) -> None:
    graph, model = shop
    out = tmp_path / "eval"
    res = relfm(
        "evaluate", str(graph), *args, "--model", str(model), "--out", str(out), "--no-mlflow", env=HASHED
    )
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], res.stderr
    assert not (out / "report.md").exists()
