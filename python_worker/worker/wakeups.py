"""Wake-up sources: hints that queued rows exist, so the worker claims them on time.

A hint is only ever a hint. The worker also keeps a timer for the earliest `send_at` it knows
of, and polls; phase 2 (pg_cron) makes rows due every minute. A worker that misses every
signal still sends within the poll interval.

Every source runs until cancelled, reconnecting on its own, and calls:

- `handlers.wake(hint)` when rows were queued; `hint` is the earliest `send_at` it knows of,
  or None for "look now";
- `handlers.connected()` after every (re)connect or (re)subscribe: anything inserted while
  it was away was not announced, so the worker runs its catch-up query then.

Sources: Postgres LISTEN/NOTIFY (`notify`, the default; it needs a session connection, not
a transaction pooler), Supabase Realtime `postgres_changes` (`realtime`), or none (`poll`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import psycopg

from python_worker.push.retry import RetryPolicy

log = logging.getLogger("callpanion.wakeups")

#: The channel phase 1's insert trigger and phase 2 notify (private.notify_channel()).
NOTIFY_CHANNEL = "callpanion_queue"
#: Reconnect backoff for the listening connection: 0.5-1 s, doubling, at most 30 s.
RECONNECT_POLICY = RetryPolicy(base_s=1.0, cap_s=30.0)


@dataclass(frozen=True)
class WakeHandlers:
    """What a source calls. Both must be cheap and never raise (they only set events)."""

    wake: Callable[[dt.datetime | None], None]
    connected: Callable[[], None]


class WakeupSource(Protocol):
    name: str

    async def run(self, handlers: WakeHandlers) -> None:
        """Deliver hints until cancelled; reconnect on every failure."""
        ...


def iso_instant(value: object) -> dt.datetime | None:
    """An ISO 8601 timestamp as an aware datetime (UTC when it has no offset); else None."""
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def parse_hint(payload: str) -> dt.datetime | None:
    """The `earliest` send_at of a NOTIFY payload; None when absent or unreadable."""
    try:
        data = json.loads(payload)
    except ValueError:
        return None
    return iso_instant(data.get("earliest")) if isinstance(data, dict) else None


class NotifyWakeups:
    """LISTEN on the queue channel over a dedicated session connection."""

    name = "notify"

    def __init__(
        self, database_url: str, *, channel: str = NOTIFY_CHANNEL, connect_timeout: int = 5
    ) -> None:
        self._url = database_url
        self._channel = channel
        self._connect_timeout = connect_timeout

    async def run(self, handlers: WakeHandlers) -> None:
        failures = 0
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._url, autocommit=True, connect_timeout=self._connect_timeout
                ) as conn:
                    await conn.execute(
                        psycopg.sql.SQL("listen {}").format(psycopg.sql.Identifier(self._channel))
                    )
                    failures = 0
                    handlers.connected()
                    async for notice in conn.notifies():
                        handlers.wake(parse_hint(notice.payload))
            except psycopg.OperationalError as error:
                failures += 1
                delay = RECONNECT_POLICY.delay(failures)
                log.warning(
                    "listen connection failed or lost; reconnecting",
                    extra={"error": str(error), "retry_in_s": round(delay, 2)},
                )
                await asyncio.sleep(delay)


class PollOnly:
    """No hints at all: the worker's timer and poll do everything."""

    name = "poll"

    async def run(self, handlers: WakeHandlers) -> None:
        handlers.connected()
        await asyncio.Event().wait()
