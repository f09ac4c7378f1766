"""The worker's database boundary: a small async pool and the named queries of queries.sql.

Every call is one statement in autocommit mode, so each SQL function runs in its own
transaction and none is held across a network call (claim, commit, send, record). Connections
are checked before use, so after a Postgres restart the next call gets a fresh one; callers
retry `psycopg.OperationalError` with backoff.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from python_worker.named_queries import load_queries

QUERIES_FILE = Path(__file__).with_name("queries.sql")
Row = dict[str, Any]
AsyncConn = psycopg.AsyncConnection[Row]


class RecordResult(enum.StrEnum):
    """What `record_push_results` and `record_cancel_results` answer for one result.

    `lost_lease`: another owner holds the row, so the result changed nothing. Otherwise the
    row's status after recording: `retry` (due again) and `fallback` (due again, on another
    token) for a push, and the final `sent`, `failed`, `expired`, `cancelled`; `queued` and
    `claimed` only for a row nothing could move. tests/integration/test_record_results.py
    checks, from the functions' bodies and the status constraints, that the SQL can answer
    nothing else.
    """

    SENT = "sent"
    RETRY = "retry"
    FALLBACK = "fallback"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    QUEUED = "queued"
    CLAIMED = "claimed"
    LOST_LEASE = "lost_lease"


#: Results worth a warning line: the push did not reach the phone and will not be retried
#: (`lost_lease`: another worker owns the call now).
UNSENT_RESULTS = frozenset({RecordResult.LOST_LEASE, RecordResult.FAILED, RecordResult.EXPIRED})


@dataclass(frozen=True, slots=True)
class RecordedPush:
    """One answer of `record_push_results`."""

    queue_id: uuid.UUID
    call_session_id: uuid.UUID | None
    result: RecordResult


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """One queue row this worker holds, with what it needs to ring the device."""

    queue_id: uuid.UUID
    call_session_id: uuid.UUID
    household_id: uuid.UUID
    relative_id: uuid.UUID
    attempt: int
    provider_attempts: int
    device_id: uuid.UUID | None
    platform: str
    provider: str
    push_token: str
    send_at: dt.datetime
    not_before: dt.datetime  # send_at, or the next attempt's time for a retry
    deadline_at: dt.datetime
    payload: dict[str, Any]
    locked_until: dt.datetime
    #: The end of the ring window, fixed at the row's first claim: a re-send carries it.
    ring_expires_at: dt.datetime | None = None

    @property
    def ids(self) -> dict[str, str]:
        """The call's ids, for every log line about it."""
        return {
            "queue_id": str(self.queue_id),
            "call_session_id": str(self.call_session_id),
            "household_id": str(self.household_id),
        }


@dataclass(frozen=True, slots=True)
class NextWork:
    """When there is something to do next, by the database's clock."""

    send_at: dt.datetime | None  # the earliest row that may be claimed
    lease_expires_at: dt.datetime | None  # the earliest lease to run out
    db_now: dt.datetime
    ring_ends_at: dt.datetime | None = None  # the earliest ring window to end (phase 2 acts)
    peer_leases: bool = False  # another live owner holds rows (look again soon: it may die)

    def seconds_until(self, claim_ahead_s: float) -> float | None:
        """How long until a claim could find something; None when nothing is pending."""
        waits = []
        if self.send_at is not None:
            waits.append((self.send_at - self.db_now).total_seconds() - claim_ahead_s)
        if self.lease_expires_at is not None:
            # A lease is taken over once it has run out: just after its last instant.
            waits.append((self.lease_expires_at - self.db_now).total_seconds() + 0.001)
        return min(waits) if waits else None

    def seconds_until_ring_end(self) -> float | None:
        """How long until the earliest ring window has ended (phase 2 marks it missed then)."""
        if self.ring_ends_at is None:
            return None
        # Phase 2 takes a window as over once it has passed: just after its last instant.
        return (self.ring_ends_at - self.db_now).total_seconds() + 0.001


class WorkerDatabase:
    """A pool of connections acting as the worker's role (default `service_role`).

    `worker_id` is the lease owner every call names: this process's own (presence.py).
    """

    def __init__(self, url: str, role: str | None, worker_id: str, max_size: int = 4) -> None:
        self.worker_id = worker_id
        self._queries = load_queries(QUERIES_FILE)
        self._role = role
        self._pool: AsyncConnectionPool[AsyncConn] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=5.0,
            # No server-side prepared statements: each call is one short statement, and
            # Supavisor's transaction mode (port 6543) does not support them.
            kwargs={
                "autocommit": True,
                "row_factory": dict_row,
                "connect_timeout": 5,
                "prepare_threshold": None,
            },
            connection_class=psycopg.AsyncConnection[Row],
            configure=self._configure,
            check=AsyncConnectionPool.check_connection,
            reconnect_timeout=0,  # never give up: the worker outlives a database restart
        )

    async def _configure(self, conn: AsyncConn) -> None:
        if self._role:
            await conn.execute(sql.SQL("set role {}").format(sql.Identifier(self._role)))

    async def open(self) -> None:
        await self._pool.open(wait=False)

    async def close(self) -> None:
        await self._pool.close()

    async def _rows(self, name: str, params: dict[str, Any]) -> list[Row]:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(self._queries[name], params)
            return await cursor.fetchall()

    async def claim(self, limit: int, lease_s: float, horizon_s: float) -> list[ClaimedRow]:
        rows = await self._rows(
            "claim_due_calls",
            {"worker": self.worker_id, "limit": limit, "lease_s": lease_s, "horizon_s": horizon_s},
        )
        return [ClaimedRow(**row) for row in rows]

    async def record(self, results: Sequence[dict[str, Any]]) -> list[RecordedPush]:
        rows = await self._rows(
            "record_push_results",
            {"worker": self.worker_id, "results": Jsonb(list(results), dumps=_dumps)},
        )
        return [
            RecordedPush(row["queue_id"], row["call_session_id"], RecordResult(row["result"]))
            for row in rows
        ]

    async def renew(self, ids: Sequence[uuid.UUID], lease_s: float) -> list[uuid.UUID]:
        rows = await self._rows(
            "renew_leases", {"worker": self.worker_id, "ids": list(ids), "lease_s": lease_s}
        )
        return [row["renew_leases"] for row in rows]

    async def release(self, ids: Sequence[uuid.UUID] | None = None) -> list[uuid.UUID]:
        rows = await self._rows(
            "release_leases",
            {"worker": self.worker_id, "ids": None if ids is None else list(ids)},
        )
        return [row["release_leases"] for row in rows]

    async def next_work_at(self) -> NextWork:
        [row] = await self._rows("next_work_at", {"worker": self.worker_id})
        return NextWork(
            row["send_at"],
            row["lease_expires_at"],
            row["db_now"],
            row["ring_ends_at"],
            row["peer_leases"],
        )

    async def run_phase2(self) -> int | None:
        """Run phase 2 now (rows made due), or None when another worker is running it."""
        [row] = await self._rows("phase_two_now", {})
        released: int | None = row["released"]
        return released

    async def rows(self, name: str, params: dict[str, Any]) -> list[Row]:
        """Run a named query of queries.sql for a duty beside the call path (cancels.py)."""
        return await self._rows(name, params)

    async def queue_depth(self) -> dict[str, int]:
        return {row["status"]: row["rows"] for row in await self._rows("queue_depth", {})}


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)
