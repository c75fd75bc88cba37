"""What can be checked of infra/ without a Docker engine, a Kubernetes cluster or a Databricks workspace.

Lint: hadolint on every Dockerfile (infra/docker/hadolint.yaml: any finding fails), yamllint on every YAML
file under infra/, jobs/ and .github/ (.yamllint.yaml), `bash -n` on shell scripts. Structure: the fields
KubeRay, spark-operator, Kubernetes, Databricks and docker compose act on, and the facts that tie the
files together (the images named exist as Dockerfiles, the versions in manifests match the tested
constraints, the commands manifests run exist in the `relfm` CLI, paths they read are mounted). Secrets:
nothing under infra/ looks like a literal key, password or token.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
DOCKER = INFRA / "docker"
KUBERAY = INFRA / "kuberay"
DOCKERFILES = sorted(p for p in INFRA.rglob("Dockerfile*") if p.suffix != ".dockerignore")
IMAGE = re.compile(r"^ghcr\.io/relfm/relfm-(?P<flavor>[a-z0-9]+):(?P<tag>[\w.-]+)$")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


# ------------------------------------------------------------------------------------------------ helpers
def tool(name: str) -> str:
    """A command-line tool from this virtualenv (dev extras), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifests(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(INFRA.rglob("*.y*ml")) for d in documents(p) if d.get("kind") == kind]


def pins() -> dict[str, str]:
    out = {}
    for line in (DOCKER / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[name] = version
    return out


def containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_template["spec"]["containers"])


