"""The emulators are faithful: the official clients from PyPI work against them unchanged.

- firebase-admin sends through the FCM emulator (its service account's `token_uri` pointed at
  the emulator, the send URL redirected) over HTTP/2 (async, httpx) and HTTP/1.1 (sync,
  requests), and raises its documented exception classes for each FcmError.
- aioapns sends through the APNs emulator (trusting its CA) and sees the same statuses and
  reasons our sender sees for the same situations.
"""

from __future__ import annotations

import asyncio
import ssl
import uuid
from collections.abc import Iterator
from typing import Any

import firebase_admin
import pytest
from aioapns import APNs, NotificationRequest, PushType
from aioapns.connection import APNsProductionClientProtocol
from firebase_admin import credentials, exceptions, messaging

from python_worker.emulators.credentials import make_apns_key
from python_worker.emulators.faults import Fault
from python_worker.emulators.suite import Endpoints, ThreadedSuite
from python_worker.push.outcomes import Outcome, SendResult
from tests.support.push import (
    apns_token,
    fcm_token,
    incoming_call,
    make_apns_sender,
    make_fcm_sender,
    once,
    run,
)

# -- firebase-admin ----------------------------------------------------------------------

# firebase-admin 7.7 marks Message.token deprecated in favour of `fid`; the v1 API contract in
# PROTOCOLS.md (and our sender) still uses `token`, which it sends unchanged.
pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")


@pytest.fixture
def firebase_app(
    endpoints: Endpoints, monkeypatch: pytest.MonkeyPatch
) -> Iterator[firebase_admin.App]:
    # google-auth (requests) and firebase-admin's httpx client trust the emulator's CA.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(endpoints.ca_file))
    monkeypatch.setenv("SSL_CERT_FILE", str(endpoints.ca_file))
    app = firebase_admin.initialize_app(
        credentials.Certificate(str(endpoints.service_account_file)), name=f"emu-{uuid.uuid4()}"
    )
    service = messaging._get_messaging_service(app)
    service._fcm_url = f"{endpoints.fcm_base_url}/v1/projects/{endpoints.project_id}/messages:send"
    try:
        yield app
    finally:
        firebase_admin.delete_app(app)


def admin_message(token: str) -> messaging.Message:
    return messaging.Message(
        token=token,
        data={"kind": "incoming_call", "id": str(uuid.uuid4())},
        android=messaging.AndroidConfig(priority="high", ttl=45),
    )


def admin_send(app: firebase_admin.App, token: str) -> messaging.SendResponse:
    async def body() -> messaging.SendResponse:
        try:
            batch = await messaging.send_each_async([admin_message(token)], app=app)
        finally:
            # Its HTTP/2 connections belong to this event loop: close them before it ends
            # (delete_app would otherwise try to, on a loop of its own).
            await messaging._get_messaging_service(app)._async_client.aclose()
        return batch.responses[0]

    return run(body())


def our_send(endpoints: Endpoints, token: str) -> SendResult:
    message = {"token": token, "data": {"kind": "incoming_call"}}
    return once(make_fcm_sender(endpoints), lambda s: s.send(message))


def test_firebase_admin_sends_over_http2_through_the_emulator(
    emulators: ThreadedSuite, firebase_app: firebase_admin.App
) -> None:
    token = fcm_token()
    response = admin_send(firebase_app, token)
    assert response.success, response.exception
    [delivery] = emulators.suite.fcm.deliveries
    assert (
        response.message_id
        == f"projects/{emulators.suite.endpoints.project_id}/messages/{delivery.message_id}"
    )
    assert (delivery.token, delivery.http_version) == (token, "2")
    assert delivery.android == {"priority": "high", "ttl": "45s"}
    assert emulators.suite.fcm.token_requests == 1  # google-auth got its token from us


def test_firebase_admin_sync_send_over_http1(
    emulators: ThreadedSuite, firebase_app: firebase_admin.App
) -> None:
    name = messaging.send(admin_message(fcm_token()), app=firebase_app)
    [delivery] = emulators.suite.fcm.deliveries
    assert name.endswith(delivery.message_id)
    assert delivery.http_version == "1.1"


@pytest.mark.parametrize(
    ("setup", "exception", "our_outcome"),
    [
        ("unregistered", messaging.UnregisteredError, Outcome.TOKEN_DEAD),
        ("other_sender", messaging.SenderIdMismatchError, Outcome.TOKEN_DEAD),
        ("QUOTA_EXCEEDED", messaging.QuotaExceededError, Outcome.RETRY),
        ("UNAVAILABLE", exceptions.UnavailableError, Outcome.RETRY),
        ("bad token", exceptions.InvalidArgumentError, Outcome.TOKEN_DEAD),
        ("THIRD_PARTY_AUTH_ERROR", messaging.ThirdPartyAuthError, Outcome.CONFIG_FAULT),
    ],
)
def test_firebase_admin_raises_its_documented_exceptions(
    emulators: ThreadedSuite,
    endpoints: Endpoints,
    firebase_app: firebase_admin.App,
    setup: str,
    exception: type[Exception],
    our_outcome: Outcome,
) -> None:
    fcm = emulators.suite.fcm
    token = "bad token!" if setup == "bad token" else fcm_token()
    if setup in ("unregistered", "other_sender"):
        fcm.set_token(token, setup)  # type: ignore[arg-type]
    elif setup.isupper():
        # Persistent, so firebase-admin's own retries see it too (for 503 it retries 4 times
        # with backoff, which makes that case take about 7 s).
        fcm.faults.add(token, Fault(reason=setup, retry_after="0"))
    response = admin_send(firebase_app, token)
    assert not response.success
    assert type(response.exception) is exception, response.exception
    assert our_send(endpoints, token).outcome is our_outcome
    assert fcm.deliveries == []


