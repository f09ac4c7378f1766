"""A duty beside the call path: an outbox drained by claim, send, record, then sleep.

The cancel notices (cancels.py) and the family alerts (outbox.py) share this loop: send what
is ready, ask the database when the next row falls due, then sleep until that moment, a
wake-up hint (`wake()`, the same NOTIFY channel the calls use) or the poll interval,
whichever is first. A lost database connection is retried with backoff; nothing is lost
meanwhile (rows stay queued, leases run out and return).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import psycopg

from python_worker.push.retry import RetryPolicy

#: Backoff while the database is away (as the call loop's).
DB_RETRY = RetryPolicy(base_s=1.0, cap_s=10.0)
#: The shortest sleep between looks (a row that is due now, but locked by a peer).
MIN_IDLE_S = 0.02


class PolledDuty:
    """`run()` as a task until cancelled; `wake()` on any queue hint."""

    #: For log lines ("cancel notices", "alerts").
    name = "duty"

    def __init__(self, *, poll_interval_s: float) -> None:
        self.poll_interval_s = poll_interval_s
        self._wake = asyncio.Event()
        self.log = logging.getLogger(f"callpanion.worker.{self.name.replace(' ', '_')}")

    def wake(self) -> None:
        """Look now (cheap; never raises)."""
        self._wake.set()

    async def send_ready(self) -> int:
        """Claim, send and record what is ready now; how many rows were claimed."""
        raise NotImplementedError

    async def seconds_to_next(self) -> float:
        """How long until the next row may go (at most the poll interval)."""
        raise NotImplementedError

    def wait_for(self, next_at: object, db_now: object) -> float:
        """The sleep until `next_at` by the database's clock, bounded by the poll interval."""
        if next_at is None or db_now is None:
            return self.poll_interval_s
        wait: float = (next_at - db_now).total_seconds()  # type: ignore[operator]
        return min(self.poll_interval_s, max(wait, MIN_IDLE_S))

    async def run(self) -> None:
        """Until cancelled: send what is ready, then sleep until the next row is due."""
        failures = 0
        while True:
            self._wake.clear()
            try:
                await self.send_ready()
                wait = await self.seconds_to_next()
                failures = 0
            except psycopg.OperationalError as error:
                failures += 1
                wait = DB_RETRY.delay(failures)
                self.log.warning(
                    "%s: database unavailable; retrying",
                    self.name,
                    extra={"error": str(error).strip(), "retry_in_s": round(wait, 2)},
                )
            except psycopg.Error as error:
                # A refusal by a SQL function is a bug to see in the log, not a reason for the
                # duty to die silently: every later row would wait for nothing.
                failures += 1
                wait = DB_RETRY.delay(failures)
                self.log.error(
                    "%s: a database call failed; retrying",
                    self.name,
                    extra={
                        "error": str(error).strip(),
                        "sqlstate": error.sqlstate,
                        "retry_in_s": round(wait, 2),
                    },
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)