def ray_groups(cluster_spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, group spec) for the head group and every worker group of a RayCluster spec."""
    yield "head", cluster_spec["headGroupSpec"]
    for group in cluster_spec.get("workerGroupSpecs", []):
        yield group["groupName"], group


def mounts_by_path(container: dict[str, Any], pod_spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """mountPath -> the volume mounted there (every mount must name a volume of the pod)."""
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    out = {}
    for m in container.get("volumeMounts", []):
        assert m["name"] in volumes, f"volumeMount {m['name']} names no volume of the pod"
        out[m["mountPath"]] = volumes[m["name"]]
    return out


def volume_at(path: str, mounts: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    for mount_path, volume in mounts.items():
        if path == mount_path or path.startswith(mount_path.rstrip("/") + "/"):
            return volume
    return None


def dockerfile_for(image: str) -> Path:
    m = IMAGE.match(image)
    assert m, f"{image}: not a relfm image (ghcr.io/relfm/relfm-<flavor>:<tag>)"
    assert m["tag"] == PYPROJECT["project"]["version"], f"{image}: tag is not the package version"
    return DOCKER / f"Dockerfile.{m['flavor']}"


def last_stage(path: Path) -> str:
    """The final (runtime) stage of a Dockerfile, line continuations joined."""
    return re.split(r"(?m)^FROM ", re.sub(r"\\\n\s*", " ", path.read_text()))[-1]


def dockerfile_env(path: Path) -> dict[str, str]:
    """KEY=value pairs of the ENV instructions of the runtime stage."""
    env: dict[str, str] = {}
    for line in last_stage(path).splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def secret_findings(text: str) -> list[str]:
    """Lines that look like a literal credential: keys, tokens, passwords not given as references."""
    reference = re.compile(
        r"^(\$?\$\{[A-Za-z_][A-Za-z0-9_]*(:?[-?][^}]*)?\}|\{\{secrets/[\w.-]+/[\w.-]+\}\}|<[^>]+>)$"
    )
    assignment = re.compile(
        r"^\s*(?:#\s*)?(?:-\s*)?(?:export\s+|ENV\s+|ARG\s+)?[\"']?"
        r"(?P<key>[A-Za-z0-9_.-]+)[\"']?\s*[:=]\s*(?P<value>.*)$",
        re.IGNORECASE,
    )
    # a whole word of the key: MLFLOW_TRACKING_TOKEN and api-key are sensitive, tokenizers is not
    sensitive = re.compile(
        r"(?:^|[_.-])(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)(?:$|[_.-])", re.IGNORECASE
    )
    patterns = {
        "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
        "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
        "Databricks token": re.compile(r"\bdapi[0-9a-f]{32}\b"),
        "MinIO default credentials": re.compile(r"\bminioadmin\b"),
    }
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        for what, pattern in patterns.items():
            if pattern.search(line):
                found.append(f"line {n}: {what}")
        for password in re.findall(r"://[^/\s:@\"']+:([^@\s\"']+)@", line):
            if not reference.match(password):
                found.append(f"line {n}: password inside a URL")
        m = assignment.match(line)
        if m and sensitive.search(m["key"]):
            value = re.sub(r"\s+#.*$", "", m["value"]).strip().strip("\"'")
            if value and not reference.match(value):
                found.append(f"line {n}: {m['key']} has a literal value")
    return found


# ------------------------------------------------------------------------------------------------ lint
def test_dockerfiles_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCKERFILES}
    assert {"infra/docker/Dockerfile.cpu", "infra/docker/Dockerfile.gpu", "infra/mlflow/Dockerfile"} <= names


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_hadolint_has_no_findings(dockerfile: Path) -> None:
    res = subprocess.run(
        [tool("hadolint"), "--no-color", "--config", str(DOCKER / "hadolint.yaml"), str(dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0 and not res.stdout.strip(), res.stdout + res.stderr


def test_yamllint_passes_on_every_yaml_file() -> None:
    files = [p for d in ("infra", "jobs", ".github") for p in sorted((ROOT / d).rglob("*.y*ml"))]
    assert len([p for p in files if p.is_relative_to(INFRA)]) >= 8, "infra/ YAML files went missing"
    res = subprocess.run(
        [
            tool("yamllint"),
            "--strict",
            "-f",
            "parsable",
            "-c",
            str(ROOT / ".yamllint.yaml"),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stdout + res.stderr


def test_shell_scripts_parse() -> None:
    scripts = sorted(INFRA.rglob("*.sh"))
    assert scripts
    for script in scripts:
        res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, check=False)
        assert res.returncode == 0, f"{script.relative_to(ROOT)}: {res.stderr}"


# ------------------------------------------------------------------------------------------------ images
def test_images_pin_the_tested_versions() -> None:
    p = pins()
    torch_pin = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("torch"))
    assert torch_pin == f"torch=={p['torch']}"
    cpu, gpu = (DOCKER / "Dockerfile.cpu").read_text(), (DOCKER / "Dockerfile.gpu").read_text()
    for text in (cpu, gpu):
        assert f'"torch=={p["torch"]}"' in text
        assert "https://download.pytorch.org/whl/" in text
        assert f"ARG SPARK_VERSION={p['pyspark']}" in text  # Spark's entrypoint from the same release
        assert "-c /tmp/constraints.txt" in text
    assert "--no-build-isolation" in gpu and f'"deepspeed=={p["deepspeed"]}"' in gpu
    assert "DS_ACCELERATOR=cuda" in gpu  # no GPU at build time: DeepSpeed would build CPU ops otherwise
    mlflow_image = (INFRA / "mlflow" / "Dockerfile").read_text()
    assert f"ARG MLFLOW_VERSION={p['mlflow']}" in mlflow_image


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_images_run_as_a_numeric_non_root_user(dockerfile: Path) -> None:
    users = re.findall(r"(?m)^USER\s+(\S+)", dockerfile.read_text())
    assert users, "no USER: the image would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]}: Kubernetes' runAsNonRoot needs a numeric uid"


def test_relfm_images_share_python_layout_and_spark_home() -> None:
    """Ray needs the head (CPU image) and GPU workers on the same Python; Spark needs SPARK_HOME."""
    cpu, gpu = dockerfile_env(DOCKER / "Dockerfile.cpu"), dockerfile_env(DOCKER / "Dockerfile.gpu")
    for key in (
        "PATH",
        "JAVA_HOME",
        "SPARK_HOME",
        "PYSPARK_PYTHON",
        "RELFM_HOME",
        "HF_HUB_OFFLINE",
        "NUMBA_CACHE_DIR",
    ):
        assert cpu[key] == gpu[key], key
    assert cpu["SPARK_HOME"].endswith("/site-packages/pyspark")
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        text = (DOCKER / name).read_text()
        assert "uv python install 3.11" in text
        assert "/etc/profile.d/" in text  # KubeRay's `bash -lc` would otherwise lose the virtualenv
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        runtime = last_stage(DOCKER / name)
        for package in ("wget", "openjdk-17-jre-headless", "tini"):  # KubeRay probes; Spark; its entrypoint
            assert re.search(rf"apt-get install .*\b{package}\b", runtime), f"{name}: {package}"
        assert 'ENTRYPOINT ["/opt/entrypoint.sh"]' in runtime


def test_build_context_allowlist_covers_what_dockerfiles_copy() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    packages = {p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= allowed
    for name in ("Dockerfile.cpu", "Dockerfile.gpu"):
        for line in (DOCKER / name).read_text().splitlines():
            if line.startswith("COPY ") and "--from=" not in line:
                for src in line.split()[1:-1]:
                    assert src in allowed, f"{name}: COPY {src} is excluded by .dockerignore"
                    assert (ROOT / src).exists(), f"{name}: COPY {src}: no such path"


# ------------------------------------------------------------------------------------------------ KubeRay
def check_ray_cluster_spec(where: str, spec: dict[str, Any]) -> None:
    assert spec["rayVersion"] == pins()["ray"], f"{where}: rayVersion is not the ray in constraints.txt"
    gpu_groups = []
    for group in spec.get("workerGroupSpecs", []):
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], (
            f"{where}: {group['groupName']}"
        )
    for name, group in ray_groups(spec):
        params = group.get("rayStartParams", {})
        assert all(isinstance(v, str) for v in params.values()), (
            f"{where}: {name}: rayStartParams are strings"
        )
        template = group["template"]
        ray_container = containers(template)[0]  # KubeRay: the Ray container comes first
        image_file = dockerfile_for(ray_container["image"])
        assert image_file.exists(), f"{where}: {name}: {ray_container['image']} has no {image_file.name}"
        limits = ray_container["resources"]["limits"]
        requests = ray_container["resources"]["requests"]
        if "nvidia.com/gpu" in limits or "nvidia.com/gpu" in requests:
            assert limits.get("nvidia.com/gpu") == requests.get("nvidia.com/gpu"), (
                f"{where}: {name}: GPU request"
            )
            assert image_file.name == "Dockerfile.gpu", f"{where}: {name}: GPUs need the GPU image"
            tolerations = template["spec"].get("tolerations", [])
            assert any(t.get("key") == "nvidia.com/gpu" for t in tolerations), f"{where}: {name}: GPU taint"
            gpu_groups.append(name)
        else:
            assert image_file.name == "Dockerfile.cpu", f"{where}: {name}: CPU pods use the CPU image"
        # With RAY_ADDRESS set the driver forwards no environment to workers (pipelines.ray_cluster), so
        # every pod must carry the same RELFM_HOME and secrets itself.
        env = {e["name"]: e.get("value") for e in ray_container.get("env", [])}
        assert env.get("RELFM_HOME") == "/data/relfm", f"{where}: {name}: RELFM_HOME"
        assert {"secretRef": {"name": "relfm-secrets"}} in ray_container.get("envFrom", []), (
            f"{where}: {name}"
        )
        mounts = mounts_by_path(ray_container, template["spec"])
        data = volume_at("/data/relfm", mounts)
        assert data and data["persistentVolumeClaim"]["claimName"] == "relfm-data", f"{where}: {name}: /data"
        assert "/dev/shm" in mounts, f"{where}: {name}: the object store and NCCL need /dev/shm"
    assert gpu_groups, f"{where}: no GPU worker group"


def test_raycluster_manifest() -> None:
    found = manifests("RayCluster")
    assert [p.name for p, _ in found] == ["raycluster.yaml"]
    _, doc = found[0]
    assert doc["apiVersion"] == "ray.io/v1"
    assert doc["spec"]["enableInTreeAutoscaling"] is True
    assert doc["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    check_ray_cluster_spec("raycluster.yaml", doc["spec"])
    cpu = next(g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == "cpu")
    assert cpu["maxReplicas"] > cpu["minReplicas"], "CPU workers autoscale"


def test_rayjob_manifests() -> None:
    found = manifests("RayJob")
    assert {p.name for p, _ in found} == {"rayjob-nightly.yaml", "rayjob-finetune.yaml"}
    for path, doc in found:
        spec = doc["spec"]
        assert doc["apiVersion"] == "ray.io/v1"
        assert doc["metadata"].get("generateName"), f"{path.name}: `kubectl create` names each run"
        assert spec["shutdownAfterJobFinishes"] is True, (
            f"{path.name}: a fresh cluster per run, removed after"
        )
        assert spec.get("submissionMode", "K8sJobMode") == "K8sJobMode"
        assert spec["activeDeadlineSeconds"] > 0
        check_ray_cluster_spec(path.name, spec["rayClusterSpec"])
        program, _command, config, *_options = spec["entrypoint"].split()
        assert program == "relfm"
        head = spec["rayClusterSpec"]["headGroupSpec"]["template"]
        mounts = mounts_by_path(containers(head)[0], head["spec"])
        volume = volume_at(config, mounts)
        assert volume and "configMap" in volume, (
            f"{path.name}: {config} is not on a ConfigMap mounted on the head"
        )
    nightly = next(d for p, d in found if p.name == "rayjob-nightly.yaml")
    assert nightly["spec"]["entrypoint"] == "relfm run /config/nightly.yaml"
    finetune = next(d for p, d in found if p.name == "rayjob-finetune.yaml")["spec"]
    words = finetune["entrypoint"].split()
    gpus = sum(
        g["replicas"] * int(containers(g["template"])[0]["resources"]["limits"].get("nvidia.com/gpu", 0))
        for g in finetune["rayClusterSpec"]["workerGroupSpecs"]
    )
    assert words[words.index("--workers") + 1] == str(gpus), "one Ray Train worker per GPU of the cluster"
    assert words[words.index("--launcher") + 1] == "ray"


def entrypoint_commands() -> dict[str, set[str]]:
    """relfm subcommand -> the options RayJob entrypoints pass it."""
    out: dict[str, set[str]] = {}
    for _, doc in manifests("RayJob"):
        words = doc["spec"]["entrypoint"].split()
        out.setdefault(words[1], set()).update(w for w in words[2:] if w.startswith("--"))
    return out


@pytest.mark.parametrize("command", sorted(entrypoint_commands()))
def test_rayjob_entrypoint_is_a_relfm_command(command: str) -> None:
    script = Path(sys.executable).parent / "relfm"
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "jobs.cli"]
    res = subprocess.run(
        [*cli, command, "--help"], capture_output=True, text=True, timeout=300, check=False,
        env={**{k: v for k, v in os.environ.items() if k != "RELFM_DEBUG"}, "COLUMNS": "200", "NO_COLOR": "1"},
    )  # fmt: skip
    if res.returncode != 0 and "No such command" in res.stdout + res.stderr:
        pytest.skip(f"`relfm {command}` is not registered in the CLI yet (its issue is still open)")
    assert res.returncode == 0, res.stdout + res.stderr
    for option in entrypoint_commands()[command]:
        assert option in res.stdout, f"`relfm {command}` has no {option} option"


def test_nightly_cronjob_creates_the_rayjob() -> None:
    path = KUBERAY / "cronjob-nightly.yaml"
    docs = {d["kind"]: d for d in documents(path)}
    assert set(docs) == {"ServiceAccount", "Role", "RoleBinding", "CronJob"}
    cron = docs["CronJob"]
    assert cron["apiVersion"] == "batch/v1"
    assert len(cron["spec"]["schedule"].split()) == 5
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]
    assert pod["spec"]["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert docs["RoleBinding"]["subjects"][0]["name"] == docs["ServiceAccount"]["metadata"]["name"]
    assert docs["RoleBinding"]["roleRef"]["name"] == docs["Role"]["metadata"]["name"]
    rule = docs["Role"]["rules"][0]
    assert rule["apiGroups"] == ["ray.io"] and "rayjobs" in rule["resources"] and "create" in rule["verbs"]
    container = containers(pod)[0]
    assert container["args"][:2] == ["create", "-f"]  # `create`: the RayJob's generateName needs it
    volume = volume_at(container["args"][2], mounts_by_path(container, pod["spec"]))
    assert volume and "configMap" in volume


# ------------------------------------------------------------------------------------------------ Spark
def test_sparkapplication_runs_the_graph_builder() -> None:
    found = manifests("SparkApplication")
    assert len(found) == 1
    _, doc = found[0]
    spec = doc["spec"]
    assert doc["apiVersion"] == "sparkoperator.k8s.io/v1beta2"
    assert spec["type"] == "Python" and spec["mode"] == "cluster"
    assert spec["sparkVersion"] == pins()["pyspark"]
    assert dockerfile_for(spec["image"]).name == "Dockerfile.cpu"
    site = dockerfile_env(DOCKER / "Dockerfile.cpu")["SPARK_HOME"].removesuffix("/pyspark")
    module = "graph_engine/shards/spark_builder.py"
    assert spec["mainApplicationFile"] == f"local://{site}/{module}"
    builder_source = (ROOT / module).read_text()
    args = spec["arguments"]
    for flag in (a for a in args if a.startswith("--")):
        assert f'"{flag}"' in builder_source, f"spark_builder.py has no {flag} option"
    spec_path, out = args[args.index("--spec") + 1], args[args.index("--out") + 1]
    volumes = {v["name"]: v for v in spec["volumes"]}
    driver = {m["mountPath"]: volumes[m["name"]] for m in spec["driver"]["volumeMounts"]}
    executor = {m["mountPath"]: volumes[m["name"]] for m in spec["executor"]["volumeMounts"]}
    assert "configMap" in (volume_at(spec_path, driver) or {})
    # executors write the shards and the driver the manifest: one shared volume for both
    shared = volume_at(out, driver)
    assert shared is not None and "persistentVolumeClaim" in shared
    assert volume_at(out, executor) == shared


def test_databricks_cluster_and_init_script() -> None:
    doc = documents(INFRA / "databricks" / "cluster.yml")[0]
    cluster = doc["variables"]["relfm_graph_build_cluster"]["default"]
    major = int(cluster["spark_version"].split(".")[0])
    assert major >= 17, "the Spark builder needs Spark 4 (applyInArrow): Databricks Runtime 17 or later"
    assert cluster["autoscale"]["min_workers"] <= cluster["autoscale"]["max_workers"]
    wheel = cluster["spark_env_vars"]["RELFM_WHEEL"]
    assert wheel.endswith(f"/relfm-{PYPROJECT['project']['version']}-py3-none-any.whl")
    script = cluster["init_scripts"][0]["volumes"]["destination"]
    assert (INFRA / "databricks" / Path(script).name).is_file()
    assert "gpu" not in cluster["node_type_id"].lower()


def test_databricks_init_script_installs_everything_but_pyspark() -> None:
    """The Python part of install-relfm.sh, run against this environment's relfm metadata."""
    text = (INFRA / "databricks" / "install-relfm.sh").read_text()
    program = re.search(r"<<'PY'\n(.*?)\nPY\n", text, re.S)
    assert program
    res = subprocess.run([sys.executable, "-c", program[1]], capture_output=True, text=True, check=True)
    names = {re.split(r"[\[<>=!~; ]", line, maxsplit=1)[0].lower() for line in res.stdout.splitlines()}
    wanted = {
        re.split(r"[\[<>=!~; ]", d, maxsplit=1)[0].lower() for d in PYPROJECT["project"]["dependencies"]
    }
    assert names == wanted - {"pyspark"}


