"""Cancel notices: tell a ringing phone to stop when the family cancelled its call.

`cancel_call()` (SQL, dashboard RPC) leaves a notice in an outbox when the phone may be
ringing. This duty drains it beside the call path, with the same pattern: claim under a
lease, send concurrently, record the batch (compare-and-set on the lease), then sleep until
the next notice may go, a wake-up hint, or the poll interval:

- Android: an FCM data message of type `cancel`;
- iOS: a background push to the app's regular APNs token (never VoIP: a VoIP push must report
  a new call to CallKit, or iOS terminates the app).

A notice not sent within the call's ring window expires in SQL: by then the phone has stopped
ringing by itself. A worker that stops with notices claimed leaves them to their lease.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import uuid
from typing import Any

from psycopg.types.json import Jsonb

from python_worker.push.outcomes import Outcome, SendResult
from python_worker.push.payloads import apns_cancel_payload, fcm_cancel_message
from python_worker.worker.db import RecordResult, WorkerDatabase
from python_worker.worker.dispatcher import Senders, not_configured
from python_worker.worker.duty import PolledDuty

log = logging.getLogger("callpanion.worker.cancels")

#: Notices per claim: cancellations are rare, one batch is plenty.
# equivalent mutant: another batch size sends the same notices, in more or fewer claims.
BATCH_SIZE = 100


class CancelNotices(PolledDuty):
    """Sends the cancel-notice outbox; `wake()` on any queue hint, `run()` as a task."""

    name = "cancel notices"

    def __init__(
        self,
        db: WorkerDatabase,
        senders: Senders,
        *,
        lease_s: float,
        poll_interval_s: float,
    ) -> None:
        super().__init__(poll_interval_s=poll_interval_s)
        self.db = db
        self.senders = senders
        self.lease_s = lease_s
        self.sent = 0

    async def send_ready(self) -> int:
        """Claim, send and record every notice ready now; returns how many were claimed."""
        claimed = 0
        while True:
            rows = await self.db.rows(
                "claim_cancel_notices",
                {"worker": self.db.worker_id, "limit": BATCH_SIZE, "lease_s": self.lease_s},
            )
            if not rows:
                return claimed
            claimed += len(rows)
            results = await asyncio.gather(*(self._send(row) for row in rows))
            recorded = await self.db.rows(
                "record_cancel_results",
                {"worker": self.db.worker_id, "results": Jsonb(results)},
            )
            # equivalent mutant: strict=True: record_cancel_results answers once per notice.
            for row, outcome in zip(rows, recorded, strict=False):
                answer = RecordResult(outcome["result"])
                self.sent += answer is RecordResult.SENT
                log.info(
                    "cancel notice %s",
                    answer.value,
                    extra={
                        "notice_id": str(row["notice_id"]),
                        "call_session_id": str(row["call_session_id"]),
                        "household_id": str(row["household_id"]),
                        "provider": row["provider"],
                    },
                )
            # equivalent mutant: any other test of the count (`<=`, `>`, `==`, `not <`): an
            # extra claim finds nothing, and what a full batch left goes at the next loop.
            if len(rows) < BATCH_SIZE:
                return claimed

    async def _send(self, row: dict[str, Any]) -> dict[str, object]:
        session: uuid.UUID = row["call_session_id"]
        deadline: dt.datetime = row["deadline_at"]
        # No PayloadTooLarge to catch: a cancel is a fixed shape around one UUID (payloads.py),
        # far below every provider's limit (make mutate showed the handler was dead).
        result = await self._push(row, session, deadline)
        return {
            "notice_id": str(row["notice_id"]),
            "outcome": result.outcome.value,
            "provider": result.provider,
            "status": result.status,
            "reason": result.reason,
            "message_id": result.message_id,
            "retry_after_s": result.retry_after_s,
            "detail": result.detail,
        }

    async def _push(
        self, row: dict[str, Any], session: uuid.UUID, deadline: dt.datetime
    ) -> SendResult:
        if row["provider"] == "fcm":
            if self.senders.fcm is None:
                return not_configured("fcm", "FCM_SERVICE_ACCOUNT_FILE")
            ttl = int((deadline - dt.datetime.now(dt.UTC)).total_seconds())
            message = fcm_cancel_message(session, row["push_token"], max(ttl, 1))
            return await self.senders.fcm.send(message, attempt=row["attempts"])
        # equivalent mutant: `<= "apns"`: the outbox's providers are apns and fcm (a check
        # constraint), and fcm is handled above.
        if row["provider"] == "apns":
            if self.senders.apns is None:
                return not_configured("apns", "APNS_KEY_FILE")
            return await self.senders.apns.send_background(
                row["push_token"],
                apns_cancel_payload(session),
                apns_id=row["notice_id"],
                expiration=deadline,
                attempt=row["attempts"],
            )
        return SendResult(row["provider"], Outcome.OUR_BUG, 0, "unknown_provider")

    async def seconds_to_next(self) -> float:
        [row] = await self.db.rows("next_cancel_notice_at", {})
        return self.wait_for(row["next_at"], row["db_now"])
