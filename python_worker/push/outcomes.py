"""What every push provider's sender returns: one classified outcome per push.

The dispatcher (issue 5) turns these into queue transitions:

- DELIVERED: the provider accepted it (its message id is kept);
- TOKEN_DEAD: the device token will never work again: invalidate it, try the fallback token;
- RETRY: transient; try again after `retry_after_s` (never past the call's deadline);
- CONFIG_FAULT: our credentials or project are wrong: alert operators, keep the token;
- OUR_BUG: we sent something invalid: fail, do not retry, keep the token.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from python_worker.push.http2 import ConnectFailed


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    TOKEN_DEAD = "token_dead"  # noqa: S105 (an outcome, not a password)
    RETRY = "retry"
    CONFIG_FAULT = "config_fault"
    OUR_BUG = "our_bug"


@dataclass(frozen=True, slots=True)
class SendResult:
    """The classified answer to one push."""

    provider: str  # "fcm" | "apns"
    outcome: Outcome
    status: int  # HTTP status; 0 when no response arrived
    reason: str | None = None  # FCM errorCode / APNs reason / transport error
    message_id: str | None = None  # FCM message name, APNs apns-id
    retry_after_s: float | None = None  # for RETRY: when to try again
    detail: str | None = None  # human-readable explanation for logs and last_error
    # For TOKEN_DEAD from APNs 410: when Apple last knew the token valid (ms since epoch).
    token_invalid_since_ms: int | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome is Outcome.DELIVERED


def unreachable(
    provider: str, error: Exception, retry_after_s: float, reason: str | None = None
) -> SendResult:
    """No answer from the provider (or its token endpoint): always worth a retry.

    After a dropped connection the push may or may not have arrived; a resend is harmless,
    since every push of a session carries the same call id and the device rings once.
    """
    if reason is None:
        reason = "connect_failed" if isinstance(error, ConnectFailed) else type(error).__name__
    return SendResult(
        provider, Outcome.RETRY, 0, reason, retry_after_s=retry_after_s, detail=str(error)
    )


class PayloadTooLarge(ValueError):
    """A payload over the provider's limit; raised before anything is sent."""

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(f"{what} is {size} bytes, over the {limit}-byte limit")
        self.what = what
        self.size = size
        self.limit = limit