# ------------------------------------------------------------------------------------------------ MLflow
def test_mlflow_compose_services() -> None:
    compose = documents(INFRA / "mlflow" / "docker-compose.yml")[0]
    services = compose["services"]
    assert {"mlflow", "postgres", "minio", "create-bucket"} <= set(services)
    for name in ("mlflow", "postgres", "minio"):
        assert services[name]["healthcheck"]["test"], f"{name}: no healthcheck"
        assert services[name].get("restart") == "unless-stopped"
    assert services["mlflow"]["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "create-bucket": {"condition": "service_completed_successfully"},
    }
    assert services["create-bucket"]["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert services["create-bucket"]["restart"] == "no"
    assert "mc mb --ignore-existing" in " ".join(services["create-bucket"]["command"])
    env = services["mlflow"]["environment"]
    assert env["MLFLOW_BACKEND_STORE_URI"].startswith("postgresql")
    assert env["MLFLOW_ARTIFACTS_DESTINATION"].startswith("s3://")
    assert env["MLFLOW_SERVE_ARTIFACTS"] == "true"  # clients never need the object store's keys
    assert services["mlflow"]["build"]["args"]["MLFLOW_VERSION"] == pins()["mlflow"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port} is open beyond this host"
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], f"{name}: {volume} is not a named volume"


