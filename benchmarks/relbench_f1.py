"""RelBench rel-f1, the issue's check: relfm against two baselines and the published numbers, in one run.

    nice -n 10 .venv/bin/python benchmarks/relbench_f1.py [--model CKPT] [--tasks driver-dnf,...] [--quick]

For driver-dnf and driver-top3 (AUROC x100) and driver-position (MAE), on RelBench's val split of
`../shared/data/relbench-f1` (built by RelBench's own code; never copied into the repo):

  * relfm zero-shot, context generated from the PQL query (labelled examples at earlier anchors whose
    windows close before each prediction anchor);
  * relfm zero-shot with RelBench's train table as the context;
  * relfm fine-tuned on the train table (early stopping on its latest ~15% of anchors), then scored
    without context;
  * baselines: the entity's own history (mean of its own per-event target values over the year before
    the anchor, the training mean without any) and LightGBM on aggregate features generated from the
    schema (benchmarks/baselines.py), trained on the train table, early-stopped on its latest anchors;
  * the published test-split numbers from the data folder's README (and KumoRFM's zero-shot position MAE
    from DESIGN.md), for orientation: they are test numbers, ours are val.

Zero-shot must beat both baselines on every task; the JSON says whether it does. Time to first
prediction is a fresh `relfm predict` process for one (driver, date) row, process start included, with
the command's own breakdown. Test-row predictions (zero-shot with the train and val tables as context,
fine-tuned, and the baselines) go to `.relfm/bench/relbench-f1-test/<task>-<method>.parquet` (date,
driverId, prediction) for independent scoring. Results are logged to MLflow (experiment
"relfm-benchmarks"). Progress goes to stderr; stdout is one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "relbench-f1"
BENCH = ROOT / ".relfm" / "bench"
VAL_TIMESTAMP = pd.Timestamp("2005-01-01")
METHODS = ("zero_shot", "zero_shot_train_context", "fine_tuned", "own_history", "lightgbm")


@dataclass(frozen=True)
class Task:
    name: str
    query: str
    label: str
    metric: str  # "auroc" (x100, higher is better) or "mae" (lower is better)
    history: Any  # baselines.EventTarget: the per-event value the label aggregates
    published: dict[str, float]  # test split, from the data folder's README (position zero-shot: DESIGN.md)


def _tasks() -> dict[str, Task]:
    from baselines import EventTarget

    return {
        t.name: t
        for t in (
            Task(
                "driver-dnf",
                "PREDICT COUNT(results.* WHERE results.statusId != 1, 0, 30, days) > 0 "
                "FOR EACH drivers.driverId ASSUMING COUNT(results.*, 0, 30, days) > 0",
                "did_not_finish",
                "auroc",
                EventTarget("results", "driverId", "statusId", "!=", 1),
                {
                    "lightgbm": 68.56,
                    "rdl_gnn": 72.62,
                    "kumorfm_zero_shot": 82.4,
                    "kumorfm2_in_context": 84.6,
                    "rt_fine_tuned": 84.2,
                },
            ),
            Task(
                "driver-top3",
                "PREDICT MIN(qualifying.position, 0, 30, days) <= 3 FOR EACH drivers.driverId",
                "qualifying",
                "auroc",
                EventTarget("qualifying", "driverId", "position", "<=", 3),
                {
                    "lightgbm": 73.92,
                    "rdl_gnn": 75.54,
                    "kumorfm_zero_shot": 91.1,
                    "kumorfm2_in_context": 92.2,
                    "rt_fine_tuned": 92.1,
                },
            ),
            Task(
                "driver-position",
                "PREDICT AVG(results.positionOrder, 0, 60, days) FOR EACH drivers.driverId",
                "position",
                "mae",
                EventTarget("results", "driverId", "positionOrder"),
                {"lightgbm": 4.170, "rdl_gnn": 4.022, "kumorfm_zero_shot": 2.747, "rt_j_in_context": 2.72},
            ),
        )
    }


def log(msg: str) -> None:
    print(f"[relbench-f1 {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def score(task: Task, y: np.ndarray, pred: np.ndarray) -> float:
    from relfm_core.metrics import auroc

    y, pred = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if task.metric == "auroc":
        return round(100 * auroc(y, pred), 2)
    return round(float(np.abs(pred - y).mean()), 4)


def better(task: Task, a: float, b: float) -> bool:
    return a > b if task.metric == "auroc" else a < b


# ------------------------------------------------------------------------------------------------ model
def default_model() -> Path:
    """The shipped weights; without them, the latest pretraining checkpoint."""
    from relfm_core.weights import BASE

    if BASE.is_file():
        return BASE
    ckpts = sorted((ROOT / ".relfm" / "pretrain" / "relfm-base" / "checkpoints").glob("step-*"))
    ckpts = [c for c in ckpts if (c / "model.safetensors").is_file()]
    if not ckpts:
        sys.exit("relbench_f1: no shipped weights and no pretraining checkpoint yet; give --model CKPT")
    return ckpts[-1]


def pairs_of(graph: Any, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    rows = graph.table("drivers").lookup(df["driverId"].to_numpy())
    if (rows < 0).any():
        raise SystemExit("relbench_f1: a task table names a driver the graph does not have")
    return rows, df["date"].to_numpy().astype("datetime64[ns]").astype(np.int64)


@contextlib.contextmanager
def timed(out: dict[str, float], key: str) -> Iterator[None]:
    t0 = time.perf_counter()
    yield
    out[key] = round(time.perf_counter() - t0, 2)


def finetune_tables(
    engine: Any, train: pd.DataFrame, rows: np.ndarray, anchors: np.ndarray, label: str, holdout: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RelBench's train table as fine-tuning data: the latest `holdout` share of anchors validates; training
    keeps the rows whose label windows close by the first validation anchor (no overlap)."""
    from relfm_core.pql import shift

    df = pd.DataFrame(
        {
            "entity_row": rows,
            "anchor_time": anchors.astype("datetime64[ns]"),
            "label": train[label].to_numpy(np.float64),
        }
    )
    uniq = np.unique(anchors)
    first_val = uniq[min(int(len(uniq) * (1 - holdout)), len(uniq) - 1)]
    h = engine.horizon
    ends = shift(anchors, h.end, h.unit) if h is not None else anchors
    return df[ends <= first_val].reset_index(drop=True), df[anchors >= first_val].reset_index(drop=True)


