"""`python -m graph_engine.synthetic`: generate a database to disk and print a JSON summary.

Meant for benchmarks and for making data by hand; the summary has rows, seconds, rows/s and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

from graph_engine.errors import RelfmError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graph_engine.synthetic", description=__doc__)
    parser.add_argument("out", help="output folder")
    parser.add_argument(
        "--scale", default="small", help="tiny/small/medium/large/xl or a number of event rows"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", default="parquet", choices=["parquet", "delta", "csv"])
    parser.add_argument("--chunk-rows", type=int, default=None)
    parser.add_argument(
        "--prior", action="store_true", help="a random_config(seed) database (max events = scale)"
    )
    parser.add_argument("--planted", action="store_true", help="the planted explanation-test database")
    args = parser.parse_args(argv)
    from graph_engine.synthetic import default_config, generate, planted_config, random_config, read_report

    try:
        scale: str | int = int(args.scale) if str(args.scale).isdigit() else args.scale
        if args.planted:
            cfg = planted_config(args.seed)
        elif args.prior:
            cfg = random_config(args.seed, max_events=int(scale) if isinstance(scale, int) else 100_000)
        else:
            cfg = default_config(scale, seed=args.seed)
        if args.chunk_rows:
            cfg = cfg.model_copy(update={"chunk_rows": args.chunk_rows})
        t0 = time.perf_counter()
        generate(cfg, args.out, fmt=args.format)
        seconds = time.perf_counter() - t0
        report = read_report(args.out)
    except RelfmError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    event_tables = [t.name for t in cfg.tables if t.kind == "event"]
    events = sum(report.row_counts[n] for n in event_tables)
    rows = sum(report.row_counts.values())
    summary = {
        "config": cfg.name,
        "format": args.format,
        "chunk_rows": cfg.chunk_rows,
        "rows": rows,
        "event_rows": events,
        "seconds": round(seconds, 2),
        "rows_per_s": round(rows / seconds),
        "event_rows_per_s": round(events / seconds),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "row_counts": report.row_counts,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