def test_mlflow_env_example_declares_every_variable_without_secrets() -> None:
    compose_text = (INFRA / "mlflow" / "docker-compose.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z_][A-Z0-9_]*)", compose_text))
    example = {}
    for line in (INFRA / "mlflow" / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value
    assert used == set(example), "docker-compose.yml and .env.example name different variables"
    for key, value in example.items():
        if re.search("PASSWORD|SECRET|TOKEN", key):
            assert value == "", f".env.example: {key} must stay empty"


# ------------------------------------------------------------------------------------------------ secrets
def test_secret_scanner_catches_literals_and_allows_references() -> None:
    bad = [
        "POSTGRES_PASSWORD: hunter2",
        "  - AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY",
        "MLFLOW_TRACKING_TOKEN: 'abc123'",
        "uri: postgresql://mlflow:hunter2@postgres:5432/mlflow",
        "key_id: AKIAIOSFODNN7EXAMPLE",
        "ENV API_KEY=12345",
        "# MINIO_SECRET_KEY: changeme",
    ]
    for line in bad:
        assert secret_findings(line), line
    good = [
        "POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?set it in .env}",
        "AWS_SECRET_ACCESS_KEY: ${MINIO_ROOT_PASSWORD}",
        'MLFLOW_TRACKING_TOKEN: "{{secrets/relfm/mlflow-token}}"',
        "uri: postgresql+psycopg2://${POSTGRES_USER}:${POSTGRES_PASSWORD}@postgres:5432/mlflow",
        "  - secretRef: {name: relfm-secrets}",
        "MINIO_ROOT_PASSWORD=",
        "tokenizers==0.22.1",
        "secrets_dir: /run/secrets",
        'mc alias set relfm http://minio:9000 "$${MINIO_ROOT_USER}" "$${MINIO_ROOT_PASSWORD}"',
    ]
    for line in good:
        assert not secret_findings(line), line


def test_no_secrets_in_infra() -> None:
    scanned = 0
    for path in sorted(p for p in INFRA.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        if path.name == ".env" or path.suffix == ".env":  # git-ignored local secrets (infra/.gitignore)
            continue
        findings = secret_findings(path.read_text(errors="replace"))
        assert not findings, f"{path.relative_to(ROOT)}: {findings}"
        scanned += 1
    assert scanned >= 15
    ignored = (INFRA / ".gitignore").read_text().splitlines()
    assert {"*.env", ".env", "!*.env.example", "!.env.example"} <= set(ignored)


# ------------------------------------------------------------------------------------------------ docs
def test_deployment_page_covers_every_infra_file() -> None:
    page = (ROOT / "docs" / "deployment.md").read_text()
    skip = {".gitignore"}
    for path in sorted(p for p in INFRA.rglob("*") if p.is_file() and p.name not in skip):
        if "__pycache__" in path.parts:
            continue
        assert path.relative_to(ROOT).as_posix() in page, f"docs/deployment.md does not mention {path}"
    assert "## GPU clusters" in page and "## What could not be run here" in page
