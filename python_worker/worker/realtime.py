"""Supabase Realtime wake-ups: `postgres_changes` INSERTs on the queue table, as hints.

For workers that cannot hold a Postgres session connection for LISTEN (behind a transaction
pooler): the official `realtime` client subscribes to INSERTs on `public.notification_queue`
with the service key, and each insert becomes `handlers.wake(send_at)`.

Two things about Supabase Realtime shape this module:

- The join reply comes *before* the change feed exists. The server answers `phx_join` at
  once, then sets up the Postgres subscription and says so with a `system` message
  ("Subscribed to PostgreSQL", extension `postgres_changes`, status ok). A row inserted in
  between is never announced, so `handlers.connected()` (the worker's catch-up) is called on
  that message, not on the client's SUBSCRIBED status. The server sends it again if it has to
  re-subscribe, which is again a moment when changes may have been missed. A table outside the
  `supabase_realtime` publication gets a `system` error instead, and never a connected().
- The client's own reconnect cannot be supervised: after `max_retries` failed attempts it
  raises inside its private listening task and goes quiet, and nothing public says whether it
  is still retrying or has given up. So it is switched off (`auto_reconnect=False`): every
  loss reaches us as a channel status (CHANNEL_ERROR, TIMED_OUT or CLOSED), and this module
  tears the client down and builds a new one, with `RECONNECT_POLICY` backoff, forever.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from realtime import AsyncRealtimeChannel, AsyncRealtimeClient
from realtime.message import SuccessSystemPayload
from realtime.types import (
    DEFAULT_TIMEOUT,
    PostgresChangesPayload,
    RealtimePostgresChangesListenEvent,
    RealtimeSubscribeStates,
)

from python_worker.push.retry import RetryPolicy
from python_worker.worker.wakeups import RECONNECT_POLICY, WakeHandlers, iso_instant

log = logging.getLogger("callpanion.wakeups")

#: The channel's name (any name will do for postgres_changes; this one reads well in logs).
TOPIC = "callpanion-queue"
#: How long to wait for a closing handshake and the client's tasks when tearing down.
CLOSE_TIMEOUT_S = 5.0


def realtime_endpoint(project_url: str) -> str:
    """Where Supabase serves Realtime for a project URL (the client appends `/websocket`).

    The client turns http(s) into ws(s) itself: https://<ref>.supabase.co becomes
    wss://<ref>.supabase.co/realtime/v1/websocket?apikey=...&vsn=1.0.0.
    """
    return project_url.rstrip("/") + "/realtime/v1"


def insert_hint(payload: Mapping[str, Any], column: str = "send_at") -> dt.datetime | None:
    """The inserted row's `send_at`, from a postgres_changes payload; None when unreadable.

    Realtime sends the row as `data.record`, timestamps as ISO 8601 text. A row over its size
    limit keeps only its short values (`data.errors` says so); send_at is one of them.
    """
    data = payload.get("data")
    record = data.get("record") if isinstance(data, Mapping) else None
    return iso_instant(record.get(column)) if isinstance(record, Mapping) else None


class RealtimeWakeups:
    """Subscribe to INSERTs on the queue table over Supabase Realtime; reconnect for ever."""

    name = "realtime"

    def __init__(
        self,
        url: str,
        service_key: str,
        *,
        schema: str = "public",
        table: str = "notification_queue",
        reconnect_policy: RetryPolicy = RECONNECT_POLICY,
        timeout_s: int = DEFAULT_TIMEOUT,
    ) -> None:
        """`url` is the Supabase project URL (https://<ref>.supabase.co, or the local one).

        `timeout_s` bounds opening the websocket and the join reply; `reconnect_policy`
        spaces the attempts after a failure (tests pass a fast one).
        """
        self._endpoint = realtime_endpoint(url)
        self._key = service_key
        self._schema = schema
        self._table = table
        self._policy = reconnect_policy
        self._timeout_s = timeout_s
        #: Times the change feed went live (each one a connected() call).
        self.connects = 0
        #: Failed connections or subscriptions since the feed was last live.
        self.failures = 0

    async def run(self, handlers: WakeHandlers) -> None:
        """Deliver hints until cancelled; on any failure, start over with a new client."""
        while True:
            try:
                reason = await self._connection(handlers)
                message = "realtime subscription lost; reconnecting"
            except Exception as error:  # whatever the client raised: never give up
                reason = f"{type(error).__name__}: {error}"
                message = "realtime connection failed; retrying"
            self.failures += 1
            delay = self._policy.delay(self.failures)
            log.warning(
                message,
                extra={
                    "source": self.name,
                    "error": reason,
                    "failures": self.failures,
                    "retry_in_s": round(delay, 2),
                },
            )
            await asyncio.sleep(delay)

    async def _connection(self, handlers: WakeHandlers) -> str:
        """One client, one channel, until the channel fails; returns why it did."""
        ended: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_insert(payload: PostgresChangesPayload) -> None:
            handlers.wake(insert_hint(payload))

        def on_system(payload: SuccessSystemPayload) -> None:
            if payload.extension != "postgres_changes":
                return
            # The feed is live from here on; anything earlier was not announced.
            self.connects += 1
            self.failures = 0
            log.info(
                "realtime change feed live",
                extra={
                    "source": self.name,
                    "table": f"{self._schema}.{self._table}",
                    "connects": self.connects,
                },
            )
            handlers.connected()

        def on_status(status: RealtimeSubscribeStates, error: Exception | None) -> None:
            if status is not RealtimeSubscribeStates.SUBSCRIBED and not ended.done():
                ended.set_result(status.value if error is None else f"{status.value}: {error}")

        client = AsyncRealtimeClient(
            self._endpoint,
            token=self._key,
            auto_reconnect=False,
            max_retries=1,
            timeout=self._timeout_s,
        )
        channel = client.channel(TOPIC)
        channel.on_postgres_changes(
            RealtimePostgresChangesListenEvent.Insert,
            on_insert,
            table=self._table,
            schema=self._schema,
        )
        channel.on_system(on_system)
        try:
            await client.connect()
            await channel.subscribe(on_status)
            return await ended
        finally:
            await _to_the_end(_close(client, channel))


async def _to_the_end(teardown: Coroutine[Any, Any, None]) -> None:
    """Run a teardown to its end even when cancelled meanwhile, then let the cancellation
    through: a half-done close would leave the socket open and the client's tasks pending."""
    task = asyncio.ensure_future(teardown)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await task
        raise


async def _close(client: AsyncRealtimeClient, channel: AsyncRealtimeChannel) -> None:
    """Close the websocket and wait for every task the client and channel started.

    `client.close()` cancels its listening and heartbeat tasks without waiting for them, and
    leaves the channel's rejoin timer and join timeout running; a loop that stops right after
    would destroy them while pending. The listening and heartbeat tasks are only reachable as
    private attributes (realtime 2.34); a missing one is simply not waited for.
    """
    client_tasks = [getattr(client, "_listen_task", None), getattr(client, "_heartbeat_task", None)]
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await client.close()
    except TimeoutError:
        log.warning("realtime websocket did not close in time", extra={"source": "realtime"})
    await _cancel_and_wait(client_tasks)
    # Only now: the listening task may have handled one last frame while the socket closed,
    # and a `system` error frame starts a rejoin timer.
    channel_tasks = [channel.rejoin_timer.timer, channel.join_push.timeout_task]
    channel.rejoin_timer.reset()
    channel.join_push.destroy()
    await _cancel_and_wait(channel_tasks)


async def _cancel_and_wait(tasks: list[Any]) -> None:
    current = asyncio.current_task()
    pending = {t for t in tasks if isinstance(t, asyncio.Task) and t is not current}
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)
