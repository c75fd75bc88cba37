"""Databricks task entry points: each runs one stage of the nightly job, `relfm run JOB --step STAGE`.

Wheel tasks (`python_wheel_task`) call these through the wheel's console scripts (ENTRY_POINTS, declared
in pyproject's [project.scripts]); the Spark task runs jobs/databricks/build_graph.py, which calls
`graph` on the cluster's own Spark session. Parameters arrive as command-line arguments: `--job` (the job
YAML, e.g. in the bundle's workspace files) and `--run-date` (`{{job.start_time.iso_date}}`), in the
`--name=value` form Databricks uses for named parameters or as separate words.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

# console script → function; the bundle test checks that databricks.yml names only these, and that
# pyproject declares them
ENTRY_POINTS = {
    "relfm-nightly-graph": "jobs.databricks.entry:graph",
    "relfm-nightly-finetune": "jobs.databricks.entry:finetune",
    "relfm-nightly-score": "jobs.databricks.entry:score",
    "relfm-nightly-backtest": "jobs.databricks.entry:backtest",
    "relfm-nightly-publish": "jobs.databricks.entry:publish",
}


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="relfm-nightly-<stage>", allow_abbrev=False)
    p.add_argument("--job", required=True, help="the nightly job YAML")
    p.add_argument("--run-date", "--run_date", dest="run_date", default=None, help="YYYY-MM-DD")
    p.add_argument("--force", action="store_true", help="redo the stage even if it is up to date")
    p.add_argument("--summary-json", "--summary_json", dest="summary_json", default=None)
    return p.parse_args(list(argv))


def run_stage(stage: str, argv: Sequence[str] | None = None) -> None:
    """`relfm run --step STAGE` with the task's parameters, through the same command line users run
    (exit codes: 2 for bad input, 1 for a failure; Databricks retries on either)."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    cli = ["relfm", "run", args.job, "--step", stage]
    if args.run_date:
        cli += ["--run-date", args.run_date]
    if args.force:
        cli += ["--force", stage]
    if args.summary_json:
        cli += ["--summary-json", args.summary_json]
    os.environ.setdefault("COLUMNS", "160")  # driver logs: wide enough for the summary table
    from jobs.cli import main

    sys.argv = cli
    main()


def graph(argv: Sequence[str] | None = None) -> None:
    run_stage("graph", argv)


def finetune(argv: Sequence[str] | None = None) -> None:
    run_stage("finetune", argv)


def score(argv: Sequence[str] | None = None) -> None:
    run_stage("score", argv)


def backtest(argv: Sequence[str] | None = None) -> None:
    run_stage("backtest", argv)


def publish(argv: Sequence[str] | None = None) -> None:
    run_stage("publish", argv)
