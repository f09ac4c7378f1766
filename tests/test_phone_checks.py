"""The phone simulator reads our pushes the way the app does before it rings."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any

import pytest

from python_worker.emulators.inbox import Inbox, inbox_query
from python_worker.phone.checks import PUSH_CHECKS, Paired, PushRefused, check_push
from python_worker.phone.script import Behaviour, parse_script
from python_worker.push.payloads import IncomingCall, apns_voip_payload, fcm_data

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
        ("fcm", "foreground", "relativeId", str(uuid.uuid4()), "must be the relative id"),
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
        ("fcm", "background", "relativeId", str(uuid.uuid4())),
        ("fcm", "terminated", "householdId", ""),
        ("fcm", "foreground", "expires_at", None),
        ("fcm", "foreground", "api_base", "ftp://x"),
        ("fcm", "foreground", "id", "not-a-uuid"),
        ("apns", "background", "type", None),  # no type at all: AppDelegate's else-branch
        ("apns", "background", "relativeId", str(uuid.uuid4())),
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
