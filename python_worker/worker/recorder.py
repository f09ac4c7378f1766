"""Push results recorded as they come, not when the slowest send of a batch answers.

A push that reached the phone but is not yet recorded is sent again if the worker dies (the
phone rings once: same CallKit id, same `expires_at`), so the shorter that window the fewer
duplicates a crash makes. Results wait at most `interval_s` (or until `max_rows` have
gathered) and then go to `record_push_results` in one statement; one statement is in flight
at a time, and what arrives meanwhile goes in the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import psycopg

from python_worker.push.retry import RetryPolicy

log = logging.getLogger("callpanion.dispatch")

T = TypeVar("T")
R = TypeVar("R")

#: Retry a failed record call this often before the lease runs out (the database may be
#: restarting); after that, another worker re-sends (a call rings once anyway; an alert's
#: outbox row is unique, and its message carries the same id).
RECORD_RETRY = RetryPolicy(base_s=0.5, cap_s=5.0)

#: How long a result may wait for others to share its statement. A burst of a thousand
#: pushes then takes a few tens of statements, and a crash leaves about this much unrecorded.
RECORD_EVERY_S = 0.02


class ResultRecorder(Generic[T]):
    """Gathers results and records them in small batches, in the order they came."""

    def __init__(
        self,
        record: Callable[[Sequence[T]], Awaitable[None]],
        *,
        interval_s: float = RECORD_EVERY_S,
        max_rows: int = 1000,
    ) -> None:
        self._record = record
        self.interval_s = interval_s
        self.max_rows = max_rows
        self._pending: list[T] = []
        self._added = 0
        self._recorded = 0
        self._full = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        """Results added and not yet recorded (or given up on)."""
        return self._added - self._recorded

    def add(self, item: T) -> None:
        """Queue one result; it is recorded within about `interval_s`."""
        self._pending.append(item)
        self._added += 1
        # equivalent mutant: `==`: results come one at a time, so the count meets max_rows
        # on its way up, and a batch at or over it is taken without waiting anyway.
        if len(self._pending) >= self.max_rows:
            self._full.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="record-results")

    async def flushed(self) -> None:
        """Wait until everything added so far has been recorded (or given up on)."""
        target = self._added
        while self._recorded < target:
            await self._progress.wait()

    async def _run(self) -> None:
        while self._pending:
            # equivalent mutant: `<=`: a full batch has set `_full` (add() sets it when the
            # count reaches max_rows, and nothing clears it before this wait), so no wait.
            if len(self._pending) < self.max_rows:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), self.interval_s)
            self._full.clear()
            batch = self._pending[: self.max_rows]
            del self._pending[: self.max_rows]
            try:
                await self._record(batch)
            except Exception:  # the rows' leases run out and they are sent again
                log.exception("recording results failed", extra={"rows": len(batch)})
            finally:
                self._recorded += len(batch)
                progress, self._progress = self._progress, asyncio.Event()
                progress.set()

    async def aclose(self) -> None:
        """Stop recording (what is still pending is left to the leases)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


async def record_while_leased(
    record: Callable[[], Awaitable[R]],
    lease_end: float,
    *,
    clock: Callable[[], float],
    on_error: Callable[[], None] = lambda: None,
) -> R | None:
    """`record()`, retried with backoff on a lost database connection while the rows' lease
    lasts (by `clock`); None once it has run out (the rows return to the queue and are sent
    again). Shared by the calls' dispatcher and the alerts' outbox."""
    failures = 0
    while True:
        try:
            return await record()
        except psycopg.OperationalError:
            on_error()
            failures += 1
            if clock() > lease_end:
                return None
            await asyncio.sleep(RECORD_RETRY.delay(failures))
