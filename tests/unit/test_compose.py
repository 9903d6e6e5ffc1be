"""docker-compose.yml, as Docker Compose itself resolves it (`docker compose config`): what a lab starts.

The compose binary is Docker's own (`make install` puts Compose v2 into .venv/bin where Docker is absent), so
these tests read the file exactly as `docker compose up` would, interpolation and merge keys included.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SECRETS = {"MYSQL_ROOT_PASSWORD": "root-secret-1", "ADMIN_PASS": "admin-secret-2", "WORKER_PASS": "worker-secret-3",
           "ANALYST_PASS": "analyst-secret-4"}


def compose_command() -> list[str]:
    beside_python = Path(sys.executable).parent / "docker-compose"
    if beside_python.exists():
        return [str(beside_python)]
    if shutil.which("docker-compose"):
        return [shutil.which("docker-compose")]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    pytest.fail("no Docker Compose v2 found: `make install` puts one into .venv/bin (or install Docker's compose "
                "plugin)")


def config(env: dict | None = None, profiles: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME")}
    cmd = compose_command() + ["-f", str(COMPOSE_FILE), "--project-name", "lab"]
    for profile in profiles:
        cmd += ["--profile", profile]
    return subprocess.run(cmd + ["config", "--format", "json"], capture_output=True, text=True,
                          env={**keep, **(env if env is not None else SECRETS)}, cwd=ROOT)


@pytest.fixture(scope="module")
def resolved() -> dict:
    result = config()
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_server_is_mysql_8_4_and_listens_on_localhost_only_by_default(resolved):
    db = resolved["services"]["db"]
    assert db["image"] == "mysql:8.4"
    assert db["restart"] == "unless-stopped"
    (port,) = db["ports"]
    assert port["host_ip"] == "127.0.0.1" and port["target"] == 3306
    assert "--max-allowed-packet=1G" in db["command"]
    assert "healthcheck" in db


def test_db_bind_opens_the_port_to_an_interface_when_asked():
    result = config({**SECRETS, "DB_BIND": "10.0.0.5", "DB_PORT": "3307"})
    assert result.returncode == 0, result.stderr
    (port,) = json.loads(result.stdout)["services"]["db"]["ports"]
    assert port["host_ip"] == "10.0.0.5" and port["published"] == "3307"


def test_the_init_script_that_makes_the_role_accounts_is_mounted_and_exists(resolved):
    mounts = {v["target"]: v for v in resolved["services"]["db"]["volumes"]}
    init = mounts["/docker-entrypoint-initdb.d"]
    assert init["type"] == "bind" and init.get("read_only") is True
    scripts = sorted(Path(init["source"]).iterdir())
    assert scripts, "docker/mysql-init is empty"
    text = "\n".join(p.read_text() for p in scripts)
    for role in ("ADMIN", "WORKER", "ANALYST"):
        assert f"{role}_USER" in text and f"{role}_PASS" in text


def test_workers_run_a_built_image_restart_and_write_nothing_into_the_checkout(resolved):
    worker = resolved["services"]["worker"]
    assert worker["build"]["dockerfile"] == "Dockerfile" and Path(worker["build"]["context"]) == ROOT
    assert (ROOT / "Dockerfile").exists()
    assert worker["restart"] == "unless-stopped"
    assert "command" not in worker or "pip install" not in " ".join(worker.get("command") or [])
    for volume in worker.get("volumes", []):
        assert volume["type"] == "volume", f"the worker bind-mounts {volume['source']}"
    assert worker["depends_on"]["db"]["condition"] == "service_healthy"
    assert worker["depends_on"]["setup"]["condition"] == "service_completed_successfully"
    assert worker["environment"]["DJ_USER"] == "worker"
    assert "worker-gpu" not in resolved["services"], "the GPU workers start only with --profile gpu"


def test_gpu_workers_reserve_the_hosts_nvidia_gpus_and_build_the_cuda_torch():
    result = config(profiles=("gpu",))
    assert result.returncode == 0, result.stderr
    gpu = json.loads(result.stdout)["services"]["worker-gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert gpu["restart"] == "unless-stopped"


def test_a_missing_password_stops_compose_with_the_variable_named():
    for missing in SECRETS:
        result = config({k: v for k, v in SECRETS.items() if k != missing})
        if missing == "ANALYST_PASS":  # optional: the init script makes no analyst account without it
            assert result.returncode == 0, result.stderr
            continue
        assert result.returncode != 0 and missing in result.stderr, (missing, result.stderr)


def test_no_password_is_written_in_the_repository_files():
    text = COMPOSE_FILE.read_text() + (ROOT / "Dockerfile").read_text()
    text += "".join(p.read_text() for p in (ROOT / "docker" / "mysql-init").iterdir())
    for secret in SECRETS.values():
        assert secret not in text
    assert "PASSWORD=" not in text.replace("MYSQL_ROOT_PASSWORD=...", "")


def test_the_setup_service_and_every_worker_share_one_object_store(resolved):
    services = resolved["services"]
    stores = {name: services[name]["environment"]["NEURALREG_STORE"] for name in ("setup", "worker")}
    assert set(stores.values()) == {"/store"}
    for name in ("setup", "worker"):
        mounts = {v["target"]: v for v in services[name]["volumes"]}
        assert mounts["/store"]["type"] == "volume" and mounts["/store"]["source"] == "store"


def test_a_lab_bucket_reaches_the_workers_through_the_environment():
    env = {**SECRETS, "NEURALREG_STORE": "s3://neural-reg/lab", "NEURALREG_STORE_ENDPOINT": "https://minio.lab:9000"}
    result = config(env)
    assert result.returncode == 0, result.stderr
    worker = json.loads(result.stdout)["services"]["worker"]["environment"]
    assert worker["NEURALREG_STORE"] == "s3://neural-reg/lab"
    assert worker["NEURALREG_STORE_ENDPOINT"] == "https://minio.lab:9000"