def write_test(out_dir: Path, task: Task, method: str, test: pd.DataFrame, pred: np.ndarray) -> str:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{task.name}-{method}.parquet"
    pd.DataFrame({"date": test["date"], "driverId": test["driverId"], "prediction": pred}).to_parquet(
        path, index=False
    )
    return str(path)


# ------------------------------------------------------------------------------------------------- tasks
def run_task(task: Task, graph: Any, rfm: Any, args: argparse.Namespace, model_dir: Path) -> dict[str, Any]:
    from baselines import AggregateConfig, AggregateFeatures, LightGBMConfig, own_history, train_lightgbm

    from relfm_core.finetune import FinetuneConfig, finetune, load_finetuned
    from relfm_core.finetune import score as ft_score

    folder = args.data / "tasks" / task.name
    train, val, test = (pd.read_parquet(folder / f"{s}.parquet") for s in ("train", "val", "test"))
    (r_tr, a_tr), (r_va, a_va), (r_te, a_te) = (pairs_of(graph, d) for d in (train, val, test))
    y_tr, y_va = train[task.label].to_numpy(np.float64), val[task.label].to_numpy(np.float64)
    engine = rfm.engine(task.query)
    mode = "fast" if args.quick else args.run_mode
    res: dict[str, dict[str, Any]] = {}
    tests: dict[str, str] = {}
    test_dir = args.test_out

    def record(method: str, pred: np.ndarray, seconds: float, **extra: Any) -> None:
        res[method] = {task.metric: score(task, y_va, pred), "seconds": round(seconds, 2), **extra}
        log(f"{task.name} {method}: {task.metric} {res[method][task.metric]} ({seconds:.1f} s)")

    if "own_history" in args.methods:
        t0 = time.perf_counter()
        fallback = float(y_tr.mean())
        pred = own_history(graph, "drivers", task.history, r_va, a_va, fallback)
        record("own_history", pred, time.perf_counter() - t0, window_days=365)
        tests["own_history"] = write_test(
            test_dir,
            task,
            "own_history",
            test,
            own_history(graph, "drivers", task.history, r_te, a_te, fallback),
        )
    if "lightgbm" in args.methods:
        t0 = time.perf_counter()
        feats = AggregateFeatures(graph, "drivers", AggregateConfig(fit_until=int(VAL_TIMESTAMP.value)))
        x_tr, x_va, x_te = (
            feats.transform(r_tr, a_tr),
            feats.transform(r_va, a_va),
            feats.transform(r_te, a_te),
        )
        lgb = train_lightgbm(
            "binary" if task.metric == "auroc" else "regression",
            x_tr,
            y_tr,
            a_tr,
            [x_va, x_te],
            LightGBMConfig(threads=args.lgbm_threads),
        )
        record(
            "lightgbm",
            lgb.predictions[0],
            time.perf_counter() - t0,
            features=lgb.num_features,
            rounds=lgb.best_rounds,
        )
        tests["lightgbm"] = write_test(test_dir, task, "lightgbm", test, lgb.predictions[1])
    at_val = val[["driverId", "date"]]
    if "zero_shot" in args.methods:
        t0 = time.perf_counter()
        p = rfm.predict(
            task.query, at=at_val, time_col="date", run_mode=mode, anchor_groups=args.anchor_groups
        )
        record(
            "zero_shot",
            p.frame["prediction"].to_numpy(),
            time.perf_counter() - t0,
            context="generated from the query",
            context_rows=p.context_rows,
            run_mode=mode,
        )
        t0 = time.perf_counter()
        p = rfm.predict(
            task.query,
            at=test[["driverId", "date"]],
            time_col="date",
            run_mode=mode,
            anchor_groups=args.anchor_groups,
        )
        tests["zero_shot"] = write_test(test_dir, task, "zero_shot", test, p.frame["prediction"].to_numpy())
        res["zero_shot"]["test_seconds"] = round(time.perf_counter() - t0, 2)
    if "zero_shot_train_context" in args.methods:
        t0 = time.perf_counter()
        p = rfm.predict(
            task.query,
            at=at_val,
            time_col="date",
            context=train,
            label_col=task.label,
            run_mode=mode,
            anchor_groups=args.anchor_groups,
        )
        record(
            "zero_shot_train_context",
            p.frame["prediction"].to_numpy(),
            time.perf_counter() - t0,
            context="RelBench train table",
            context_rows=p.context_rows,
            run_mode=mode,
        )
        t0 = time.perf_counter()
        labelled = pd.concat([train, val], ignore_index=True)
        p = rfm.predict(
            task.query,
            at=test[["driverId", "date"]],
            time_col="date",
            context=labelled,
            label_col=task.label,
            run_mode=mode,
            anchor_groups=args.anchor_groups,
        )
        tests["zero_shot_train_context"] = write_test(
            test_dir, task, "zero_shot_train_context", test, p.frame["prediction"].to_numpy()
        )
        res["zero_shot_train_context"]["test_seconds"] = round(time.perf_counter() - t0, 2)
        res["zero_shot_train_context"]["test_context"] = "RelBench train + val tables"
    if "fine_tuned" in args.methods:
        t0 = time.perf_counter()
        tr, va = finetune_tables(engine, train, r_tr, a_tr, task.label, 0.15)
        cfg = (
            FinetuneConfig(epochs=2, patience=1, max_train_rows=1500, seed=0)
            if args.quick
            else FinetuneConfig(
                epochs=args.ft_epochs,
                patience=2,
                max_train_rows=args.ft_rows,
                train_rows=args.ft_rows_from,
                seed=0,
            )
        )
        out = BENCH / "relbench-f1-models" / task.name
        history: list[dict[str, float]] = []
        ft = finetune(graph, rfm.features, rfm.model, engine, tr, va, out, cfg, log=history.append)
        loaded = load_finetuned(ft.path)
        pred = ft_score(loaded, rfm.inputs, engine, r_va, a_va)
        record(
            "fine_tuned",
            pred,
            time.perf_counter() - t0,
            train_rows=min(len(tr), cfg.max_train_rows),
            train_rows_from=cfg.train_rows,
            holdout_rows=len(va),
            epochs=len(history),
            model=str(ft.path),
        )
        tests["fine_tuned"] = write_test(
            test_dir, task, "fine_tuned", test, ft_score(loaded, rfm.inputs, engine, r_te, a_te)
        )
    passes = {}
    for zs in ("zero_shot", "zero_shot_train_context"):
        if zs in res and "own_history" in res and "lightgbm" in res:
            m = task.metric
            passes[zs] = better(task, res[zs][m], res["own_history"][m]) and better(
                task, res[zs][m], res["lightgbm"][m]
            )
    return {
        "query": task.query,
        "metric": "AUROC x100 (higher is better)" if task.metric == "auroc" else "MAE (lower is better)",
        "split": "val",
        "rows": {"train": len(train), "val": len(val), "test": len(test)},
        "methods": res,
        "beats_both_baselines": passes,
        "published_test": task.published,
        "test_predictions": tests,
    }


