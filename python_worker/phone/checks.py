"""The checks the app makes on a push before it rings, as one table.

Today's pushes (python_worker.push.payloads) carry flutter_callkit_incoming's keys: the CallKit
`id` (our call session id, a UUID, also in `extra.call_session_id`), `duration` (ring time in
ms), `expires_at` and `api_base`. The existing Flutter app also requires `type ==
"incoming_call"`, a non-empty `sessionId` and its stored `householdId`/`relativeId`; when the
pushes carry those keys, their rows go into `PUSH_CHECKS` and nothing else changes.

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
class PushCheck:
    """One condition of the app: the key it reads and what it requires of the value."""

    key: str
    requirement: str
    holds: Callable[[Mapping[str, Any]], bool]


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


#: The app's conditions, in the order it checks them. Add the Flutter app's own keys here
#: (`type == "incoming_call"`, `sessionId`, `householdId`, `relativeId`) once pushes carry them.
PUSH_CHECKS: tuple[PushCheck, ...] = (
    PushCheck("id", "the CallKit id must be a UUID", lambda p: _uuid(p.get("id"))),
    PushCheck(
        "id",
        "the CallKit id must be the call session id (extra.call_session_id)",
        lambda p: p.get("id") == (p.get("extra") or {}).get("call_session_id"),
    ),
    PushCheck(
        "expires_at",
        "must be an ISO 8601 time with an offset",
        lambda p: _time(p.get("expires_at")),
    ),
    PushCheck(
        "duration",
        "must be the ring time in milliseconds (a positive integer)",
        lambda p: isinstance(p.get("duration"), int) and p["duration"] > 0,
    ),
    PushCheck(
        "api_base",
        "must be the http(s) URL the app reports call events to",
        lambda p: (
            isinstance(p.get("api_base"), str) and p["api_base"].startswith(("http://", "https://"))
        ),
    ),
)


def read_push(provider: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The push's keys as typed values: FCM's string data decoded, APNs' payload as is."""
    if provider == "apns":
        return dict(body)
    decoded: dict[str, Any] = {}
    for key, value in body.items():
        if key in ("extra", "duration", "type") and isinstance(value, str):
            try:
                decoded[key] = json.loads(value)
            except ValueError:
                decoded[key] = value
        else:
            decoded[key] = value
    return decoded


def check_push(provider: str, body: Mapping[str, Any]) -> Ring:
    """Apply every check of `PUSH_CHECKS`; the first that fails raises PushRefused."""
    push = read_push(provider, body)
    for check in PUSH_CHECKS:
        if not check.holds(push):
            raise PushRefused(check.key, check.requirement)
    return Ring(
        call_id=push["id"],
        caller=str(push.get("nameCaller") or ""),
        duration_ms=push["duration"],
        expires_at=dt.datetime.fromisoformat(push["expires_at"]),
        api_base=push["api_base"].rstrip("/"),
        extra=dict(push.get("extra") or {}),
    )
