"""The retry policy, exactly: equal jitter from a seeded generator, the cap, Retry-After.

Issue 17, item 9: the default cap of 60 s, the upper half of the jitter and an HTTP-date
Retry-After in the past were never checked. Each expected delay is computed here from the
formula in retry.py's docstring with a generator seeded like the policy's.
"""

from __future__ import annotations

import dataclasses
import email.utils
import random

import pytest

from python_worker.push.retry import BASE_S, CAP_S, RetryPolicy, parse_retry_after

SEED = 42


def policy(**options: float) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(SEED), **options)


def equal_jitter(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """b/2 + uniform(0, b/2), b = min(cap, base * 2**(attempt-1)), same seed as `policy`."""
    b = min(cap, base * 2.0 ** (attempt - 1))
    return b / 2 + random.Random(SEED).uniform(0, b / 2)


def test_the_defaults_are_a_one_second_base_and_a_one_minute_cap() -> None:
    assert (BASE_S, CAP_S) == (1.0, 60.0)
    assert (RetryPolicy().base_s, RetryPolicy().cap_s) == (1.0, 60.0)


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 6, 7, 12])
def test_backoff_is_equal_jitter_doubling_up_to_the_default_cap(attempt: int) -> None:
    assert policy().backoff(attempt) == equal_jitter(attempt)


def test_the_cap_holds_for_late_attempts() -> None:
    # 2**6 = 64 s is over the cap: attempt 7 and later wait 30 to 60 s, never more.
    assert policy().backoff(7) == policy().backoff(50) == equal_jitter(7)
    assert 30.0 <= policy().backoff(50) <= 60.0


def test_attempt_zero_or_less_waits_like_the_first() -> None:
    assert policy().backoff(0) == policy().backoff(-3) == equal_jitter(1)


def test_a_custom_base_and_cap_are_used() -> None:
    assert policy(base_s=0.5, cap_s=5.0).backoff(3) == equal_jitter(3, 0.5, 5.0)
    assert policy(base_s=0.5, cap_s=5.0).backoff(9) == equal_jitter(9, 0.5, 5.0)


def test_the_jitter_spreads_over_the_whole_upper_half() -> None:
    rng_policy = policy()
    delays = [rng_policy.backoff(3) for _ in range(2000)]  # b = 4 s: 2 to 4 s
    assert min(delays) >= 2.0
    assert max(delays) <= 4.0
    assert min(delays) < 2.1  # the fixed half is the floor ...
    assert max(delays) > 3.9  # ... and the jitter reaches the ceiling
    assert sum(d > 3.0 for d in delays) > 800  # about half the draws in the top half


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [(None, equal_jitter(2)), (0.1, equal_jitter(2)), (30.0, 30.0)],
)
def test_retry_after_is_a_floor_under_the_backoff(
    retry_after: float | None, expected: float
) -> None:
    assert policy().delay(2, retry_after) == expected


NOW = 1_800_000_000.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        (email.utils.formatdate(NOW + 90, usegmt=True), 90.0),
        (email.utils.formatdate(NOW - 90, usegmt=True), 0.0),  # a date in the past: now
        (email.utils.formatdate(NOW, usegmt=True), 0.0),
        ("soon", None),
        ("", None),
        ("1.5", None),
        ("-5", None),
    ],
)
def test_retry_after_is_delta_seconds_or_an_http_date(
    header: str | None, expected: float | None
) -> None:
    assert parse_retry_after(header, now=NOW) == expected


def test_an_http_date_without_now_is_measured_from_the_clock() -> None:
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:10 GMT") == 0.0
    far = parse_retry_after("Fri, 01 Jan 9999 00:00:00 GMT")
    assert far is not None
    assert far > 200_000_000_000


def test_policies_are_equal_by_base_and_cap_whatever_their_generators() -> None:
    assert RetryPolicy() == RetryPolicy(rng=random.Random(1))
    assert RetryPolicy(base_s=2.0) != RetryPolicy()


def test_a_policy_cannot_be_changed_once_made() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetryPolicy().cap_s = 1.0  # type: ignore[misc]
