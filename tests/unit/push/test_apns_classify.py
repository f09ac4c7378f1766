"""APNs answers at their edges, straight through `classify`, and the provider token's clock.

The emulator tests (tests/integration/test_push_apns.py) drive each row of the APNs table over HTTP/2;
these pin what they leave open (issue 17): statuses next to the retryable ones, reasons that
only mean "token dead" with 400 or 410, odd bodies, the exact retry delay (a seeded policy),
and the 20-minute and reuse boundaries of the provider token.
"""

from __future__ import annotations

import datetime as dt
import json
import random

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from python_worker.push.apns import (
    TOKEN_MIN_AGE_FOR_UPDATE_S,
    TOKEN_REUSE_S,
    ProviderToken,
    _unix_seconds,
    classify,
)
from python_worker.push.http2 import Response
from python_worker.push.outcomes import Outcome, SendResult
from python_worker.push.retry import RetryPolicy

SEED = 5
APNS_ID = "4b4f9a46-0d1f-4d3b-9d6e-1d6f5e7c2a10"


def answer(status: int, body: bytes | object = b"", retry_after: str | None = None) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {b"apns-id": APNS_ID.encode()}
    if retry_after is not None:
        headers[b"retry-after"] = retry_after.encode()
    return Response(status, headers, raw, headers_only=not raw)


def classified(response: Response, attempt: int = 1) -> SendResult:
    return classify(response, attempt, RetryPolicy(rng=random.Random(SEED)))


def backoff(attempt: int) -> float:
    return RetryPolicy(rng=random.Random(SEED)).backoff(attempt)


def test_success_keeps_the_apns_id() -> None:
    assert classified(answer(200)) == SendResult("apns", Outcome.DELIVERED, 200, message_id=APNS_ID)


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (400, "BadDeviceToken"),
        (400, "DeviceTokenNotForTopic"),
        (410, "Unregistered"),
        (410, "ExpiredToken"),
        (400, "Unregistered"),
    ],
)
def test_dead_token_reasons_with_400_or_410_invalidate_the_token(status: int, reason: str) -> None:
    result = classified(answer(status, {"reason": reason, "timestamp": 1_700_000_000_123}))
    assert result == SendResult(
        "apns",
        Outcome.TOKEN_DEAD,
        status,
        reason,
        APNS_ID,
        detail=f"APNs {status} {reason}",
        token_invalid_since_ms=1_700_000_000_123,
    )


@pytest.mark.parametrize(
    ("stamp", "kept"), [(1.7e12, 1_700_000_000_000), ("1700000000000", None), (None, None)]
)
def test_only_a_numeric_410_timestamp_is_kept(stamp: object, kept: int | None) -> None:
    result = classified(answer(410, {"reason": "Unregistered", "timestamp": stamp}))
    assert (result.outcome, result.token_invalid_since_ms) == (Outcome.TOKEN_DEAD, kept)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(403, Outcome.CONFIG_FAULT), (500, Outcome.RETRY), (413, Outcome.OUR_BUG)],
)
def test_a_dead_token_reason_with_another_status_is_not_a_dead_token(
    status: int, outcome: Outcome
) -> None:
    assert classified(answer(status, {"reason": "BadDeviceToken"})).outcome is outcome


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_429_and_5xx_are_retried_after_the_backoff(status: int) -> None:
    result = classified(answer(status, {"reason": "ServiceUnavailable"}), attempt=4)
    assert result == SendResult(
        "apns",
        Outcome.RETRY,
        status,
        "ServiceUnavailable",
        APNS_ID,
        retry_after_s=backoff(4),
        detail=f"APNs {status} ServiceUnavailable",
    )


