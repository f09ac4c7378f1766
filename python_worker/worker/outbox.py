"""Family alerts: the outbox drained beside the calls, with the calls' machinery.

    claim_outbox (lease, presence) -> Notifiers (Web Push / email / SMS) -> Delivery
        -> ResultRecorder (small batches) -> record_outbox_results (compare-and-set on lease)

What is shared with the call path, not copied: the process's lease owner and its presence
lock (presence.py: a SIGKILLed worker's rows are taken back at the next claim by anyone), the
polled-duty loop and its backoff (duty.py), the result recorder and its retry while the lease
lasts (recorder.py), the retry policy with jitter (push/retry.py), the lease renewal task and
graceful release of the worker loop (loop.py), and its metrics registry. Woken by the same
NOTIFY channel (the SQL side notifies `{"event": "outbox"}` when it writes due rows), with
`next_outbox_at()` as the timer and the poll interval as the backstop.

Only the kinds this module can send are claimed (`alert`, `all_clear`, `verification`);
other side effects on the outbox (a provider deletion) are left for their own duty.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from python_worker.notify.outcomes import Delivery, Outcome
from python_worker.notify.senders import Notifiers
from python_worker.push.retry import RetryPolicy
from python_worker.worker.db import WorkerDatabase
from python_worker.worker.duty import PolledDuty
from python_worker.worker.metrics import Metrics
from python_worker.worker.recorder import ResultRecorder, record_while_leased

log = logging.getLogger("callpanion.worker.alerts")

#: The outbox kinds this duty delivers.
KINDS = ("alert", "all_clear", "verification")
#: Rows per claim: a burst of a thousand alerts is a few claims.
BATCH_SIZE = 500
#: Rows claimed and not yet recorded, at most: about what the senders can have in flight
#: (20 SMTP sessions, 50 Twilio connections, 200 pushes) times a few, so a claimed row does
#: not wait long for its turn (its lease is renewed meanwhile, but a crash would hold more).
MAX_IN_FLIGHT = 1500
#: Backoff between attempts of one message: 1 s, 2 s, 4 s, ... capped at 5 minutes (an alert
#: waits for a person, not for a ring window; the SQL side gives up after 8 attempts).
ALERT_RETRY = RetryPolicy(base_s=1.0, cap_s=300.0)


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """One claimed outbox row (the columns of `claim_outbox`)."""

    outbox_id: uuid.UUID
    kind: str
    channel: str | None
    household_id: uuid.UUID
    alert_id: uuid.UUID | None
    user_id: uuid.UUID | None
    method_id: uuid.UUID | None
    step: int
    attempts: int
    destination: dict[str, Any] | None
    message: dict[str, Any]
    send_at: dt.datetime
    deadline_at: dt.datetime | None
    locked_until: dt.datetime

    @property
    def ids(self) -> dict[str, str]:
        return {
            "outbox_id": str(self.outbox_id),
            "alert_id": str(self.alert_id),
            "household_id": str(self.household_id),
            "channel": str(self.channel),
            "step": str(self.step),
        }


def result_json(row: OutboxRow, delivery: Delivery, policy: RetryPolicy) -> dict[str, object]:
    """The record_outbox_results element for one message.

    The retry delay is chosen here, as for calls: the backoff for this attempt, never less
    than the provider's Retry-After (SQL adds its floor for a configuration fault).
    """
    retry_after: float | None = None
    if delivery.outcome in (Outcome.RETRY, Outcome.CONFIG_FAULT):
        retry_after = round(policy.delay(row.attempts, delivery.retry_after_s), 3)
    return {
        "outbox_id": str(row.outbox_id),
        "outcome": delivery.outcome.value,
        "status": delivery.status,
        "reason": delivery.reason,
        "message_id": delivery.message_id,
        "retry_after_s": retry_after,
        "detail": delivery.detail,
    }


class OutboxDelivery(PolledDuty):
    """Delivers the alert outbox; `wake()` on every queue hint, `run()` as a task."""

    name = "alerts"

    def __init__(
        self,
        db: WorkerDatabase,
        notifiers: Notifiers,
        metrics: Metrics,
        *,
        lease_s: float,
        poll_interval_s: float,
        batch_size: int = BATCH_SIZE,
        max_in_flight: int = MAX_IN_FLIGHT,
        policy: RetryPolicy = ALERT_RETRY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(poll_interval_s=poll_interval_s)
        self.db = db
        self.notifiers = notifiers
        self.metrics = metrics
        self.lease_s = lease_s
        self.batch_size = batch_size
        self.max_in_flight = max_in_flight
        self.policy = policy
        self.clock = clock
        self.in_flight: dict[uuid.UUID, OutboxRow] = {}
        self.recorder: ResultRecorder[tuple[OutboxRow, Delivery]] = ResultRecorder(self._record)
        self._batches: set[asyncio.Task[None]] = set()
        self.stopping = False

    # -- claim and send ---------------------------------------------------------------------
    async def send_ready(self) -> int:
        """Claim what is ready and start sending it (each batch records its own results)."""
        claimed = 0
        while not self.stopping:
            room = min(self.batch_size, self.max_in_flight - len(self.in_flight))
            if room <= 0:
                break  # a finishing batch wakes us
            rows = await self.db.rows(
                "claim_outbox",
                {
                    "worker": self.db.worker_id,
                    "limit": room,
                    "lease_s": self.lease_s,
                    "kinds": list(KINDS),
                },
            )
            batch = [OutboxRow(**row) for row in rows]
            for row in batch:
                self.in_flight[row.outbox_id] = row
            self.metrics.outbox_claimed.inc(len(batch))
            claimed += len(batch)
            if batch:
                task = asyncio.create_task(self._run_batch(batch))
                self._batches.add(task)
                task.add_done_callback(self._batches.discard)
            if len(batch) < room:
                break
        return claimed

    async def _run_batch(self, rows: Sequence[OutboxRow]) -> None:
        await asyncio.gather(*(self._send_and_record(row) for row in rows))
        await self.recorder.flushed()
        self.wake()  # a retry may be due soon, room was made: look again

    async def _send_and_record(self, row: OutboxRow) -> None:
        started = self.clock()
        try:
            delivery = await self.notifiers.deliver(
                str(row.outbox_id),
                row.channel,
                row.destination,
                row.message,
                str(row.alert_id) if row.alert_id else None,
            )
        except Exception as error:  # any surprise is a retry, never a lost alert
            log.exception("alert send raised; will retry", extra=row.ids)
            delivery = Delivery(
                str(row.channel), Outcome.RETRY, 0, type(error).__name__, detail=str(error)
            )
        self.metrics.outbox_lateness.observe(max(0.0, started - row.send_at.timestamp()))
        self.metrics.outbox_messages.labels(str(row.channel), delivery.outcome.value).inc()
        if log.isEnabledFor(logging.INFO):
            log.info(
                "alert message %s",
                delivery.outcome.value,
                extra={
                    **row.ids,
                    "status": delivery.status,
                    "reason": delivery.reason,
                    "attempt": row.attempts,
                },
            )
        self.recorder.add((row, delivery))

    async def _record(self, done: Sequence[tuple[OutboxRow, Delivery]]) -> None:
        payload = [result_json(row, delivery, self.policy) for row, delivery in done]
        lease_end = min(
            self.in_flight.get(row.outbox_id, row).locked_until.timestamp() for row, _ in done
        )
        try:
            rows = await record_while_leased(
                lambda: self.db.rows(
                    "record_outbox_results",
                    {"worker": self.db.worker_id, "results": Jsonb(payload)},
                ),
                lease_end,
                clock=self.clock,
                on_error=self.metrics.db_errors.inc,
            )
        finally:
            for row, _ in done:
                self.in_flight.pop(row.outbox_id, None)
        if rows is None:
            log.error(
                "could not record alert results before the lease ran out; they will be sent again",
                extra={"rows": len(done)},
            )
            return
        by_id = {row.outbox_id: row for row, _ in done}
        for item in rows:
            self.metrics.outbox_results.labels(item["result"]).inc()
            if item["result"] in ("lost_lease", "failed", "disabled"):
                log.warning("alert message %s", item["result"], extra=by_id[item["outbox_id"]].ids)

    async def seconds_to_next(self) -> float:
        [row] = await self.db.rows("next_outbox_at", {})
        return self.wait_for(row["next_at"], row["db_now"])

    # -- leases -------------------------------------------------------------------------------
    async def renew_leases(self) -> None:
        """Extend the leases of rows whose sends are running (the loop calls it every lease/3)."""
        ids = list(self.in_flight)
        if not ids:
            return
        rows = await self.db.rows(
            "renew_outbox_leases",
            {"worker": self.db.worker_id, "ids": ids, "lease_s": self.lease_s},
        )
        until = dt.datetime.fromtimestamp(self.clock() + self.lease_s, dt.UTC)
        for item in rows:
            row = self.in_flight.get(item["renew_outbox_leases"])
            if row is not None:
                self.in_flight[row.outbox_id] = dataclasses.replace(row, locked_until=until)

    async def shutdown(self, grace_s: float) -> None:
        """Stop claiming; let running sends finish (bounded); record them; give back the rest."""
        self.stopping = True
        if self._batches:
            _, pending = await asyncio.wait(list(self._batches), timeout=grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await asyncio.wait_for(self.recorder.flushed(), 5.0)
            released = await asyncio.wait_for(
                self.db.rows("release_outbox_leases", {"worker": self.db.worker_id, "ids": None}),
                5.0,
            )
        except (psycopg.OperationalError, TimeoutError) as error:
            log.warning(
                "could not give back claimed alert rows; their leases will run out",
                extra={"error": str(error)},
            )
            return
        if released:
            log.info("gave back unsent alert rows", extra={"rows": len(released)})

    async def aclose(self) -> None:
        await self.recorder.aclose()
        await self.notifiers.aclose()