# ---------------------------------------------------------------------------------- first prediction
def first_prediction(graph_dir: Path, model: Path, task: Task, args: argparse.Namespace) -> dict[str, Any]:
    """Wall time of a fresh `relfm predict` process for one (driver, date) row, process start included."""
    val = pd.read_parquet(args.data / "tasks" / task.name / "val.parquet").head(1)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = Path(tmp) / "one.parquet"
        val[["driverId", "date"]].to_parquet(pairs, index=False)
        relfm = Path(sys.executable).parent / "relfm"
        cmd = [
            str(relfm),
            "predict",
            str(graph_dir),
            "--query",
            task.query,
            "--at",
            str(pairs),
            "--time-col",
            "date",
            "--model",
            str(model),
            "--out",
            str(Path(tmp) / "p.parquet"),
        ]
        env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
        parts = {k: float(v) for k, v in re.findall(r"(\w+) ([0-9.]+) s", proc.stdout)}
        pred = float(pd.read_parquet(Path(tmp) / "p.parquet")["prediction"].iloc[0])
    inside = sum(parts.values())
    return {
        "seconds": round(wall, 2),
        "breakdown_seconds": {
            "process_start_and_imports": round(wall - inside, 2),
            **{k: round(v, 2) for k, v in parts.items()},
        },
        "command": "relfm predict GRAPH --query <driver-dnf> --at <one row> --time-col date --model M --out OUT",
        "run_mode": "fast",
        "prediction": round(pred, 4),
        "kumo_advertised_seconds": 1.0,
    }


