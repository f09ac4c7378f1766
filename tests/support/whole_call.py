"""The whole call's moving parts as separate processes, for tests/e2e/test_whole_call.py.

`callpanion emulators` (writing its settings file), `callpanion --env-file … api`,
`callpanion --env-file … worker` and one `callpanion --env-file … phone run` per phone, all
pointed at the session cluster's `postgres` database, the one pg_cron runs in. A phone's
stdout (one JSON line per thing it does) is read by a thread into a queue, so a test waits
for the event it needs as it happens.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import psycopg
from psycopg.rows import dict_row

from tests.support.db import free_port

Row = dict[str, Any]
Record = dict[str, Any]


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any setting that could point elsewhere."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CALLPANION_", "FCM_", "APNS_", "ELEVENLABS_", "SUPABASE_"))
        and k != "DATABASE_URL"
    }
    env.update(extra)
    return env


def stop_process(process: subprocess.Popen[Any]) -> None:
    """SIGTERM, then SIGKILL if it does not exit within 20 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
            return bool(response.status == 200)
    except OSError:
        return False


def wait_ready(what: str, ready: Callable[[], bool], process: subprocess.Popen[Any]) -> None:
    """Wait for a started service to answer; fail at once if it exited."""
    deadline = time.monotonic() + 60
    while not ready():
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} was not ready within 60 s")
        time.sleep(0.05)


