"""The dispatcher's result mapping: claimed row -> push -> classified result, for one row.

`Dispatcher._send_one` with an injected clock and no database (the pool is never opened):
when a row is sent or given back, what a payload that is too large or a surprise exception
becomes, what is counted, and the push built from the row's payload at its edges (issue 17).
The senders are real (`Senders` with no provider configured, or an ApnsSender whose payload
check refuses before any connection); one stand-in provider raises, which nothing real can
be made to do on purpose.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import uuid
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from python_worker.push.apns import ApnsSender
from python_worker.push.outcomes import Outcome, SendResult
from python_worker.push.payloads import IncomingCall
from python_worker.worker.db import ClaimedRow, WorkerDatabase
from python_worker.worker.dispatcher import (
    DEFAULT_RING_SECONDS,
    CallText,
    Dispatcher,
    Senders,
    incoming_call,
    result_json,
)
from python_worker.worker.metrics import Metrics
from tests.unit.worker.test_worker_units import NOW, claimed

TEXT = CallText("CallPanion", "https://api.callpanion.test")


class Raising(Senders):
    """A provider that fails in a way no real one can be made to (the 'any surprise' path)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(None, None)
        self.error = error
        self.calls: list[IncomingCall] = []

    async def send(self, row: ClaimedRow, call: IncomingCall) -> SendResult:
        self.calls.append(call)
        raise self.error


def dispatcher(senders: Senders, clock: Callable[[], float]) -> Dispatcher:
    # The pool is created closed and never opened: _send_one does not touch the database.
    db = WorkerDatabase("postgresql://127.0.0.1:1/unused", None, "w-test")
    return Dispatcher(db, senders, Metrics(), TEXT, lease_s=30.0, clock=clock)


def sample(d: Dispatcher, name: str, **labels: str) -> float | None:
    return d.metrics.registry.get_sample_value(name, labels)


def apns_sender() -> ApnsSender:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ApnsSender(pem, "KEYID12345", "TEAMID1234", "com.example.app", host="127.0.0.1", port=1)


def test_an_unconfigured_provider_is_a_configuration_fault_naming_the_variable() -> None:
    d = dispatcher(Senders(None, None), lambda: NOW.timestamp())
    apns = asyncio.run(d._send_one(claimed(provider="apns")))
    fcm = asyncio.run(d._send_one(claimed(provider="fcm", platform="android")))
    assert apns == SendResult(
        "apns",
        Outcome.CONFIG_FAULT,
        0,
        "not_configured",
        detail="apns is not configured on this worker (set APNS_KEY_FILE)",
    )
    assert fcm == SendResult(
        "fcm",
        Outcome.CONFIG_FAULT,
        0,
        "not_configured",
        detail="fcm is not configured on this worker (set FCM_SERVICE_ACCOUNT_FILE)",
    )
    assert sample(d, "callpanion_pushes_total", provider="fcm", outcome="config_fault") == 1.0


@pytest.mark.parametrize("provider", ["pigeon", "", "aaa", "apnsx", "ffff", "zzz"])
def test_an_unknown_provider_is_our_bug(provider: str) -> None:
    # Names sorting before, between and after "apns" and "fcm": only those two are providers.
    d = dispatcher(Senders(None, None), lambda: NOW.timestamp())
    result = asyncio.run(d._send_one(claimed(provider=provider)))
    assert result == SendResult(provider, Outcome.OUR_BUG, 0, "unknown_provider")


def test_a_payload_too_large_is_our_bug_and_nothing_is_sent() -> None:
    sender = apns_sender()
    d = dispatcher(Senders(None, sender), lambda: NOW.timestamp())
    row = claimed(payload={"title": "t" * 6000, "ring_timeout_ms": 30000})
    result = asyncio.run(d._send_one(row))
    assert result is not None
    assert (result.provider, result.outcome, result.status, result.reason) == (
        "apns",
        Outcome.OUR_BUG,
        0,
        "payload_too_large",
    )
    assert re.fullmatch(
        r"APNs VoIP payload is 6\d{3} bytes, over the 5120-byte limit", result.detail or ""
    )
    assert sender.connections_opened == 0
    assert sample(d, "callpanion_pushes_total", provider="apns", outcome="our_bug") == 1.0


@pytest.mark.parametrize(("attempts", "low", "high"), [(1, 0.5, 1.0), (4, 4.0, 8.0)])
def test_a_surprise_exception_is_a_retry_after_the_backoff_of_that_attempt(
    attempts: int, low: float, high: float
) -> None:
    senders = Raising(RuntimeError("boom"))
    d = dispatcher(senders, lambda: NOW.timestamp())
    result = asyncio.run(d._send_one(claimed(provider_attempts=attempts)))
    assert result is not None
    assert (result.provider, result.outcome, result.status, result.reason, result.detail) == (
        "apns",
        Outcome.RETRY,
        0,
        "RuntimeError",
        "boom",
    )
    assert result.retry_after_s is not None
    assert low <= result.retry_after_s <= high
    assert sample(d, "callpanion_pushes_total", provider="apns", outcome="retry") == 1.0


def test_the_push_is_built_at_the_moment_it_is_sent_and_lateness_counted() -> None:
    senders = Raising(RuntimeError("x"))
    late = NOW + dt.timedelta(seconds=2.5)
    d = dispatcher(senders, late.timestamp)
    asyncio.run(d._send_one(claimed()))
    [call] = senders.calls
    assert call.expires_at == late + dt.timedelta(seconds=30)  # the ring window from now
    assert sample(d, "callpanion_push_lateness_seconds_sum") == pytest.approx(2.5)


