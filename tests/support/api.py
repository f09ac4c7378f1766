"""Fixtures of the HTTP API tests: a real uvicorn server on loopback, a database of its own,
the ElevenLabs emulator, and families with paired devices (loaded by tests/support/db.py).

The API commits what it does, so it works in a dedicated database of the session cluster
(migrated like the real one, dropped at the end) instead of the rolled-back `db` fixture.
"""

from __future__ import annotations

import secrets
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from psycopg import sql
from psycopg.rows import dict_row

from python_worker.api.app import create_app
from python_worker.api.db import ApiDatabase
from python_worker.api.settings import DEFAULT_CONCERN_FIELDS, ApiSettings
from python_worker.emulators.elevenlabs import ElevenLabsEmulator
from python_worker.stack.cluster import LocalStack
from tests.support.error_text import leaked
from tests.support.world import apns_token, fcm_token

AGENT_ID = "agent_callpanion_test"
Row = dict[str, Any]


class ServedApi:
    """The app served by uvicorn in a thread, on a socket bound (and listening) before start,
    so requests can be sent as soon as this object exists: no waiting loop."""

    def __init__(self, settings: ApiSettings, database: ApiDatabase | None = None) -> None:
        self.settings = settings
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.violations: list[str] = []
        config = uvicorn.Config(
            ErrorBodyCheck(create_app(settings, database=database), self.violations),
            log_level="warning",
            lifespan="on",
            proxy_headers=False,  # as `callpanion api` serves it
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )
        self._thread.start()
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def stop(self) -> None:
        self.client.close()
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._socket.close()
        assert not self._thread.is_alive(), "the API server did not stop"
        # Every error body this server sent, whichever test provoked it (issue 25, item 6).
        assert not self.violations, f"error bodies with internals: {self.violations}"


class ErrorBodyCheck:
    """ASGI wrapper: every answer of status 400 or more is read as it is sent, and any SQL,
    driver or framework text in it is recorded (tests/error_text.py)."""

    def __init__(self, app: Any, violations: list[str]) -> None:
        self.app = app
        self.violations = violations

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 0
        body = bytearray()

        async def watched(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status >= 400:
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    text = body.decode("utf-8", "replace")
                    found = leaked(text)
                    if found is not None:
                        self.violations.append(
                            f"{scope['method']} {scope['path']} {status}: {text}"
                        )
            await send(message)

        await self.app(scope, receive, watched)


def settings_for(database_url: str, **overrides: Any) -> ApiSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 8000,  # not listened on: ServedApi binds its own socket on a free port
        "database_url": database_url,
        "db_role": "service_role",
        "elevenlabs_api_key": None,
        "elevenlabs_agent_id": AGENT_ID,
        "elevenlabs_base_url": "http://127.0.0.1:9",
        "elevenlabs_webhook_secret": None,
        "concern_fields": DEFAULT_CONCERN_FIELDS,
        "webhook_max_bytes": 256 * 1024,
        "pairing_rate_limit": 100_000,
        "pairing_rate_window_secs": 600,
        # Twilio's webhooks verify against this token (unsigned requests get 401, not 503).
        "twilio_auth_token": "twilio-test-token",
    }
    values.update(overrides)
    return ApiSettings.model_validate(values)  # exactly these values, not the environment


@pytest.fixture(scope="session")
def api_database(pg_stack: LocalStack) -> Iterator[str]:
    """A database of its own for the API tests, migrated, dropped at the end."""
    with pg_stack.scratch_database("api") as url:
        yield url


@pytest.fixture(scope="session")
def elevenlabs() -> Iterator[ElevenLabsEmulator]:
    emulator = ElevenLabsEmulator(api_key="xi_" + secrets.token_hex(16), agent_ids=[AGENT_ID])
    emulator.start()
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def webhook_secret() -> str:
    return "wsec_" + secrets.token_hex(24)


@pytest.fixture(scope="session")
def api(
    api_database: str, elevenlabs: ElevenLabsEmulator, webhook_secret: str
) -> Iterator[ServedApi]:
    served = ServedApi(
        settings_for(
            api_database,
            elevenlabs_api_key=elevenlabs.api_key,
            elevenlabs_base_url=elevenlabs.base_url,
            elevenlabs_webhook_secret=webhook_secret,
        )
    )
    yield served
    served.stop()


@pytest.fixture
def sql_conn(api_database: str) -> Iterator[psycopg.Connection[Row]]:
    """A connection as `postgres` (the owner) to the API's database (autocommit: the server must see it)."""
    with psycopg.connect(api_database, autocommit=True, row_factory=dict_row) as conn:
        yield conn


