"""Erasure at ElevenLabs: the outbox's `provider_deletion` rows (issue 24).

`public.erase_relative` / `public.erase_household` write one outbox row per conversation of the
erased relative (kind `provider_deletion`, channel null, `message` = `{"erasure_id",
"conversation_id"}`). This module claims such rows, asks ElevenLabs to delete each one
(`DELETE {base}/v1/convai/conversations/{conversation_id}`, header `xi-api-key`) and records
the answers with `public.record_outbox_results`, so a crash or an outage only delays the
deletion: the row stays queued (retry) until ElevenLabs answers.

Classification (the `outcome` of record_outbox_results):
- 200/204 → `delivered` (deleted); 404 → `delivered` too (ElevenLabs holds nothing under that
  id any more: nothing is left to delete), reason `not_found`;
- 429, 5xx, connection errors and timeouts → `retry` (Retry-After honoured);
- 401/403 → `config_fault` (the API key: retried, the household told once);
- other 4xx → `our_bug`.

What it logs: outbox ids, HTTP statuses and counts only; never a conversation id, a name or
a transcript (the conversation id is the key to the transcript at ElevenLabs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from python_worker.push.retry import RetryPolicy, parse_retry_after
from python_worker.worker.db import WorkerDatabase
from python_worker.worker.duty import PolledDuty

log = logging.getLogger(__name__)

KIND = "provider_deletion"
DELETE_PATH = "/v1/convai/conversations/{conversation_id}"


@dataclass(frozen=True)
class DeletionResult:
    """One row's answer, in record_outbox_results' shape."""

    outbox_id: str
    outcome: str
    status: int
    reason: str
    retry_after_s: float | None

    def as_json(self) -> dict[str, Any]:
        """The object record_outbox_results expects (no conversation id in `detail`)."""
        return {
            "outbox_id": self.outbox_id,
            "outcome": self.outcome,
            "status": self.status,
            "reason": self.reason,
            "message_id": None,
            "retry_after_s": self.retry_after_s,
            "detail": f"elevenlabs delete {self.reason}",
        }


def classify(status: int) -> tuple[str, str]:
    """(outcome, reason) for an HTTP status of the DELETE."""
    if status in (200, 204):
        return "delivered", "deleted"
    if status == 404:
        return "delivered", "not_found"
    if status in (401, 403):
        return "config_fault", f"http_{status}"
    if status == 429 or status >= 500:
        return "retry", f"http_{status}"
    return "our_bug", f"http_{status}"


def delete_one(
    client: httpx.Client,
    base_url: str,
    api_key: str,
    row: Mapping[str, Any],
    policy: RetryPolicy,
) -> DeletionResult:
    """Ask ElevenLabs to delete one claimed row's conversation."""
    outbox_id = str(row["outbox_id"])
    conversation = (row.get("message") or {}).get("conversation_id")
    if not isinstance(conversation, str) or not conversation:
        return DeletionResult(outbox_id, "our_bug", 0, "no_conversation_id", None)
    url = base_url.rstrip("/") + DELETE_PATH.format(conversation_id=quote(conversation, safe=""))
    attempts = int(row.get("attempts") or 1)
    try:
        response = client.delete(url, headers={"xi-api-key": api_key})
    except httpx.HTTPError as error:
        return DeletionResult(
            outbox_id, "retry", 0, type(error).__name__, policy.delay(attempts, None)
        )
    outcome, reason = classify(response.status_code)
    retry_after = None
    if outcome in ("retry", "config_fault"):
        retry_after = policy.delay(attempts, parse_retry_after(response.headers.get("retry-after")))
    return DeletionResult(outbox_id, outcome, response.status_code, reason, retry_after)


def claim(conn: psycopg.Connection[Any], worker: str, limit: int = 50) -> list[dict[str, Any]]:
    """Claim due provider_deletion rows (the worker's presence lock is registered first)."""
    conn.execute("select public.register_worker(%s)", [worker])
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            "select outbox_id, attempts, message from public.claim_outbox("
            "p_worker => %s, p_limit => %s, p_lease => interval '60 seconds', p_kinds => %s)",
            [worker, limit, [KIND]],
        )
        return cursor.fetchall()


