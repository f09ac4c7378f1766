"""Our call pushes, read the way the existing CallPanion app's code reads them, per path.

The conditions are the fixture in tests/app_push_conditions.py (with the app's file:line);
they are evaluated here on their own, not through the phone simulator. Then the simulator's
table (python_worker.phone.checks) is held to the fixture path by path: it refuses exactly
where the app refuses and rings where the app rings.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from python_worker.phone import checks
from python_worker.phone.checks import Paired, PushRefused, check_push, ring_ms
from python_worker.push.payloads import IncomingCall, apns_voip_payload, fcm_call_message
from tests.support.app_push_conditions import (
    CALLKIT,
    DART_DURATIONS,
    FCM_MESSAGE,
    PATHS,
    SWIFT_DURATIONS,
    Condition,
)
from tests.support.push import incoming_call

HOUSEHOLD = uuid.uuid4()
RELATIVE = uuid.uuid4()
STORED = {"household_id": str(HOUSEHOLD), "relative_id": str(RELATIVE)}
PAIRED = Paired(str(HOUSEHOLD), str(RELATIVE))
#: Fixture path -> the simulator's path name.
SIMULATED = {
    "android_foreground": "foreground",
    "android_background": "background",
    "android_terminated": "terminated",
    "ios_pushkit": "pushkit",
}
REFUSING = ("no_ring", "killed")


def _call(**overrides: Any) -> IncomingCall:
    values: dict[str, Any] = {
        "household_id": HOUSEHOLD,
        "relative_id": RELATIVE,
        "relative_name": "Mum",
        "expires_at": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
    }
    return incoming_call(**(values | overrides))


def _dart_ms(value: object) -> int:
    # Written from Dart's documented int.tryParse, independently of the simulator's.
    if not isinstance(value, str):
        return 30000
    text = value.strip()
    match = re.fullmatch(r"([+-]?)(?:0[xX]([0-9A-Fa-f]+)|([0-9]+))", text)
    if not match:
        return 30000
    number = int(match[2], 16) if match[2] else int(match[3])
    return -number if match[1] == "-" else number


def _swift_ms(value: object) -> int:
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        return int(value)
    return 30000


def _value(key: str, push: Mapping[str, Any], message: Mapping[str, Any]) -> object:
    where, _, name = key.partition(".")
    if where == "data":
        return push.get(name)
    if where == "extra":
        extra = push.get("extra")
        return extra.get(name) if isinstance(extra, Mapping) else None
    value: object = message
    for part in name.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _holds(
    condition: Condition, push: Mapping[str, Any], message: Mapping[str, Any], ring_s: int
) -> bool:
    value = _value(condition.key, push, message)
    test, argument = condition.test, condition.argument
    if test == "equals":
        return value == argument
    if test == "equals_ci":
        return isinstance(value, str) and value.lower() == argument
    if test == "non_empty":
        return isinstance(value, str) and value != ""
    if test == "is_string":
        return isinstance(value, str)
    if test == "is_object":
        return isinstance(value, Mapping)
    if test == "stored":
        return value == STORED[argument]
    if test == "ios_type":
        return value == argument or not isinstance(value, str)
    if test == "swift_uuid":
        return (
            isinstance(value, str)
            and re.fullmatch(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}", value)
            is not None
        )
    if test == "absent":
        return value is None
    if test == "ttl_within":
        return (
            isinstance(value, str)
            and re.fullmatch(r"\d+s", value) is not None
            and (0 < int(value[:-1]) <= ring_s)
        )
    if test == "dart_ms":
        return _dart_ms(value) == ring_s * 1000
    if test == "swift_ms":
        return _swift_ms(value) == ring_s * 1000
    raise AssertionError(f"unknown test {test}")


def _pushes(call: IncomingCall) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each path's view of one call: (what the code reads, the whole FCM message)."""
    message = fcm_call_message(call, "fcm_token")
    data = dict(message["data"])  # type: ignore[call-overload]
    voip = json.loads(apns_voip_payload(call))
    # On Android CallKit's extra is what the app builds from the flat keys.
    android_extra = {
        "extra": {
            k: data.get(k, "") for k in ("sessionId", "callType", "householdId", "relativeId")
        }
    }
    return {
        "android_foreground": (data, message),
        "android_background": (data, message),
        "android_terminated": (data, message),
        "ios_pushkit": (voip, {}),
        "callkit": (voip, {}),
        "callkit_android": (android_extra, {}),
        "fcm_message": (data, message),
    }


def _failures(path: str, call: IncomingCall) -> list[str]:
    push, message = _pushes(call)[path]
    conditions = PATHS["callkit" if path == "callkit_android" else path]
    return [
        f"{c.source}: {c.key} {c.test} {c.argument!r} (got {_value(c.key, push, message)!r})"
        for c in conditions
        if not _holds(c, push, message, call.ring_seconds)
    ]


@pytest.mark.parametrize("path", [*PATHS, "callkit_android"])
def test_our_push_passes_every_condition_of_the_path(path: str) -> None:
    assert _failures(path, _call()) == []


def test_every_condition_names_the_lines_that_make_it() -> None:
    for conditions in PATHS.values():
        for condition in conditions:
            assert re.search(r"\.(dart|swift):\d+|firebase\.google\.com", condition.source), (
                condition
            )


