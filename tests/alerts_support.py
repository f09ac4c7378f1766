"""The alert emulators on a loop of their own (a background thread), for tests.

Blocking clients (the official `twilio` library, urllib) and our async senders can then both
reach them. Imported by name from the tests; no fixtures here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json as _json
import re as _re
import threading
import uuid as _uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg as _psycopg
from psycopg import sql as _sql

from python_worker.emulators.alerts import AlertEmulators

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
        [household_id, channel, address, None if subscription is None else _json.dumps(subscription)],
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