# -- aioapns ---------------------------------------------------------------------------------


def aioapns_client(
    endpoints: Endpoints, key_pem: str | None = None, key_id: str | None = None
) -> APNs:
    context = ssl.create_default_context(cafile=str(endpoints.ca_file))
    client = APNs(
        key=key_pem or endpoints.apns_key_file.read_text(),
        key_id=key_id or endpoints.apns_key_id,
        team_id=endpoints.apns_team_id,
        topic=f"{endpoints.bundle_id}.voip",
        ssl_context=context,
    )

    class EmulatorProtocol(APNsProductionClientProtocol):
        APNS_SERVER = endpoints.apns_host
        APNS_PORT = endpoints.apns_port

    client.pool.protocol_class = EmulatorProtocol
    return client


def aioapns_send(
    endpoints: Endpoints,
    token: str,
    *,
    message: dict[str, Any] | None = None,
    **client_options: Any,
) -> tuple[str, str | None, Any]:
    async def body() -> tuple[str, str | None, Any]:
        client = aioapns_client(endpoints, **client_options)
        try:
            result = await client.send_notification(
                NotificationRequest(
                    device_token=token,
                    message=message or {"aps": {}, "id": str(uuid.uuid4())},
                    time_to_live=60,
                    priority=10,
                    push_type=PushType.VOIP,
                )
            )
            return result.status, result.description, result.timestamp
        finally:
            client.pool.close()
            await asyncio.sleep(0)  # let the transports close on this loop

    return run(body())


def our_voip(endpoints: Endpoints, token: str, payload: bytes | None = None) -> SendResult:
    body = payload or b'{"aps":{}}'
    return once(
        make_apns_sender(endpoints),
        lambda s: s.send_voip(token, body, apns_id=uuid.uuid4(), expiration=0),
    )


def test_aioapns_delivers_through_the_emulator(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    token = apns_token()
    status, description, _ = aioapns_send(endpoints, token)
    assert (status, description) == ("200", None)
    [delivery] = emulators.suite.apns.deliveries
    assert (delivery.token, delivery.push_type, delivery.topic) == (
        token,
        "voip",
        f"{endpoints.bundle_id}.voip",
    )


@pytest.mark.parametrize(
    ("setup", "status", "reason"),
    [
        ("unregistered", "410", "Unregistered"),
        ("expired", "410", "ExpiredToken"),
        ("bad", "400", "BadDeviceToken"),
        ("other topic", "400", "DeviceTokenNotForTopic"),
        ("TooManyRequests", "429", "TooManyRequests"),
        ("ServiceUnavailable", "503", "ServiceUnavailable"),
        ("InternalServerError", "500", "InternalServerError"),
    ],
)
def test_aioapns_and_our_sender_see_the_same_answers(
    emulators: ThreadedSuite, endpoints: Endpoints, setup: str, status: str, reason: str
) -> None:
    apns = emulators.suite.apns
    token = apns_token()
    if setup in ("unregistered", "expired", "bad"):
        apns.set_token(token, setup)  # type: ignore[arg-type]
    elif setup == "other topic":
        apns.set_token(token, topic="com.example.other")
    else:
        apns.faults.add(token, Fault(status=int(status), reason=reason))
    got_status, got_reason, timestamp = aioapns_send(endpoints, token)
    ours = our_voip(endpoints, token)
    assert (got_status, got_reason) == (status, reason)
    assert (str(ours.status), ours.reason) == (status, reason)
    if status == "410":
        assert timestamp == ours.token_invalid_since_ms == apns.tokens[token].since_ms


def test_aioapns_with_an_unknown_key_gets_invalid_provider_token(endpoints: Endpoints) -> None:
    stranger = make_apns_key(endpoints.apns_team_id)
    status, reason, _ = aioapns_send(
        endpoints, apns_token(), key_pem=stranger.private_key_pem, key_id=stranger.key_id
    )
    assert (status, reason) == ("403", "InvalidProviderToken")


def test_aioapns_oversized_payload_gets_payload_too_large(endpoints: Endpoints) -> None:
    status, reason, _ = aioapns_send(
        endpoints, apns_token(), message={"aps": {}, "pad": "x" * 5200}
    )
    assert (status, reason) == ("413", "PayloadTooLarge")


def test_aioapns_sees_a_voip_call_payload_we_built(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    call = incoming_call()
    status, _, _ = aioapns_send(
        endpoints, apns_token(), message=call.callkit_params() | {"aps": {}}
    )
    assert status == "200"
    assert emulators.suite.apns.deliveries[0].payload == call.callkit_params() | {"aps": {}}
