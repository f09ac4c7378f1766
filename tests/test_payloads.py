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
    app_keys = {
        "sessionId": str(session),
        "householdId": str(call.household_id),
        "relativeId": str(call.relative_id),
        "relativeName": "Mum",
        "callType": "in_app_call",
    }
    assert params == {
        "type": "incoming_call",
        "id": str(session),
        "nameCaller": "CallPanion",
        "handle": "Mum",
        "callkitType": 0,  # flutter_callkit_incoming's call type, off the app's `type`
        "duration": 45_000,
        "expires_at": "2031-01-06T08:31:15Z",  # always UTC
        "api_base": "https://api.callpanion.test",
        **app_keys,
        "extra": {"call_session_id": str(session), "queue_id": "q1", **app_keys},
    }


def test_an_avatar_is_sent_only_when_there_is_one() -> None:
    assert "avatar" not in incoming_call().callkit_params()
    with_avatar = incoming_call(avatar="https://cdn.example/mum.jpg")
    assert fcm_data(with_avatar)["avatar"] == "https://cdn.example/mum.jpg"
    assert json.loads(apns_voip_payload(with_avatar))["extra"]["avatar"] == (
        "https://cdn.example/mum.jpg"
    )


def test_every_push_of_a_session_carries_the_same_call_id() -> None:
    call = incoming_call()
    voip = json.loads(apns_voip_payload(call))
    data = fcm_data(call)
    assert voip["id"] == data["id"] == str(call.session_id)
    assert voip["aps"] == {}


def test_fcm_data_values_are_all_strings() -> None:
    data = fcm_data(incoming_call())
    assert all(isinstance(v, str) for v in data.values())
    assert (data["type"], data["callkitType"], data["duration"]) == ("incoming_call", "0", "45000")
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
    # 4,200 bytes of handle is too much for FCM data and fine for a VoIP push.
    call = incoming_call(handle="h" * 4200)
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
    call = IncomingCall(
        uuid.uuid4(),
        "CallPanion",
        "Mum",
        45,
        dt.datetime.now(dt.UTC),
        "https://x",
        uuid.uuid4(),
        uuid.uuid4(),
        "Mum",
    )
    assert b" " not in apns_voip_payload(call).replace(b"CallPanion", b"")


def test_the_longest_names_we_store_fit_both_limits_with_the_apps_keys() -> None:
    # Names as long as the tables allow (relative 100, schedule title 200 characters), in
    # 4-byte UTF-8, plus an avatar URL: the app's keys (sent twice: flat and in `extra`) fit.
    call = incoming_call(
        handle="\U0001f600" * 200,
        relative_name="\U0001f600" * 100,
        caller_name="C" * 100,
        avatar="https://cdn.example/" + "a" * 500,
        extra={"household_id": str(uuid.uuid4()), "attempt": "5"},
    )
    assert len(apns_voip_payload(call)) <= APNS_VOIP_LIMIT
    data = fcm_data(call)
    assert sum(len(k.encode()) + len(v.encode()) for k, v in data.items()) <= FCM_DATA_LIMIT