def record(
    conn: psycopg.Connection[Any], worker: str, results: Sequence[DeletionResult]
) -> dict[str, str]:
    """Record the answers; {outbox_id: sent|retry|failed|lost_lease|...}."""
    if not results:
        return {}
    with conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(
            "select outbox_id, result from public.record_outbox_results("
            "p_worker => %s, p_results => %s)",
            [worker, Jsonb([r.as_json() for r in results])],
        )
        return {str(r["outbox_id"]): str(r["result"]) for r in cursor.fetchall()}


def run_once(
    conn: psycopg.Connection[Any],
    client: httpx.Client,
    *,
    base_url: str,
    api_key: str,
    worker: str,
    limit: int = 50,
    policy: RetryPolicy | None = None,
) -> dict[str, str]:
    """Claim, delete at ElevenLabs and record one batch; {outbox_id: result}."""
    policy = policy or RetryPolicy()
    rows = claim(conn, worker, limit)
    if not rows:
        return {}
    results = [delete_one(client, base_url, api_key, row, policy) for row in rows]
    recorded = record(conn, worker, results)
    log.info(
        "provider deletions recorded",
        extra={
            "rows": len(results),
            "statuses": sorted({r.status for r in results}),
            "results": sorted(set(recorded.values())),
        },
    )
    return recorded


class ProviderDeletions(PolledDuty):
    """The worker's duty for `provider_deletion` rows, beside the alerts one (outbox.py).

    Same machinery as the alerts: `claim_outbox` on the process's lease owner and presence
    lock (only this kind, so the two duties never race), the same NOTIFY hints through
    `wake()`, `next_outbox_at()` as the timer. Each claimed row goes to `delete_one` (in a
    thread: the sender is synchronous, and erasures are rare). Without ElevenLabs settings the
    rows stay queued and the log says so once: a configuration fault, not a crash.
    """

    name = "provider deletions"

    def __init__(
        self,
        db: WorkerDatabase,
        *,
        base_url: str,
        api_key: str | None,
        lease_s: float,
        poll_interval_s: float,
        batch_size: int | None = None,
        policy: RetryPolicy | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__(poll_interval_s=poll_interval_s)
        self.db = db
        self.base_url = base_url
        self.api_key = api_key
        self.lease_s = lease_s
        # Rows per claim: as many as can each take the whole timeout within half the lease
        # (it is not renewed), so no claimed row waits past its lease; erasures are rare.
        self.batch_size = batch_size or max(1, int(lease_s // (2 * timeout_s)))
        self.policy = policy or RetryPolicy()
        self.stopping = False
        self._warned = False
        self._client = httpx.Client(timeout=timeout_s)

    async def send_ready(self) -> int:
        """Claim due deletions, ask ElevenLabs for each, record the answers."""
        if not self.api_key:
            if not self._warned:
                self._warned = True
                self.log.warning(
                    "ELEVENLABS_API_KEY is not set: provider deletions stay queued",
                    extra={"kind": KIND},
                )
            return 0
        claimed = 0
        while not self.stopping:
            rows = await self.db.rows(
                "claim_outbox",
                {
                    "worker": self.db.worker_id,
                    "limit": self.batch_size,
                    "lease_s": self.lease_s,
                    "kinds": [KIND],
                },
            )
            if not rows:
                break
            claimed += len(rows)
            # Each answer is recorded at once, before the next DELETE may use its timeout.
            results: list[str] = []
            statuses: set[int] = set()
            for row in rows:
                result = await asyncio.to_thread(
                    delete_one, self._client, self.base_url, self.api_key, row, self.policy
                )
                recorded = await self.db.rows(
                    "record_outbox_results",
                    {"worker": self.db.worker_id, "results": Jsonb([result.as_json()])},
                )
                statuses.add(result.status)
                results.extend(str(r["result"]) for r in recorded)
            self.log.info(
                "provider deletions recorded",
                extra={
                    "rows": len(rows),
                    "statuses": sorted(statuses),
                    "results": sorted(set(results)),
                },
            )
            if len(rows) < self.batch_size:
                break
        return claimed

    async def seconds_to_next(self) -> float:
        """Until the next outbox row may go (any kind: the query is shared), at most the poll."""
        if not self.api_key:
            return self.poll_interval_s
        [row] = await self.db.rows("next_outbox_at", {})
        return self.wait_for(row["next_at"], row["db_now"])

    def stop(self) -> None:
        """Claim nothing more (rows held are given back with the alerts' release)."""
        self.stopping = True

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()
