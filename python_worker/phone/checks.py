"""What the app does with a call push before it rings, per path, as one table.

The existing CallPanion app (Denifirdaus1/CallPanionAPK at 217646d) meets a call push on one of
four paths, and each path checks different things:

- `foreground`: the app is open; FirebaseMessaging.onMessage -> `_handleForegroundMessage`
  (fcm_service.dart:199-210, 233-251): `type`, non-empty `sessionId`, `householdId`,
  `relativeId`, and the ownership check against what was stored at pairing (:398-414);
- `background` and `terminated`: the FCM background isolate, `_firebaseMessagingBackgroundHandler`
  (fcm_service.dart:11-24, 26-64): `type` only. No ownership check, no empty-field check:
  missing keys become `?? ''` defaults (:37-46). The two differ in whether the main isolate
  (and its CallKit event listener, main.dart:43) is alive, not in what rings;
- `pushkit` (iOS): AppDelegate.swift:67-91 with the plugin 3.0.0 call corrected as
  docs/APP_MIGRATION.md gives it: rings when `type` is "incoming_call" or not a string at all
  (:74-90); the plugin force-unwraps `UUID(uuidString: id)` (SwiftFlutterCallkitIncomingPlugin
  .swift:283,286 at 3.0.0), so a non-UUID `id` kills the app. No ownership check.

On the FCM paths that run without the app open, the whole message matters too
(`MESSAGE_CHECKS`): data-only, high priority, a TTL within the ring window.

After the ring, what CallKit hands the accept/decline/end/timeout handlers decides whether
the call is reported at all (`extra.sessionId` a string, callkit_service.dart:204-205, 220,
292-295, 327-330, 373-376) and whether accept opens the call screen (`extra.callType` a
string, :206, 253). On Android the app builds that `extra` from the flat keys
(callkit_service.dart:126-131); on iOS it is the VoIP payload's `extra` (Call.swift:219).

The ring lasts `duration` milliseconds as the app parses it: Dart `int.tryParse(duration ??
'30000') ?? 30000` (callkit_service.dart:125), Swift `duration as? Int ?? 30000`
(Call.swift:217). "45" rings for 45 ms. Nothing else is checked: `expires_at` and `api_base`
are read by the ported app only (docs/APP_MIGRATION.md), never refused on.

The fixture tests/support/app_push_conditions.py writes the same conditions down
independently, with their source lines; a test holds this table to it.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

Path = Literal["foreground", "background", "terminated", "pushkit"]
PATHS: tuple[Path, ...] = ("foreground", "background", "terminated", "pushkit")
#: The Dart paths, which FCM pushes take (on an iPhone too: the Dart code is shared).
FCM_PATHS: tuple[Path, ...] = ("foreground", "background", "terminated")
#: What the app rings for when `duration` is absent or does not parse (both platforms).
DEFAULT_RING_MS = 30_000
_APP = "Denifirdaus1/CallPanionAPK@217646d:"
_PLUGIN = "hiennguyen92/flutter_callkit_incoming@3.0.0:"


class PushRefused(ValueError):
    """The app would not ring for this push: `field` and why (`effect`: dropped or killed)."""

    def __init__(self, field: str, reason: str, effect: str = "no_ring") -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason
        self.effect = effect


@dataclass(frozen=True)
class Ring:
    """What the phone rings with, once a push passed its path's checks.

    `session_id` is what the handlers report events for (None: CallKit's extra has no
    string `sessionId`, so the app reports nothing); `opens_call` is False when accept would
    not open the call screen (no string `callType`)."""

    call_id: str
    caller: str
    duration_ms: int
    expires_at: dt.datetime | None
    session_id: str | None
    opens_call: bool
    extra: Mapping[str, Any]
    #: Whole-message conditions broken that still ring (a second notification, a TTL that
    #: would let a late push ring), by key.
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Paired:
    """What the app stored at pairing and compares foreground call pushes with."""

    household_id: str
    relative_id: str


@dataclass(frozen=True)
class PushCheck:
    """One condition of one path: the key, what is required, what happens otherwise
    (`no_ring`: dropped; `killed`: iOS ends the app), and where the app's code says so."""

    path: Path
    key: str
    requirement: str
    holds: Callable[[Mapping[str, Any], Paired | None], bool]
    source: str
    effect: str = "no_ring"


def _filled(value: object) -> bool:
    # Dart: `data['x'] ?? ''` then `.isEmpty`. FCM data values are always strings.
    return isinstance(value, str) and value != ""


def _swift_uuid(value: object) -> bool:
    # Foundation's UUID(uuidString:): 36 characters, hex in 8-4-4-4-12, either case.
    return (
        isinstance(value, str)
        and re.fullmatch(r"[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}", value) is not None
    )


def _ios_rings_for_type(value: object) -> bool:
    # AppDelegate.swift:74-90: a string type rings only as "incoming_call"; no string type
    # takes the `else` branch, which rings too.
    return value == "incoming_call" or not isinstance(value, str)


_DART_WHITESPACE = "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"  # noqa: E501


