"""The incoming-call payloads (flutter_callkit_incoming) and their size limits."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Callable

import pytest

from python_worker.push.outcomes import PayloadTooLarge
from python_worker.push.payloads import (
    APNS_ALERT_LIMIT,
    APNS_VOIP_LIMIT,
    FCM_DATA_LIMIT,
    IncomingCall,
    apns_alert_payload,
    apns_voip_payload,
    fcm_call_message,
    fcm_data,
    fcm_notice_message,
)
from tests.support.push import incoming_call


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


# -- whole payloads, exactly, and the limits at their last byte (issue 17, items 7 and 8) -----

SESSION = uuid.UUID("8d5a3a4e-5f0b-4c39-9a53-0c8f3f0d2b11")
EXPIRES = dt.datetime(2031, 1, 6, 9, 31, 15, tzinfo=dt.UTC)
HOUSEHOLD = uuid.UUID("0b9f4c1e-2a51-4a8e-b7a4-6b1f0e2d3c41")
RELATIVE = uuid.UUID("5e2d7a90-8c3b-4f61-a0d2-9e4b3c1f7a58")
APP_KEYS = {
    "sessionId": str(SESSION),
    "householdId": str(HOUSEHOLD),
    "relativeId": str(RELATIVE),
    "relativeName": "Nan",
    "callType": "in_app_call",
}


def fixed_call(**overrides: object) -> IncomingCall:
    values: dict[str, object] = {
        "session_id": SESSION,
        "caller_name": "CallPanion",
        "handle": "The Testers",
        "ring_seconds": 45,
        "expires_at": EXPIRES,
        "api_base": "https://api.callpanion.test",
        "household_id": HOUSEHOLD,
        "relative_id": RELATIVE,
        "relative_name": "Nan",
        "extra": {"household_id": "h1", "attempt": "2"},
    }
    values.update(overrides)
    return IncomingCall(**values)  # type: ignore[arg-type]


def test_the_voip_payload_is_exactly_the_call_description() -> None:
    assert json.loads(apns_voip_payload(fixed_call())) == {
        "aps": {},
        "type": "incoming_call",
        "id": str(SESSION),
        "nameCaller": "CallPanion",
        "handle": "The Testers",
        "callkitType": 0,
        "duration": 45000,
        "expires_at": "2031-01-06T09:31:15Z",
        "api_base": "https://api.callpanion.test",
        **APP_KEYS,
        "extra": {
            "call_session_id": str(SESSION),
            "household_id": "h1",
            "attempt": "2",
            **APP_KEYS,
        },
    }


def test_the_fcm_call_message_is_exactly_the_call_description_as_strings() -> None:
    assert fcm_call_message(fixed_call(), "tok-1") == {
        "token": "tok-1",
        "data": {
            "kind": "incoming_call",
            "type": "incoming_call",
            "id": str(SESSION),
            "nameCaller": "CallPanion",
            "handle": "The Testers",
            "callkitType": "0",
            "duration": "45000",
            "expires_at": "2031-01-06T09:31:15Z",
            "api_base": "https://api.callpanion.test",
            **APP_KEYS,
            "extra": (
                f'{{"call_session_id":"{SESSION}","household_id":"h1","attempt":"2",'
                f'"sessionId":"{SESSION}","householdId":"{HOUSEHOLD}",'
                f'"relativeId":"{RELATIVE}","relativeName":"Nan","callType":"in_app_call"}}'
            ),
        },
        "android": {"priority": "high", "ttl": "45s"},
    }


def test_the_alert_push_is_exactly_a_regular_alert_with_its_extra() -> None:
    payload = apns_alert_payload(
        "missed_call", "Missed call", "Nan did not answer", SESSION, {"household_id": "h1"}
    )
    assert json.loads(payload) == {
        "aps": {
            "alert": {"title": "Missed call", "body": "Nan did not answer"},
            "sound": "default",
        },
        "kind": "missed_call",
        "id": str(SESSION),
        "extra": {"household_id": "h1"},
    }
    assert json.loads(apns_alert_payload("k", "t", "b", SESSION))["extra"] == {}


def test_the_fcm_notice_is_exactly_a_high_priority_data_message_to_the_token() -> None:
    assert fcm_notice_message("call_cancelled", "Cancelled", "No call", SESSION, "tok-2") == {
        "token": "tok-2",
        "data": {
            "kind": "call_cancelled",
            "id": str(SESSION),
            "title": "Cancelled",
            "body": "No call",
        },
        "android": {"priority": "high"},
    }


def test_a_one_second_ring_is_allowed() -> None:
    call = fixed_call(ring_seconds=1)
    assert json.loads(apns_voip_payload(call))["duration"] == 1000
    assert fcm_call_message(call, "t")["android"] == {"priority": "high", "ttl": "1s"}


@pytest.mark.parametrize("seconds", [0, -1])
def test_a_ring_of_no_time_is_refused(seconds: int) -> None:
    with pytest.raises(ValueError, match=f"ring_seconds must be positive, got {seconds}"):
        fixed_call(ring_seconds=seconds)


def padded(size_of: Callable[[IncomingCall], int], limit: int) -> IncomingCall:
    """A call whose payload is exactly `limit` bytes (the handle takes up the rest)."""
    base = size_of(fixed_call(handle=""))
    return fixed_call(handle="h" * (limit - base))


def fcm_size(call: IncomingCall) -> int:
    return sum(len(k.encode()) + len(v.encode()) for k, v in fcm_data_unchecked(call).items())


def fcm_data_unchecked(call: IncomingCall) -> dict[str, str]:
    data = {"kind": "incoming_call"}
    for key, value in call.callkit_params().items():
        # As fcm_data encodes them: compact JSON in UTF-8 (no \u escapes).
        data[key] = (
            value
            if isinstance(value, str)
            else json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        )
    return data


def voip_size(call: IncomingCall) -> int:
    params = {"aps": {}, **call.callkit_params()}
    return len(json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode())


def test_fcm_data_of_exactly_4096_bytes_is_sent_and_4097_refused() -> None:
    call = padded(fcm_size, FCM_DATA_LIMIT)
    assert fcm_size(call) == FCM_DATA_LIMIT
    assert fcm_data(call)["handle"] == call.handle
    with pytest.raises(PayloadTooLarge) as refused:
        fcm_data(fixed_call(handle=call.handle + "h"))
    assert (refused.value.size, refused.value.limit) == (4097, 4096)


def test_fcm_data_counts_utf8_bytes_not_characters() -> None:
    call = padded(fcm_size, FCM_DATA_LIMIT)
    with pytest.raises(PayloadTooLarge):
        fcm_data(fixed_call(handle=call.handle[:-1] + "é"))  # one character, two bytes


def test_a_voip_payload_of_exactly_5120_bytes_is_sent_and_5121_refused() -> None:
    call = padded(voip_size, APNS_VOIP_LIMIT)
    assert len(apns_voip_payload(call)) == APNS_VOIP_LIMIT
    with pytest.raises(PayloadTooLarge) as refused:
        apns_voip_payload(fixed_call(handle=call.handle + "h"))
    assert str(refused.value) == "APNs VoIP payload is 5121 bytes, over the 5120-byte limit"


def test_an_alert_of_exactly_4096_bytes_is_sent_and_a_larger_one_refused() -> None:
    base = len(apns_alert_payload("missed_call", "Missed call", "", SESSION))
    body = "b" * (APNS_ALERT_LIMIT - base)
    assert len(apns_alert_payload("missed_call", "Missed call", body, SESSION)) == 4096
    with pytest.raises(PayloadTooLarge) as refused:
        apns_alert_payload("missed_call", "Missed call", body + "b", SESSION)
    assert str(refused.value) == "APNs alert payload is 4097 bytes, over the 4096-byte limit"


def test_an_fcm_notice_of_4096_bytes_is_sent_and_4097_refused() -> None:
    # keys kind+id+title+body = 15 bytes, values "k" + 36-character id + "t" = 38 bytes.
    notice = fcm_notice_message("k", "t", "b" * 4043, SESSION, "tok")
    assert notice["android"] == {"priority": "high"}
    with pytest.raises(PayloadTooLarge, match="FCM data payload is 4097 bytes"):
        fcm_notice_message("k", "t", "b" * 4044, SESSION, "tok")


def test_payloads_carry_utf8_text_not_escapes() -> None:
    voip = apns_voip_payload(fixed_call(handle="Zoë's family"))
    assert "Zoë's family".encode() in voip
    alert = apns_alert_payload("missed_call", "Appel manqué", "Zoë", SESSION)
    assert "Appel manqué".encode() in alert


def test_a_call_description_cannot_be_changed_once_made() -> None:
    # Every push of a session (retries, fallback) is built from the same description.
    call = fixed_call()
    with pytest.raises(dataclasses.FrozenInstanceError):
        call.ring_seconds = 5  # type: ignore[misc]