def test_a_retry_after_longer_than_the_backoff_wins() -> None:
    result = classified(answer(429, {"reason": "TooManyRequests"}, retry_after="90"))
    assert (result.outcome, result.retry_after_s) == (Outcome.RETRY, 90.0)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (403, Outcome.CONFIG_FAULT),
        (400, Outcome.OUR_BUG),
        (404, Outcome.OUR_BUG),
        (413, Outcome.OUR_BUG),
        (428, Outcome.OUR_BUG),
        (430, Outcome.OUR_BUG),
        (499, Outcome.OUR_BUG),
    ],
)
def test_other_statuses_are_configuration_faults_or_our_bugs(status: int, outcome: Outcome) -> None:
    assert classified(answer(status, {"reason": "Whatever"})) == SendResult(
        "apns", outcome, status, "Whatever", APNS_ID, detail=f"APNs {status} Whatever"
    )


@pytest.mark.parametrize("body", [b"", b"not json", b"[]", b'{"reason": ""}', b'{"other": 1}'])
def test_an_answer_without_a_reason_is_classified_by_status(body: bytes) -> None:
    assert classified(answer(400, body)) == SendResult(
        "apns", Outcome.OUR_BUG, 400, None, APNS_ID, detail="APNs 400 (no reason)"
    )
    assert classified(answer(503, body)).outcome is Outcome.RETRY


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        (None, None),
        (dt.datetime(2031, 1, 6, 9, 0, 30, 900_000, tzinfo=dt.UTC), "1925456430"),
        (dt.datetime(1969, 12, 31, 23, 0, tzinfo=dt.UTC), "0"),
        (1_925_456_430, "1925456430"),
        (-5, "0"),
        (0, "0"),
    ],
)
def test_apns_expiration_is_whole_unix_seconds_never_negative(
    when: dt.datetime | int | None, expected: str | None
) -> None:
    assert _unix_seconds(when) == expected


# -- the provider token's clock --------------------------------------------------------------


class Clock:
    """A clock the test moves by hand (the token takes `clock=` for this)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def provider_token(clock: Clock, reuse_s: float = TOKEN_REUSE_S) -> ProviderToken:
    key = ec.generate_private_key(ec.SECP256R1())
    return ProviderToken(key, "KEYID12345", "TEAMID1234", reuse_s=reuse_s, clock=clock)


def test_the_token_is_an_es256_jwt_with_key_id_issuer_and_whole_second_iat() -> None:
    clock = Clock(1_800_000_000.75)
    token = provider_token(clock).current()
    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": "KEYID12345", "typ": "JWT"}
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims == {"iss": "TEAMID1234", "iat": 1_800_000_000}


def test_the_token_is_reused_until_exactly_the_reuse_age() -> None:
    clock = Clock(1_800_000_000.0)
    tokens = provider_token(clock)
    first = tokens.current()
    clock.now += TOKEN_REUSE_S - 1
    assert tokens.current() == first
    assert tokens.generated == 1
    clock.now += 1
    assert tokens.current() != first
    assert tokens.generated == 2


def test_renew_waits_exactly_twenty_minutes_and_ignores_a_token_already_replaced() -> None:
    clock = Clock(1_800_000_000.0)
    tokens = provider_token(clock)
    first = tokens.current()
    assert TOKEN_MIN_AGE_FOR_UPDATE_S == 1200
    clock.now += TOKEN_MIN_AGE_FOR_UPDATE_S - 1
    assert tokens.renew(first) is False
    assert tokens.current() == first
    clock.now += 1
    assert tokens.renew(first) is True
    second = tokens.current()
    assert second != first
    assert tokens.renew(first) is True  # someone already replaced it: use the current one
    # Any token but the current one, whatever it sorts like, was already replaced.
    assert tokens.renew("") is tokens.renew("~") is True
    assert (tokens.current(), tokens.generated) == (second, 2)


@pytest.mark.parametrize("reuse_s", [20 * 60, 50 * 60])
def test_reuse_between_twenty_and_fifty_minutes_is_allowed(reuse_s: float) -> None:
    assert provider_token(Clock(0.0), reuse_s).current()


@pytest.mark.parametrize("reuse_s", [20 * 60 - 1, 50 * 60 + 1])
def test_reuse_outside_twenty_to_fifty_minutes_is_refused(reuse_s: float) -> None:
    with pytest.raises(ValueError, match="provider tokens must be reused for 20-50 minutes"):
        provider_token(Clock(0.0), reuse_s)
