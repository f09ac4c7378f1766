"""The alert emulators are faithful: the official `twilio` library is the oracle for the
Twilio emulator's API and signatures, and the push service refuses every VAPID JWT that
RFC 8292 says a push service must refuse.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from pywebpush import WebPusher
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from python_worker.api.alerts import twilio_signature
from python_worker.emulators.alerts import TWILIO_NUMBER
from python_worker.emulators.webpush import b64url
from tests.support.alerts import ThreadedAlerts, alert_emulators
from tests.support.worker import wait_for


@pytest.fixture(scope="module")
def alerts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ThreadedAlerts]:
    with alert_emulators(tmp_path_factory.mktemp("alerts")) as threaded:
        threaded.emulators.twilio.callback_delay_s = 0.0
        yield threaded


@pytest.fixture
def twilio(alerts: ThreadedAlerts, monkeypatch: pytest.MonkeyPatch) -> Client:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(alerts.emulators.endpoints.ca_file))
    emulator = alerts.emulators.twilio
    client = Client(emulator.account_sid, emulator.auth_token)
    client.api.base_url = alerts.emulators.endpoints.twilio_base_url
    return client


# -- Twilio: the official client against the emulator ------------------------------------------


def test_the_twilio_client_sends_and_reads_back_a_message(twilio: Client) -> None:
    message = twilio.messages.create(to="+447700900123", from_=TWILIO_NUMBER, body="hello")
    assert message.sid is not None
    assert message.sid.startswith("SM")
    assert message.status == "queued"
    assert message.to == "+447700900123"
    assert message.error_code is None
    assert message.date_created is not None  # RFC 2822, parsed by the client
    fetched = twilio.messages(message.sid).fetch()
    assert fetched.body == "hello"


@pytest.mark.parametrize(
    ("to", "state", "code"),
    [("0044 7700", None, 21211), ("+447700900666", "unsubscribed", 21610)],
)
def test_the_twilio_client_sees_the_documented_errors(
    twilio: Client, alerts: ThreadedAlerts, to: str, state: str | None, code: int
) -> None:
    if state:
        alerts.emulators.twilio.number_states[to] = state
    with pytest.raises(TwilioRestException) as raised:
        twilio.messages.create(to=to, from_=TWILIO_NUMBER, body="hello")
    assert (raised.value.status, raised.value.code) == (400, code)


def test_the_twilio_client_with_a_wrong_token_is_refused(
    alerts: ThreadedAlerts, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(alerts.emulators.endpoints.ca_file))
    client = Client(alerts.emulators.twilio.account_sid, "wrong")
    client.api.base_url = alerts.emulators.endpoints.twilio_base_url
    with pytest.raises(TwilioRestException) as raised:
        client.messages.create(to="+447700900123", from_=TWILIO_NUMBER, body="x")
    assert (raised.value.status, raised.value.code) == (401, 20003)


def test_status_callbacks_are_signed_as_twilios_validator_expects(
    twilio: Client, alerts: ThreadedAlerts
) -> None:
    url = "http://127.0.0.1:9/v1/webhooks/twilio/status?x=1"  # nobody listens: only the post
    message = twilio.messages.create(
        to="+447700900124", from_=TWILIO_NUMBER, body="hi", status_callback=url
    )
    emulator = alerts.emulators.twilio

    def posted() -> list[dict[str, Any]]:
        return [c for c in emulator.callbacks_posted if c["params"]["MessageSid"] == message.sid]

    callbacks = wait_for(
        "two status callbacks", lambda: (lambda p: p if len(p) == 2 else None)(posted())
    )
    validator = RequestValidator(emulator.auth_token)
    assert [c["params"]["MessageStatus"] for c in callbacks] == ["sent", "delivered"]
    for callback in callbacks:
        assert validator.validate(callback["url"], callback["params"], callback["signature"])
        # Our API's verification computes the same signature; a changed field breaks it.
        assert (
            twilio_signature(emulator.auth_token, url, callback["params"]) == callback["signature"]
        )
        tampered = {**callback["params"], "MessageStatus": "failed"}
        assert not validator.validate(url, tampered, callback["signature"])


def test_our_webhook_signature_is_the_one_twilio_computes() -> None:
    params = {
        "From": "+447700900123",
        "Body": "OK ✓",
        "MessageSid": "SM" + "a" * 32,
        "To": TWILIO_NUMBER,
    }
    url = "https://api.example.org/v1/webhooks/twilio/sms"
    expected = RequestValidator("secret-token").compute_signature(url, params)
    assert twilio_signature("secret-token", url, params) == expected


# -- Web Push: what the push service refuses ---------------------------------------------------


def post_push(
    alerts: ThreadedAlerts,
    claims: dict[str, Any] | None,
    *,
    key: ec.EllipticCurvePrivateKey | None = None,
    sign_with: ec.EllipticCurvePrivateKey | None = None,
    scheme: str = "vapid",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> httpx.Response:
    emulator = alerts.emulators.webpush
    subscription = emulator.new_subscription()
    endpoint = subscription["endpoint"]
    key = key or ec.generate_private_key(ec.SECP256R1())
    send = {"TTL": "60", "Content-Encoding": "aes128gcm"}
    if claims is not None:
        token = jwt.encode(claims, sign_with or key, algorithm="ES256")
        k = b64url(key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint))
        send["Authorization"] = f"{scheme} t={token}, k={k}"
    send.update(headers or {})
    if body is None:
        body = WebPusher(subscription).encode(json.dumps({"hello": 1}).encode(), "aes128gcm")[
            "body"
        ]
    context = ssl.create_default_context(cafile=str(alerts.emulators.endpoints.ca_file))
    with httpx.Client(verify=context, http2=True) as client:
        return client.post(endpoint, content=body, headers=send)


def good(alerts: ThreadedAlerts, **change: Any) -> dict[str, Any]:
    claims = {
        "aud": alerts.emulators.webpush.origin,
        "exp": int(time.time()) + 3600,
        "sub": "mailto:ops@example.org",
    }
    claims.update(change)
    return {k: v for k, v in claims.items() if v is not None}


def test_a_correct_push_is_accepted_over_http2(alerts: ThreadedAlerts) -> None:
    response = post_push(alerts, good(alerts))
    assert response.status_code == 201, response.text
    assert response.http_version == "HTTP/2"


@pytest.mark.parametrize(
    ("change", "status", "says"),
    [
        ({"aud": "https://push.example.net"}, 403, "aud"),
        ({"exp": int(time.time()) + 25 * 3600}, 403, "24 hours"),
        ({"exp": int(time.time()) - 10}, 403, "expired"),
        ({"sub": "ops@example.org"}, 403, "sub"),
        ({"sub": "http://example.org"}, 403, "sub"),
        ({"sub": None}, 403, "sub"),
    ],
)
def test_vapid_claims_are_checked(
    alerts: ThreadedAlerts, change: dict[str, Any], status: int, says: str
) -> None:
    response = post_push(alerts, good(alerts, **change))
    assert response.status_code == status
    assert says in response.json()["error"]


def test_a_jwt_not_signed_by_k_is_refused(alerts: ThreadedAlerts) -> None:
    response = post_push(alerts, good(alerts), sign_with=ec.generate_private_key(ec.SECP256R1()))
    assert response.status_code == 401
    assert "signature" in response.json()["error"]


def test_no_authorization_or_another_scheme_is_refused(alerts: ThreadedAlerts) -> None:
    assert post_push(alerts, None).status_code == 401
    assert post_push(alerts, good(alerts), scheme="WebPush").status_code == 401


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"TTL": ""}, 400),
        ({"Content-Encoding": "aesgcm"}, 400),
        ({"Urgency": "now"}, 400),
        ({"Topic": "x" * 33}, 400),
    ],
)
def test_rfc8030_headers_are_checked(
    alerts: ThreadedAlerts, headers: dict[str, str], status: int
) -> None:
    assert post_push(alerts, good(alerts), headers=headers).status_code == status


def test_a_body_over_4096_bytes_is_413(alerts: ThreadedAlerts) -> None:
    assert post_push(alerts, good(alerts), body=b"\0" * 4097).status_code == 413
