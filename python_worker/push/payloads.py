"""The pushes a device receives, built for flutter_callkit_incoming (see PROTOCOLS.md).

An incoming call is the same call description on both platforms:

- `id`: the call session id, a UUID identical in every push of that session, so a resend
  (retry, fallback token, duplicate after a crash) rings once on the device;
- `nameCaller`, `handle`, `duration` = ring time in milliseconds;
- `expires_at` (ISO 8601 UTC): the app reports a stale call to CallKit and ends it at once;
- `api_base`: where the app reports events;
- the existing CallPanion app's keys (fcm_service.dart, AppDelegate.swift,
  callkit_service.dart at 217646d): `type` = "incoming_call" (its first check on both
  platforms), flat `sessionId`, `householdId`, `relativeId` (its ownership check against what
  it stored at pairing), `relativeName`, `callType` ("in_app_call"), `avatar` when there is
  one; the same keys again in `extra`, which CallKit hands back on accept/decline/end/timeout.
  flutter_callkit_incoming's own call type (0 = audio) therefore moves to `callkitType`:
  its `type` would collide, and its iOS side reads a non-integer `type` as 0 (audio) anyway.

Android gets it as an FCM data-only message (every value a string, `extra` as JSON text),
high priority, TTL = ring window. iOS gets it as a PushKit VoIP payload. Cancellations and
"missed call" notices go as regular alert pushes (never VoIP: iOS kills apps that receive a
VoIP push without reporting a call).

A call the family cancelled while it rang: Android gets an FCM data message with `type`
"cancel"; iOS a background push (`content-available`, no alert) to the app's regular APNs
token. Both carry the call id (`id`, `sessionId`), so the app ends that call and no other.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

from python_worker.push.outcomes import PayloadTooLarge

FCM_DATA_LIMIT = 4096  # bytes of data keys + values
APNS_VOIP_LIMIT = 5120  # bytes of JSON payload
APNS_ALERT_LIMIT = 4096
CALL_TYPE_AUDIO = 0
#: The app's `type` for a call push (fcm_service.dart:21, :237; AppDelegate.swift:76).
PUSH_TYPE_INCOMING_CALL = "incoming_call"
#: The app's `callType` for a call it runs itself with ElevenLabs (constants.dart:25).
APP_CALL_TYPE_IN_APP = "in_app_call"


@dataclass(frozen=True)
class IncomingCall:
    """Everything the device needs to ring for one call session."""

    session_id: uuid.UUID
    caller_name: str
    handle: str
    ring_seconds: int
    expires_at: dt.datetime
    api_base: str
    household_id: uuid.UUID
    relative_id: uuid.UUID
    relative_name: str
    extra: Mapping[str, str] = field(default_factory=dict)
    #: A picture URL for the relative's caller screen, when the family set one (none today).
    avatar: str | None = None

    def __post_init__(self) -> None:
        if self.ring_seconds <= 0:
            raise ValueError(f"ring_seconds must be positive, got {self.ring_seconds}")
        if self.expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")

    @property
    def call_id(self) -> str:
        return str(self.session_id)

    @property
    def expires_at_iso(self) -> str:
        return self.expires_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")

    def app_keys(self) -> dict[str, str]:
        """The keys the existing app reads, flat in the push and again in CallKit `extra`."""
        keys = {
            "sessionId": self.call_id,
            "householdId": str(self.household_id),
            "relativeId": str(self.relative_id),
            "relativeName": self.relative_name,
            "callType": APP_CALL_TYPE_IN_APP,
        }
        if self.avatar:
            keys["avatar"] = self.avatar
        return keys

    def callkit_params(self) -> dict[str, object]:
        """The flutter_callkit_incoming parameters and the app's keys (typed JSON values)."""
        app = self.app_keys()
        return {
            "type": PUSH_TYPE_INCOMING_CALL,
            "id": self.call_id,
            "nameCaller": self.caller_name,
            "handle": self.handle,
            "callkitType": CALL_TYPE_AUDIO,
            "duration": self.ring_seconds * 1000,
            "expires_at": self.expires_at_iso,
            "api_base": self.api_base,
            **app,
            "extra": {"call_session_id": self.call_id, **self.extra, **app},
        }


