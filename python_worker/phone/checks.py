"""The checks the app makes on a push before it rings, as one table.

Two sets of conditions, in the order the app meets them:

- the existing CallPanion app's (Denifirdaus1/CallPanionAPK at 217646d; each row names its
  file:line): `type == "incoming_call"`, non-empty `sessionId`, `householdId` and
  `relativeId`, the last two equal to what the app stored at pairing, and `sessionId`,
  `householdId`, `relativeId`, `callType` again in CallKit's `extra`, which is all the app's
  accept/decline/end/timeout handlers read;
- ours, for the updated app: the CallKit `id` is a UUID and the session id, `expires_at`,
  `duration` (ring time in ms) and `api_base`.

An FCM data message has only string values (`extra` as JSON text, numbers as digits); a
VoIP payload has typed JSON. `read_push` brings both to one typed dictionary first.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


class PushRefused(ValueError):
    """The app would not ring for this push: `field` and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True)
class Ring:
    """What the phone rings with, once a push passed every check."""

    call_id: str
    caller: str
    duration_ms: int
    expires_at: dt.datetime
    api_base: str
    extra: Mapping[str, Any]


@dataclass(frozen=True)
class Paired:
    """What the app stored at pairing and compares every call push with."""

    household_id: str
    relative_id: str


@dataclass(frozen=True)
class PushCheck:
    """One condition of the app: the key it reads, what it requires of the value, and where
    the app's code says so (empty for our own conditions)."""

    key: str
    requirement: str
    holds: Callable[[Mapping[str, Any], Paired | None], bool]
    source: str = ""


def _uuid(value: object) -> bool:
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value.lower()
    except ValueError:
        return False


def _time(value: object) -> bool:
    try:
        return isinstance(value, str) and dt.datetime.fromisoformat(value).tzinfo is not None
    except ValueError:
        return False


def _filled(value: object) -> bool:
    # equivalent mutant: `value > ""` is the same test for a str (every non-empty one is greater)
    return isinstance(value, str) and value != ""


def _extra(push: Mapping[str, Any]) -> Mapping[str, Any]:
    extra = push.get("extra")
    return extra if isinstance(extra, Mapping) else {}


_APP = "Denifirdaus1/CallPanionAPK@217646d:"

#: The app's conditions, in the order it checks them: the existing app's first (with their
#: source lines), then ours. The simulator rings only for a push that passes them all.
PUSH_CHECKS: tuple[PushCheck, ...] = (
    PushCheck(
        "type",
        'must be "incoming_call"',
        lambda p, _: p.get("type") == "incoming_call",
        _APP + "lib/services/fcm_service.dart:21,237; ios/Runner/AppDelegate.swift:74-76",
    ),
    PushCheck(
        "sessionId",
        "must be non-empty",
        lambda p, _: _filled(p.get("sessionId")),
        _APP + "lib/services/fcm_service.dart:256,270",
    ),
    PushCheck(
        "householdId",
        "must be non-empty",
        lambda p, _: _filled(p.get("householdId")),
        _APP + "lib/services/fcm_service.dart:257,270",
    ),
    PushCheck(
        "relativeId",
        "must be non-empty",
        lambda p, _: _filled(p.get("relativeId")),
        _APP + "lib/services/fcm_service.dart:258,270",
    ),
    PushCheck(
        "householdId",
        "must be the household id the app stored at pairing (and the app must be paired)",
        lambda p, paired: paired is not None and p.get("householdId") == paired.household_id,
        _APP + "lib/services/fcm_service.dart:401,405-407,414",
    ),
    PushCheck(
        "relativeId",
        "must be the relative id the app stored at pairing (and the app must be paired)",
        lambda p, paired: paired is not None and p.get("relativeId") == paired.relative_id,
        _APP + "lib/services/fcm_service.dart:402,405-407,414",
    ),
    PushCheck(
        "extra.sessionId",
        "CallKit's extra must carry the session id (accept, decline, end and timeout read it)",
        lambda p, _: _filled(_extra(p).get("sessionId")),
        _APP + "lib/services/callkit_service.dart:205,220,293,295,328,330,374,376",
    ),
    PushCheck(
        "extra.callType",
        "CallKit's extra must carry the call type (accept starts the call only with one)",
        lambda p, _: _filled(_extra(p).get("callType")),
        _APP + "lib/services/callkit_service.dart:206,253",
    ),
    PushCheck(
        "extra.householdId",
        "CallKit's extra must carry the household id",
        lambda p, _: _extra(p).get("householdId") == p.get("householdId"),
        _APP + "lib/services/callkit_service.dart:207,241",
    ),
    PushCheck(
        "extra.relativeId",
        "CallKit's extra must carry the relative id",
        lambda p, _: _extra(p).get("relativeId") == p.get("relativeId"),
        _APP + "lib/services/callkit_service.dart:208,242",
    ),
    PushCheck("id", "the CallKit id must be a UUID", lambda p, _: _uuid(p.get("id"))),
    PushCheck(
        "id",
        "the CallKit id must be the call session id (sessionId)",
        lambda p, _: p.get("id") == p.get("sessionId") == _extra(p).get("sessionId"),
    ),
    PushCheck(
        "expires_at",
        "must be an ISO 8601 time with an offset",
        lambda p, _: _time(p.get("expires_at")),
    ),
    PushCheck(
        "duration",
        "must be the ring time in milliseconds (a positive integer)",
        lambda p, _: isinstance(p.get("duration"), int) and p["duration"] > 0,
    ),
    PushCheck(
        "api_base",
        "must be the http(s) URL the app reports call events to",
        lambda p, _: (
            isinstance(p.get("api_base"), str) and p["api_base"].startswith(("http://", "https://"))
        ),
    ),
)


def read_push(provider: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The push's keys as typed values: FCM's string data decoded, APNs' payload as is."""
    # equivalent mutant: `provider <= "apns"` differs only for names sorting before "apns";
    # the providers are "apns" and "fcm" (a Literal in every caller).
    if provider == "apns":
        return dict(body)
    decoded: dict[str, Any] = {}
    for key, value in body.items():
        if key in ("extra", "duration", "callkitType") and isinstance(value, str):
            try:
                decoded[key] = json.loads(value)
            except ValueError:
                decoded[key] = value
        else:
            decoded[key] = value
    return decoded


def check_push(provider: str, body: Mapping[str, Any], paired: Paired | None) -> Ring:
    """Apply every check of `PUSH_CHECKS` against what the app stored at pairing (None: not
    paired, which the app refuses); the first that fails raises PushRefused."""
    push = read_push(provider, body)
    for check in PUSH_CHECKS:
        if not check.holds(push, paired):
            raise PushRefused(check.key, check.requirement)
    return Ring(
        call_id=push["id"],
        caller=str(push.get("nameCaller") or ""),
        duration_ms=push["duration"],
        expires_at=dt.datetime.fromisoformat(push["expires_at"]),
        api_base=push["api_base"].rstrip("/"),
        extra=dict(push.get("extra") or {}),
    )
