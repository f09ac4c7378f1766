"""The worker's presence in the database: one advisory lock, held while the process lives.

Each worker process names its leases with a lease owner of its own, CALLPANION_WORKER_ID plus
a per-boot suffix (`lease_owner`), so two processes that share a configured id never share a
lease (a graceful stop gives back only this process's rows). It holds a session-level
advisory lock for that owner (`register_worker`) on a connection kept only for that. When
the process dies, Postgres ends the session and drops the lock at once, and the next claim by
any worker takes the dead worker's rows back without waiting for their leases to run out
(`private.reclaim_orphaned_leases` in supabase/schema.sql).

The connection is checked now and then; after a database restart it is opened again and the
lock taken again. Until then, claims still work: they are simply not tied to the lock and
fall back to the lease timeout.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from python_worker.errors import CallPanionError
from python_worker.named_queries import load_queries
from python_worker.worker.db import QUERIES_FILE

log = logging.getLogger("callpanion.worker")

#: How often the presence connection is checked (a dead one is opened again and the lock
#: re-taken). Between checks a lost lock only means slower recovery, never a lost call.
CHECK_EVERY_S = 1.0
#: Room left for the suffix in the 200 characters a lease owner may have.
OWNER_ID_MAX = 190


def lease_owner(worker_id: str) -> str:
    """This process's lease owner: the configured worker id and a random per-boot suffix."""
    return f"{worker_id[:OWNER_ID_MAX]}#{secrets.token_hex(4)}"


class Presence:
    """Holds the advisory lock of one lease owner on a dedicated connection."""

    def __init__(
        self,
        url: str,
        role: str | None,
        owner: str,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.role = role
        self.owner = owner
        self.clock = clock
        self._queries = load_queries(QUERIES_FILE)
        self._conn: psycopg.AsyncConnection[Any] | None = None
        # equivalent mutant: any start value: it is read only once the lock was held, and
        # every path that holds it sets it first.
        self._checked = 0.0
        self._registered = False  # the lock was held once (this process's first start)

    @property
    def held(self) -> bool:
        """Whether the lock was held at the last check."""
        return self._conn is not None and not self._conn.closed

    async def ensure(self) -> None:
        """Hold the lock, reconnecting when the connection is gone.

        Raises `psycopg.OperationalError` while the database is away (the caller backs off),
        and `CallPanionError` when another live session holds this owner's lock.
        """
        now = self.clock()
        if self._conn is None and self._registered and now - self._checked < CHECK_EVERY_S:
            return  # lost and refused a moment ago: not on every claim
        if self._conn is not None and not self._conn.closed:
            if now - self._checked < CHECK_EVERY_S:
                return
            try:
                await self._conn.execute("select 1")
                self._checked = now
                return
            except psycopg.OperationalError:
                log.warning("presence connection lost; taking the lock again")
                await self.close()
        conn = await psycopg.AsyncConnection.connect(
            self.url,
            autocommit=True,
            # equivalent mutant: another connect_timeout fails a silent database's check later.
            connect_timeout=5,
            prepare_threshold=None,
        )
        try:
            if self.role:
                await conn.execute(sql.SQL("set role {}").format(sql.Identifier(self.role)))
            cursor = await conn.execute(self._queries["register_worker"], {"worker": self.owner})
            row = await cursor.fetchone()
        except BaseException:
            await conn.close()
            raise
        # equivalent mutant: row[-1]: register_worker's answer is one column.
        if not (row and row[0]):
            await conn.close()
            if self._registered:
                # Most likely our own previous session, not yet reaped by the server after a
                # network failure: carry on (claims fall back to the lease) and try again.
                log.warning("presence lock still held by an older session; retrying")
                self._checked = now
                return
            raise CallPanionError(
                f"lease owner {self.owner!r} is held by another live database session; "
                "two processes must not share a lease owner"
            )
        self._conn = conn
        self._checked = now
        self._registered = True

    async def close(self) -> None:
        """Drop the connection, and with it the lock."""
        conn, self._conn = self._conn, None
        if conn is not None:
            # equivalent mutant: psycopg's close() of a broken connection does not raise.
            with contextlib.suppress(psycopg.Error):
                await conn.close()
