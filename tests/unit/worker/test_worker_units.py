"""The worker's pure pieces: settings, the push built from a claimed row, wake-up arithmetic."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Sequence

import pytest

from python_worker.errors import CallPanionError
from python_worker.push.outcomes import Outcome, SendResult
from python_worker.worker.db import ClaimedRow, NextWork
from python_worker.worker.dispatcher import CallText, incoming_call, result_json
from python_worker.worker.recorder import ResultRecorder
from python_worker.worker.settings import worker_settings
from python_worker.worker.wakeups import parse_hint

NOW = dt.datetime(2031, 1, 6, 9, 0, tzinfo=dt.UTC)


def claimed(**overrides: object) -> ClaimedRow:
    values: dict[str, object] = {
        "queue_id": uuid.uuid4(),
        "call_session_id": uuid.uuid4(),
        "household_id": uuid.uuid4(),
        "relative_id": uuid.uuid4(),
        "attempt": 2,
        "provider_attempts": 1,
        "device_id": uuid.uuid4(),
        "platform": "ios",
        "provider": "apns",
        "push_token": "ab" * 32,
        "send_at": NOW,
        "not_before": NOW,
        "deadline_at": NOW + dt.timedelta(minutes=2),
        "payload": {
            "relative_name": "Nan",
            "household_name": "The Testers",
            "title": "Morning call",
            "ring_timeout_ms": 30000,
        },
        "locked_until": NOW + dt.timedelta(seconds=30),
    }
    values.update(overrides)
    return ClaimedRow(**values)  # type: ignore[arg-type]


def test_the_push_rings_for_the_schedules_window_from_now_with_the_session_id() -> None:
    row = claimed()
    call = incoming_call(
        row, CallText("CallPanion", "https://api.example"), NOW + dt.timedelta(seconds=5)
    )
    assert call.session_id == row.call_session_id
    assert (call.caller_name, call.handle, call.ring_seconds) == ("CallPanion", "Morning call", 30)
    assert call.expires_at == NOW + dt.timedelta(seconds=35)
    assert call.api_base == "https://api.example"
    assert call.extra == {"household_id": str(row.household_id), "attempt": "2"}


def test_a_payload_without_title_or_ring_time_falls_back_to_household_and_45_s() -> None:
    call = incoming_call(
        claimed(payload={"household_name": "The Testers"}), CallText("CP", "x"), NOW
    )
    assert (call.handle, call.ring_seconds) == ("The Testers", 45)


def test_a_resend_carries_the_fixed_window_and_rings_only_for_what_is_left() -> None:
    row = claimed(ring_expires_at=NOW + dt.timedelta(seconds=30))
    first = incoming_call(row, CallText("CP", "x"), NOW)
    again = incoming_call(row, CallText("CP", "x"), NOW + dt.timedelta(seconds=12.5))
    assert first.expires_at == again.expires_at == NOW + dt.timedelta(seconds=30)
    assert (first.ring_seconds, again.ring_seconds) == (30, 18)
    late = incoming_call(row, CallText("CP", "x"), NOW + dt.timedelta(seconds=40))
    assert (late.expires_at, late.ring_seconds) == (NOW + dt.timedelta(seconds=30), 1)


def test_result_json_names_the_token_the_push_went_to() -> None:
    row = claimed()
    result = SendResult("apns", Outcome.TOKEN_DEAD, 410, "Unregistered", detail="gone")
    assert result_json(row, result) == {
        "queue_id": str(row.queue_id),
        "outcome": "token_dead",
        "provider": "apns",
        "token": row.push_token,
        "status": 410,
        "reason": "Unregistered",
        "message_id": None,
        "retry_after_s": None,
        "detail": "gone",
    }


@pytest.mark.parametrize(
    ("send_in", "lease_in", "expected"),
    [
        (None, None, None),
        (10.0, None, 9.0),  # a second early: claim-ahead
        (None, 3.0, 3.001),  # just after the lease's last instant
        (10.0, 3.0, 3.001),
        (-5.0, None, -6.0),  # overdue: at once (the loop never sleeps less than 20 ms)
    ],
)
def test_next_work_waits_for_the_claim_ahead_or_the_lease(
    send_in: float | None, lease_in: float | None, expected: float | None
) -> None:
    at = {
        k: None if v is None else NOW + dt.timedelta(seconds=v)
        for k, v in (("s", send_in), ("l", lease_in))
    }
    wait = NextWork(at["s"], at["l"], NOW).seconds_until(1.0)
    assert wait == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"event":"queued","count":1,"earliest":"2031-01-06T09:00:00+00:00"}', NOW),
        ('{"event":"queued","earliest":"2031-01-06T09:00:00"}', NOW),
        ('{"event":"due","count":0,"earliest":null}', None),
        ("not json", None),
        ('{"earliest":"yesterday"}', None),
        ("[1, 2]", None),
    ],
)
def test_notify_payloads_become_hints(payload: str, expected: dt.datetime | None) -> None:
    assert parse_hint(payload) == expected


def test_worker_settings_defaults() -> None:
    settings = worker_settings({"CALLPANION_WORKER_DATABASE_URL": "postgresql://x/y"})
    assert (settings.wakeup, settings.batch_size, settings.lease_s) == ("notify", 1000, 30)
    assert (settings.claim_ahead_s, settings.poll_interval_s) == (1.0, 5.0)
    assert (settings.http_host, settings.http_port, settings.db_role) == (
        "127.0.0.1",
        9108,
        "service_role",
    )
    assert settings.database_url == "postgresql://x/y"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CALLPANION_LEASE_SECS": "2"}, "CALLPANION_LEASE_SECS must be between 5 and 3600, got 2"),
        (
            {"CALLPANION_CLAIM_AHEAD_MS": "-1"},
            "CALLPANION_CLAIM_AHEAD_MS must be between 0 and 60000, got -1",
        ),
        (
            {"CALLPANION_SHUTDOWN_GRACE_SECS": "1e9"},
            "CALLPANION_SHUTDOWN_GRACE_SECS must be between 0 and 600, got 1e9",
        ),
        (
            {"CALLPANION_LOG_LEVEL": "chatty"},
            "CALLPANION_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got 'CHATTY'",
        ),
        ({"CALLPANION_WORKER_ID": " "}, "CALLPANION_WORKER_ID must be 1 to 200 characters"),
    ],
)
def test_bad_worker_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(CallPanionError) as caught:
        worker_settings({"CALLPANION_WORKER_DATABASE_URL": "postgresql://x/y", **env})
    assert str(caught.value) == message


def test_the_recorder_records_in_small_batches_in_order_and_flushed_waits_for_them() -> None:
    batches: list[list[int]] = []

    async def record(items: Sequence[int]) -> None:
        batches.append(list(items))

    async def go() -> None:
        recorder: ResultRecorder[int] = ResultRecorder(record, interval_s=0.01, max_rows=2)
        for item in range(5):
            recorder.add(item)
        await recorder.flushed()
        assert recorder.pending == 0
        recorder.add(5)
        await recorder.flushed()
        await recorder.aclose()

    asyncio.run(go())
    assert batches == [[0, 1], [2, 3], [4], [5]]


def test_a_failing_record_does_not_wedge_the_recorder() -> None:
    calls: list[list[int]] = []

    async def record(items: Sequence[int]) -> None:
        calls.append(list(items))
        if len(calls) == 1:
            raise RuntimeError("the database said no")

    async def go() -> None:
        recorder: ResultRecorder[int] = ResultRecorder(record, interval_s=0.01)
        recorder.add(1)
        await recorder.flushed()  # given up on (the lease brings the row back), not stuck
        recorder.add(2)
        await recorder.flushed()

    asyncio.run(go())
    assert calls == [[1], [2]]