def test_a_row_sent_a_moment_early_counts_no_negative_lateness() -> None:
    # The clock says 1 ms before not_before (rows are claimed ahead): the row sleeps 1 ms.
    early = NOW - dt.timedelta(milliseconds=1)
    d = dispatcher(Raising(RuntimeError("x")), early.timestamp)
    assert asyncio.run(d._send_one(claimed())) is not None
    assert sample(d, "callpanion_push_lateness_seconds_sum") == 0.0


@pytest.mark.parametrize("ahead_s", [5.0, 0.5])
def test_shutdown_gives_back_a_row_still_waiting_but_sends_one_already_due(
    ahead_s: float,
) -> None:
    waiting = dispatcher(
        Raising(RuntimeError("x")), (NOW - dt.timedelta(seconds=ahead_s)).timestamp
    )
    waiting.stop()
    assert asyncio.run(waiting._send_one(claimed())) is None
    for late_s in (0.0, 5.0):  # due this instant, or overdue: it goes out
        due = dispatcher(Raising(RuntimeError("x")), (NOW + dt.timedelta(seconds=late_s)).timestamp)
        due.stop()
        assert asyncio.run(due._send_one(claimed())) is not None


def test_a_dead_token_is_counted_per_provider() -> None:
    class Dead(Senders):
        async def send(self, row: ClaimedRow, call: IncomingCall) -> SendResult:
            return SendResult(row.provider, Outcome.TOKEN_DEAD, 410, "Unregistered")

    d = dispatcher(Dead(None, None), NOW.timestamp)
    asyncio.run(d._send_one(claimed()))
    assert sample(d, "callpanion_tokens_invalidated_total", provider="apns") == 1.0
    assert sample(d, "callpanion_tokens_invalidated_total", provider="fcm") is None


# -- the push built from a claimed row, at its edges -------------------------------------------


@pytest.mark.parametrize(
    ("ring_timeout_ms", "seconds"),
    [
        (30000, 30),
        (1499, 1),
        (1500, 2),
        (400, 1),  # never less than a second
        (0, 1),
        ("30000", DEFAULT_RING_SECONDS),  # not an integer: the schedule default
        (None, DEFAULT_RING_SECONDS),
    ],
)
def test_the_ring_window_comes_from_the_payload_in_whole_seconds(
    ring_timeout_ms: object, seconds: int
) -> None:
    call = incoming_call(claimed(payload={"ring_timeout_ms": ring_timeout_ms}), TEXT, NOW)
    assert call.ring_seconds == seconds
    assert call.expires_at == NOW + dt.timedelta(seconds=seconds)
    assert DEFAULT_RING_SECONDS == 45


@pytest.mark.parametrize(
    ("payload", "handle"),
    [
        ({"title": "Morning call", "household_name": "The Testers"}, "Morning call"),
        ({"title": "", "household_name": "The Testers"}, "The Testers"),
        ({}, "CallPanion"),
    ],
)
def test_the_handle_is_the_title_else_the_household_else_the_caller(
    payload: dict[str, object], handle: str
) -> None:
    assert incoming_call(claimed(payload=payload), TEXT, NOW).handle == handle


def test_a_push_sent_before_its_send_at_rings_until_send_at_plus_the_window() -> None:
    row = claimed(send_at=NOW + dt.timedelta(seconds=1))
    call = incoming_call(row, TEXT, NOW)
    assert call.expires_at == NOW + dt.timedelta(seconds=31)


def test_the_push_is_the_whole_call_description() -> None:
    row = claimed()
    assert incoming_call(row, TEXT, NOW) == IncomingCall(
        session_id=row.call_session_id,
        caller_name="CallPanion",
        handle="Morning call",
        ring_seconds=30,
        expires_at=NOW + dt.timedelta(seconds=30),
        api_base="https://api.callpanion.test",
        household_id=row.household_id,
        relative_id=row.relative_id,
        relative_name="Nan",  # the queue snapshot's
        extra={"household_id": str(row.household_id), "attempt": "2"},
    )


def test_result_json_carries_every_field_of_the_result() -> None:
    row = claimed(provider="fcm", push_token="fcm-tok")
    message = uuid.uuid4().hex
    result = SendResult("fcm", Outcome.RETRY, 503, "UNAVAILABLE", message, 2.5, "later")
    assert result_json(row, result) == {
        "queue_id": str(row.queue_id),
        "outcome": "retry",
        "provider": "fcm",
        "token": "fcm-tok",
        "status": 503,
        "reason": "UNAVAILABLE",
        "message_id": message,
        "retry_after_s": 2.5,
        "detail": "later",
    }


def test_each_push_is_logged_with_its_ids_and_lateness(caplog: pytest.LogCaptureFixture) -> None:
    d = dispatcher(Senders(None, None), (NOW + dt.timedelta(seconds=0.25)).timestamp)
    row = claimed(provider_attempts=3)
    with caplog.at_level(logging.INFO, logger="callpanion.dispatch"):
        asyncio.run(d._send_one(row))
    [record] = caplog.records
    assert record.getMessage() == "push config_fault"
    fields = {k: getattr(record, k) for k in ("queue_id", "provider", "status", "reason")}
    assert fields == {
        "queue_id": str(row.queue_id),
        "provider": "apns",
        "status": 0,
        "reason": "not_configured",
    }
    assert (record.lateness_ms, record.attempt) == (250.0, 3)  # type: ignore[attr-defined]
