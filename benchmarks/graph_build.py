"""Graph build throughput, local (Arrow/NumPy) against Spark (local[cores]), on growing synthetic graphs.

    .venv/bin/python benchmarks/graph_build.py [--sizes 1000000 3000000 10000000] [--cores 2]
        [--engines local spark] [--dir .relfm/bench/graph_build] [--rows-per-shard 4194304]

For each size (event rows, i.e. edges of the e-commerce graph of `graph_engine.synthetic.default_config`)
the database is generated once as Parquet (reused on later runs), then built by each engine into a fresh
folder. Throughput is graph rows per second of build wall time (the manifest's row count, all tables;
edges per second are printed too). Both builds of a size must give the same checksum; the output says
whether they did. A least-squares line seconds = overhead + rows / throughput is fitted to the Spark builds:
linear scaling means rows/s roughly constant once rows dwarf the fixed overhead (session warm-up, job
scheduling), so the fit reports both. Pass --sizes 100000000 for the 100M-row point, or --spec with an
existing database's graph spec (for example the sampler benchmark's 100M-edge database) to build that
one as well, compared with --expect-overhead/--expect-rows-per-s (a fit from an earlier run). Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from graph_engine.shards.local_builder import BuildConfig, build_local
from graph_engine.spec import GraphSpec
from graph_engine.synthetic import default_config, generate

SPEC_FILE = "graph.yaml"


def database(root: Path, size: int, seed: int) -> GraphSpec:
    """The synthetic database of `size` event rows under root (generated once, then reused)."""
    folder = root / f"events-{size}-seed{seed}" / "data"
    done = folder / ".complete"
    if not done.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        generate(default_config(size, seed), folder, "parquet")
        done.write_text("ok\n")
    return GraphSpec.from_yaml(folder / SPEC_FILE)


def spark_session(cores: int, memory: str) -> Any:
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(f"local[{cores}]")
        .appName("relfm-graph-build-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", memory)
        .config("spark.sql.shuffle.partitions", str(4 * cores))
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.range(1000).count()  # JVM warm-up is a one-off, not part of any build
    return spark


def timed_build(engine: str, spec: GraphSpec, out: Path, cfg: BuildConfig, spark: Any) -> dict[str, Any]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    if engine == "local":
        manifest = build_local(spec, out, cfg)
    else:
        from graph_engine.shards.spark_builder import build_spark

        manifest = build_spark(spec, out, cfg, spark=spark)
    seconds = time.perf_counter() - t0
    rows, edges = manifest["counts"]["rows"], manifest["counts"]["edges"]
    shutil.rmtree(out, ignore_errors=True)
    return {
        "seconds": round(seconds, 2),
        "rows": rows,
        "edges": edges,
        "rows_per_s": round(rows / seconds),
        "edges_per_s": round(edges / seconds),
        "checksum": manifest["checksum"],
    }


def linear_fit(points: list[tuple[int, float]]) -> dict[str, Any]:
    """seconds = overhead + rows / throughput, by least squares (needs two sizes)."""
    if len(points) < 2:
        return {"note": "one size: no fit"}
    rows = np.array([p[0] for p in points], dtype=np.float64)
    secs = np.array([p[1] for p in points], dtype=np.float64)
    slope, overhead = np.polyfit(rows, secs, 1)
    pred = overhead + slope * rows
    ss_res = float(((secs - pred) ** 2).sum())
    ss_tot = float(((secs - secs.mean()) ** 2).sum()) or 1.0
    per_size = rows / secs
    return {
        "overhead_s": round(float(overhead), 2),
        "marginal_rows_per_s": round(1.0 / slope) if slope > 0 else None,
        "r2": round(1.0 - ss_res / ss_tot, 4),
        "rows_per_s_largest_over_smallest": round(float(per_size[-1] / per_size[0]), 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[1_000_000, 3_000_000, 10_000_000],
        help="0: none (--spec only)",
    )
    ap.add_argument("--engines", nargs="+", default=["local", "spark"], choices=["local", "spark"])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--driver-memory", default="4g")
    ap.add_argument("--rows-per-shard", type=int, default=BuildConfig().rows_per_shard)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dir", type=Path, default=Path(".relfm/bench/graph_build"))
    ap.add_argument("--spec", type=Path, nargs="*", default=[], help="graph specs of databases to build too")
    ap.add_argument("--expect-overhead", type=float, default=None, help="seconds, from an earlier fit")
    ap.add_argument("--expect-rows-per-s", type=float, default=None, help="rows/s, from an earlier fit")
    args = ap.parse_args()

    cfg = BuildConfig(rows_per_shard=args.rows_per_shard)
    spark = spark_session(args.cores, args.driver_memory) if "spark" in args.engines else None
    results = []
    for size in sorted(args.sizes) if args.sizes != [0] else []:
        t0 = time.perf_counter()
        spec = database(args.dir, size, args.seed)
        entry: dict[str, Any] = {"events": size, "generate_s": round(time.perf_counter() - t0, 2)}
        for engine in args.engines:
            entry[engine] = timed_build(
                engine, spec, args.dir / f"events-{size}-seed{args.seed}" / engine, cfg, spark
            )
        checksums = {entry[e]["checksum"] for e in args.engines}
        entry["identical"] = len(checksums) == 1
        results.append(entry)
        print(json.dumps(entry), file=sys.stderr, flush=True)
    for path in args.spec:
        spec = GraphSpec.from_yaml(path)
        entry = {"spec": str(path)}
        for engine in args.engines:
            entry[engine] = timed_build(
                engine, spec, args.dir / f"spec-{path.parent.parent.name}" / engine, cfg, spark
            )
            if args.expect_overhead is not None and args.expect_rows_per_s:
                expected = args.expect_overhead + entry[engine]["rows"] / args.expect_rows_per_s
                entry[engine]["expected_s_from_fit"] = round(expected, 1)
                entry[engine]["measured_over_expected"] = round(entry[engine]["seconds"] / expected, 3)
        entry["identical"] = len({entry[e]["checksum"] for e in args.engines}) == 1
        results.append(entry)
        print(json.dumps(entry), file=sys.stderr, flush=True)
    sized = [r for r in results if "events" in r]
    out: dict[str, Any] = {
        "benchmark": "graph_build",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "spark_cores": args.cores,
        "rows_per_shard": args.rows_per_shard,
        "results": results,
    }
    if "spark" in args.engines:
        out["spark_scaling"] = linear_fit([(r["spark"]["rows"], r["spark"]["seconds"]) for r in sized])
    if "local" in args.engines:
        out["local_scaling"] = linear_fit([(r["local"]["rows"], r["local"]["seconds"]) for r in sized])
    print(json.dumps(out, indent=1))
    if spark is not None:
        spark.stop()


if __name__ == "__main__":
    main()
