"""The phone simulator reads our pushes the way the app does before it rings."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any

import pytest

from python_worker.emulators.inbox import Inbox, inbox_query
from python_worker.phone.checks import (
    PUSH_CHECKS,
    Paired,
    PushRefused,
    check_push,
    dart_int_try_parse,
)
from python_worker.phone.script import Behaviour, parse_script
from python_worker.push.payloads import IncomingCall, apns_voip_payload, fcm_call_message, fcm_data

SESSION = uuid.uuid4()
EXPIRES = dt.datetime(2031, 1, 6, 9, 2, tzinfo=dt.UTC)
HOUSEHOLD, RELATIVE = uuid.uuid4(), uuid.uuid4()
PAIRED = Paired(str(HOUSEHOLD), str(RELATIVE))
CALL = IncomingCall(
    SESSION,
    "CallPanion",
    "Morning chat",
    30,
    EXPIRES,
    "https://api.example",
    HOUSEHOLD,
    RELATIVE,
    "Nan",
)


def pushes() -> dict[str, dict[str, Any]]:
    """What each provider hands the app for the same call: FCM's strings, APNs' JSON."""
    return {"fcm": fcm_data(CALL), "apns": json.loads(apns_voip_payload(CALL))}


@pytest.mark.parametrize(
    ("provider", "state"),
    [("fcm", "foreground"), ("fcm", "background"), ("fcm", "terminated"), ("apns", "background")],
)
def test_our_pushes_ring_on_every_path(provider: str, state: str) -> None:
    ring = check_push(provider, pushes()[provider], PAIRED, state)
    assert ring.call_id == ring.session_id == str(SESSION)
    assert (ring.duration_ms, ring.expires_at, ring.opens_call) == (30_000, EXPIRES, True)


#: A well-formed id that is nobody's (fixed, so that the test ids are the same on every run).
OTHER_ID = "0f0e0d0c-0b0a-4908-8706-050403020100"


def _broken(provider: str, key: str, value: Any) -> dict[str, Any]:
    push = pushes()[provider]
    if value is None:
        push.pop(key)
    else:
        push[key] = value
    return push


# Each path refuses only what the app's code on that path refuses (the README's old list
# refused every one of these on every path: `expires_at`, `api_base`, `duration` and the
# CallKit id were our own inventions, and the background path never checked ownership).
@pytest.mark.parametrize(
    ("provider", "state", "key", "value", "requirement"),
    [
        ("fcm", "foreground", "type", "0", 'must be "incoming_call"'),
        ("fcm", "foreground", "type", None, 'must be "incoming_call"'),
        ("fcm", "foreground", "sessionId", "", "must be non-empty"),
        ("fcm", "foreground", "householdId", None, "must be non-empty"),
        ("fcm", "foreground", "relativeId", OTHER_ID, "must be the relative id"),
        ("fcm", "background", "type", "call_scheduled", 'must be "incoming_call"'),
        ("fcm", "terminated", "type", None, 'must be "incoming_call"'),
        ("apns", "background", "type", "call_scheduled", 'must be "incoming_call" (or not'),
        ("apns", "background", "id", "not-a-uuid", "must be a UUID"),
    ],
)
def test_a_push_the_app_would_drop_is_refused_naming_the_key(
    provider: str, state: str, key: str, value: Any, requirement: str
) -> None:
    with pytest.raises(PushRefused) as refused:
        check_push(provider, _broken(provider, key, value), PAIRED, state)
    assert refused.value.field == key
    assert refused.value.reason.startswith(requirement)


@pytest.mark.parametrize(
    ("provider", "state", "key", "value"),
    [
        ("fcm", "background", "sessionId", None),
        ("fcm", "background", "relativeId", OTHER_ID),
        ("fcm", "terminated", "householdId", ""),
        ("fcm", "foreground", "expires_at", None),
        ("fcm", "foreground", "api_base", "ftp://x"),
        ("fcm", "foreground", "id", "not-a-uuid"),
        ("apns", "background", "type", None),  # no type at all: AppDelegate's else-branch
        ("apns", "background", "relativeId", OTHER_ID),
        ("apns", "background", "sessionId", ""),
    ],
)
def test_what_a_path_does_not_check_still_rings(
    provider: str, state: str, key: str, value: Any
) -> None:
    ring = check_push(provider, _broken(provider, key, value), PAIRED, state)
    assert ring.call_id


def test_a_bad_duration_rings_as_long_as_the_app_would() -> None:
    # Dart: int.tryParse(...) ?? 30000; "45" (seconds sent as ms) is a 45 ms ring.
    assert check_push("fcm", _broken("fcm", "duration", "45"), PAIRED).duration_ms == 45
    assert check_push("fcm", _broken("fcm", "duration", "soon"), PAIRED).duration_ms == 30_000
    # Swift: `as? Int ?? 30000`; a string is not an Int.
    assert check_push("apns", _broken("apns", "duration", "30000"), PAIRED).duration_ms == 30_000


def test_without_a_session_id_in_callkits_extra_nothing_is_reported() -> None:
    payload = pushes()["apns"]
    payload["extra"] = {"callType": "in_app_call"}
    ring = check_push("apns", payload, PAIRED)
    assert (ring.session_id, ring.opens_call) == (None, True)
    payload["extra"] = "not an object"
    assert check_push("apns", payload, PAIRED).session_id is None


def test_the_checks_are_one_table_per_path() -> None:
    keys = {path: [c.key for c in table] for path, table in PUSH_CHECKS.items()}
    assert keys == {
        "foreground": ["type", "sessionId", "householdId", "relativeId", "householdId",
                       "relativeId"],
        "background": ["type"],
        "terminated": ["type"],
        "pushkit": ["type", "id"],
    }  # fmt: skip
    # Every condition says where the app's (or its plugin's) code makes it.
    assert all(
        "CallPanionAPK@217646d:" in c.source or "flutter_callkit_incoming@3.0.0:" in c.source
        for table in PUSH_CHECKS.values()
        for c in table
    )


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("45000", 45000),
        ("-45", -45),
        ("+7", 7),
        ("\u00a045\u3000", 45),
        ("0x1F", 31),
        ("-0x10", -16),
        ("0xFFFFFFFFFFFFFFFF", -1),  # 64 bits read as unsigned: the signed int with them
        ("0x8000000000000000", -(2**63)),
        ("0x10000000000000000", None),  # more than 64 bits
        ("9223372036854775807", 2**63 - 1),
        ("-9223372036854775808", -(2**63)),
        ("9223372036854775808", None),
        ("0x", None),
        ("1_000", None),
        ("", None),
    ],
)
def test_duration_parses_as_dart_int_try_parse(text: str, value: int | None) -> None:
    assert dart_int_try_parse(text) == value


def test_the_ring_carries_what_the_app_shows_and_reports() -> None:
    # The CallKit id: the payload's `id` on iOS (the plugin's), the session id on the Dart
    # paths (the ported app's), whatever the other key says.
    other = str(uuid.uuid4())
    apns = pushes()["apns"] | {"id": other.upper()}
    ring = check_push("apns", apns, PAIRED)
    assert (ring.call_id, ring.session_id, ring.caller) == (other, str(SESSION), "CallPanion")
    fcm = pushes()["fcm"] | {"id": other}
    ring = check_push("fcm", fcm, PAIRED, "foreground")
    assert (ring.call_id, ring.session_id, ring.caller) == (
        str(SESSION),
        str(SESSION),
        "CallPanion",
    )
    # An expires_at the ported app cannot read is no expiry (the app at 217646d reads none).
    assert check_push("fcm", fcm | {"expires_at": "soon"}, PAIRED).expires_at is None
    # Our whole message breaks no condition: no warnings.
    message = fcm_call_message(CALL, "fcm_token")
    assert check_push("fcm", pushes()["fcm"], PAIRED, "terminated", message).warnings == ()


def test_scripts_parse_and_name_a_bad_step() -> None:
    assert parse_script("answer:2, ignore,decline,manual,offline") == [
        Behaviour("answer", 2.0),
        Behaviour("ignore"),
        Behaviour("decline"),
        Behaviour("manual"),
        Behaviour("offline"),
    ]
    with pytest.raises(ValueError, match=r"script step 2 \('hangup'\): must be one of"):
        parse_script("answer:1,hangup")
    with pytest.raises(ValueError, match="step 1: N must be between 0 and 120 s"):
        parse_script("answer:500")


def test_the_inbox_hands_a_push_to_a_waiting_phone_as_it_arrives() -> None:
    async def scenario() -> tuple[dict[str, object], dict[str, object]]:
        inbox = Inbox(case_insensitive=True)
        waiting = asyncio.create_task(inbox.wait("ABCD", 0, 30))
        await asyncio.sleep(0)  # the phone's request is now held open
        assert not waiting.done()
        inbox.put("abcd", {"n": 1})
        first = await asyncio.wait_for(waiting, 5)
        later = await inbox.wait("abcd", 1, 0)  # nothing new, no wait asked: at once
        return first, later

    first, later = asyncio.run(scenario())
    assert first == {"token": "ABCD", "pushes": [{"n": 1}], "next": 1}
    assert later == {"token": "abcd", "pushes": [], "next": 1}
    assert inbox_query("/_emulator/inbox?token=t&after=3&wait=2.5") == ("t", 3, 2.5)
    with pytest.raises(ValueError, match="token: required"):
        inbox_query("/_emulator/inbox?after=1")
