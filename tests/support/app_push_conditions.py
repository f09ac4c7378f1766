"""The existing CallPanion app's conditions on a call push, per path, with their source.

Written down from Denifirdaus1/CallPanionAPK at commit 217646d (read, not copied), and from
flutter_callkit_incoming 3.0.0 (the version its pubspec.yaml:13 asks for) where the plugin,
not the app, decides. Only what the code does: every row names the lines that do it. What
the app does NOT check is said below, so that nobody adds it back.

A condition is (path, key, test, argument, effect, source):

- `path`: where the app meets the push.
  - `android_foreground`: FirebaseMessaging.onMessage -> _handleForegroundMessage
    (fcm_service.dart:199-210, 233-251);
  - `android_background` and `android_terminated`: the FCM background isolate,
    _firebaseMessagingBackgroundHandler (fcm_service.dart:11-24, 26-64). The same code on
    both: the app is in the background, or not running and started for the message;
  - `ios_pushkit`: AppDelegate.swift:67-91 (with the plugin call corrected as
    docs/APP_MIGRATION.md gives it; as committed, :78 and :88 pass a dictionary where plugin
    3.0.0 takes its `Data` and do not compile);
  - `callkit`: what the accept/decline/end/timeout handlers read back from CallKit's `extra`
    (callkit_service.dart:193-397). On iOS that is the VoIP payload's `extra` (Call.swift:219);
    on Android the app builds it from the flat keys (callkit_service.dart:126-131), so it
    holds whatever the Dart path read;
  - `fcm_message`: the whole FCM message (not only `data`), for the paths that run without
    the app open (background, terminated).
- `where`/`key`: `data.X` a key of FCM's data or of the VoIP payload; `extra.X` a key of the
  VoIP payload's `extra`; `message.X` a field of the FCM v1 message.
- `test`: `equals` (== argument); `non_empty` (a string, not ""); `is_string` (`as String?`
  then `!= null`; a value of another type throws and the handler's catch drops it); `stored`
  (== what the app stored at pairing under the argument's SharedPreferences key, and that
  key is set); `ios_type` ("incoming_call", or not a string at all: AppDelegate.swift:74's
  `if let ... as? String` else-branch rings too); `swift_uuid` (`UUID(uuidString:)` succeeds);
  `is_object` (a JSON object); `absent`; `equals_ci` (case-insensitive ==); `ttl_within`
  (a duration `"Ns"`, 0 < N <= the ring window in seconds); `dart_ms` / `swift_ms` (see
  `duration` below).
- `effect`: what happens when it fails. `no_ring` (dropped), `killed` (iOS ends the app:
  PushKit requires a CallKit report for every VoIP push, and a force-unwrapped nil crashes),
  `no_report` (rings, but no event reaches the server), `no_call_screen` (accept opens no
  call), `second_ring`, `late_or_lost`, `stale_ring`, `ring_length` (not a refusal: the value
  decides how long it rings).

`duration`: the ring time in milliseconds as the app parses it. Dart, on the FCM paths:
`int.tryParse(data['duration'] ?? '30000') ?? 30000` (fcm_service.dart:45, :288;
callkit_service.dart:125): decimal digits (or `0x` hex), surrounding whitespace ignored, else
30000. Swift, on PushKit: `args["duration"] as? Int ?? 30000` (Call.swift:217): a JSON
integer, else 30000 (a string "45000" rings 30 s). So "45" is a 45 ms ring, not 45 s: the test
checks that our value, parsed the app's way, is the ring window in milliseconds.

Not checked by the app (and so by nothing here): the background and terminated paths check
neither ownership nor empty ids (missing keys become `?? ''`, fcm_service.dart:37-46); iOS
checks no ownership, no `sessionId`; nobody reads `expires_at` or `api_base` (only the ported
app will); `extra.householdId` and `extra.relativeId` are read with `?? ''` defaults only
(callkit_service.dart:241-242), never compared.
"""

from __future__ import annotations

from dataclasses import dataclass

APP = "Denifirdaus1/CallPanionAPK@217646d"
PLUGIN = "hiennguyen92/flutter_callkit_incoming@3.0.0"


@dataclass(frozen=True)
class Condition:
    """One condition of one path (see the module docstring for the vocabulary)."""

    path: str
    key: str
    test: str
    argument: str
    effect: str
    source: str


def _c(path: str, key: str, test: str, argument: str, effect: str, source: str) -> Condition:
    return Condition(path, key, test, argument, effect, source)


_FOREGROUND = "android_foreground"
_BACKGROUND = "android_background"
_TERMINATED = "android_terminated"

