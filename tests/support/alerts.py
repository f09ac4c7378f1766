"""The alert emulators on a loop of their own (a background thread), for tests.

Blocking clients (the official `twilio` library, urllib) and our async senders can then both
reach them. Imported by name from the tests; no fixtures here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json as _json
import os as _os
import re as _re
import signal as _signal
import subprocess as _subprocess
import sys as _sys
import threading
import time as _time
import urllib.request as _request
import uuid as _uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote as _quote

import psycopg as _psycopg
from psycopg import sql as _sql

from python_worker.emulators.alerts import AlertEmulators
from python_worker.emulators.process import admin_request

T = TypeVar("T")


class ThreadedAlerts:
    def __init__(self, emulators: AlertEmulators) -> None:
        self.emulators = emulators
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(
            coroutine, self.loop
        )
        return future.result(timeout=30)

    def start(self) -> None:
        self._thread.start()
        self.run(self.emulators.start())

    def stop(self) -> None:
        try:
            self.run(self.emulators.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout=10)
            self.loop.close()


@contextmanager
def alert_emulators(folder: Path, **options: Any) -> Iterator[ThreadedAlerts]:
    threaded = ThreadedAlerts(AlertEmulators(folder, **options))
    threaded.start()
    try:
        yield threaded
    finally:
        threaded.stop()


# -- the family's side, as the dashboard would do it -------------------------------------------

CODE = _re.compile(r"\b([0-9]{6})\b")


def as_member(conn: _psycopg.Connection[Any], user_id: _uuid.UUID, query: Any, params: Any) -> Any:
    """One RPC as a signed-in member (PostgREST's role and JWT claims), committed."""
    with conn.transaction():
        conn.execute(_sql.SQL("set local role authenticated"))
        conn.execute(
            "select set_config('request.jwt.claims', %s, true)",
            [_json.dumps({"role": "authenticated", "sub": str(user_id)})],
        )
        row = conn.execute(query, params).fetchone()
    return row


def add_method(
    conn: _psycopg.Connection[Any],
    user_id: _uuid.UUID,
    household_id: _uuid.UUID,
    channel: str,
    address: str | None = None,
    subscription: dict[str, Any] | None = None,
) -> dict[str, Any]:
    row = as_member(
        conn,
        user_id,
        "select public.add_contact_method(p_household_id => %s, p_channel => %s,"
        " p_address => %s, p_subscription => %s::jsonb) as r",
        [
            household_id,
            channel,
            address,
            None if subscription is None else _json.dumps(subscription),
        ],
    )
    result: dict[str, Any] = row["r"]
    return result


def confirm_method(
    conn: _psycopg.Connection[Any], user_id: _uuid.UUID, method_id: str, code: str
) -> dict[str, Any]:
    row = as_member(
        conn,
        user_id,
        "select public.confirm_contact_method(p_method_id => %s, p_code => %s) as r",
        [method_id, code],
    )
    result: dict[str, Any] = row["r"]
    return result


def code_in(text: str) -> str | None:
    match = CODE.search(text)
    return match.group(1) if match else None


# -- the emulators and the API as separate processes (end-to-end tests, the demo's checks) ----


class RemoteAlerts:
    """The alert emulators of a `callpanion emulators` process, through their admin routes."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.ca = env["WEBPUSH_CA_FILE"]
        self.webpush = env["CALLPANION_EMULATED_WEBPUSH_URL"]
        self.twilio = env["TWILIO_BASE_URL"]
        self.smtp = env["CALLPANION_EMULATED_SMTP_ADMIN_URL"]

    def _inbox(self, base: str, token: str, after: int, wait: float) -> list[dict[str, Any]]:
        path = f"/_emulator/inbox?token={_quote(token, safe='')}&after={after}&wait={wait}"
        answer = admin_request(base, self.ca, "GET", path, timeout=wait + 10)
        pushes: list[dict[str, Any]] = answer["pushes"]  # type: ignore[assignment]
        return pushes

    def wait_for(
        self, kind: str, token: str, match: Any = lambda _m: True, timeout: float = 30.0
    ) -> dict[str, Any]:
        """The first message to `token` that `match`es, long-polling the emulator's inbox."""
        base = {"mail": self.smtp, "sms": self.twilio, "push": self.webpush}[kind]
        deadline = _time.monotonic() + timeout
        seen = 0
        while True:
            left = deadline - _time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for a {kind} to {token}")
            batch = self._inbox(base, token, seen, min(left, 10.0))
            for message in batch:
                if match(message):
                    return message
            seen += len(batch)

    def all(self, kind: str, token: str) -> list[dict[str, Any]]:
        base = {"mail": self.smtp, "sms": self.twilio, "push": self.webpush}[kind]
        return self._inbox(base, token, 0, 0)

    def new_subscription(self) -> dict[str, Any]:
        return admin_request(self.webpush, self.ca, "POST", "/_emulator/subscriptions", body={})

    def reply(self, sender: str, to: str, body: str) -> dict[str, object]:
        """A phone replies by SMS: Twilio posts it, signed, to our inbound webhook."""
        return admin_request(
            self.twilio,
            self.ca,
            "POST",
            "/_emulator/inbound",
            body={"from": sender, "to": to, "body": body},
        )


class Process:
    """A child `callpanion ...` process, stopped by SIGTERM (then SIGKILL) on `stop()`."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as sink:
            self.process = _subprocess.Popen(
                [_sys.executable, "-m", "python_worker", *args],
                env=env,
                stdout=_subprocess.PIPE if "--json" in args else sink,
                stderr=sink,
                cwd=log.parent,
            )

    def first_line(self) -> str:
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if not line:
            raise AssertionError(f"process exited: {self.log.read_text()[-3000:]}")
        return line

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(_signal.SIGTERM)
            try:
                self.process.wait(20)
            except _subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def clean_env() -> dict[str, str]:
    """This process's environment without any setting of ours (no stray configuration)."""
    prefixes = (
        "CALLPANION_",
        "FCM_",
        "APNS_",
        "SUPABASE_",
        "VAPID_",
        "SMTP_",
        "TWILIO_",
        "WEBPUSH_",
    )
    return {k: v for k, v in _os.environ.items() if not k.startswith(prefixes)}


def http_ok(url: str) -> bool:
    try:
        with _request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return bool(response.status == 200)
    except OSError:
        return False
