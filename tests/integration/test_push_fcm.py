"""FCM v1: our sender against the FCM + OAuth emulator, over real HTTP/2 + TLS sockets.

Every row of the FCM table of PROTOCOLS.md is driven end to end: the emulator answers the way
FCM does (registry state or injected fault), and the sender must classify it, decide about the
token, and carry the retry delay.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import time
from collections.abc import Mapping

import google.auth.transport.requests
import httpx
import jwt
import pytest
import requests
from google.oauth2 import service_account

from python_worker.emulators.credentials import make_service_account
from python_worker.emulators.faults import Fault
from python_worker.emulators.fcm import OAUTH_FAULT_KEY
from python_worker.emulators.suite import Endpoints, ThreadedSuite
from python_worker.push.fcm import FCM_SCOPE, FcmSender
from python_worker.push.outcomes import Outcome, PayloadTooLarge, SendResult
from python_worker.push.payloads import fcm_call_message
from python_worker.push.retry import RetryPolicy
from tests.support.push import fcm_token, incoming_call, make_fcm_sender, once, run


def send_one(endpoints: Endpoints, message: Mapping[str, object], **options: object) -> SendResult:
    return once(make_fcm_sender(endpoints, **options), lambda s: s.send(message))


def call_message(token: str | None = None) -> dict[str, object]:
    return fcm_call_message(incoming_call(), token or fcm_token())


# -- happy path ----------------------------------------------------------------------------


def test_incoming_call_is_delivered_as_a_high_priority_data_message(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    call = incoming_call(ring_seconds=40)
    token = fcm_token()

    async def body() -> SendResult:
        sender = make_fcm_sender(endpoints)
        try:
            return await sender.send_call(call, token)
        finally:
            await sender.aclose()

    result = run(body())
    assert result.outcome is Outcome.DELIVERED
    assert (result.message_id or "").startswith(f"projects/{endpoints.project_id}/messages/0:")
    [delivery] = emulators.suite.fcm.deliveries
    assert delivery.token == token
    assert delivery.http_version == "2"
    assert delivery.android == {"priority": "high", "ttl": "40s"}
    assert delivery.data["id"] == str(call.session_id)
    assert delivery.data["kind"] == "incoming_call"
    assert delivery.data["duration"] == "40000"
    assert json.loads(delivery.data["extra"])["call_session_id"] == str(call.session_id)
    assert all(isinstance(v, str) for v in delivery.data.values())


# -- the FCM error table ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("registry_state", "status", "reason"),
    [("unregistered", 404, "UNREGISTERED"), ("other_sender", 403, "SENDER_ID_MISMATCH")],
)
def test_dead_token_is_reported_for_invalidation(
    emulators: ThreadedSuite, endpoints: Endpoints, registry_state: str, status: int, reason: str
) -> None:
    token = fcm_token()
    emulators.suite.fcm.set_token(token, registry_state)  # type: ignore[arg-type]
    result = send_one(endpoints, call_message(token))
    assert (result.outcome, result.status, result.reason) == (Outcome.TOKEN_DEAD, status, reason)
    assert emulators.suite.fcm.deliveries == []


def test_invalid_argument_about_the_token_invalidates_it(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    result = send_one(endpoints, call_message("not a token!"))
    assert (result.outcome, result.status, result.reason) == (
        Outcome.TOKEN_DEAD,
        400,
        "INVALID_ARGUMENT",
    )


@pytest.mark.parametrize(
    ("message_change", "field"),
    [
        ({"data": {"n": 1}}, "message.data[n]"),
        ({"data": {"from": "x"}}, "message.data[from]"),
        ({"data": {"google.sent_time": "1"}}, "message.data[google.sent_time]"),
        ({"data": {"gcm.notification": "1"}}, "message.data[gcm.notification]"),
        ({"topic": "news"}, "message"),
        ({"token": None, "topic": None}, "message"),
        ({"colour": "red"}, "message"),
        ({"android": {"priority": "urgent"}}, "message.android.priority"),
        ({"android": {"ttl": "30"}}, "message.android.ttl"),
        ({"android": {"ttl": "2419201s"}}, "message.android.ttl"),
        ({"android": {"ttl": 30}}, "message.android.ttl"),
        ({"android": {"sound": "ring"}}, "message.android"),
    ],
)
def test_invalid_argument_about_the_message_is_our_bug_and_keeps_the_token(
    emulators: ThreadedSuite, endpoints: Endpoints, message_change: dict[str, object], field: str
) -> None:
    message: dict[str, object] = {"token": fcm_token(), "data": {"kind": "incoming_call"}}
    message.update(message_change)
    message = {k: v for k, v in message.items() if v is not None}
    result = send_one(endpoints, message)
    assert (result.outcome, result.status, result.reason) == (
        Outcome.OUR_BUG,
        400,
        "INVALID_ARGUMENT",
    )
    assert emulators.suite.fcm.deliveries == []


def test_emulator_names_the_violated_field(endpoints: Endpoints) -> None:
    async def body() -> httpx.Response:
        sender = make_fcm_sender(endpoints)
        access = await sender.access_token()
        await sender.aclose()
        context = ssl.create_default_context(cafile=str(endpoints.ca_file))
        async with httpx.AsyncClient(http2=True, verify=context) as client:
            return await client.post(
                f"{endpoints.fcm_base_url}/v1/projects/{endpoints.project_id}/messages:send",
                headers={"authorization": f"Bearer {access}"},
                json={"message": {"token": fcm_token(), "data": {"big": "x" * 5000}}},
            )

    response = run(body())
    assert response.http_version == "HTTP/2"
    error = response.json()["error"]
    assert (response.status_code, error["status"]) == (400, "INVALID_ARGUMENT")
    fcm_detail, bad_request = error["details"]
    assert fcm_detail == {
        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
        "errorCode": "INVALID_ARGUMENT",
    }
    assert bad_request["fieldViolations"][0]["field"] == "message.data"
    assert "too big" in bad_request["fieldViolations"][0]["description"]


def test_camel_case_names_and_any_case_priority_are_accepted(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    message = {
        "token": fcm_token(),
        "data": {"kind": "incoming_call"},
        "android": {"priority": "HIGH", "ttl": "1.5s", "collapseKey": "call", "directBootOk": True},
        "fcmOptions": {"analyticsLabel": "calls"},
    }
    result = send_one(endpoints, message)
    assert result.outcome is Outcome.DELIVERED
    assert emulators.suite.fcm.deliveries[0].android["collapse_key"] == "call"


def test_validate_only_is_checked_but_not_delivered(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    async def body() -> SendResult:
        sender = make_fcm_sender(endpoints)
        try:
            return await sender.send(call_message(), validate_only=True)
        finally:
            await sender.aclose()

    assert run(body()).outcome is Outcome.DELIVERED
    assert emulators.suite.fcm.deliveries == []


@pytest.mark.parametrize(
    ("code", "status", "retry_after", "minimum", "maximum"),
    [
        ("QUOTA_EXCEEDED", 429, "7", 7.0, 7.0),
        ("UNAVAILABLE", 503, "3", 3.0, 3.0),
        ("UNAVAILABLE", 503, None, 0.5, 1.0),
        ("INTERNAL", 500, None, 0.5, 1.0),
    ],
)
def test_transient_errors_are_retried_after_retry_after_or_backoff(
    emulators: ThreadedSuite,
    endpoints: Endpoints,
    code: str,
    status: int,
    retry_after: str | None,
    minimum: float,
    maximum: float,
) -> None:
    token = fcm_token()
    emulators.suite.fcm.faults.add(token, Fault(reason=code, retry_after=retry_after, times=1))
    result = send_one(endpoints, call_message(token))
    assert (result.outcome, result.status, result.reason) == (Outcome.RETRY, status, code)
    assert minimum <= (result.retry_after_s or -1) <= maximum
    # The fault was for one request only: the retry goes through.
    assert send_one(endpoints, call_message(token)).outcome is Outcome.DELIVERED


def test_backoff_grows_with_the_attempt_number(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    token = fcm_token()
    emulators.suite.fcm.faults.add(token, Fault(reason="UNAVAILABLE"))

    async def body() -> list[float]:
        sender = make_fcm_sender(endpoints, policy=RetryPolicy(base_s=1.0, cap_s=8.0))
        try:
            results = [await sender.send(call_message(token), attempt=n) for n in (1, 3, 6)]
        finally:
            await sender.aclose()
        return [r.retry_after_s or 0.0 for r in results]

    first, third, sixth = run(body())
    assert 0.5 <= first <= 1.0
    assert 2.0 <= third <= 4.0
    assert 4.0 <= sixth <= 8.0  # capped


def test_retry_after_as_an_http_date_is_honoured(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    token = fcm_token()
    when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 120))
    emulators.suite.fcm.faults.add(token, Fault(reason="QUOTA_EXCEEDED", retry_after=when, times=1))
    result = send_one(endpoints, call_message(token))
    assert 100 <= (result.retry_after_s or -1) <= 121


def test_third_party_auth_error_is_a_configuration_fault_that_keeps_the_token(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    token = fcm_token()
    emulators.suite.fcm.faults.add(token, Fault(reason="THIRD_PARTY_AUTH_ERROR", times=1))
    result = send_one(endpoints, call_message(token))
    assert (result.outcome, result.status, result.reason) == (
        Outcome.CONFIG_FAULT,
        401,
        "THIRD_PARTY_AUTH_ERROR",
    )


def test_bare_401_refreshes_the_access_token_once_and_retries(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    fcm = emulators.suite.fcm

    async def body() -> tuple[SendResult, SendResult, int]:
        sender = make_fcm_sender(endpoints)
        try:
            first = await sender.send(call_message())
            fcm.revoke_access_tokens()  # as if Google revoked or expired it early
            second = await sender.send(call_message())
            return first, second, sender.token_fetches
        finally:
            await sender.aclose()

    first, second, fetches = run(body())
    assert first.outcome is second.outcome is Outcome.DELIVERED
    assert fetches == 2
    assert fcm.token_requests == 2
    assert len(fcm.deliveries) == 2


def test_persistent_401_is_a_configuration_fault_after_one_refresh(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    fcm = emulators.suite.fcm
    fcm.faults.add("*", Fault(reason="UNAUTHENTICATED"))
    result = send_one(endpoints, call_message())
    assert (result.outcome, result.status, result.reason) == (
        Outcome.CONFIG_FAULT,
        401,
        "UNAUTHENTICATED",
    )
    assert fcm.token_requests == 2  # the first token, then exactly one refresh
    assert fcm.send_requests == 2


def test_wrong_project_is_a_configuration_fault(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    result = send_one(endpoints, call_message(), project_id="someone-elses-project")
    assert (result.outcome, result.status) == (Outcome.CONFIG_FAULT, 403)


def test_unreachable_fcm_is_retryable(endpoints: Endpoints) -> None:
    info = json.loads(endpoints.service_account_file.read_text())

    async def body() -> SendResult:
        sender = FcmSender(info, base_url="https://127.0.0.1:9", ca_file=str(endpoints.ca_file))
        sender._token, sender._expires_at = "x", time.time() + 3600  # no OAuth round trip

        try:
            return await sender.send(call_message())
        finally:
            await sender.aclose()

    result = run(body())
    assert (result.outcome, result.status, result.reason) == (Outcome.RETRY, 0, "connect_failed")


def test_oversized_data_is_refused_before_sending(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    message = {"token": fcm_token(), "data": {"blob": "x" * 4093}}
    with pytest.raises(PayloadTooLarge, match="4096-byte limit"):
        send_one(endpoints, message)
    assert emulators.suite.fcm.send_requests == 0


# -- OAuth: the emulator checks what Google checks ------------------------------------------


def test_assertion_signed_with_another_key_is_refused(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    impostor = make_service_account(endpoints.project_id, endpoints.token_uri)
    info = dict(impostor.info)
    info["client_email"] = json.loads(endpoints.service_account_file.read_text())["client_email"]
    info["private_key_id"] = json.loads(endpoints.service_account_file.read_text())[
        "private_key_id"
    ]

    async def body() -> SendResult:
        sender = FcmSender(info, base_url=endpoints.fcm_base_url, ca_file=str(endpoints.ca_file))
        try:
            return await sender.send(call_message())
        finally:
            await sender.aclose()

    result = run(body())
    assert (result.outcome, result.reason) == (Outcome.CONFIG_FAULT, "oauth")
    assert "Invalid JWT Signature" in (result.detail or "")
    assert emulators.suite.fcm.send_requests == 0


def _token_response(
    endpoints: Endpoints, claims: dict[str, object], kid: str | None = None
) -> requests.Response:
    info = json.loads(endpoints.service_account_file.read_text())
    assertion = jwt.encode(
        claims,
        info["private_key"],
        algorithm="RS256",
        headers={"kid": kid or info["private_key_id"]},
    )
    return requests.post(
        endpoints.token_uri,
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
        verify=str(endpoints.ca_file),
        timeout=10,
    )


@pytest.mark.parametrize(
    ("change", "error", "hint"),
    [
        ({"aud": "https://example.com/token"}, "invalid_grant", "audience"),
        (
            {"scope": "https://www.googleapis.com/auth/userinfo.email"},
            "invalid_scope",
            "firebase.messaging",
        ),
        ({"exp_offset": 7200}, "invalid_grant", "short-lived"),
        ({"iat_offset": -7200, "exp_offset": -3600}, "invalid_grant", "short-lived"),
    ],
)
def test_token_endpoint_rejects_bad_assertions(
    endpoints: Endpoints, change: dict[str, object], error: str, hint: str
) -> None:
    now = int(time.time())
    info = json.loads(endpoints.service_account_file.read_text())
    claims: dict[str, object] = {
        "iss": info["client_email"],
        "scope": FCM_SCOPE,
        "aud": "https://oauth2.googleapis.com/token",
        "iat": now + int(change.pop("iat_offset", 0)),  # type: ignore[call-overload]
    }
    claims["exp"] = now + int(change.pop("exp_offset", 3600))  # type: ignore[call-overload]
    claims.update(change)
    response = _token_response(endpoints, claims)
    assert response.status_code == 400
    assert response.json()["error"] == error
    assert hint in response.json()["error_description"]


def test_token_endpoint_issues_expiring_bearer_tokens_to_google_auth(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    emulators.suite.fcm.token_lifetime_s = 1800
    credentials = service_account.Credentials.from_service_account_file(  # type: ignore[no-untyped-call]
        str(endpoints.service_account_file), scopes=[FCM_SCOPE]
    )
    session = requests.Session()
    session.verify, session.trust_env = str(endpoints.ca_file), False
    credentials.refresh(google.auth.transport.requests.Request(session))
    assert credentials.token.startswith("ya29.")
    assert credentials.valid
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)  # google-auth keeps naive UTC
    assert 1700 < (credentials.expiry - now).total_seconds() <= 1800


# -- access-token caching ----------------------------------------------------------------


def test_many_sends_share_one_access_token(emulators: ThreadedSuite, endpoints: Endpoints) -> None:
    async def body() -> tuple[list[SendResult], int]:
        sender = make_fcm_sender(endpoints)
        try:
            results = await asyncio.gather(*(sender.send(call_message()) for _ in range(200)))
            return list(results), sender.token_fetches
        finally:
            await sender.aclose()

    results, fetches = run(body())
    assert all(r.outcome is Outcome.DELIVERED for r in results)
    assert fetches == 1
    assert emulators.suite.fcm.token_requests == 1
    assert len(emulators.suite.fcm.deliveries) == 200


def test_token_is_refreshed_in_the_background_before_it_expires(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    fcm = emulators.suite.fcm
    skew = [0.0]

    async def body() -> tuple[str, str, str, int]:
        sender = make_fcm_sender(endpoints, clock=lambda: time.time() + skew[0])
        try:
            first = await sender.access_token()
            skew[0] = 3600 - 200  # 200 s left: inside the 300 s refresh margin
            fcm.token_lifetime_s = 7200  # so the next token is far from its own refresh
            during = await sender.access_token()  # still the old one, refresh started
            assert sender._refreshing is not None
            await sender._refreshing
            after = await sender.access_token()
            result = await sender.send(call_message())
            assert result.outcome is Outcome.DELIVERED
            return first, during, after, sender.token_fetches
        finally:
            await sender.aclose()

    first, during, after, fetches = run(body())
    assert during == first  # sends did not wait for the refresh
    assert after != first
    assert fetches == 2
    assert fcm.token_requests == 2


def test_token_fetch_does_not_block_the_event_loop(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    emulators.suite.fcm.faults.add(OAUTH_FAULT_KEY, Fault(latency_s=0.6, times=1))

    async def body() -> tuple[float, float]:
        sender = make_fcm_sender(endpoints)
        loop_ran_at: list[float] = []
        asyncio.get_running_loop().call_later(0.05, lambda: loop_ran_at.append(time.monotonic()))
        try:
            await sender.access_token()
            return loop_ran_at[0], time.monotonic()
        finally:
            await sender.aclose()

    loop_ran, token_arrived = run(body())
    assert token_arrived - loop_ran > 0.4  # the loop ran other work while the token was fetched