# -------------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--model",
        type=Path,
        default=None,
        help="checkpoint folder (default: shipped weights, else the latest pretraining checkpoint)",
    )
    ap.add_argument("--tasks", default="driver-dnf,driver-top3,driver-position")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument(
        "--quick", action="store_true", help="fast run mode (256 context rows), short fine-tuning"
    )
    ap.add_argument("--run-mode", default="normal", choices=("fast", "normal", "best"))
    ap.add_argument(
        "--anchor-groups",
        type=int,
        default=None,
        help="anchor groups (one context each; default from the run mode): fewer is faster, each group's "
        "context is built at its earliest anchor",
    )
    ap.add_argument("--ft-epochs", type=int, default=4)
    ap.add_argument("--ft-rows", type=int, default=3000, help="fine-tuning rows taken from the train table")
    ap.add_argument(
        "--ft-rows-from",
        default="latest",
        choices=("latest", "random"),
        help="the latest rows or a random sample",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--lgbm-threads", type=int, default=1)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--test-out", type=Path, default=BENCH / "relbench-f1-test")
    ap.add_argument("--no-mlflow", action="store_true")
    args = ap.parse_args()
    args.methods = [m for m in args.methods.split(",") if m]
    bad = [m for m in args.methods if m not in METHODS]
    if bad:
        ap.error(f"unknown method {bad[0]} (choose from {', '.join(METHODS)})")
    return args


