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


@pytest.mark.parametrize("provider", ["fcm", "apns"])
def test_our_pushes_pass_every_check(provider: str) -> None:
    ring = check_push(provider, pushes()[provider], PAIRED)
    assert ring.call_id == str(SESSION)
    assert (ring.duration_ms, ring.expires_at, ring.api_base) == (30_000, EXPIRES, CALL.api_base)


def _broken(provider: str, key: str, value: Any) -> dict[str, Any]:
    push = pushes()[provider]
    if value is None:
        push.pop(key)
    else:
        push[key] = value
    return push


#: A well-formed id that is nobody's (fixed, so that the test ids are the same on every run).
OTHER_ID = "0f0e0d0c-0b0a-4908-8706-050403020100"


@pytest.mark.parametrize("provider", ["fcm", "apns"])
@pytest.mark.parametrize(
    ("key", "value", "requirement"),
    [
        ("type", "0", 'must be "incoming_call"'),
        ("type", None, 'must be "incoming_call"'),
        ("sessionId", "", "must be non-empty"),
        ("householdId", None, "must be non-empty"),
        ("relativeId", OTHER_ID, "must be the relative id the app stored at pairing"),
        ("id", "not-a-uuid", "the CallKit id must be a UUID"),
        ("id", OTHER_ID, "the CallKit id must be the call session id"),
        ("expires_at", None, "must be an ISO 8601 time with an offset"),
        ("expires_at", "2031-01-06T09:02:00", "must be an ISO 8601 time with an offset"),
        ("duration", 0, "must be the ring time in milliseconds"),
        ("api_base", "ftp://x", "must be the http(s) URL"),
    ],
)
def test_a_push_the_app_would_drop_is_refused_naming_the_key(
    provider: str, key: str, value: Any, requirement: str
) -> None:
    if provider == "fcm" and value is not None and not isinstance(value, str):
        value = str(value)  # FCM data values are strings
    with pytest.raises(PushRefused) as refused:
        check_push(provider, _broken(provider, key, value), PAIRED)
    assert refused.value.field == key
    assert refused.value.reason.startswith(requirement)


def test_the_checks_are_one_table_in_the_apps_order() -> None:
    assert [c.key for c in PUSH_CHECKS] == [
        "type",
        "sessionId",
        "householdId",
        "relativeId",
        "householdId",
        "relativeId",
        "extra.sessionId",
        "extra.callType",
        "extra.householdId",
        "extra.relativeId",
        "id",
        "id",
        "expires_at",
        "duration",
        "api_base",
    ]
    # The app's own conditions say where its code makes them.
    assert all("CallPanionAPK@217646d:" in c.source for c in PUSH_CHECKS[:10])


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
