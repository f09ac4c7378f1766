"""The "stop ringing" pushes of a cancelled call: what each platform receives."""

from __future__ import annotations

import json
import uuid

from python_worker.push.payloads import apns_cancel_payload, fcm_cancel_message


def test_android_cancel_is_a_high_priority_data_message_of_type_cancel() -> None:
    session = uuid.uuid4()
    message = fcm_cancel_message(session, "tok", ttl_s=40)
    assert message["token"] == "tok"
    data = message["data"]
    assert isinstance(data, dict)
    assert data == {
        "type": "cancel",
        "kind": "call_cancelled",
        "id": str(session),
        "sessionId": str(session),
    }
    assert all(isinstance(v, str) for v in data.values())  # FCM data is strings only
    assert message["android"] == {"priority": "high", "ttl": "40s"}
    assert "notification" not in message  # data-only: the app decides what to show


def test_ios_cancel_is_a_silent_background_body_without_alert_or_sound() -> None:
    session = uuid.uuid4()
    body = json.loads(apns_cancel_payload(session))
    assert body["aps"] == {"content-available": 1}
    assert (body["type"], body["id"], body["sessionId"]) == ("cancel", str(session), str(session))


def test_android_cancel_past_its_window_lives_zero_seconds_not_a_negative_ttl() -> None:
    message = fcm_cancel_message(uuid.uuid4(), "tok", ttl_s=-5)
    assert message["android"] == {"priority": "high", "ttl": "0s"}
