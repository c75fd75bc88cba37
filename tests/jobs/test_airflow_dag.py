"""The Airflow DAG (jobs/airflow/relfm_nightly.py): imported by Airflow's DagBag, then run with
`dag.test()` on LocalExecutor against the demo job, in Airflow's own virtualenv.

Airflow cannot share relfm's environment (pinned dependencies on both sides), so the test creates one
for it, once, and reuses it: `.relfm/airflow-venv-<version>` in the repository (ignored by git; CI caches
it), or RELFM_AIRFLOW_VENV. Building it takes one `pip install apache-airflow==<version>` from PyPI
(about a minute and a half here). A driver script in that environment migrates a SQLite metadata database
in a temporary AIRFLOW_HOME, starts the API server LocalExecutor's task processes report to, loads the DAG
folder with DagBag, and runs the DAG for the night after the demo's first one: the stages it shares with
that night are skipped, the new night is scored and published (with drift against the first).
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nightly_demo import DEMO_JOB, HINTED_SECRET, ROOT, SECRET, demo_run, relfm_command

AIRFLOW_VERSION = "3.3.2"
DAGS = ROOT / "jobs" / "airflow"
NIGHT = "2025-01-02"  # the night after nightly_demo.RUN_DATE

DRIVER = r"""
import json, os, socket, subprocess, sys, time, urllib.request
from pathlib import Path

dags, out, job, relfm_bin, night = sys.argv[1:6]
bin_dir = Path(sys.executable).parent
result = {}
subprocess.run([str(bin_dir / "airflow"), "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
os.environ["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://127.0.0.1:{port}/execution/"
api = subprocess.Popen(
    [str(bin_dir / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port)],
    stdout=open(Path(os.environ["AIRFLOW_HOME"]) / "api-server.log", "w"), stderr=subprocess.STDOUT,
)
try:
    t0 = time.time()
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/monitor/health", timeout=2)
            break
        except Exception:
            if api.poll() is not None or time.time() - t0 > 180:
                raise SystemExit("the Airflow API server did not start; see api-server.log")
            time.sleep(0.5)
    result["api_server_seconds"] = round(time.time() - t0, 1)

    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dags)
    result["import_errors"] = {k: str(v) for k, v in bag.import_errors.items()}
    result["dags"] = sorted(bag.dags)
    dag = bag.dags["relfm_nightly"]
    result["schedule"] = {"expression": dag.timetable.expression, "timezone": str(dag.timetable.timezone)}
    result["catchup"] = dag.catchup
    result["params"] = {k: dag.params[k] for k in dag.params.keys()}
    result["tasks"] = {
        t.task_id: {"retries": t.retries, "upstream": sorted(t.upstream_task_ids)} for t in dag.tasks
    }

    import pendulum
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    t0 = time.time()
    run = dag.test(
        logical_date=pendulum.parse(night),
        run_conf={"job": job, "relfm_bin": relfm_bin},
        use_executor=True,
    )
    result["test_seconds"] = round(time.time() - t0, 1)
    result["state"] = str(run.state)
    result["task_states"] = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
    with create_session() as session:
        rows = session.query(XComModel).filter(
            XComModel.run_id == run.run_id, XComModel.dag_id == dag.dag_id, XComModel.key == "return_value"
        )
        result["xcom"] = {x.task_id: x.value for x in rows}
finally:
    api.terminate()
    api.wait(30)
Path(out).write_text(json.dumps(result, default=str))
"""


def airflow_python() -> Path:
    """Airflow's virtualenv, created once (under a lock: xdist workers may ask at the same time)."""
    venv = Path(os.environ.get("RELFM_AIRFLOW_VENV") or ROOT / ".relfm" / f"airflow-venv-{AIRFLOW_VERSION}")
    stamp = venv / ".relfm-installed"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.is_file():
            t0 = time.perf_counter()
            base = getattr(sys, "_base_executable", sys.executable)  # a plain interpreter, not relfm's venv
            subprocess.run([base, "-m", "venv", "--clear", str(venv)], check=True)
            pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
            subprocess.run([*pip, "--upgrade", "pip"], check=True, timeout=600)
            subprocess.run([*pip, f"apache-airflow=={AIRFLOW_VERSION}"], check=True, timeout=1200)
            stamp.write_text(
                json.dumps({"airflow": AIRFLOW_VERSION, "seconds": round(time.perf_counter() - t0)})
            )
    return venv / "bin" / "python"


@pytest.mark.slow
def test_dag_loads_and_runs_the_demo_job(tmp_path_factory: pytest.TempPathFactory) -> None:
    demo = demo_run(tmp_path_factory, "airflow")
    assert demo.first.returncode == 0, demo.first.stderr[-3000:]
    python = airflow_python()
    work = tmp_path_factory.mktemp("airflow")
    (work / "driver.py").write_text(DRIVER)
    env = {
        **demo.env,  # RELFM_HOME, the job's overrides and secrets: the tasks' relfm runs inherit them
        "AIRFLOW_HOME": str(work / "home"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__API_AUTH__JWT_SECRET": "relfm-airflow-test-jwt",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "PYTHONPATH": "",
    }
    env.pop("VIRTUAL_ENV", None)
    out = work / "result.json"
    relfm_bin = " ".join(relfm_command())
    r = subprocess.run(
        [str(python), str(work / "driver.py"), str(DAGS), str(out), str(DEMO_JOB), relfm_bin, NIGHT],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert r.returncode == 0 and out.is_file(), (r.stdout + r.stderr)[-5000:]
    res = json.loads(out.read_text())

    # the DagBag import check, and the DAG's shape
    assert res["import_errors"] == {} and res["dags"] == ["relfm_nightly"]
    assert res["schedule"]["expression"] == "0 2 * * *" and res["catchup"] is False
    assert set(res["params"]) == {"job", "relfm_bin", "extra_args"}
    assert res["tasks"] == {
        "graph": {"retries": 2, "upstream": []},
        "finetune": {"retries": 1, "upstream": ["graph"]},
        "score": {"retries": 2, "upstream": ["finetune"]},
        "backtest": {"retries": 2, "upstream": ["finetune"]},
        "publish": {"retries": 2, "upstream": ["backtest", "score"]},
    }

    # dag.test on LocalExecutor: the demo's second night, one relfm step per task
    assert res["state"] == "success", res
    assert res["task_states"] == dict.fromkeys(res["tasks"], "success")
    x = res["xcom"]
    assert {t: x[t]["status"] for t in x} == {
        "graph": "skipped",
        "finetune": "skipped",
        "score": "done",
        "backtest": "skipped",
        "publish": "done",
    }
    assert x["score"]["run_id"] == f"nycflights13-nightly-{NIGHT}"
    assert x["publish"]["facts"]["drift"].endswith("against run nycflights13-nightly-2025-01-01")

    # the secrets reached the tasks' environment but none of Airflow's logs or XComs
    texts = [r.stdout, r.stderr, json.dumps(res)]
    files = [p for p in (work / "home").rglob("*") if p.is_file()]
    for secret in (SECRET, HINTED_SECRET):
        assert not [t for t in texts if secret in t]
        assert not [p for p in files if secret.encode() in p.read_bytes()]