def test_only_the_foreground_path_checks_ownership() -> None:
    stranger = _call(household_id=uuid.uuid4(), relative_id=uuid.uuid4())
    assert len(_failures("android_foreground", stranger)) == 2
    for path in ("android_background", "android_terminated", "ios_pushkit", "callkit"):
        assert _failures(path, stranger) == [], path


def test_duration_in_seconds_fails_the_parse_as_the_app_reads_it() -> None:
    # 45 (seconds) reads as a 45 ms ring on the Dart paths: the condition catches it.
    call = _call()
    data, message = _pushes(call)["android_background"]
    broken = data | {"duration": str(call.ring_seconds)}
    duration = next(c for c in PATHS["android_background"] if c.key == "data.duration")
    assert not _holds(duration, broken, message, call.ring_seconds)


@pytest.mark.parametrize(("value", "expected"), DART_DURATIONS)
def test_the_simulator_parses_duration_as_dart_does(value: object, expected: int) -> None:
    push = {} if value is None else {"duration": value}
    assert _dart_ms(value) == expected
    for path in ("foreground", "background", "terminated"):
        assert ring_ms(path, push) == expected


@pytest.mark.parametrize(("value", "expected"), SWIFT_DURATIONS)
def test_the_simulator_parses_duration_as_swift_does(value: object, expected: int) -> None:
    push = {} if value is None else {"duration": value}
    assert _swift_ms(value) == expected
    assert ring_ms("pushkit", push) == expected


def test_the_simulators_table_is_the_fixtures_path_by_path() -> None:
    for fixture_path, path in SIMULATED.items():
        refusing = [
            (c.key.removeprefix("data."), c.effect)
            for c in PATHS[fixture_path]
            if c.effect in REFUSING
        ]
        ours = [(c.key, c.effect) for c in checks.PUSH_CHECKS[path]]  # type: ignore[index]
        assert ours == refusing, path
    assert [c.key for c in checks.MESSAGE_CHECKS] == [
        c.key.removeprefix("message.") for c in FCM_MESSAGE
    ]
    assert [c.effect for c in checks.MESSAGE_CHECKS] == [c.effect for c in FCM_MESSAGE]
    assert {c.key for c in CALLKIT} == {"extra.sessionId", "extra.callType"}


def _violating(condition: Condition) -> object:
    return {
        "equals": "call_scheduled",
        "non_empty": "",
        "stored": str(uuid.uuid4()),
        "ios_type": "call_scheduled",
        "swift_uuid": "not-a-uuid",
    }[condition.test]


@pytest.mark.parametrize("fixture_path", list(SIMULATED))
def test_the_simulator_is_as_strict_and_as_lenient_as_each_path(fixture_path: str) -> None:
    call = _call()
    provider = "apns" if fixture_path == "ios_pushkit" else "fcm"
    push, message = _pushes(call)[fixture_path]
    path = SIMULATED[fixture_path]
    state = "background" if path == "pushkit" else path
    # Every refusing condition of this path refuses, naming its key and effect...
    for condition in PATHS[fixture_path]:
        if condition.effect not in REFUSING:
            continue
        key = condition.key.removeprefix("data.")
        broken = dict(push) | {key: _violating(condition)}
        with pytest.raises(PushRefused) as refused:
            check_push(provider, broken, PAIRED, state, message or None)
        assert (refused.value.field, refused.value.effect) == (key, condition.effect)
    # ...and a violation of another path's condition only, rings here.
    for other, conditions in PATHS.items():
        for condition in conditions:
            key = condition.key.removeprefix("data.")
            mine = {c.key for c in PATHS[fixture_path] if c.effect in REFUSING}
            if condition.effect not in REFUSING or condition.key in mine or other == fixture_path:
                continue
            if not condition.key.startswith("data."):
                continue
            broken = dict(push) | {key: _violating(condition)}
            check_push(provider, broken, PAIRED, state, message or None)


def test_an_unpaired_app_rings_only_off_the_foreground_path() -> None:
    call = _call()
    data, message = _pushes(call)["android_foreground"]
    with pytest.raises(PushRefused, match="the app must be paired"):
        check_push("fcm", data, None, "foreground", message)
    assert check_push("fcm", data, None, "background", message).call_id == call.call_id


def test_a_normal_priority_message_is_lost_in_the_background_but_not_in_the_foreground() -> None:
    call = _call()
    data, message = _pushes(call)["android_background"]
    normal = message | {"android": {"priority": "normal", "ttl": "30s"}}
    for state in ("background", "terminated"):
        with pytest.raises(PushRefused) as refused:
            check_push("fcm", data, PAIRED, state, normal)
        assert (refused.value.field, refused.value.effect) == ("android.priority", "late_or_lost")
    assert check_push("fcm", data, PAIRED, "foreground", normal).call_id == call.call_id
    # A notification block or a long TTL still rings, and is reported as a warning.
    noisy = message | {"notification": {"title": "x"}, "android": {"priority": "high",
                                                                     "ttl": "3600s"}}  # fmt: skip
    ring = check_push("fcm", data, PAIRED, "background", noisy)
    assert ring.warnings == ("notification", "android.ttl")
