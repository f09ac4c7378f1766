"""The existing CallPanion app's conditions on a call push, key for key, with their source.

Written down from Denifirdaus1/CallPanionAPK at commit 217646d (read, not copied): what each
platform's code reads from a push before it rings, and what the accept/decline/end/timeout
handlers read back from CallKit's `extra`. A condition is (where, key, test, argument):

- `where`: `push` (the FCM data map as Dart's `message.data`, or the VoIP payload dictionary)
  or `extra` (the CallKit `extra` the handlers read; on Android the app builds it from the
  push's flat keys, callkit_service.dart:126-131; on iOS it is the VoIP payload's `extra`);
- `test`: `equals` (== argument), `non_empty` (a non-empty string: `?? ''` then `isEmpty`),
  `not_null` (a string present: `as String?` then `!= null`), `stored` (== what the app
  stored at pairing under the argument's name), `int_string` (`int.tryParse` succeeds),
  `uuid` (Swift's `UUID(uuidString:)` succeeds).

The test in test_app_push_contract.py applies them to our pushes independently of the phone
simulator's PUSH_CHECKS, and checks that PUSH_CHECKS names each of these keys.
"""

from __future__ import annotations

APP = "Denifirdaus1/CallPanionAPK@217646d"

ANDROID: tuple[tuple[str, str, str, str, str], ...] = (
    # (source, where, key, test, argument)
    ("lib/services/fcm_service.dart:21", "push", "type", "equals", "incoming_call"),
    ("lib/services/fcm_service.dart:234-237", "push", "type", "equals", "incoming_call"),
    ("lib/services/fcm_service.dart:256,270", "push", "sessionId", "non_empty", ""),
    ("lib/services/fcm_service.dart:257,270", "push", "householdId", "non_empty", ""),
    ("lib/services/fcm_service.dart:258,270", "push", "relativeId", "non_empty", ""),
    ("lib/services/fcm_service.dart:401,406", "push", "householdId", "stored", "household_id"),
    ("lib/services/fcm_service.dart:402,407", "push", "relativeId", "stored", "relative_id"),
    (
        "lib/services/fcm_service.dart:288; callkit_service.dart:125",
        "push",
        "duration",
        "int_string",
        "",
    ),
    ("lib/services/callkit_service.dart:205,220", "extra", "sessionId", "not_null", ""),
    ("lib/services/callkit_service.dart:206,253", "extra", "callType", "not_null", ""),
    ("lib/services/callkit_service.dart:207,241", "extra", "householdId", "stored", "household_id"),
    ("lib/services/callkit_service.dart:208,242", "extra", "relativeId", "stored", "relative_id"),
)

IOS: tuple[tuple[str, str, str, str, str], ...] = (
    ("ios/Runner/AppDelegate.swift:74-78", "push", "type", "equals", "incoming_call"),
    # flutter_callkit_incoming's iOS side makes the CallKit UUID from `id`.
    ("ios/Runner/AppDelegate.swift:78 (showCallkitIncoming: id)", "push", "id", "uuid", ""),
    ("lib/services/callkit_service.dart:205,220", "extra", "sessionId", "not_null", ""),
    ("lib/services/callkit_service.dart:206,253", "extra", "callType", "not_null", ""),
    ("lib/services/callkit_service.dart:207,241", "extra", "householdId", "stored", "household_id"),
    ("lib/services/callkit_service.dart:208,242", "extra", "relativeId", "stored", "relative_id"),
    ("lib/services/callkit_service.dart:293,295", "extra", "sessionId", "not_null", ""),
    ("lib/services/callkit_service.dart:328,330", "extra", "sessionId", "not_null", ""),
    ("lib/services/callkit_service.dart:374,376", "extra", "sessionId", "not_null", ""),
)