def dart_int_try_parse(text: str) -> int | None:
    """Dart's `int.tryParse(text)` on the VM: surrounding whitespace ignored, an optional
    sign, decimal digits or a `0x` hexadecimal literal (up to 64 bits, read as unsigned); None
    for anything else, and for a decimal outside the signed 64-bit range."""
    body = text.strip(_DART_WHITESPACE)
    sign = 1
    if body[:1] in ("+", "-"):
        sign, body = (-1 if body[0] == "-" else 1), body[1:]
    if body[:2].lower() == "0x" and re.fullmatch(r"[0-9A-Fa-f]+", body[2:]):
        value = int(body[2:], 16)
        if value >= 2**64:
            return None
        # Up to 64 bits, read as unsigned, then as the signed int with those bits.
        return sign * (value - 2**64 if value >= 2**63 else value)
    if not re.fullmatch(r"[0-9]+", body):
        return None
    value = sign * int(body)
    return value if -(2**63) <= value < 2**63 else None


def ring_ms(path: Path, push: Mapping[str, Any]) -> int:
    """How long the app rings, in milliseconds, as that path parses `duration`."""
    value = push.get("duration")
    if path == "pushkit":
        # Call.swift:217 `args["duration"] as? Int ?? 30000`: a JSON number that is a whole
        # number (NSNumber bridges to Int only when exact); a string is not one.
        if isinstance(value, int):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return DEFAULT_RING_MS
    # callkit_service.dart:125 `int.tryParse(callData.duration ?? '30000') ?? 30000`.
    parsed = dart_int_try_parse(value) if isinstance(value, str) else None
    return DEFAULT_RING_MS if parsed is None else parsed


def _type_is_incoming(push: Mapping[str, Any], _: Paired | None) -> bool:
    return push.get("type") == "incoming_call"


def _owned(key: str, stored: str) -> Callable[[Mapping[str, Any], Paired | None], bool]:
    def holds(push: Mapping[str, Any], paired: Paired | None) -> bool:
        return paired is not None and push.get(key) == getattr(paired, stored)

    return holds


_FOREGROUND: tuple[PushCheck, ...] = (
    PushCheck(
        "foreground",
        "type",
        'must be "incoming_call"',
        _type_is_incoming,
        _APP + "lib/services/fcm_service.dart:234-238",
    ),
    *(
        PushCheck(
            "foreground",
            key,
            "must be non-empty",
            lambda p, _, k=key: _filled(p.get(k)),  # type: ignore[misc]
            _APP + f"lib/services/fcm_service.dart:{line},270-278",
        )
        for key, line in (("sessionId", 256), ("householdId", 257), ("relativeId", 258))
    ),
    PushCheck(
        "foreground",
        "householdId",
        "must be the household id the app stored at pairing (and the app must be paired)",
        _owned("householdId", "household_id"),
        _APP + "lib/services/fcm_service.dart:296-319,401,405-414",
    ),
    PushCheck(
        "foreground",
        "relativeId",
        "must be the relative id the app stored at pairing (and the app must be paired)",
        _owned("relativeId", "relative_id"),
        _APP + "lib/services/fcm_service.dart:296-319,402,405-414",
    ),
)


def _background(path: Path) -> tuple[PushCheck, ...]:
    return (
        PushCheck(
            path,
            "type",
            'must be "incoming_call"',
            _type_is_incoming,
            _APP + "lib/services/fcm_service.dart:21",
        ),
    )


_PUSHKIT: tuple[PushCheck, ...] = (
    PushCheck(
        "pushkit",
        "type",
        'must be "incoming_call" (or not a string); iOS ends an app that reports no call',
        lambda p, _: _ios_rings_for_type(p.get("type")),
        _APP + "ios/Runner/AppDelegate.swift:74-90",
        effect="killed",
    ),
    PushCheck(
        "pushkit",
        "id",
        "must be a UUID (the plugin force-unwraps UUID(uuidString:))",
        lambda p, _: _swift_uuid(p.get("id")),
        _PLUGIN + "ios/Classes/SwiftFlutterCallkitIncomingPlugin.swift:283,286",
        effect="killed",
    ),
)

#: Every path's conditions, in the order the app meets them.
PUSH_CHECKS: dict[Path, tuple[PushCheck, ...]] = {
    "foreground": _FOREGROUND,
    "background": _background("background"),
    "terminated": _background("terminated"),
    "pushkit": _PUSHKIT,
}


#: The one whole-message effect that stops the ring on the device: the message never comes.
LOST = "late_or_lost"


@dataclass(frozen=True)
class MessageCheck:
    """A condition on the whole FCM message (not only its data), for the paths that run
    without the app open (`background`, `terminated`), and what happens otherwise."""

    key: str
    requirement: str
    holds: Callable[[Mapping[str, Any], float], bool]
    effect: str
    source: str


def _ttl_s(android: Mapping[str, Any]) -> float | None:
    ttl = android.get("ttl")
    match = re.fullmatch(r"(\d+)(?:\.(\d{1,9}))?s", ttl) if isinstance(ttl, str) else None
    return None if match is None else float(ttl[:-1])  # type: ignore[index]


