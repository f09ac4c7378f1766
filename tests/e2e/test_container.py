"""The image built from the real Dockerfile and run with podman: the worker and the API from
it against the session cluster, a whole call through the containerised worker, and the
container's shape (non-root, read-only root filesystem, secrets mounted, health check).

Slow on a clean machine (the base stand-in and the build), fast afterwards: podman's
storage and the stand-in base are cached under `.callpanion/containers/`.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.container import IMAGE, build_image, image_size_mb, podman, podman_env
from tests.support.whole_call import WholeCallWorld, http_ok, sessions_of, wait_ready
from tests.support.worker import wait_for

# The first run on a machine makes the stand-in base and builds the image (minutes, once):
# pytest-timeout's per-test bound counts the module fixture's set-up too.
pytestmark = pytest.mark.timeout(1800)

#: The image's uid (Dockerfile: USER 10001:10001).
APP_UID = 10001


@pytest.fixture(scope="module")
def image() -> str:
    timings = build_image()
    # Figures for `-s` (README, "The container in the suite"), not checks.
    print(f"base {timings.base_s:.1f} s, build {timings.build_s:.1f} s, {image_size_mb():.0f} MB")
    return IMAGE


class ContainerWorld(WholeCallWorld):
    """The whole call's world, with the API and the worker running from the image."""

    def __init__(self, database_url: str, folder: Path) -> None:
        super().__init__(database_url, folder)
        self.containers: list[str] = []
        self.secrets = folder / "secrets"

    def _secrets(self) -> Path:
        """The emulators' credentials as a deployer mounts them: files readable by the
        image's uid alone, with the database URL in the same env file (never in `-e`)."""
        shutil.copytree(self.env_file.parent, self.secrets)
        env_file = self.secrets / self.env_file.name
        source = env_file.read_text().replace(str(self.env_file.parent), str(self.secrets))
        env_file.write_text(
            source
            + f"CALLPANION_WORKER_DATABASE_URL={json.dumps(self.database_url)}\n"
            + f"CALLPANION_API_DATABASE_URL={json.dumps(self.database_url)}\n"
        )
        for path in [self.secrets, *self.secrets.rglob("*")]:
            shutil.chown(path, APP_UID, APP_UID)
            path.chmod(0o500 if path.is_dir() else 0o400)
        return env_file

    def run(self, name: str, command: str, **env: str) -> str:
        """`podman run -d` of one program from the image; returns the container's name."""
        container = f"callpanion-test-{name}-{uuid.uuid4().hex[:6]}"
        settings = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        podman(
            "run", "-d", "--name", container, "--network", "host", "--read-only",
            "-v", f"{self.secrets}:{self.secrets}:ro", *settings,
            "--entrypoint", "callpanion", IMAGE,
            "--env-file", str(self.secrets / self.env_file.name), command,
        )  # fmt: skip
        self.containers.append(container)
        return container

    def start(self) -> None:
        common = {
            "CALLPANION_API_PORT": str(self.api_port),
            "CALLPANION_WORKER_HTTP_PORT": str(self.worker_port),
            "CALLPANION_PUBLIC_API_URL": self.api_url,
            "CALLPANION_LEASE_SECS": "5",
        }
        emulators = self._start(
            "emulators", ["emulators", "--dir", str(self.folder / "emulators")], **common
        )
        wait_ready("the emulators", self.env_file.is_file, emulators)
        self._secrets()
        self.api = self.run("api", "api", **common)
        wait_for("the API container", lambda: self.up(self.api, f"{self.api_url}/healthz"), 60)
        self.worker = self.run("worker", "worker", **common)
        health = f"http://127.0.0.1:{self.worker_port}/healthz"
        wait_for("the worker container", lambda: self.up(self.worker, health), 60)

    def up(self, container: str, url: str) -> bool:
        state = podman("inspect", "--format", "{{.State.Status}}", container).stdout.strip()
        if state != "running":
            raise AssertionError(f"{container} is {state}:\n{self.logs(container)}")
        return http_ok(url)

    def logs(self, container: str) -> str:
        proc = podman("logs", container, check=False)
        return proc.stdout + proc.stderr

    def stop(self) -> None:
        try:
            for container in reversed(self.containers):
                podman("stop", "-t", "10", container, check=False, timeout=60)
                podman("rm", "-f", container, check=False, timeout=60)
        finally:
            super().stop()


@pytest.fixture(scope="module")
def boxed(
    image: str, database_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ContainerWorld]:
    world = ContainerWorld(database_url, tmp_path_factory.mktemp("container"))
    try:
        world.start()
        yield world
    finally:
        world.stop()


def exec_in(container: str, *command: str) -> subprocess.CompletedProcess[str]:
    return podman("exec", container, *command, check=False)


def test_the_image_keeps_its_health_check_and_runs_as_a_non_root_user(image: str) -> None:
    inspect = json.loads(podman("image", "inspect", image).stdout)[0]
    config = inspect["Config"]
    assert config["User"] == f"{APP_UID}:{APP_UID}"
    # Kept only in the docker format (`podman build --format docker`): OCI has no HEALTHCHECK.
    assert inspect["Healthcheck"]["Test"] == ["CMD", "callpanion", "healthcheck"]
    assert config["StopSignal"] == "SIGTERM"


