#!/bin/bash
# Databricks cluster init script: installs relfm into the cluster's Python without touching the runtime's
# own Spark. Runs on every node at start-up, as root, before Spark starts.
#
# RELFM_WHEEL (spark_env_vars in cluster.yml): the wheel's path on a Unity Catalog volume.
# RELFM_CONSTRAINTS (optional): a constraints file (infra/docker/constraints.txt) to pin what the tests ran
# with; off by default, because it would also move packages the runtime ships with.
set -euo pipefail

: "${RELFM_WHEEL:?set RELFM_WHEEL (cluster spark_env_vars) to the relfm wheel on a volume}"
PY=/databricks/python/bin/python
constraints=()
if [[ -n "${RELFM_CONSTRAINTS:-}" ]]; then
  constraints=(-c "$RELFM_CONSTRAINTS")
fi

# torch: the CPU build (the graph build needs no GPU; PyPI's Linux wheel brings several GB of CUDA).
"$PY" -m pip install --quiet --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
"$PY" -m pip install --quiet --no-deps "$RELFM_WHEEL"

# The wheel's own requirements minus pyspark: a PyPI pyspark would shadow Databricks' Spark.
"$PY" - > /tmp/relfm-requirements.txt <<'PY'
import importlib.metadata as md

try:
    from packaging.requirements import Requirement
except ImportError:  # the runtime's pip vendors it
    from pip._vendor.packaging.requirements import Requirement

for line in md.requires("relfm") or []:
    req = Requirement(line)
    if req.name.lower() == "pyspark":
        continue
    if req.marker is None or req.marker.evaluate({"extra": ""}):
        print(req)
PY
"$PY" -m pip install --quiet "${constraints[@]}" -r /tmp/relfm-requirements.txt
echo "relfm: installed $("$PY" -c 'import importlib.metadata as m; print(m.version("relfm"))')"
