"""The phone's checks refuse what the app would drop: the negative cases (issue 26).

Each case changes one thing in a push we really send (the payload builders' own output) and
names the key and the requirement the simulator must refuse it with. Pure functions: no
cluster, no network.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

import pytest

from python_worker.phone.checks import PUSH_CHECKS, Paired, PushRefused, check_push, read_push
from python_worker.push.payloads import IncomingCall, apns_voip_payload, fcm_data

# Fixed ids, so that the parametrized tests' ids are the same on every run.
SESSION = uuid.UUID("6a0f2c1e-94b3-4d57-8e21-3c9b7d4a5f60")
HOUSEHOLD = uuid.UUID("1b2c3d4e-5f60-4718-89ab-cdef01234567")
RELATIVE = uuid.UUID("7e6d5c4b-3a29-4180-9f7e-6d5c4b3a2918")
PAIRED = Paired(str(HOUSEHOLD), str(RELATIVE))
EXPIRES = dt.datetime(2031, 1, 6, 9, 2, tzinfo=dt.UTC)


def call(api_base: str = "https://api.example/", session: uuid.UUID = SESSION) -> IncomingCall:
    return IncomingCall(
        session, "CallPanion", "Morning chat", 30, EXPIRES, api_base, HOUSEHOLD, RELATIVE, "Nan"
    )


def apns(**changes: Any) -> dict[str, Any]:
    """Our VoIP payload (typed JSON) with `changes` applied to it (`extra.x` for CallKit's)."""
    push: dict[str, Any] = json.loads(apns_voip_payload(call()))
    for key, value in changes.items():
        target, name = (push["extra"], key[6:]) if key.startswith("extra_") else (push, key)
        if value is None:
            target.pop(name)
        else:
            target[name] = value
    return push


def refused(push: dict[str, Any], paired: Paired | None = PAIRED) -> tuple[str, str]:
    with pytest.raises(PushRefused) as caught:
        check_push("apns", push, paired)
    assert str(caught.value) == f"{caught.value.field}: {caught.value.reason}"
    return caught.value.field, caught.value.reason


UUID_RULE = ("id", "the CallKit id must be a UUID")
SAME_ID_RULE = ("id", "the CallKit id must be the call session id (sessionId)")


@pytest.mark.parametrize(
    "written",
    [
        "{" + str(SESSION) + "}",  # braces
        SESSION.hex,  # no hyphens
        SESSION.urn,  # urn:uuid:...
        str(SESSION)[:-1],  # one digit short
        "",
    ],
)
def test_a_non_canonical_callkit_id_is_refused(written: str) -> None:
    push = apns(id=written, sessionId=written or "x", extra_sessionId=written or "x")
    assert refused(push) == UUID_RULE


def test_a_callkit_id_that_is_not_text_is_refused() -> None:
    assert refused(apns(id=int(SESSION))) == UUID_RULE


def test_an_upper_case_uuid_is_canonical_when_every_copy_agrees() -> None:
    upper = str(SESSION).upper()
    ring = check_push("apns", apns(id=upper, sessionId=upper, extra_sessionId=upper), PAIRED)
    assert ring.call_id == upper


def test_extra_session_id_must_be_the_callkit_id() -> None:
    assert refused(apns(extra_sessionId=str(uuid.uuid4()))) == SAME_ID_RULE


def test_session_id_must_be_the_callkit_id() -> None:
    other = str(uuid.uuid4())
    assert refused(apns(sessionId=other, extra_sessionId=other)) == SAME_ID_RULE


def test_extra_household_id_must_be_the_stored_one() -> None:
    assert refused(apns(extra_householdId=str(uuid.uuid4()))) == (
        "extra.householdId",
        "CallKit's extra must carry the household id",
    )


def test_extra_relative_id_must_be_the_stored_one() -> None:
    assert refused(apns(extra_relativeId=str(uuid.uuid4()))) == (
        "extra.relativeId",
        "CallKit's extra must carry the relative id",
    )


@pytest.mark.parametrize("key", ["sessionId", "callType"])
def test_extra_must_carry_the_session_and_the_call_type(key: str) -> None:
    assert refused(apns(**{f"extra_{key}": None}))[0] == f"extra.{key}"
    assert refused(apns(**{f"extra_{key}": ""}))[0] == f"extra.{key}"


def test_extra_that_is_not_an_object_is_refused() -> None:
    assert refused(apns(extra=["sessionId"]))[0] == "extra.sessionId"
    data = fcm_data(call())
    data["extra"] = "{not json"
    with pytest.raises(PushRefused) as caught:
        check_push("fcm", data, PAIRED)
    assert caught.value.field == "extra.sessionId"


def test_a_household_the_app_did_not_store_is_refused() -> None:
    other = Paired(str(uuid.uuid4()), str(RELATIVE))
    assert refused(apns(), other) == (
        "householdId",
        "must be the household id the app stored at pairing (and the app must be paired)",
    )


def test_an_app_never_paired_refuses_every_call() -> None:
    assert refused(apns(), None)[0] == "householdId"


@pytest.mark.parametrize("value", [123, None])
def test_ids_that_are_not_text_are_refused(value: Any) -> None:
    for key in ("sessionId", "householdId", "relativeId"):
        assert refused(apns(**{key: value})) == (key, "must be non-empty")


@pytest.mark.parametrize(
    "api_base",
    ["ftp://api.example", "wss://api.example", "api.example", "HTTPS//api.example", "http:/x"],
)
def test_an_api_base_that_is_not_http_is_refused(api_base: str) -> None:
    assert refused(apns(api_base=api_base)) == (
        "api_base",
        "must be the http(s) URL the app reports call events to",
    )


def test_an_api_base_that_is_not_text_is_refused() -> None:
    assert refused(apns(api_base=["https://api.example"]))[0] == "api_base"


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_both_http_schemes_are_accepted_and_the_trailing_slash_goes(scheme: str) -> None:
    ring = check_push("apns", apns(api_base=f"{scheme}://api.example/"), PAIRED)
    assert ring.api_base == f"{scheme}://api.example"


@pytest.mark.parametrize("kind", ["cancel", "incoming_call ", "INCOMING_CALL"])
def test_a_cancel_where_a_call_was_expected_is_refused(kind: str) -> None:
    assert refused(apns(type=kind)) == ("type", 'must be "incoming_call"')


@pytest.mark.parametrize("expires_at", [20310106, "soon", "2031-01-06T09:02:00"])
def test_an_expiry_without_an_offset_or_not_a_time_is_refused(expires_at: Any) -> None:
    assert refused(apns(expires_at=expires_at)) == (
        "expires_at",
        "must be an ISO 8601 time with an offset",
    )


@pytest.mark.parametrize("duration", [-1, 0, "30000", 30.5])
def test_a_ring_time_that_is_not_a_positive_integer_is_refused(duration: Any) -> None:
    assert refused(apns(duration=duration)) == (
        "duration",
        "must be the ring time in milliseconds (a positive integer)",
    )


def test_a_one_millisecond_ring_is_a_ring() -> None:
    assert check_push("apns", apns(duration=1), PAIRED).duration_ms == 1


def test_both_providers_read_as_the_same_typed_push() -> None:
    # FCM's strings (extra, duration, callkitType) decoded to what the VoIP payload carries.
    fcm = read_push("fcm", fcm_data(call()))
    voip = read_push("apns", json.loads(apns_voip_payload(call())))
    assert fcm.pop("kind") == "incoming_call"
    assert voip.pop("aps") == {}
    assert fcm == voip
    assert (fcm["callkitType"], fcm["duration"]) == (0, 30_000)
    # A string that is not JSON is kept as the app would see it.
    assert read_push("fcm", {"duration": "soon", "type": "0"}) == {"duration": "soon", "type": "0"}


def test_the_ring_carries_what_the_app_shows() -> None:
    ring = check_push("fcm", fcm_data(call()), PAIRED)
    assert ring.caller == "CallPanion"
    assert ring.expires_at == EXPIRES
    assert ring.extra["sessionId"] == str(SESSION)
    nameless = apns(nameCaller=None)
    assert check_push("apns", nameless, PAIRED).caller == ""


LOW, HIGH = "00000000-0000-4000-8000-000000000000", "ffffffff-ffff-4fff-bfff-ffffffffffff"


@pytest.mark.parametrize("other", [LOW, HIGH])
def test_ids_are_compared_for_equality_not_order(other: str) -> None:
    # One id sorting before the expected one and one after: both are refused.
    assert refused(apns(relativeId=other, extra_relativeId=other))[0] == "relativeId"
    assert refused(apns(extra_relativeId=other))[0] == "extra.relativeId"
    assert refused(apns(extra_householdId=other))[0] == "extra.householdId"
    assert refused(apns(sessionId=other, extra_sessionId=other)) == SAME_ID_RULE
    assert refused(apns(extra_sessionId=other)) == SAME_ID_RULE
    assert refused(apns(id=other)) == SAME_ID_RULE


def test_a_uuid_with_its_hyphens_moved_is_not_canonical() -> None:
    hexed = SESSION.hex
    moved = "-".join([hexed[:4], hexed[4:12], hexed[12:16], hexed[16:20], hexed[20:]])
    assert moved < str(SESSION)  # sorts before the canonical form, so order cannot pass it
    assert refused(apns(id=moved, sessionId=moved, extra_sessionId=moved)) == UUID_RULE


def test_what_the_checks_hand_over_cannot_be_changed_afterwards() -> None:
    ring = check_push("apns", apns(), PAIRED)
    for value, attribute in ((ring, "call_id"), (PAIRED, "household_id")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, attribute, "x")
    with pytest.raises(dataclasses.FrozenInstanceError):
        PUSH_CHECKS[0].key = "x"  # type: ignore[misc]
