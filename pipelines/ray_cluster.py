"""Connecting to Ray: the cluster a caller already joined, a given address, or a local one.

The same stage code runs on one machine (a local Ray instance started here) and on a Ray cluster
(`ray_address` in the config or RAY_ADDRESS); nothing else in the stages knows which. Workers get the
few environment variables that decide where relfm reads and writes (RELFM_HOME, the text encoder), so a
stage behaves the same in the driver and in its actors.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from graph_engine.cache import relfm_home

WORKER_ENV = ("RELFM_HOME", "RELFM_TEXT_ENCODER", "HF_HUB_OFFLINE", "DS_ACCELERATOR")


def worker_env() -> dict[str, str]:
    """The environment actors and training workers must share with the driver."""
    env = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
    env["RELFM_HOME"] = str(relfm_home())
    return env


def apply_env(env: dict[str, str]) -> None:
    os.environ.update(env)


def connect(address: str | None = None) -> Any:
    """`ray` after making sure this process is connected to a cluster."""
    import ray

    if not ray.is_initialized():
        addr = address or os.environ.get("RAY_ADDRESS") or None
        kw: dict[str, Any] = {"logging_level": logging.WARNING}
        if addr is None:
            # a local instance for this job: no dashboard (memory, start-up time) and no forwarding of
            # worker logs, which without the dashboard's state API would repeat Ray Train's polling
            # warnings; failures still reach the driver as exceptions. Its workers inherit this
            # process's environment (RELFM_HOME...): a runtime_env would start every worker through
            # Ray's setup_worker.py, one more Python start-up per actor
            kw.update(include_dashboard=False, log_to_driver=False)
            start_local(**kw)
        else:
            ray.init(address=addr, **kw)
    quiet_ray_data()
    return ray


def start_local(attempts: int = 3, **init_kwargs: Any) -> Any:
    """`ray.init` of a local instance, retried: on a loaded machine the raylet gives up when the
    dashboard agent takes more than its fixed 15 s to start (ray-project/ray#65983)."""
    import ray

    for attempt in range(attempts):
        try:
            return ray.init(**init_kwargs)
        except Exception as e:  # Ray raises a bare Exception for this
            if "timed out during startup" not in str(e) or attempt == attempts - 1:
                raise
            ray.shutdown()
    return None


def quiet_ray_data() -> None:
    """Ray Data's own progress bars and per-operator logging would interleave with ours."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
