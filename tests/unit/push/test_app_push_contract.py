"""Our call pushes, read the way the existing CallPanion app's code reads them.

The conditions are the fixture in tests/support/app_push_conditions.py (key for key, with the app's
file:line); they are applied here on their own, not through the phone simulator, so the
simulator's table (PUSH_CHECKS) is checked against them too.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from typing import Any

import pytest

from python_worker.phone.checks import PUSH_CHECKS, Paired, PushRefused, check_push
from python_worker.push.payloads import apns_voip_payload, fcm_data
from tests.support.app_push_conditions import ANDROID, IOS
from tests.support.push import incoming_call

HOUSEHOLD = uuid.uuid4()
RELATIVE = uuid.uuid4()
STORED = {"household_id": str(HOUSEHOLD), "relative_id": str(RELATIVE)}


def _call(**overrides: Any) -> Any:
    values: dict[str, Any] = {
        "household_id": HOUSEHOLD,
        "relative_id": RELATIVE,
        "relative_name": "Mum",
        "expires_at": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=1),
    }
    return incoming_call(**(values | overrides))


def _holds(test: str, argument: str, value: object) -> bool:
    if test == "equals":
        return value == argument
    if test == "non_empty":
        return isinstance(value, str) and value != ""
    if test == "not_null":
        return isinstance(value, str)
    if test == "stored":
        return value == STORED[argument]
    if test == "int_string":
        return isinstance(value, str) and value.lstrip("-").isdigit()
    if test == "uuid":
        try:
            uuid.UUID(str(value))
        except ValueError:
            return False
        return True
    raise AssertionError(f"unknown test {test}")


def _android_view(data: Mapping[str, str]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    # On Android the app builds CallKit's extra itself from the flat keys
    # (callkit_service.dart:126-131), with fcm_service.dart's `?? ''` defaults.
    extra = {k: data.get(k, "") for k in ("sessionId", "callType", "householdId", "relativeId")}
    return data, extra


def _ios_view(payload: Mapping[str, Any]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    extra = payload.get("extra")
    return payload, extra if isinstance(extra, Mapping) else {}


def _failures(
    conditions: tuple[tuple[str, str, str, str, str], ...],
    push: Mapping[str, Any],
    extra: Mapping[str, Any],
) -> list[str]:
    failed = []
    for source, where, key, test, argument in conditions:
        value = (push if where == "push" else extra).get(key)
        if not _holds(test, argument, value):
            failed.append(f"{source}: {where}.{key} {test} {argument!r} (got {value!r})")
    return failed


def test_one_android_push_passes_every_condition_of_the_app() -> None:
    push, extra = _android_view(fcm_data(_call()))
    assert _failures(ANDROID, push, extra) == []


def test_one_ios_voip_push_passes_every_condition_of_the_app() -> None:
    push, extra = _ios_view(json.loads(apns_voip_payload(_call())))
    assert _failures(IOS, push, extra) == []


def test_a_push_for_another_household_or_relative_fails_the_ownership_check() -> None:
    push, extra = _android_view(fcm_data(_call(household_id=uuid.uuid4())))
    assert [f.split(":")[0] for f in _failures(ANDROID, push, extra)] == [
        "lib/services/fcm_service.dart",
        "lib/services/callkit_service.dart",
    ]
    push, extra = _ios_view(json.loads(apns_voip_payload(_call(relative_id=uuid.uuid4()))))
    assert len(_failures(IOS, push, extra)) == 1


def test_the_simulators_table_names_every_key_the_app_checks() -> None:
    ours = {check.key for check in PUSH_CHECKS}
    for _, where, key, _, _ in ANDROID + IOS:
        assert (key if where == "push" else f"extra.{key}") in ours | {"duration"}


@pytest.mark.parametrize("provider", ["fcm", "apns"])
def test_the_simulator_rings_for_what_the_app_rings_for(provider: str) -> None:
    call = _call()
    body = fcm_data(call) if provider == "fcm" else json.loads(apns_voip_payload(call))
    paired = Paired(str(HOUSEHOLD), str(RELATIVE))
    assert check_push(provider, body, paired).call_id == str(call.session_id)
    with pytest.raises(PushRefused, match="householdId: must be the household id"):
        check_push(provider, body, Paired(str(uuid.uuid4()), str(RELATIVE)))
    with pytest.raises(PushRefused, match="relativeId: must be the relative id"):
        check_push(provider, body, Paired(str(HOUSEHOLD), str(uuid.uuid4())))
    with pytest.raises(PushRefused, match="the app must be paired"):
        check_push(provider, body, None)
