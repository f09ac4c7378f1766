"""APNs: our sender against the APNs emulator, over real HTTP/2 + TLS sockets.

Every row of the APNs table of PROTOCOLS.md end to end, provider-token reuse and the
20-minute rule, stream limits, GOAWAY and dropped connections, and 1,000 concurrent sends.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import jwt
import pytest

from python_worker.emulators.credentials import make_apns_key
from python_worker.emulators.faults import Fault
from python_worker.emulators.suite import Endpoints, ThreadedSuite
from python_worker.push.apns import TOKEN_REUSE_S, ApnsSender
from python_worker.push.http2 import H2Client, Response, client_ssl_context
from python_worker.push.outcomes import Outcome, PayloadTooLarge, SendResult
from python_worker.push.payloads import apns_alert_payload, apns_voip_payload
from tests.support.push import apns_token, incoming_call, make_apns_sender, once, run

PAYLOAD = apns_voip_payload(incoming_call())


def voip(
    endpoints: Endpoints, token: str, payload: bytes = PAYLOAD, **options: object
) -> SendResult:
    return voip_with(make_apns_sender(endpoints, **options), token, payload)


def voip_with(sender: ApnsSender, token: str, payload: bytes = PAYLOAD) -> SendResult:
    expiration = int(time.time()) + 60
    return once(
        sender, lambda s: s.send_voip(token, payload, apns_id=uuid.uuid4(), expiration=expiration)
    )


def raw(
    endpoints: Endpoints,
    path: str,
    headers: dict[str, str],
    body: bytes = PAYLOAD,
    method: bytes = b"POST",
) -> Response:
    """One hand-made request, to see what the emulator itself enforces."""

    async def go() -> Response:
        client = H2Client(
            endpoints.apns_host,
            endpoints.apns_port,
            ssl_context=client_ssl_context(str(endpoints.ca_file)),
        )
        try:
            return await client.request(
                method, path.encode(), [(k.encode(), v.encode()) for k, v in headers.items()], body
            )
        finally:
            await client.aclose()

    return run(go())


def provider_token(endpoints: Endpoints, iat: int | None = None) -> str:
    return jwt.encode(
        {"iss": endpoints.apns_team_id, "iat": int(time.time()) if iat is None else iat},
        endpoints.apns_key_file.read_text(),
        algorithm="ES256",
        headers={"kid": endpoints.apns_key_id},
    )


def voip_headers(endpoints: Endpoints, **changes: str | None) -> dict[str, str]:
    headers: dict[str, str | None] = {
        "authorization": f"bearer {provider_token(endpoints)}",
        "apns-topic": f"{endpoints.bundle_id}.voip",
        "apns-push-type": "voip",
        "apns-priority": "10",
        "apns-expiration": "0",
        "apns-id": str(uuid.uuid4()),
    }
    headers.update(changes)
    return {k: v for k, v in headers.items() if v is not None}


def reason(response: Response) -> str:
    return str(json.loads(response.body)["reason"])


# -- happy paths ---------------------------------------------------------------------------


def test_incoming_call_goes_as_a_voip_push_with_the_call_deadline(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    call = incoming_call()
    token = apns_token()
    queue_id = uuid.uuid4()

    async def body() -> SendResult:
        sender = make_apns_sender(endpoints)
        try:
            return await sender.send_call(call, token.upper(), apns_id=queue_id)
        finally:
            await sender.aclose()

    result = run(body())
    assert (result.outcome, result.message_id) == (Outcome.DELIVERED, str(queue_id))
    [delivery] = emulators.suite.apns.deliveries
    assert delivery.token == token
    assert delivery.apns_id == str(queue_id)
    assert (delivery.topic, delivery.push_type, delivery.priority) == (
        f"{endpoints.bundle_id}.voip",
        "voip",
        "10",
    )
    assert delivery.expiration == str(int(call.expires_at.timestamp()))
    assert delivery.payload is not None
    assert delivery.payload["id"] == str(call.session_id)
    assert delivery.payload["duration"] == call.ring_seconds * 1000
    assert delivery.key_id == endpoints.apns_key_id


def test_alerts_go_to_the_bundle_topic_never_as_voip(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    session = uuid.uuid4()
    payload = apns_alert_payload("missed_call", "Missed call", "Mum did not answer", session)

    async def body() -> SendResult:
        sender = make_apns_sender(endpoints)
        try:
            return await sender.send_alert(apns_token(), payload, apns_id=uuid.uuid4())
        finally:
            await sender.aclose()

    assert run(body()).outcome is Outcome.DELIVERED
    [delivery] = emulators.suite.apns.deliveries
    assert (delivery.topic, delivery.push_type) == (endpoints.bundle_id, "alert")
    assert delivery.payload is not None
    assert delivery.payload["aps"] == {
        "alert": {"title": "Missed call", "body": "Mum did not answer"},
        "sound": "default",
    }


def test_success_is_a_headers_only_response(endpoints: Endpoints) -> None:
    response = raw(endpoints, f"/3/device/{apns_token()}", voip_headers(endpoints))
    assert response.status == 200
    assert response.headers_only
    assert response.body == b""


# -- the APNs error table -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "status", "why"),
    [
        ("bad", 400, "BadDeviceToken"),
        ("unregistered", 410, "Unregistered"),
        ("expired", 410, "ExpiredToken"),
    ],
)
def test_dead_tokens_are_reported_for_invalidation(
    emulators: ThreadedSuite, endpoints: Endpoints, state: str, status: int, why: str
) -> None:
    token = apns_token()
    emulators.suite.apns.set_token(token, state)  # type: ignore[arg-type]
    result = voip(endpoints, token)
    assert (result.outcome, result.status, result.reason) == (Outcome.TOKEN_DEAD, status, why)
    if status == 410:
        assert result.token_invalid_since_ms == emulators.suite.apns.tokens[token].since_ms
    assert emulators.suite.apns.deliveries == []


def test_malformed_token_is_bad_device_token(endpoints: Endpoints) -> None:
    result = voip(endpoints, "abc123")
    assert (result.outcome, result.reason) == (Outcome.TOKEN_DEAD, "BadDeviceToken")


def test_token_of_another_app_is_device_token_not_for_topic(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    token = apns_token()
    emulators.suite.apns.set_token(token, "valid", topic="com.example.other")
    result = voip(endpoints, token)
    assert (result.outcome, result.status, result.reason) == (
        Outcome.TOKEN_DEAD,
        400,
        "DeviceTokenNotForTopic",
    )


@pytest.mark.parametrize(
    ("changes", "status", "why"),
    [
        ({"apns-topic": None}, 400, "MissingTopic"),
        ({"apns-topic": "com.example.other.voip"}, 400, "TopicDisallowed"),
        ({"apns-topic": "com.callpanion.companion"}, 400, "BadTopic"),
        ({"apns-push-type": "alert"}, 400, "InvalidPushType"),
        ({"apns-push-type": None}, 400, "InvalidPushType"),
        ({"apns-push-type": "ring"}, 400, "InvalidPushType"),
        ({"apns-priority": "7"}, 400, "BadPriority"),
        ({"apns-expiration": "soon"}, 400, "BadExpirationDate"),
        ({"apns-id": "42"}, 400, "BadMessageId"),
        ({"apns-collapse-id": "c" * 65}, 400, "BadCollapseId"),
        ({"authorization": None}, 403, "MissingProviderToken"),
        ({"authorization": "bearer not.a.jwt"}, 403, "InvalidProviderToken"),
    ],
)
def test_emulator_enforces_apns_header_rules(
    endpoints: Endpoints, changes: dict[str, str | None], status: int, why: str
) -> None:
    response = raw(endpoints, f"/3/device/{apns_token()}", voip_headers(endpoints, **changes))
    assert (response.status, reason(response)) == (status, why)


def test_emulator_enforces_payload_rules(endpoints: Endpoints) -> None:
    empty = raw(endpoints, f"/3/device/{apns_token()}", voip_headers(endpoints), body=b"")
    assert (empty.status, reason(empty)) == (400, "PayloadEmpty")
    big = raw(
        endpoints,
        f"/3/device/{apns_token()}",
        voip_headers(endpoints),
        body=b"{" + b" " * 5120 + b"}",
    )
    assert (big.status, reason(big)) == (413, "PayloadTooLarge")
    alert = voip_headers(
        endpoints, **{"apns-topic": endpoints.bundle_id, "apns-push-type": "alert"}
    )
    over_4k = raw(endpoints, f"/3/device/{apns_token()}", alert, body=b"{" + b" " * 4100 + b"}")
    assert (over_4k.status, reason(over_4k)) == (413, "PayloadTooLarge")


def test_emulator_enforces_path_and_method(endpoints: Endpoints) -> None:
    assert (
        reason(raw(endpoints, f"/3/device/{apns_token()}", voip_headers(endpoints), method=b"PUT"))
        == "MethodNotAllowed"
    )
    assert reason(raw(endpoints, "/2/device/x", voip_headers(endpoints))) == "BadPath"


def test_emulator_rejects_old_and_future_provider_tokens(endpoints: Endpoints) -> None:
    old = voip_headers(
        endpoints, authorization=f"bearer {provider_token(endpoints, int(time.time()) - 3700)}"
    )
    response = raw(endpoints, f"/3/device/{apns_token()}", old)
    assert (response.status, reason(response)) == (403, "ExpiredProviderToken")
    future = voip_headers(
        endpoints, authorization=f"bearer {provider_token(endpoints, int(time.time()) + 600)}"
    )
    response = raw(endpoints, f"/3/device/{apns_token()}", future)
    assert (response.status, reason(response)) == (403, "InvalidProviderToken")


def test_emulator_refuses_provider_token_updates_faster_than_20_minutes(
    endpoints: Endpoints,
) -> None:
    async def go() -> list[Response]:
        client = H2Client(
            endpoints.apns_host,
            endpoints.apns_port,
            ssl_context=client_ssl_context(str(endpoints.ca_file)),
        )
        out = []
        try:
            for iat in (
                int(time.time()) - 60,
                int(time.time()),
            ):  # two valid tokens, one connection
                headers = voip_headers(
                    endpoints, authorization=f"bearer {provider_token(endpoints, iat)}"
                )
                out.append(
                    await client.request(
                        b"POST",
                        f"/3/device/{apns_token()}".encode(),
                        [(k.encode(), v.encode()) for k, v in headers.items()],
                        PAYLOAD,
                    )
                )
        finally:
            await client.aclose()
        return out

    first, second = run(go())
    assert first.status == 200
    assert (second.status, reason(second)) == (429, "TooManyProviderTokenUpdates")


def test_wrong_bundle_id_is_our_bug(endpoints: Endpoints) -> None:
    sender = ApnsSender.from_file(
        endpoints.apns_key_file,
        endpoints.apns_key_id,
        endpoints.apns_team_id,
        "com.example.other",
        host=endpoints.apns_host,
        port=endpoints.apns_port,
        ca_file=str(endpoints.ca_file),
    )
    result = voip_with(sender, apns_token())
    assert (result.outcome, result.status, result.reason) == (
        Outcome.OUR_BUG,
        400,
        "TopicDisallowed",
    )


def test_unknown_signing_key_is_a_configuration_fault(endpoints: Endpoints) -> None:
    stranger = make_apns_key(endpoints.apns_team_id)
    sender = ApnsSender(
        stranger.private_key_pem,
        stranger.key_id,
        stranger.team_id,
        endpoints.bundle_id,
        host=endpoints.apns_host,
        port=endpoints.apns_port,
        ca_file=str(endpoints.ca_file),
    )
    result = voip_with(sender, apns_token())
    assert (result.outcome, result.status, result.reason) == (
        Outcome.CONFIG_FAULT,
        403,
        "InvalidProviderToken",
    )


@pytest.mark.parametrize(
    ("status", "why", "retry_after", "minimum"),
    [
        (429, "TooManyRequests", "5", 5.0),
        (429, "TooManyProviderTokenUpdates", None, 0.5),
        (500, "InternalServerError", None, 0.5),
        (503, "ServiceUnavailable", "2", 2.0),
        (503, "Shutdown", None, 0.5),
    ],
)
def test_transient_errors_are_retried_with_a_delay(
    emulators: ThreadedSuite,
    endpoints: Endpoints,
    status: int,
    why: str,
    retry_after: str | None,
    minimum: float,
) -> None:
    token = apns_token()
    emulators.suite.apns.faults.add(
        token, Fault(status=status, reason=why, retry_after=retry_after, times=1)
    )
    result = voip(endpoints, token)
    assert (result.outcome, result.status, result.reason) == (Outcome.RETRY, status, why)
    assert result.retry_after_s is not None
    assert minimum <= result.retry_after_s <= max(minimum, 1.0)
    assert voip(endpoints, token).outcome is Outcome.DELIVERED


@pytest.mark.parametrize(
    "why", ["InvalidProviderToken", "MissingProviderToken", "BadCertificate", "Forbidden"]
)
def test_other_403s_are_configuration_faults_that_keep_the_token(
    emulators: ThreadedSuite, endpoints: Endpoints, why: str
) -> None:
    token = apns_token()
    emulators.suite.apns.faults.add(token, Fault(status=403, reason=why, times=1))
    result = voip(endpoints, token)
    assert (result.outcome, result.status, result.reason) == (Outcome.CONFIG_FAULT, 403, why)


@pytest.mark.parametrize(
    ("status", "why"), [(413, "PayloadTooLarge"), (400, "BadTopic"), (400, "PayloadEmpty")]
)
def test_our_bugs_fail_without_retry(
    emulators: ThreadedSuite, endpoints: Endpoints, status: int, why: str
) -> None:
    token = apns_token()
    emulators.suite.apns.faults.add(token, Fault(status=status, reason=why, times=1))
    result = voip(endpoints, token)
    assert (result.outcome, result.status, result.reason, result.retry_after_s) == (
        Outcome.OUR_BUG,
        status,
        why,
        None,
    )


def test_oversized_voip_payload_is_refused_before_sending(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    with pytest.raises(
        PayloadTooLarge, match="APNs VoIP payload is 5121 bytes, over the 5120-byte limit"
    ):
        voip(endpoints, apns_token(), payload=b"{" + b" " * 5119 + b"}")
    assert emulators.suite.apns.attempts == []


# -- provider token -------------------------------------------------------------------------


def test_expired_provider_token_is_regenerated_and_the_push_retried(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    # Apple's clock runs 25 minutes ahead of ours: our 40-minute-old token (inside our reuse
    # window) is 65 minutes old to Apple, which answers ExpiredProviderToken.
    emulators.suite.apns.clock = lambda: time.time() + 1500
    skew = [-2400.0]

    async def body() -> tuple[SendResult, int]:
        sender = make_apns_sender(endpoints, clock=lambda: time.time() + skew[0])
        sender.tokens.current()
        skew[0] = 0.0
        try:
            result = await sender.send_voip(
                apns_token(), PAYLOAD, apns_id=uuid.uuid4(), expiration=0
            )
            return result, sender.tokens.generated
        finally:
            await sender.aclose()

    result, generated = run(body())
    assert result.outcome is Outcome.DELIVERED
    assert generated == 2
    assert [a.reason for a in emulators.suite.apns.attempts] == ["ExpiredProviderToken", None]


def test_expired_provider_token_for_a_young_token_is_not_regenerated(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    emulators.suite.apns.faults.add("*", Fault(status=403, reason="ExpiredProviderToken", times=1))

    async def body() -> tuple[SendResult, int]:
        sender = make_apns_sender(endpoints)
        try:
            return await sender.send_voip(
                apns_token(), PAYLOAD, apns_id=uuid.uuid4(), expiration=0
            ), sender.tokens.generated
        finally:
            await sender.aclose()

    result, generated = run(body())
    assert (result.outcome, result.reason) == (Outcome.CONFIG_FAULT, "ExpiredProviderToken")
    assert "check the clock" in (result.detail or "")
    assert generated == 1  # a new token now would earn TooManyProviderTokenUpdates


def test_one_provider_token_serves_many_sends_across_connections(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    async def body() -> tuple[list[SendResult], int, int]:
        sender = make_apns_sender(endpoints, connections=2)
        results: list[SendResult] = []
        try:
            for _ in range(3):  # three bursts, each after the server dropped every connection
                burst = [
                    sender.send_voip(apns_token(), PAYLOAD, apns_id=uuid.uuid4(), expiration=0)
                    for _ in range(100)
                ]
                results.extend(await asyncio.gather(*burst))
                await asyncio.to_thread(emulators.call, emulators.suite.apns_server.drop_all)
                for connection in sender._client._connections:
                    await connection.closed  # the client has seen the drop
            return results, sender.tokens.generated, sender.connections_opened
        finally:
            await sender.aclose()

    results, generated, connections = run(body())
    assert all(r.outcome is Outcome.DELIVERED for r in results)
    assert generated == 1
    attempts = emulators.suite.apns.attempts
    assert connections >= 3
    assert len({a.connection for a in attempts}) >= 3
    assert len({a.authorization for a in attempts}) == 1


def test_provider_token_is_kept_for_the_reuse_window_then_replaced(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    now = [time.time()]
    emulators.suite.apns.clock = lambda: now[0]

    async def body() -> list[str]:
        sender = make_apns_sender(endpoints, clock=lambda: now[0])
        seen = []
        try:
            for minutes in (0, 10, 19.9, 44.9, TOKEN_REUSE_S / 60 + 0.1):
                now[0] = start + minutes * 60
                result = await sender.send_voip(
                    apns_token(), PAYLOAD, apns_id=uuid.uuid4(), expiration=0
                )
                assert result.outcome is Outcome.DELIVERED, result
                seen.append(sender.tokens.current())
        finally:
            await sender.aclose()
        return seen

    start = now[0]
    tokens = run(body())
    assert len(set(tokens[:4])) == 1
    assert tokens[4] != tokens[0]
    # The emulator accepted the new token on the same connection: it came 45 minutes later.
    assert len({a.connection for a in emulators.suite.apns.attempts}) == 1


def test_renew_refuses_inside_twenty_minutes(endpoints: Endpoints) -> None:
    now = [1_000_000.0]
    sender = make_apns_sender(endpoints, clock=lambda: now[0])
    first = sender.tokens.current()
    now[0] += 19 * 60
    assert sender.tokens.renew(first) is False
    assert sender.tokens.current() == first
    now[0] += 2 * 60
    assert sender.tokens.renew(first) is True
    assert sender.tokens.current() != first
    assert sender.tokens.renew(first) is True  # already replaced by someone: use the new one
    assert sender.tokens.generated == 2


# -- connections ---------------------------------------------------------------------------


def test_stream_limit_is_one_until_the_first_success_then_raised(endpoints: Endpoints) -> None:
    async def body() -> tuple[int, int]:
        client = H2Client(
            endpoints.apns_host,
            endpoints.apns_port,
            ssl_context=client_ssl_context(str(endpoints.ca_file)),
        )
        try:
            await client.request(b"GET", b"/_emulator/deliveries", [])
            before = client._connections[0].limit
            headers = voip_headers(endpoints)
            await client.request(
                b"POST",
                f"/3/device/{apns_token()}".encode(),
                [(k.encode(), v.encode()) for k, v in headers.items()],
                PAYLOAD,
            )
            await client.request(
                b"GET", b"/_emulator/deliveries", []
            )  # the SETTINGS frame has arrived by now
            return before, client._connections[0].limit
        finally:
            await client.aclose()

    assert run(body()) == (1, 1000)


def test_a_thousand_sends_in_flight_on_one_connection_each_arrive_once(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    ids = [uuid.uuid4() for _ in range(1000)]

    async def body() -> tuple[list[SendResult], int, int]:
        sender = make_apns_sender(endpoints, connections=1)
        try:
            results = await asyncio.gather(
                *(sender.send_voip(apns_token(), PAYLOAD, apns_id=i, expiration=0) for i in ids)
            )
            peak = sender._client._connections[0].requests_started
            return list(results), sender.connections_opened, peak
        finally:
            await sender.aclose()

    results, connections, started = run(body())
    assert [r.message_id for r in results] == [str(i) for i in ids]
    assert connections == 1
    assert started == 1000
    seen = [d.apns_id for d in emulators.suite.apns.deliveries]
    assert sorted(seen) == sorted(str(i) for i in ids)


def test_goaway_mid_flight_moves_unprocessed_sends_to_a_new_connection(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    token = apns_token()
    emulators.suite.apns.faults.add(token, Fault(action="goaway", times=1))

    async def body() -> tuple[SendResult, int]:
        sender = make_apns_sender(endpoints)
        try:
            warm = await sender.send_voip(apns_token(), PAYLOAD, apns_id=uuid.uuid4(), expiration=0)
            assert warm.delivered
            result = await sender.send_voip(token, PAYLOAD, apns_id=uuid.uuid4(), expiration=0)
            return result, sender.connections_opened
        finally:
            await sender.aclose()

    result, connections = run(body())
    assert result.outcome is Outcome.DELIVERED
    assert connections == 2
    assert [d.token for d in emulators.suite.apns.deliveries].count(token) == 1


def test_dropped_connection_is_retryable_and_the_sender_reconnects(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    token = apns_token()
    emulators.suite.apns.faults.add(token, Fault(action="drop", times=1))

    async def body() -> tuple[SendResult, SendResult, int]:
        sender = make_apns_sender(endpoints)
        try:
            lost = await sender.send_voip(token, PAYLOAD, apns_id=uuid.uuid4(), expiration=0)
            again = await sender.send_voip(token, PAYLOAD, apns_id=uuid.uuid4(), expiration=0)
            return lost, again, sender.connections_opened
        finally:
            await sender.aclose()

    lost, again, connections = run(body())
    assert (lost.outcome, lost.status, lost.reason) == (Outcome.RETRY, 0, "ConnectionLost")
    assert lost.retry_after_s is not None
    assert again.outcome is Outcome.DELIVERED
    assert connections == 2


def test_emulator_restart_goaway_is_survived(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    async def body() -> tuple[list[SendResult], int]:
        sender = make_apns_sender(endpoints)
        try:
            first = await sender.send_voip(
                apns_token(), PAYLOAD, apns_id=uuid.uuid4(), expiration=0
            )
            await asyncio.to_thread(emulators.call, emulators.suite.apns_server.goaway_all)
            second = await sender.send_voip(
                apns_token(), PAYLOAD, apns_id=uuid.uuid4(), expiration=0
            )
            return [first, second], sender.connections_opened
        finally:
            await sender.aclose()

    results, connections = run(body())
    assert all(r.delivered for r in results)
    assert connections == 2


def test_latency_is_injected_per_token(emulators: ThreadedSuite, endpoints: Endpoints) -> None:
    slow = apns_token()
    emulators.suite.apns.faults.add(slow, Fault(latency_s=0.3, times=1))

    async def body() -> list[str]:
        sender = make_apns_sender(endpoints)
        order: list[str] = []

        async def send(token: str, name: str) -> None:
            result = await sender.send_voip(token, PAYLOAD, apns_id=uuid.uuid4(), expiration=0)
            assert result.delivered
            order.append(name)

        try:
            await send(apns_token(), "warm-up")
            await asyncio.gather(send(slow, "slow"), send(apns_token(), "fast"))
        finally:
            await sender.aclose()
        return order

    assert run(body()) == ["warm-up", "fast", "slow"]