MESSAGE_CHECKS: tuple[MessageCheck, ...] = (
    MessageCheck(
        "notification",
        "must be absent (data-only): with one, Android also shows a notification, and tapping"
        " it rings a second time through onMessageOpenedApp",
        lambda m, _: not m.get("notification"),
        "second_ring",
        _APP + "lib/services/fcm_service.dart:213-230,352-361",
    ),
    MessageCheck(
        "android.priority",
        'must be "high": a normal-priority data message waits out Doze, and FlutterFire drops'
        " low-priority data-only messages for a backgrounded or terminated app",
        lambda m, _: str((m.get("android") or {}).get("priority", "")).lower() == "high",
        LOST,
        "firebase.google.com/docs/cloud-messaging/android/message-priority",
    ),
    MessageCheck(
        "android.ttl",
        "must be set and at most the ring window: the background path checks no time"
        " (fcm_service.dart:26-53), so a push delivered late would ring for a call that is over",
        lambda m, ring_s: (t := _ttl_s(m.get("android") or {})) is not None and t <= ring_s,
        "stale_ring",
        _APP + "lib/services/fcm_service.dart:26-53",
    ),
)


def _extra(push: Mapping[str, Any]) -> Mapping[str, Any]:
    extra = push.get("extra")
    return extra if isinstance(extra, Mapping) else {}


def read_push(provider: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The push as the app's code sees it: FCM's `message.data` (every value a string, as
    Dart's `Map<String, dynamic>` holds them) or the VoIP payload's typed dictionary."""
    if provider == "apns":
        return dict(body)
    return {key: value for key, value in body.items() if isinstance(value, str)}


def callkit_extra(path: Path, push: Mapping[str, Any]) -> dict[str, Any]:
    """What CallKit hands the event handlers as `extra`: on the Dart paths the app builds it
    from the flat keys (callkit_service.dart:126-131, with fcm_service.dart's `?? ''` and
    `?? AppConstants.callTypeInApp` defaults, :37-46 and :280-289); on iOS the payload's own."""
    if path == "pushkit":
        return dict(_extra(push))
    return {
        "sessionId": push.get("sessionId", ""),
        "callType": push.get("callType", "in_app_call"),
        "householdId": push.get("householdId", ""),
        "relativeId": push.get("relativeId", ""),
    }


def path_for(provider: str, app_state: str) -> Path:
    """The path a push takes: PushKit for a VoIP push, else the Dart path of the app state."""
    if provider == "apns":
        return "pushkit"
    if app_state not in FCM_PATHS:
        raise ValueError(f"app_state: must be one of {', '.join(FCM_PATHS)}, got {app_state!r}")
    return app_state


def check_message(message: Mapping[str, Any], ring_s: float) -> list[MessageCheck]:
    """Apply MESSAGE_CHECKS to a whole FCM message (`data`, `android`, `notification`).
    A message the device would not get in time (LOST) raises PushRefused; the others still
    ring, as on the device, and come back as the conditions they broke."""
    broken = [check for check in MESSAGE_CHECKS if not check.holds(message, ring_s)]
    for check in broken:
        if check.effect == LOST:
            raise PushRefused(check.key, check.requirement, check.effect)
    return broken


def _time(value: object) -> dt.datetime | None:
    try:
        parsed = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
    return parsed if parsed is not None and parsed.tzinfo is not None else None


def check_push(
    provider: str,
    body: Mapping[str, Any],
    paired: Paired | None,
    app_state: str = "background",
    message: Mapping[str, Any] | None = None,
) -> Ring:
    """Apply the checks of the push's path (and, for an FCM push the app meets in the
    background or terminated, MESSAGE_CHECKS on the whole `message` when given); the first
    that fails raises PushRefused. Returns how the phone rings."""
    path = path_for(provider, app_state)
    push = read_push(provider, body)
    for check in PUSH_CHECKS[path]:
        if not check.holds(push, paired):
            raise PushRefused(check.key, check.requirement, check.effect)
    duration = ring_ms(path, push)
    broken: list[MessageCheck] = []
    if message is not None and path in ("background", "terminated"):
        broken = check_message(message, max(duration, 0) / 1000)
    extra = callkit_extra(path, push)
    session = extra.get("sessionId")
    session_id = session if isinstance(session, str) else None
    # The ported app's CallKit id is the session id on the Dart paths (docs/APP_MIGRATION.md);
    # the app at 217646d made a random one (callkit_service.dart:113), as it still would
    # without a session id. On iOS the plugin takes the payload's `id`.
    call_id = str(push["id"]).lower() if path == "pushkit" else session_id or str(uuid.uuid4())
    return Ring(
        call_id=call_id,
        caller=str(push.get("nameCaller") or ""),
        duration_ms=duration,
        expires_at=_time(push.get("expires_at")),
        session_id=session_id,
        opens_call=isinstance(extra.get("callType"), str),
        extra=extra,
        warnings=tuple(check.key for check in broken),
    )
