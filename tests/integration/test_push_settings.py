"""Senders built from the FCM_* / APNS_* environment variables, as the worker will build them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from python_worker.emulators.suite import ThreadedSuite
from python_worker.errors import CallPanionError
from python_worker.push.apns import ApnsSender
from python_worker.push.fcm import FcmSender
from python_worker.push.outcomes import SendResult
from python_worker.push.settings import apns_settings, fcm_settings
from tests.support.push import apns_token, fcm_token, incoming_call, run


def test_the_emulators_environment_builds_working_senders(emulators: ThreadedSuite) -> None:
    env = emulators.suite.env()
    fcm_config, apns_config = fcm_settings(env), apns_settings(env)
    assert fcm_config is not None
    assert apns_config is not None

    async def body() -> tuple[SendResult, SendResult]:
        fcm = FcmSender.from_settings(fcm_config)
        apns = ApnsSender.from_settings(apns_config)
        try:
            call = incoming_call()
            return await fcm.send_call(call, fcm_token()), await apns.send_call(
                call, apns_token(), apns_id=uuid.uuid4()
            )
        finally:
            await fcm.aclose()
            await apns.aclose()

    android, ios = run(body())
    assert android.delivered
    assert ios.delivered


def test_providers_are_off_when_not_configured() -> None:
    assert fcm_settings({}) is None
    assert apns_settings({}) is None


def test_production_endpoints_are_the_defaults(tmp_path: Path) -> None:
    key = tmp_path / "AuthKey_ABC.p8"
    key.write_text("x")
    account = tmp_path / "sa.json"
    account.write_text("{}")
    apns = apns_settings(
        {
            "APNS_KEY_FILE": str(key),
            "APNS_KEY_ID": "ABC",
            "APNS_TEAM_ID": "T",
            "APNS_BUNDLE_ID": "com.x",
        }
    )
    fcm = fcm_settings({"FCM_SERVICE_ACCOUNT_FILE": str(account)})
    assert apns is not None
    assert fcm is not None
    assert (apns.host, apns.port, apns.ca_file) == ("api.push.apple.com", 443, None)
    assert (fcm.base_url, fcm.ca_file) == ("https://fcm.googleapis.com", None)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"FCM_SERVICE_ACCOUNT_FILE": "/nonexistent/sa.json"},
            "FCM_SERVICE_ACCOUNT_FILE: no such file",
        ),
        ({"APNS_KEY_FILE": "/nonexistent/key.p8"}, "APNS_KEY_FILE: no such file"),
        (
            {"APNS_KEY_FILE": "KEY", "APNS_KEY_ID": "ABC"},
            "APNS_TEAM_ID, APNS_BUNDLE_ID must be set too",
        ),
        (
            {
                "APNS_KEY_FILE": "KEY",
                "APNS_KEY_ID": "A",
                "APNS_TEAM_ID": "T",
                "APNS_BUNDLE_ID": "b",
                "APNS_PORT": "x",
            },
            "APNS_PORT",
        ),
    ],
)
def test_bad_settings_name_the_variable(tmp_path: Path, env: dict[str, str], message: str) -> None:
    key = tmp_path / "key.p8"
    key.write_text("x")
    env = {k: (str(key) if v == "KEY" else v) for k, v in env.items()}
    with pytest.raises(CallPanionError, match=message):
        read_both(env)


def read_both(env: dict[str, str]) -> None:
    fcm_settings(env)
    apns_settings(env)
