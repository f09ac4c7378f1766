"""compose.yaml started by `podman-compose` (what `podman compose` runs): the one-off migrate
job migrates a fresh database, then the worker and the API come up from the image and
answer their health checks; `down` stops them by their graceful path.

The same file serves `docker compose` unchanged. What only this machine needs is in the
override this test writes (host networking: the cluster and the emulators listen on the
host's loopback; this test's free ports) and in tests/support/container.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from python_worker.config import DEFAULT_PROJECT_DIR
from python_worker.emulators.suite import Endpoints
from python_worker.stack import migrations
from python_worker.stack.cluster import LocalStack, free_port
from tests.support.container import IMAGE, build_image, podman, podman_env
from tests.support.whole_call import http_ok
from tests.support.worker import wait_for

# The first run on a machine makes the stand-in base and builds the image (minutes, once):
# pytest-timeout's per-test bound counts the module fixture's set-up too.
pytestmark = pytest.mark.timeout(1800)

COMPOSE = DEFAULT_PROJECT_DIR / "compose.yaml"
APP_UID = 10001
#: podman-compose from PyPI, installed beside this interpreter (the test extras).
PODMAN_COMPOSE = str(Path(sys.executable).parent / "podman-compose")


def compose(project: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    command = [
        PODMAN_COMPOSE,
        "-p", project.name, "-f", str(COMPOSE), "-f", str(project / "override.yaml"), *args,
    ]  # fmt: skip
    proc = subprocess.run(
        command, capture_output=True, text=True, env=compose_env(project), timeout=timeout,
        cwd=project, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def compose_env(project: Path) -> dict[str, str]:
    return {
        **podman_env(),
        "CALLPANION_IMAGE": IMAGE,
        "CALLPANION_ENV_FILE": str(project / "secrets" / "callpanion.env"),
        "CALLPANION_FCM_SERVICE_ACCOUNT": str(project / "secrets" / "fcm.json"),
        "CALLPANION_APNS_KEY": str(project / "secrets" / "apns.p8"),
    }


@pytest.fixture
def project(
    pg_stack: LocalStack, tmp_path: Path, endpoints: Endpoints
) -> Iterator[tuple[Path, str, int, int]]:
    build_image()
    url = pg_stack.create_database("compose")  # platform only: the migrate job does the rest
    root = tmp_path / f"cp{os.getpid()}"
    secrets = root / "secrets"
    secrets.mkdir(parents=True)
    shutil.copy(endpoints.service_account_file, secrets / "fcm.json")
    shutil.copy(endpoints.apns_key_file, secrets / "apns.p8")
    shutil.copy(endpoints.ca_file, secrets / "ca.pem")
    worker_port, api_port = free_port(), free_port()
    env = {
        "DATABASE_URL": url,
        "CALLPANION_WORKER_DATABASE_URL": url,
        "CALLPANION_API_DATABASE_URL": url,
        "CALLPANION_WORKER_HTTP_PORT": str(worker_port),
        "CALLPANION_API_PORT": str(api_port),
        "FCM_SERVICE_ACCOUNT_FILE": "/run/secrets/fcm_service_account",
        "FCM_BASE_URL": endpoints.fcm_base_url,
        "FCM_CA_FILE": "/run/secrets/emulator_ca",
        "APNS_KEY_FILE": "/run/secrets/apns_key",
        "APNS_KEY_ID": endpoints.apns_key_id,
        "APNS_TEAM_ID": endpoints.apns_team_id,
        "APNS_BUNDLE_ID": endpoints.bundle_id,
        "APNS_HOST": endpoints.apns_host,
        "APNS_PORT": str(endpoints.apns_port),
        "APNS_CA_FILE": "/run/secrets/emulator_ca",
    }
    (secrets / "callpanion.env").write_text(
        "".join(f"{key}={json.dumps(value)}\n" for key, value in env.items())
    )
    for path in [secrets, *secrets.iterdir()]:
        shutil.chown(path, APP_UID, APP_UID)
        path.chmod(0o500 if path.is_dir() else 0o400)
    health = (
        "import urllib.request, sys; sys.exit(urllib.request.urlopen("
        f"'http://127.0.0.1:{api_port}/healthz', timeout=3).status != 200)"
    )
    override: dict[str, Any] = {
        "services": {
            name: {"network_mode": "host", "ports": []} for name in ("migrate", "worker", "api")
        },
        "secrets": {"emulator_ca": {"file": str(secrets / "ca.pem")}},
    }
    override["services"]["worker"]["secrets"] = [
        "callpanion_env", "fcm_service_account", "apns_key", "emulator_ca",
    ]  # fmt: skip
    override["services"]["api"]["healthcheck"] = {"test": ["CMD", "python", "-c", health]}
    override["services"]["api"]["environment"] = {"CALLPANION_API_HOST": "127.0.0.1"}
    # The image's ENV (port 9108) wins over the env file: this test's free port, as `-e`.
    override["services"]["worker"]["environment"] = {
        "CALLPANION_WORKER_HTTP_PORT": str(worker_port)
    }
    (root / "override.yaml").write_text(json.dumps(override))  # JSON is YAML
    try:
        yield root, url, worker_port, api_port
    finally:
        subprocess.run(
            [PODMAN_COMPOSE, "-p", root.name,
             "-f", str(COMPOSE), "-f", str(root / "override.yaml"), "down", "-t", "15"],
            env=compose_env(root), cwd=root, capture_output=True, timeout=180, check=False,
        )  # fmt: skip
        pg_stack.drop_database(url)


def test_compose_migrates_then_runs_the_worker_and_the_api(
    project: tuple[Path, str, int, int],
) -> None:
    root, url, worker_port, api_port = project
    compose(root, "up", "-d", "--no-build")
    try:
        wait_for(
            "the worker and the API to answer",
            lambda: (
                http_ok(f"http://127.0.0.1:{worker_port}/healthz")
                and http_ok(f"http://127.0.0.1:{api_port}/healthz")
            ),
            timeout=120,
        )
    except AssertionError as timed_out:
        logs = {
            service: podman("logs", f"{root.name}_{service}_1", check=False)
            for service in ("worker", "api")
        }
        states = podman("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
        raise AssertionError(
            f"{timed_out}\n{states}\n"
            + "\n".join(f"{k}: {v.stdout[-1500:]}{v.stderr[-1500:]}" for k, v in logs.items())
        ) from None
    with psycopg.connect(url) as conn:
        applied = conn.execute(
            "select count(*) from supabase_migrations.schema_migrations"
        ).fetchone()
    assert applied is not None
    discovered = migrations.discover(DEFAULT_PROJECT_DIR / "supabase" / "migrations")
    assert applied[0] == len(discovered)
    names = podman("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
    assert f"{root.name}_migrate_1 Exited (0)" in names, names
    for service in ("worker", "api"):
        container = f"{root.name}_{service}_1"
        user = podman("exec", container, "id", "-u").stdout.strip()
        assert user == str(APP_UID)
        inspect = json.loads(podman("inspect", container).stdout)[0]
        assert inspect["HostConfig"]["ReadonlyRootfs"] is True
    compose(root, "stop", "-t", "15", "worker")
    code = podman("inspect", "--format", "{{.State.ExitCode}}", f"{root.name}_worker_1").stdout
    assert code.strip() == "0"