def check_fcm_data(data: Mapping[str, object]) -> None:
    """Refuse an FCM data map over 4096 bytes (keys plus values, UTF-8) before it is sent."""
    size = sum(len(str(k).encode()) + len(str(v).encode()) for k, v in data.items())
    if size > FCM_DATA_LIMIT:
        raise PayloadTooLarge("FCM data payload", size, FCM_DATA_LIMIT)


def _json_bytes(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def fcm_data(call: IncomingCall) -> dict[str, str]:
    """The FCM data map: every value a string, `extra` as compact JSON text."""
    data: dict[str, str] = {"kind": "incoming_call"}
    for key, value in call.callkit_params().items():
        # UTF-8, not \u escapes: an escaped emoji costs 12 bytes instead of 4 of the 4,096.
        data[key] = value if isinstance(value, str) else _json_bytes(value).decode()
    check_fcm_data(data)
    return data


def fcm_call_message(call: IncomingCall, token: str) -> dict[str, object]:
    """A v1 `message`: data-only, high priority, TTL = the ring window (then it is stale)."""
    return {
        "token": token,
        "data": fcm_data(call),
        "android": {"priority": "high", "ttl": f"{call.ring_seconds}s"},
    }


def apns_voip_payload(call: IncomingCall) -> bytes:
    """The PushKit payload (JSON bytes), checked against the 5120-byte VoIP limit."""
    body = _json_bytes({"aps": {}, **call.callkit_params()})
    if len(body) > APNS_VOIP_LIMIT:
        raise PayloadTooLarge("APNs VoIP payload", len(body), APNS_VOIP_LIMIT)
    return body


def apns_alert_payload(
    kind: str, title: str, body: str, session_id: uuid.UUID, extra: Mapping[str, str] | None = None
) -> bytes:
    """A regular alert push ("missed call", "call cancelled") for the app's APNs token."""
    payload = {
        "aps": {"alert": {"title": title, "body": body}, "sound": "default"},
        "kind": kind,
        "id": str(session_id),
        "extra": dict(extra or {}),
    }
    encoded = _json_bytes(payload)
    if len(encoded) > APNS_ALERT_LIMIT:
        raise PayloadTooLarge("APNs alert payload", len(encoded), APNS_ALERT_LIMIT)
    return encoded


def fcm_notice_message(
    kind: str, title: str, body: str, session_id: uuid.UUID, token: str
) -> dict[str, object]:
    """A data message telling the Android app a call was cancelled or missed (not a ring)."""
    data = {"kind": kind, "id": str(session_id), "title": title, "body": body}
    check_fcm_data(data)
    return {"token": token, "data": data, "android": {"priority": "high"}}


CANCEL_TYPE = "cancel"


def _cancel_fields(session_id: uuid.UUID) -> dict[str, str]:
    return {
        "type": CANCEL_TYPE,
        "kind": "call_cancelled",
        "id": str(session_id),
        "sessionId": str(session_id),
    }


def fcm_cancel_message(session_id: uuid.UUID, token: str, ttl_s: int) -> dict[str, object]:
    """Android: stop ringing for this call. A high-priority data message of type `cancel`,
    living only as long as the ring window (afterwards the phone has stopped anyway)."""
    data = _cancel_fields(session_id)
    check_fcm_data(data)
    return {
        "token": token,
        "data": data,
        "android": {"priority": "high", "ttl": f"{max(ttl_s, 0)}s"},
    }


def apns_cancel_payload(session_id: uuid.UUID) -> bytes:
    """iOS: stop ringing for this call. A background push body (no alert, no sound) for the
    app's regular APNs token; never a VoIP push, which must always report a new call."""
    # A fixed shape around one UUID (about 150 bytes): it cannot reach APNS_ALERT_LIMIT, so
    # there is no size check to make (one here was dead code, an equivalent mutant).
    return _json_bytes({"aps": {"content-available": 1}, **_cancel_fields(session_id)})