def main() -> None:
    args = parse_args()
    if not (args.data / "db").is_dir() or not (args.data / "tasks").is_dir():
        sys.exit(
            f"relbench_f1: RelBench rel-f1 data not found at {args.data} (expected db/ and tasks/ from "
            "../shared/data/relbench-f1); this benchmark needs the shared data folder"
        )
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    tasks = _tasks()
    names = [t for t in args.tasks.split(",") if t]
    for t in names:
        if t not in tasks:
            sys.exit(f"relbench_f1: unknown task {t} (choose from {', '.join(tasks)})")
    from graph_engine.errors import RelfmError

    real_stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries the JSON only
            result = run(args, [tasks[t] for t in names])
    except RelfmError as e:
        sys.exit(f"relbench_f1: {e}")
    print(json.dumps(result, indent=1), file=real_stdout)


def run(args: argparse.Namespace, tasks: list[Task]) -> dict[str, Any]:
    import torch

    from graph_engine.cache import open_or_build
    from graph_engine.infer import infer_spec
    from relfm_core.rfm import RFM
    from relfm_core.weights import load_pretrained

    t_start = time.perf_counter()
    load = os.getloadavg()
    model_dir = args.model or default_model()
    log(f"model {model_dir}")
    spec = infer_spec(str(args.data / "db"), "rel-f1")
    graph = open_or_build(spec, cache_dir=BENCH / "graphs")
    torch.manual_seed(0)
    rfm = RFM(graph, model=load_pretrained(model_dir), num_threads=args.threads)
    out: dict[str, Any] = {
        "benchmark": "relbench rel-f1 (val split)",
        "data": str(args.data),
        "graph": str(graph.path),
        "model": str(model_dir),
        "model_config": json.loads((Path(model_dir) / "config.json").read_text()).get("model")
        if Path(model_dir).is_dir()
        else None,
        "quick": args.quick,
        "run_mode": "fast" if args.quick else args.run_mode,
        "tasks": {},
    }
    for task in tasks:
        log(f"task {task.name}")
        out["tasks"][task.name] = run_task(task, graph, rfm, args, Path(model_dir))
    out["time_to_first_prediction"] = first_prediction(
        graph.path, Path(model_dir), _tasks()["driver-dnf"], args
    )
    log(f"time to first prediction: {out['time_to_first_prediction']}")
    verdict: dict[str, bool] = {}
    for zs in ("zero_shot", "zero_shot_train_context"):
        per = [t["beats_both_baselines"].get(zs) for t in out["tasks"].values()]
        if per and all(p is not None for p in per):
            verdict[zs] = all(per)
    out["zero_shot_beats_both_baselines_on_every_task"] = verdict
    out["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_average_start": [round(x, 1) for x in load],
        "load_average_end": [round(x, 1) for x in os.getloadavg()],
    }
    out["seconds"] = round(time.perf_counter() - t_start, 1)
    if not args.no_mlflow:
        out["mlflow_run_id"] = log_mlflow(out, graph)
    return out


def log_mlflow(out: dict[str, Any], graph: Any) -> str:
    from pipelines import tracking

    with tracking.run("relbench-f1", experiment="relfm-benchmarks") as r:
        tracking.log_graph(graph)
        tracking.log_params(
            {
                "model": out["model"],
                "quick": out["quick"],
                "run_mode": out["run_mode"],
                "tasks": ",".join(out["tasks"]),
            }
        )
        metrics: dict[str, float] = {}
        for name, t in out["tasks"].items():
            for method, m in t["methods"].items():
                for k, v in m.items():
                    if isinstance(v, int | float) and not isinstance(v, bool):
                        metrics[f"{name}/{method}/{k}"] = float(v)
            for who, v in t["published_test"].items():
                metrics[f"{name}/published_test/{who}"] = float(v)
        ttfp = out["time_to_first_prediction"].get("seconds")
        if ttfp is not None:
            metrics["time_to_first_prediction_s"] = float(ttfp)
        tracking.metrics_logger()(0, metrics)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "relbench-f1.json"
            path.write_text(json.dumps(out, indent=1))
            tracking.log_artifact(path)
        return str(r.info.run_id)


if __name__ == "__main__":
    main()
