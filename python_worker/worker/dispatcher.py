"""One claimed batch, top to bottom: claimed row -> payload -> provider -> result -> record.

The dispatcher sends every row of a batch at its own send_at (rows are claimed up to a second
ahead), all concurrently over the providers' multiplexed HTTP/2 connections, and records each
result as it comes (recorder.py: small batches, every few tens of milliseconds), so a crash
leaves few pushes sent but unrecorded. A row's lease is renewed while it waits and while its
send runs; a row whose lease is lost before its send starts is not sent (a renewal that does
not return it, or a lease that ran out by this worker's clock because renewals failed: another
worker may own the row now). A result the database refuses (the lease was lost while the send
ran) changes nothing and is counted.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from python_worker.push.apns import ApnsSender
from python_worker.push.fcm import FcmSender
from python_worker.push.outcomes import Outcome, PayloadTooLarge, SendResult
from python_worker.push.payloads import IncomingCall
from python_worker.push.retry import RetryPolicy
from python_worker.worker.db import UNSENT_RESULTS, ClaimedRow, RecordResult, WorkerDatabase
from python_worker.worker.metrics import Metrics
from python_worker.worker.recorder import ResultRecorder, record_while_leased

log = logging.getLogger("callpanion.dispatch")

#: Ring window when a row's payload does not say (the schedule default).
DEFAULT_RING_SECONDS = 45
#: The longest one send may take, whatever the provider does: above the senders' own bounds
#: (token fetch and request, 10 s each), so it only ends a send that something else let hang.
SEND_BOUND_S = 25.0


class Senders:
    """The configured providers; a row for a provider that is not configured is a config fault."""

    def __init__(self, fcm: FcmSender | None, apns: ApnsSender | None) -> None:
        self.fcm = fcm
        self.apns = apns

    async def send(self, row: ClaimedRow, call: IncomingCall) -> SendResult:
        if row.provider == "apns":
            if self.apns is None:
                return not_configured("apns", "APNS_KEY_FILE")
            return await self.apns.send_call(
                call, row.push_token, apns_id=row.queue_id, attempt=row.provider_attempts
            )
        if row.provider == "fcm":
            if self.fcm is None:
                return not_configured("fcm", "FCM_SERVICE_ACCOUNT_FILE")
            return await self.fcm.send_call(call, row.push_token, attempt=row.provider_attempts)
        return SendResult(row.provider, Outcome.OUR_BUG, 0, "unknown_provider")

    async def aclose(self) -> None:
        for sender in (self.fcm, self.apns):
            if sender is not None:
                await sender.aclose()


def _wake(sleeper: asyncio.Future[bool]) -> None:
    if not sleeper.done():
        sleeper.set_result(True)


def not_configured(provider: str, variable: str) -> SendResult:
    """The result for a push whose provider this worker has no settings for."""
    return SendResult(
        provider,
        Outcome.CONFIG_FAULT,
        0,
        "not_configured",
        detail=f"{provider} is not configured on this worker (set {variable})",
    )


@dataclass(frozen=True)
class CallText:
    """What the phone shows and where the app reports back."""

    caller_name: str
    api_base: str


def incoming_call(row: ClaimedRow, text: CallText, now: dt.datetime) -> IncomingCall:
    """The push for a claimed row.

    The ring window is the one the row's first claim fixed (`ring_expires_at`): a re-send
    after a crash carries the same `expires_at` and rings only for what is left of it, so a
    phone that already rang for this CallKit id does not ring longer. Without a fixed window
    (a row claimed by an older claim function) it starts now.
    """
    payload = row.payload
    ring_ms = payload.get("ring_timeout_ms")
    ring_s = max(1, round(ring_ms / 1000)) if isinstance(ring_ms, int) else DEFAULT_RING_SECONDS
    expires_at = row.ring_expires_at or max(now, row.send_at) + dt.timedelta(seconds=ring_s)
    left_s = math.ceil((expires_at - now).total_seconds())
    handle = payload.get("title") or payload.get("household_name") or text.caller_name
    return IncomingCall(
        session_id=row.call_session_id,
        caller_name=text.caller_name,
        handle=str(handle),
        ring_seconds=max(1, min(ring_s, left_s)),
        expires_at=expires_at,
        api_base=text.api_base,
        household_id=row.household_id,
        relative_id=row.relative_id,
        # The queue snapshot's name (phase 1 and retries take it from the relative's row).
        relative_name=str(payload.get("relative_name") or ""),
        extra={"household_id": str(row.household_id), "attempt": str(row.attempt)},
    )


def result_json(row: ClaimedRow, result: SendResult) -> dict[str, Any]:
    """The record_push_results element for one send."""
    return {
        "queue_id": str(row.queue_id),
        "outcome": result.outcome.value,
        "provider": result.provider,
        "token": row.push_token,
        "status": result.status,
        "reason": result.reason,
        "message_id": result.message_id,
        "retry_after_s": result.retry_after_s,
        "detail": result.detail,
    }


class Dispatcher:
    """Claims batches and sends them; every batch records its own results."""

    def __init__(
        self,
        db: WorkerDatabase,
        senders: Senders,
        metrics: Metrics,
        text: CallText,
        *,
        lease_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.senders = senders
        self.metrics = metrics
        self.text = text
        self.lease_s = lease_s
        self.clock = clock
        #: Rows claimed and not yet recorded, by queue id.
        self.in_flight: dict[uuid.UUID, ClaimedRow] = {}
        #: Rows in flight whose lease a renewal did not extend: another worker may hold them.
        self.lost: set[uuid.UUID] = set()
        self.stopping = asyncio.Event()
        #: Rows sleeping until their send_at (see `_sleep`); `stop` wakes them.
        self._sleepers: set[asyncio.Future[bool]] = set()
        #: Called after every batch is recorded (the worker looks again: a fallback is due now).
        self.batch_done: Callable[[], None] = lambda: None
        #: Results on their way to the database, a few tens of milliseconds at most.
        self.recorder: ResultRecorder[tuple[ClaimedRow, SendResult]] = ResultRecorder(self._record)

    def stop(self) -> None:
        """Shutdown: no row that is still waiting for its send_at starts (each is given back)."""
        self.stopping.set()
        for sleeper in self._sleepers:
            if not sleeper.done():
                sleeper.set_result(False)

    async def _sleep(self, delay: float) -> bool:
        """Sleep `delay` seconds: True, or False as soon as `stop` is called (or if it was).

        One future and one timer a row. `asyncio.wait_for(event.wait(), delay)` cost a task,
        a cancellation round trip and an O(n) removal from the event's waiters per row, and
        the rows of a burst all wake at the same moment: about 0.6 s of CPU for 10,000 rows,
        spent exactly when they fall due.
        """
        if self.stopping.is_set():
            return False
        loop = asyncio.get_running_loop()
        sleeper: asyncio.Future[bool] = loop.create_future()
        timer = loop.call_later(delay, _wake, sleeper)
        self._sleepers.add(sleeper)
        try:
            return await sleeper
        finally:
            timer.cancel()
            self._sleepers.discard(sleeper)

    async def claim(self, limit: int, horizon_s: float) -> list[ClaimedRow]:
        started = time.perf_counter()
        rows = await self.db.claim(limit, self.lease_s, horizon_s)
        self.metrics.db_seconds.labels("claim").inc(time.perf_counter() - started)
        for row in rows:
            self.in_flight[row.queue_id] = row
        self.metrics.claimed.inc(len(rows))
        self.metrics.in_flight.set(len(self.in_flight))
        return rows

    async def run_batch(self, rows: Sequence[ClaimedRow]) -> None:
        """Send every row at its send_at, each result recorded as it comes; return once the
        whole batch is recorded (rows not started because of shutdown are given back)."""
        sent = await asyncio.gather(*(self._send_and_record(row) for row in rows))
        unsent = [row.queue_id for row, result in zip(rows, sent, strict=True) if result is None]
        await self.recorder.flushed()
        if unsent:
            await self._release(unsent)
        self.batch_done()

    async def _send_and_record(self, row: ClaimedRow) -> SendResult | None:
        result = await self._send_one(row)
        if result is not None:
            self.recorder.add((row, result))
        return result

    async def _send_one(self, row: ClaimedRow) -> SendResult | None:
        """The provider's classified answer, or None when shutdown came before send_at."""
        due = row.not_before.timestamp()
        delay = due - self.clock()
        if delay > 0 and not await self._sleep(delay):
            return None  # shutting down: give the row back rather than start it
        started = self.clock()
        if self.lease_lost(row.queue_id, started):
            # Another worker may own the row now: sending would ring the phone twice.
            self.metrics.leases_lost.inc()
            log.warning("lease lost before sending; not sent", extra=row.ids)
            return None  # given back if it is still ours (release_leases checks the owner)
        now = dt.datetime.fromtimestamp(started, dt.UTC)
        self.metrics.lateness.observe(max(0.0, started - due))
        # A send never outlives its row's deadline: a provider that hangs is cut off and the
        # row is recorded with the reason (record_push_results expires a retry that would
        # come past the deadline), never left claimed without one.
        bound = min(SEND_BOUND_S, max(0.0, row.deadline_at.timestamp() - started))
        try:
            async with asyncio.timeout(bound):
                result = await self.senders.send(row, incoming_call(row, self.text, now))
        except TimeoutError:
            until = "its deadline" if bound < SEND_BOUND_S else f"{SEND_BOUND_S:g} s"
            result = SendResult(
                row.provider,
                Outcome.RETRY,
                0,
                "no_answer",
                retry_after_s=RetryPolicy().delay(row.provider_attempts),
                detail=f"{row.provider} did not answer within {bound:.1f} s ({until})",
            )
        except PayloadTooLarge as error:
            result = SendResult(
                row.provider, Outcome.OUR_BUG, 0, "payload_too_large", detail=str(error)
            )
        except Exception as error:  # any surprise is a retry, never a lost call
            log.exception("send raised; will retry", extra=row.ids)
            result = SendResult(
                row.provider,
                Outcome.RETRY,
                0,
                type(error).__name__,
                retry_after_s=RetryPolicy().delay(row.provider_attempts),
                detail=str(error),
            )
        self.metrics.pushes.labels(result.provider, result.outcome.value).inc()
        if result.outcome is Outcome.TOKEN_DEAD:
            self.metrics.tokens_invalidated.labels(result.provider).inc()
        if log.isEnabledFor(logging.INFO):  # 10,000 lines a burst: skip building them
            self._log_push(row, result, started - due)
        return result

    def lease_lost(self, queue_id: uuid.UUID, now: float) -> bool:
        """Whether this worker may no longer send the row: a renewal did not return it, or
        its lease has run out by our clock (the renewals failed meanwhile)."""
        if queue_id in self.lost:
            return True
        row = self.in_flight.get(queue_id)
        return row is not None and row.locked_until.timestamp() <= now

    def _forget(self, queue_id: uuid.UUID) -> None:
        self.in_flight.pop(queue_id, None)
        self.lost.discard(queue_id)

    def _log_push(self, row: ClaimedRow, result: SendResult, lateness_s: float) -> None:
        log.info(
            "push %s",
            result.outcome.value,
            extra={
                **row.ids,
                "provider": result.provider,
                "status": result.status,
                "reason": result.reason,
                "lateness_ms": round(lateness_s * 1000, 1),
                "attempt": row.provider_attempts,
            },
        )

    async def _record(self, done: Sequence[tuple[ClaimedRow, SendResult]]) -> None:
        """Record results in one statement, retrying while their leases last."""
        payload = [result_json(row, result) for row, result in done]
        lease_end = min(
            self.in_flight.get(row.queue_id, row).locked_until.timestamp() for row, _ in done
        )
        try:
            started = time.perf_counter()
            recorded = await record_while_leased(
                lambda: self.db.record(payload),
                lease_end,
                clock=self.clock,
                on_error=self.metrics.db_errors.inc,
            )
            if recorded is None:
                log.error(
                    "could not record results before the lease ran out; another worker"
                    " will send these calls again",
                    extra={"rows": len(done)},
                )
                return
            rows = recorded
            self.metrics.db_seconds.labels("record").inc(time.perf_counter() - started)
        finally:
            for row, _ in done:
                self._forget(row.queue_id)
            self.metrics.in_flight.set(len(self.in_flight))
        by_id = {row.queue_id: row for row, _ in done}
        for item in rows:
            self.metrics.results.labels(item.result.value).inc()
            if item.result is RecordResult.RETRY:
                self.metrics.retries.inc()
            if item.result in UNSENT_RESULTS:
                row = by_id[item.queue_id]
                log.warning("push %s", item.result.value, extra=row.ids)

    async def _release(self, ids: Sequence[uuid.UUID]) -> None:
        try:
            released = await self.db.release(ids)
            self.metrics.released.inc(len(released))
            log.info("gave back unsent rows", extra={"rows": len(released)})
        except psycopg.OperationalError as error:
            self.metrics.db_errors.inc()
            log.warning(
                "could not give back unsent rows; their leases will run out",
                extra={"rows": len(ids), "error": str(error)},
            )
        finally:
            for queue_id in ids:
                self._forget(queue_id)
            self.metrics.in_flight.set(len(self.in_flight))

    async def renew_leases(self) -> None:
        """Extend the leases of rows in flight (call every lease/3).

        A row the database does not renew is no longer this worker's (its lease ran out and
        another worker may have claimed it): it is marked lost and is not sent. A row already
        recorded meanwhile is gone from `in_flight` and is left alone.
        """
        ids = list(self.in_flight)
        if ids:
            renewed = set(await self.db.renew(ids, self.lease_s))
            until = dt.datetime.fromtimestamp(self.clock() + self.lease_s, dt.UTC)
            for queue_id in ids:
                row = self.in_flight.get(queue_id)
                if row is None:
                    continue
                if queue_id in renewed:
                    self.in_flight[queue_id] = dataclasses.replace(row, locked_until=until)
                else:
                    # Warned about when its send would start (a row being sent or recorded
                    # right now is not renewed either, and is no news).
                    self.lost.add(queue_id)