@dataclass
class PhoneProcess:
    """A running `callpanion phone run` and the events it printed so far."""

    name: str
    process: subprocess.Popen[str]
    events: list[Record] = field(default_factory=list)
    _queue: queue.Queue[Record | None] = field(default_factory=queue.Queue)

    def start_reading(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None

        def pump(stream: IO[str]) -> None:
            for line in stream:
                with contextlib.suppress(ValueError):
                    self._queue.put(json.loads(line))
            self._queue.put(None)

        threading.Thread(target=pump, args=(stdout,), daemon=True).start()

    def wait_event(self, matches: Callable[[Record], bool], timeout: float, what: str) -> Record:
        """The next printed event that matches (earlier ones are kept in `events`)."""
        for seen in self.events:
            if matches(seen) and not seen.get("_taken"):
                seen["_taken"] = True
                return seen
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: no {what} within {timeout} s: {self.events}")
            try:
                record = self._queue.get(timeout=left)
            except queue.Empty:
                continue
            if record is None:
                raise AssertionError(f"{self.name} exited: {self.events}")
            self.events.append(record)
            if matches(record):
                record["_taken"] = True
                return record

    def reported(self, call_id: str) -> list[tuple[str, int, str | None]]:
        """(event sent, HTTP status, session status answered) for one call, in order."""
        return [
            (e["sent"], e["http"], e["status"])
            for e in self.events
            if e["event"] == "reported" and e["call_id"] == call_id
        ]

    def stop(self) -> Record:
        """Stop it; its final state (rung call ids, duplicates, refused pushes)."""
        stop_process(self.process)
        return self.wait_event(lambda e: e["event"] == "stopped", 10, "final state")


@dataclass
class Family:
    household: uuid.UUID
    admin: uuid.UUID
    relative: uuid.UUID


class WholeCallWorld:
    """Emulators, API and worker as processes; families, phones and schedules for tests."""

    def __init__(self, database_url: str, folder: Path) -> None:
        self.database_url = database_url
        self.folder = folder
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.worker_port = free_port()
        self.env_file = folder / "emulators" / "emulators.env"
        self.processes: list[subprocess.Popen[Any]] = []
        self.phones: list[PhoneProcess] = []
        self.households: list[uuid.UUID] = []
        self.users: list[uuid.UUID] = []

    def _start(self, name: str, args: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "python_worker", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(**extra),
            cwd=self.folder,  # no stray .env
        )
        log.close()
        self.processes.append(process)
        return process

    def start(self) -> None:
        common = {
            "CALLPANION_API_PORT": str(self.api_port),
            "CALLPANION_API_DATABASE_URL": self.database_url,
            "CALLPANION_WORKER_DATABASE_URL": self.database_url,
            "CALLPANION_WORKER_HTTP_PORT": str(self.worker_port),
            "CALLPANION_PUBLIC_API_URL": self.api_url,
            "CALLPANION_LEASE_SECS": "5",
            "CALLPANION_SHUTDOWN_GRACE_SECS": "2",
        }
        emulators = self._start(
            "emulators",
            ["emulators", "--dir", str(self.folder / "emulators")],
            **common,
        )
        wait_ready("the emulators", self.env_file.is_file, emulators)
        settings = ["--env-file", str(self.env_file)]
        api = self._start("api", [*settings, "api"], **common)
        wait_ready("the API", lambda: http_ok(f"{self.api_url}/healthz"), api)
        worker = self._start("worker", [*settings, "worker"], **common)
        health = f"http://127.0.0.1:{self.worker_port}/healthz"
        wait_ready("the worker", lambda: http_ok(health), worker)

    def stop(self) -> None:
        for phone in self.phones:
            stop_process(phone.process)
        for process in reversed(self.processes):
            stop_process(process)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute("delete from households where id = any(%s)", [self.households])
            conn.execute("delete from auth.users where id = any(%s)", [self.users])

    # -- data -----------------------------------------------------------------------------
    def connect(self) -> psycopg.Connection[Row]:
        return psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row)

    def family(self, conn: psycopg.Connection[Row]) -> Family:
        """A household with an admin and one relative (no device yet)."""
        admin = uuid.uuid4()
        self.users.append(admin)
        conn.execute(
            "insert into auth.users (id, email) values (%s, %s)", [admin, f"{admin}@example.com"]
        )
        household = conn.execute(
            "insert into households (name, created_by) values ('The Ends', %s) returning id",
            [admin],
        ).fetchone()
        assert household is not None
        self.households.append(household["id"])
        conn.execute(
            "insert into household_members (household_id, user_id, role) values (%s, %s, 'admin')",
            [household["id"], admin],
        )
        relative = conn.execute(
            """insert into relatives (household_id, display_name, timezone)
               values (%s, 'Nan', 'Europe/London') returning id""",
            [household["id"]],
        ).fetchone()
        assert relative is not None
        return Family(household["id"], admin, relative["id"])

    def as_admin(
        self, conn: psycopg.Connection[Row], family: Family, query: Any, params: Any
    ) -> Row:
        """One statement as the household's admin on the dashboard (RLS applies)."""
        with conn.transaction():
            conn.execute("set local role authenticated")
            conn.execute(
                "select set_config('request.jwt.claims', %s, true)",
                [json.dumps({"sub": str(family.admin), "role": "authenticated"})],
            )
            row = conn.execute(query, params).fetchone()
        assert row is not None
        return row

    def phone(
        self,
        conn: psycopg.Connection[Row],
        family: Family,
        platform: str,
        script: str,
        *,
        typed: bool = False,
        app_state: str = "background",
    ) -> PhoneProcess:
        """A phone paired for real with a code the admin created (scanned: its pairing id;
        `typed`: the reference shown beside the code); waited for until ready."""
        ticket = self.as_admin(
            conn, family, "select pairing_id, code, reference from create_pairing(%s)",
            [family.relative],
        )  # fmt: skip
        which = (
            ["--pairing-reference", ticket["reference"]]
            if typed
            else ["--pairing-id", str(ticket["pairing_id"])]
        )
        code = ticket["code"]
        name = f"phone{len(self.phones) + 1}"
        process = subprocess.Popen(
            [
                sys.executable, "-m", "python_worker", "--env-file", str(self.env_file),
                "phone", "run", "--name", name, "--platform", platform,
                *which, "--code", code, "--app-state", app_state,
                "--api", self.api_url, "--script", script,
                "--state-dir", str(self.folder / "phones"),
            ],
            stdout=subprocess.PIPE,
            stderr=(self.folder / f"{name}.err").open("wb"),
            text=True,
            env=clean_env(),
            cwd=self.folder,
        )  # fmt: skip
        phone = PhoneProcess(name, process)
        phone.start_reading()
        self.phones.append(phone)
        phone.wait_event(lambda e: e["event"] == "ready", 30, "ready")
        return phone

    def one_off(
        self,
        conn: psycopg.Connection[Row],
        family: Family,
        run_at: Any,
        *,
        max_attempts: int = 1,
        ring_s: int = 15,
    ) -> uuid.UUID:
        """A one-off schedule created by the admin (shortest retry interval, 1 min)."""
        row = self.as_admin(
            conn,
            family,
            """insert into schedules (relative_id, kind, run_at, max_attempts, retry_interval,
                   ring_timeout)
               values (%s, 'one_off', %s, %s, interval '1 minute', make_interval(secs => %s))
               returning id""",
            [family.relative, run_at, max_attempts, ring_s],
        )
        schedule: uuid.UUID = row["id"]
        return schedule


def sessions_of(conn: psycopg.Connection[Row], schedule: uuid.UUID) -> list[Row]:
    return conn.execute(
        "select * from call_sessions where schedule_id = %s order by attempt", [schedule]
    ).fetchall()


@contextlib.contextmanager
def world(database_url: str, folder: Path) -> Iterator[WholeCallWorld]:
    the_world = WholeCallWorld(database_url, folder)
    try:
        the_world.start()
        yield the_world
    finally:
        the_world.stop()