ANDROID_FOREGROUND: tuple[Condition, ...] = (
    _c(_FOREGROUND, "data.type", "equals", "incoming_call", "no_ring",
       f"{APP}:lib/services/fcm_service.dart:234-238"),
    _c(_FOREGROUND, "data.sessionId", "non_empty", "", "no_ring",
       f"{APP}:lib/services/fcm_service.dart:256,270-278"),
    _c(_FOREGROUND, "data.householdId", "non_empty", "", "no_ring",
       f"{APP}:lib/services/fcm_service.dart:257,270-278"),
    _c(_FOREGROUND, "data.relativeId", "non_empty", "", "no_ring",
       f"{APP}:lib/services/fcm_service.dart:258,270-278"),
    _c(_FOREGROUND, "data.householdId", "stored", "household_id", "no_ring",
       f"{APP}:lib/services/fcm_service.dart:296-319,401,405-414"),
    _c(_FOREGROUND, "data.relativeId", "stored", "relative_id", "no_ring",
       f"{APP}:lib/services/fcm_service.dart:296-319,402,405-414"),
    _c(_FOREGROUND, "data.duration", "dart_ms", "", "ring_length",
       f"{APP}:lib/services/fcm_service.dart:288; lib/services/callkit_service.dart:125"),
)  # fmt: skip


def _background(path: str) -> tuple[Condition, ...]:
    return (
        _c(path, "data.type", "equals", "incoming_call", "no_ring",
           f"{APP}:lib/services/fcm_service.dart:21"),
        _c(path, "data.duration", "dart_ms", "", "ring_length",
           f"{APP}:lib/services/fcm_service.dart:45; lib/services/callkit_service.dart:125"),
    )  # fmt: skip


ANDROID_BACKGROUND = _background(_BACKGROUND)
ANDROID_TERMINATED = _background(_TERMINATED)

IOS_PUSHKIT: tuple[Condition, ...] = (
    _c("ios_pushkit", "data.type", "ios_type", "incoming_call", "killed",
       f"{APP}:ios/Runner/AppDelegate.swift:74-90"),
    _c("ios_pushkit", "data.id", "swift_uuid", "", "killed",
       f"{PLUGIN}:ios/Classes/SwiftFlutterCallkitIncomingPlugin.swift:283,286; Call.swift:210"),
    _c("ios_pushkit", "data.extra", "is_object", "", "no_report",
       f"{PLUGIN}:ios/Classes/Call.swift:219"),
    _c("ios_pushkit", "data.duration", "swift_ms", "", "ring_length",
       f"{PLUGIN}:ios/Classes/Call.swift:217"),
)  # fmt: skip

#: Read back from CallKit's extra by the event handlers (iOS: the payload's own extra).
CALLKIT: tuple[Condition, ...] = (
    _c("callkit", "extra.sessionId", "is_string", "", "no_report",
       f"{APP}:lib/services/callkit_service.dart:204-205,220 (accept), 292-295 (decline),"
       " 327-330 (end), 373-376 (timeout)"),
    _c("callkit", "extra.callType", "is_string", "", "no_call_screen",
       f"{APP}:lib/services/callkit_service.dart:206,253"),
)  # fmt: skip

#: The whole FCM message, for the background and terminated paths.
FCM_MESSAGE: tuple[Condition, ...] = (
    _c("fcm_message", "message.notification", "absent", "", "second_ring",
       f"{APP}:lib/services/fcm_service.dart:213-230,352-361 (tapping the system's"
       " notification runs the foreground handler again)"),
    _c("fcm_message", "message.android.priority", "equals_ci", "high", "late_or_lost",
       "firebase.google.com/docs/cloud-messaging/android/message-priority (normal waits out"
       " Doze; FlutterFire ignores low-priority data-only messages in the background)"),
    _c("fcm_message", "message.android.ttl", "ttl_within", "ring window", "stale_ring",
       f"{APP}:lib/services/fcm_service.dart:26-53 (no time is checked, so only the TTL keeps"
       " a late push from ringing for a call that is over)"),
)  # fmt: skip

PATHS: dict[str, tuple[Condition, ...]] = {
    _FOREGROUND: ANDROID_FOREGROUND,
    _BACKGROUND: ANDROID_BACKGROUND,
    _TERMINATED: ANDROID_TERMINATED,
    "ios_pushkit": IOS_PUSHKIT,
    "callkit": CALLKIT,
    "fcm_message": FCM_MESSAGE,
}

#: `duration` as each parse reads it (value in the push -> ring milliseconds). Dart's
#: int.tryParse: api.dart.dev dart-core/int/parse.html (sign, `0x`, whitespace ignored);
#: Swift's `as? Int` on the JSON number PushKit hands over.
DART_DURATIONS: tuple[tuple[object, int], ...] = (
    ("45000", 45000),
    ("45", 45),  # seconds sent as if milliseconds: a 45 ms ring
    (" 45000\n", 45000),
    ("+45000", 45000),
    ("0x10", 16),
    ("45s", 30000),
    ("4.5e4", 30000),
    ("", 30000),
    (None, 30000),  # absent: `?? '30000'`
)
SWIFT_DURATIONS: tuple[tuple[object, int], ...] = (
    (45000, 45000),
    (45000.0, 45000),
    (45000.5, 30000),
    ("45000", 30000),  # a string is not an Int
    (None, 30000),
)
