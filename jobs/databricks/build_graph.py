"""Databricks `spark_python_task`: the graph stage of the nightly job on the job cluster's Spark.

Runs `relfm run JOB --step graph` with the Spark builder (graph_engine/shards/spark_builder.py), which
picks up the session Databricks started for this task; Delta tables and catalog names are read natively
there (RELFM_SPARK_DELTA=native in the cluster's environment). Parameters: --job, --run-date.
"""

from __future__ import annotations

import os

if __name__ == "__main__":
    os.environ["RELFM_JOB__GRAPH__ENGINE"] = (
        "spark"  # whatever the job file says: this task is the Spark build
    )
    from jobs.databricks.entry import graph

    graph()