def test_the_running_containers_are_non_root_read_only_and_healthy(boxed: ContainerWorld) -> None:
    for container in (boxed.worker, boxed.api):
        assert exec_in(container, "id", "-u").stdout.strip() == str(APP_UID)
        inspect = json.loads(podman("inspect", container).stdout)[0]
        assert inspect["HostConfig"]["ReadonlyRootfs"] is True
        denied = exec_in(container, "python", "-c", "open('/app/x', 'w')")
        assert "Read-only file system" in denied.stderr
    # The image's own HEALTHCHECK, run by the runtime (`callpanion healthcheck`).
    assert podman("healthcheck", "run", boxed.worker, check=False).returncode == 0


def test_no_secret_is_in_the_environment_or_the_image(boxed: ContainerWorld) -> None:
    secrets = [
        line.split("=", 1)[1].strip('"')
        for line in (boxed.secrets / boxed.env_file.name).read_text().splitlines()
        if line.startswith(
            ("ELEVENLABS_API_KEY", "ELEVENLABS_WEBHOOK_SECRET", "CALLPANION_WORKER_DATABASE_URL")
        )
    ]
    assert len(secrets) == 3
    for container in (boxed.worker, boxed.api):
        env = json.loads(podman("inspect", container).stdout)[0]["Config"]["Env"]
        assert not [v for v in env for s in secrets if s in v]
        assert not [v for v in env if "PRIVATE KEY" in v]
    # None of them, nor a line of the mounted keys, is in any file of the image itself.
    keys = [p for p in boxed.secrets.rglob("*") if p.suffix in (".p8", ".json", ".pem")]
    needles = secrets + [
        line for key in keys for line in key.read_text().splitlines() if len(line) >= 40
    ]
    assert len(needles) > len(secrets)
    found = subprocess.run(
        ["podman", "run", "--rm", "-i", "--network", "none", "--entrypoint", "python", IMAGE,
         "-c", SEARCH_IMAGE],
        input="\n".join(needles), capture_output=True, text=True, env=podman_env(),
        timeout=300, check=True,
    )  # fmt: skip
    assert found.stdout == ""


#: Run inside the image: print every file under its own folders holding a line from stdin.
SEARCH_IMAGE = """
import os, sys
needles = [n.encode() for n in sys.stdin.read().splitlines() if n]
for top in ("/app", "/opt/venv", "/etc", "/root", "/home", "/usr/local"):
    for folder, _, files in os.walk(top):
        for name in files:
            path = os.path.join(folder, name)
            try:
                data = open(path, "rb").read()
            except OSError:
                continue
            if any(n in data for n in needles):
                print(path)
"""


def _soon(world: ContainerWorld, seconds: float) -> dt.datetime:
    with world.connect() as conn:
        row = conn.execute("select now() + make_interval(secs => %s) as at", [seconds]).fetchone()
    assert row is not None
    at: dt.datetime = row["at"]
    return at


def _is(event: str, **fields: Any) -> Any:
    return lambda e: e["event"] == event and all(e.get(k) == v for k, v in fields.items())


def test_a_whole_call_through_the_containerised_worker_and_api(boxed: ContainerWorld) -> None:
    """schedule -> phase 1 -> push from the container -> phone -> conversation -> webhook to the
    containerised API -> log row."""
    with boxed.connect() as conn:
        family = boxed.family(conn)
        phone = boxed.phone(conn, family, "ios", "answer:1")
        schedule = boxed.one_off(conn, family, _soon(boxed, 7), ring_s=30)
        conn.execute("select queue_upcoming_calls()")  # what pg_cron's phase-1 job runs
        ringing = phone.wait_event(_is("ringing"), 60, "ring")
        call_id = ringing["call_id"]
        phone.wait_event(_is("call_over", call_id=call_id), 60, "the end of the call")
        [session] = sessions_of(conn, schedule)
        assert str(session["id"]) == call_id
        log = wait_for(
            "the post-call webhook's log row",
            lambda: conn.execute(
                "select * from call_logs where call_session_id = %s", [call_id]
            ).fetchone(),
            timeout=30,
        )
        assert log["outcome"] == "completed"
        queued = conn.execute(
            "select status, provider from notification_queue where call_session_id = %s",
            [call_id],
        ).fetchone()
        assert queued == {"status": "sent", "provider": "apns"}
    assert phone.reported(call_id) == [
        ("delivered", 200, "ringing"),
        ("accepted", 200, "accepted"),
        ("connected", 200, "in_progress"),
        ("ended", 200, "completed"),
    ]
    phone.stop()


def test_podman_stop_ends_the_worker_gracefully(boxed: ContainerWorld) -> None:
    """SIGTERM from the runtime: the graceful path, not the runtime's SIGKILL."""
    podman("stop", "-t", "10", boxed.worker, timeout=60)
    code = podman("inspect", "--format", "{{.State.ExitCode}}", boxed.worker).stdout.strip()
    assert code == "0", boxed.logs(boxed.worker)
    assert '"worker stopped"' in boxed.logs(boxed.worker)
