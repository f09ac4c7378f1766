"""The incoming-call payloads (flutter_callkit_incoming) and their size limits."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest

from python_worker.push.outcomes import PayloadTooLarge
from python_worker.push.payloads import (
    APNS_VOIP_LIMIT,
    FCM_DATA_LIMIT,
    IncomingCall,
    apns_alert_payload,
    apns_voip_payload,
    fcm_call_message,
    fcm_data,
    fcm_notice_message,
)
from tests.push_fixtures import incoming_call


def test_callkit_params_use_the_session_id_and_milliseconds() -> None:
    session = uuid.uuid4()
    expires = dt.datetime(2031, 1, 6, 9, 31, 15, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    call = incoming_call(
        session_id=session, ring_seconds=45, expires_at=expires, extra={"queue_id": "q1"}
    )
    params = call.callkit_params()
    assert params["id"] == str(session)
    assert params["type"] == 0
    assert params["duration"] == 45_000
    assert params["expires_at"] == "2031-01-06T08:31:15Z"  # always UTC
    assert params["extra"] == {"call_session_id": str(session), "queue_id": "q1"}
    assert params["api_base"] == "https://api.callpanion.test"


def test_every_push_of_a_session_carries_the_same_call_id() -> None:
    call = incoming_call()
    voip = json.loads(apns_voip_payload(call))
    data = fcm_data(call)
    assert voip["id"] == data["id"] == str(call.session_id)
    assert voip["aps"] == {}


def test_fcm_data_values_are_all_strings() -> None:
    data = fcm_data(incoming_call())
    assert all(isinstance(v, str) for v in data.values())
    assert data["type"] == "0"
    assert json.loads(data["extra"])["call_session_id"] == data["id"]


def test_fcm_message_is_data_only_high_priority_with_the_ring_window_as_ttl() -> None:
    message = fcm_call_message(incoming_call(ring_seconds=30), "tok")
    assert set(message) == {"token", "data", "android"}  # no `notification`: data-only
    assert message["android"] == {"priority": "high", "ttl": "30s"}


def test_oversized_fcm_data_names_the_limit() -> None:
    call = incoming_call(caller_name="x" * FCM_DATA_LIMIT)
    with pytest.raises(
        PayloadTooLarge, match=r"FCM data payload is \d+ bytes, over the 4096-byte limit"
    ) as info:
        fcm_data(call)
    assert info.value.limit == FCM_DATA_LIMIT


def test_oversized_voip_payload_names_the_limit() -> None:
    call = incoming_call(handle="h" * APNS_VOIP_LIMIT)
    with pytest.raises(PayloadTooLarge, match="over the 5120-byte limit"):
        apns_voip_payload(call)


def test_voip_payload_fits_between_the_two_limits() -> None:
    # 4,500 bytes is too much for FCM data and fine for a VoIP push.
    call = incoming_call(handle="h" * 4500)
    assert FCM_DATA_LIMIT < len(apns_voip_payload(call)) <= APNS_VOIP_LIMIT
    with pytest.raises(PayloadTooLarge):
        fcm_data(call)


def test_alerts_are_regular_pushes_with_an_alert() -> None:
    session = uuid.uuid4()
    alert = json.loads(
        apns_alert_payload(
            "call_cancelled", "Call cancelled", "The 09:30 call was cancelled", session
        )
    )
    assert alert["aps"]["alert"] == {
        "title": "Call cancelled",
        "body": "The 09:30 call was cancelled",
    }
    assert (alert["kind"], alert["id"]) == ("call_cancelled", str(session))
    notice = fcm_notice_message("missed_call", "Missed call", "Mum did not answer", session, "tok")
    assert notice["data"] == {
        "kind": "missed_call",
        "id": str(session),
        "title": "Missed call",
        "body": "Mum did not answer",
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("ring_seconds", 0, "ring_seconds must be positive"),
        ("expires_at", dt.datetime(2031, 1, 6, 9, 31), "expires_at must be timezone-aware"),
    ],
)
def test_incoming_call_rejects_bad_fields(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        incoming_call(**{field: value})


def test_payload_is_compact_json() -> None:
    call = IncomingCall(uuid.uuid4(), "CallPanion", "Mum", 45, dt.datetime.now(dt.UTC), "https://x")
    assert b" " not in apns_voip_payload(call).replace(b"CallPanion", b"")