def fetch(conn: psycopg.Connection[Row], query: Any, params: Any = None) -> Row:
    rows = conn.execute(query, params).fetchall()
    assert len(rows) == 1, rows
    return rows[0]


@dataclass
class Family:
    household: uuid.UUID
    admin: uuid.UUID
    member: uuid.UUID
    relative: uuid.UUID
    name: str


@dataclass
class Paired:
    id: uuid.UUID
    secret: str
    headers: dict[str, str] = field(default_factory=dict)


def as_user(
    conn: psycopg.Connection[Row], user: uuid.UUID, query: Any, params: Any = None
) -> list[Row]:
    """Run a statement as PostgREST would for `user` (role authenticated), and commit it."""
    with conn.transaction():
        conn.execute("set local role authenticated")
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            [f'{{"role": "authenticated", "sub": "{user}"}}'],
        )
        return conn.execute(query, params).fetchall()


def new_family(conn: psycopg.Connection[Row], name: str = "Mum") -> Family:
    users = [fetch(conn, "insert into auth.users (email) values (%s) returning id",
                   [f"{uuid.uuid4().hex}@example.test"])["id"] for _ in range(2)]  # fmt: skip
    household = fetch(conn, "insert into households (name) values (%s) returning id",
                      [f"The {uuid.uuid4().hex[:6]} family"])["id"]  # fmt: skip
    conn.execute(
        "insert into household_members (household_id, user_id, role)"
        " values (%s, %s, 'admin'), (%s, %s, 'member')",
        [household, users[0], household, users[1]],
    )
    relative = fetch(
        conn,
        "insert into relatives (household_id, display_name, timezone)"
        " values (%s, %s, 'Europe/London') returning id",
        [household, name],
    )["id"]
    return Family(household, users[0], users[1], relative, name)


@dataclass(frozen=True)
class Ticket:
    """What the dashboard's QR code or link carries: which pairing, and its code."""

    pairing_id: uuid.UUID
    code: str

    def guess(self, code: str) -> Ticket:
        """The same pairing with another code (a wrong guess, usually)."""
        return Ticket(self.pairing_id, code)


def pairing_code(conn: psycopg.Connection[Row], family: Family) -> Ticket:
    rows = as_user(conn, family.admin, "select * from create_pairing_code(%s)", [family.relative])
    return Ticket(rows[0]["pairing_id"], rows[0]["code"])


def pair_body(ticket: Ticket, platform: str = "ios", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pairing_id": str(ticket.pairing_id),
        "code": ticket.code,
        "platform": platform,
        "app_version": "2.3.0",
        "label": "Mum's iPhone" if platform == "ios" else "Mum's tablet",
        "fcm_token": fcm_token(),
    }
    if platform == "ios":
        body |= {"voip_token": apns_token(), "apns_token": apns_token()}
    body.update(extra)
    return body


def pair(
    api: ServedApi, conn: psycopg.Connection[Row], family: Family, platform: str = "ios"
) -> Paired:
    response = api.client.post(
        "/v1/devices/pair", json=pair_body(pairing_code(conn, family), platform)
    )
    assert response.status_code == 201, response.text
    body = response.json()
    device = uuid.UUID(body["device_id"])
    return Paired(device, body["device_secret"], bearer(device, body["device_secret"]))


def bearer(device: uuid.UUID | str, secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {device}.{secret}"}


def new_session(
    conn: psycopg.Connection[Row],
    family: Family,
    device: uuid.UUID,
    status: str = "ringing",
    **cols: Any,
) -> uuid.UUID:
    """A call session of the family's relative on `device`, in the given state."""
    values: dict[str, Any] = {
        "household_id": family.household,
        "relative_id": family.relative,
        "device_id": device,
        "occurrence_at": "now()",
        "status": status,
        "origin": "call_now",
    }
    if status == "ringing":
        values["ringing_at"] = "now()"
    if status in ("accepted", "in_progress"):
        values["answered_at"] = "now()"
    values.update(cols)
    names = sql.SQL(", ").join(sql.Identifier(k) for k in values)
    placeholders = sql.SQL(", ").join(
        sql.SQL("now()") if v == "now()" else sql.Literal(v) for v in values.values()
    )
    query = sql.SQL("insert into call_sessions ({}) values ({}) returning id").format(
        names, placeholders
    )
    session: uuid.UUID = fetch(conn, query)["id"]
    return session
