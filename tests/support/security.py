"""The attacker's test bench: `callpanion emulators` and `callpanion api` as separate
processes on a migrated database of their own, and households with devices paired through
the running API (issue 25: the attacks were made this way, so the tests are too).

Plain helpers (no fixtures): tests build their own fixtures from these.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
from dotenv import dotenv_values
from psycopg.rows import dict_row

from python_worker.stack.cluster import free_port
from tests.support.whole_call import clean_env, http_ok, stop_process, wait_ready
from tests.support.world import apns_token, fcm_token

Row = dict[str, Any]


@dataclass
class Household:
    """A household with an admin and one relative, and (once paired) its device."""

    id: uuid.UUID
    admin: uuid.UUID
    relative: uuid.UUID
    device: uuid.UUID | None = None
    secret: str = ""

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.device}.{self.secret}"}


class ApiBench:
    """The emulators and the API as child processes; the API's webhooks come from the
    emulated ElevenLabs over the loopback, signed, exactly as in production."""

    def __init__(self, database_url: str, folder: Path, **api_env: str) -> None:
        self.database_url = database_url
        self.folder = folder
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.env_file = folder / "emulators" / "emulators.env"
        self.api_env = api_env
        self.processes: list[subprocess.Popen[bytes]] = []
        self.env: dict[str, str] = {}

    def _start(self, name: str, args: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = (self.folder / f"{name}.log").open("wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "python_worker", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=clean_env(**extra),
            cwd=self.folder,
        )
        log.close()
        self.processes.append(process)
        return process

    def start(self) -> ApiBench:
        common = {
            "CALLPANION_API_PORT": str(self.api_port),
            "CALLPANION_API_DATABASE_URL": self.database_url,
            "CALLPANION_PUBLIC_API_URL": self.api_url,
        }
        emulators = self._start(
            "emulators", ["emulators", "--dir", str(self.folder / "emulators")], **common
        )
        wait_ready("the emulators", self.env_file.is_file, emulators)
        self.env = {k: v for k, v in dotenv_values(self.env_file).items() if v is not None}
        api = self._start(
            "api", ["--env-file", str(self.env_file), "api"], **common, **self.api_env
        )
        wait_ready("the API", lambda: http_ok(f"{self.api_url}/healthz"), api)
        return self

    @property
    def api_pid(self) -> int:
        return self.processes[-1].pid

    def stop(self) -> None:
        for process in reversed(self.processes):
            stop_process(process)

    def connect(self) -> psycopg.Connection[Row]:
        return psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row)

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30)

    def elevenlabs(self) -> httpx.Client:
        """A client of the emulated ElevenLabs, as the relative's app talks to it."""
        return httpx.Client(base_url=self.env["ELEVENLABS_BASE_URL"], timeout=30)


def new_household(conn: psycopg.Connection[Row], name: str) -> Household:
    """A household (its admin signed up), with one relative."""
    admin = conn.execute(
        "insert into auth.users (email) values (%s) returning id",
        [f"{uuid.uuid4().hex}@example.test"],
    ).fetchone()
    assert admin is not None
    household = conn.execute(
        "insert into households (name) values (%s) returning id", [f"The {name} family"]
    ).fetchone()
    assert household is not None
    conn.execute(
        "insert into household_members (household_id, user_id, role) values (%s, %s, 'admin')",
        [household["id"], admin["id"]],
    )
    relative = conn.execute(
        "insert into relatives (household_id, display_name, timezone)"
        " values (%s, %s, 'Europe/London') returning id",
        [household["id"], name],
    ).fetchone()
    assert relative is not None
    return Household(household["id"], admin["id"], relative["id"])


def as_admin(conn: psycopg.Connection[Row], user: uuid.UUID, query: str, params: Any) -> list[Row]:
    """A statement run as the dashboard runs it for this user (role authenticated, RLS)."""
    with conn.transaction():
        conn.execute("set local role authenticated")
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            [f'{{"role": "authenticated", "sub": "{user}"}}'],
        )
        return conn.execute(query, params).fetchall()


def create_code(conn: psycopg.Connection[Row], household: Household) -> tuple[str, str]:
    """The dashboard's pairing QR code: (pairing_id, code)."""
    row = as_admin(
        conn, household.admin, "select * from create_pairing_code(%s)", [household.relative]
    )[0]
    return str(row["pairing_id"]), row["code"]


def pair_body(pairing_id: str, code: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pairing_id": pairing_id,
        "code": code,
        "platform": "ios",
        "app_version": "2.3.0",
        "label": "Mum's iPhone",
        "fcm_token": fcm_token(),
        "voip_token": apns_token(),
        "apns_token": apns_token(),
    }
    body.update(extra)
    return body


def pair_device(client: httpx.Client, conn: psycopg.Connection[Row], household: Household) -> None:
    """Pair the household's device through the running API, with a fresh code."""
    pairing_id, code = create_code(conn, household)
    response = client.post("/v1/devices/pair", json=pair_body(pairing_id, code))
    assert response.status_code == 201, response.text
    household.device = uuid.UUID(response.json()["device_id"])
    household.secret = response.json()["device_secret"]


def ringing_session(conn: psycopg.Connection[Row], household: Household) -> uuid.UUID:
    """A 'call now' session ringing on the household's device."""
    row = conn.execute(
        "insert into call_sessions (household_id, relative_id, device_id, occurrence_at,"
        " status, origin, ringing_at) values (%s, %s, %s, now(), 'ringing', 'call_now', now())"
        " returning id",
        [household.id, household.relative, household.device],
    ).fetchone()
    assert row is not None
    session: uuid.UUID = row["id"]
    return session


def wait_row(
    conn: psycopg.Connection[Row],
    query: str,
    params: Any,
    ready: Callable[[Row], bool] = lambda _: True,
    timeout: float = 60,
) -> Row:
    """Poll until the query returns a row that is ready (the fact a test waits for)."""
    deadline = time.monotonic() + timeout
    while True:
        row = conn.execute(query, params).fetchone()
        if row is not None and ready(row):
            return row
        if time.monotonic() > deadline:
            raise AssertionError(f"no ready row within {timeout} s for {query} {params}: {row}")
        time.sleep(0.05)
