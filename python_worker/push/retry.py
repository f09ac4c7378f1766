"""When to try a push again: the provider's Retry-After, else exponential backoff with jitter.

    backoff(n) = b/2 + uniform(0, b/2),  b = min(CAP_S, BASE_S * 2**(n-1))   ("equal jitter")

so attempt 1 waits 0.5 to 1 s, attempt 2 1 to 2 s, attempt 3 2 to 4 s, … capped at a minute. Half of
the delay is fixed so retries never bunch at zero; the other half spreads a burst of failures
(a provider restart fails thousands of pushes at once) so they do not return in lockstep. A
Retry-After from the provider is a floor: we never retry sooner than it asks.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass, field

BASE_S = 1.0  # first retry after about a second: a ring window is short (~1 minute)
CAP_S = 60.0  # never wait longer than a minute between attempts of one call


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = BASE_S
    cap_s: float = CAP_S
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def backoff(self, attempt: int) -> float:
        """The delay before retry number `attempt` (1 = first retry)."""
        ceiling = min(self.cap_s, self.base_s * 2.0 ** max(attempt - 1, 0))
        jitter: float = self.rng.uniform(0, ceiling / 2)
        return ceiling / 2 + jitter

    def delay(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Backoff, but never less than the provider's Retry-After."""
        backoff = self.backoff(attempt)
        return backoff if retry_after_s is None else max(backoff, retry_after_s)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent/bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
