"""What every alert sender returns: one classified outcome per message, as for pushes.

The outbox (SQL, `record_outbox_results`) turns these into row transitions:

- DELIVERED: the provider accepted it (its message id is kept);
- RETRY: transient (429, 5xx, a 4xx SMTP reply, no answer): try again after a backoff;
- METHOD_DEAD: the address will never work again (Web Push 404/410, Twilio 21211/21610/21614,
  an SMTP permanent 5xx for the recipient): the method is disabled with the reason;
- CONFIG_FAULT: our credentials are wrong (VAPID 401/403, Twilio 401, SMTP 535): keep the
  method, retry slowly, tell the household once;
- OUR_BUG: we sent something invalid: fail, do not retry.

The classifiers are pure functions of what the provider answered, so `make mutate` can pin
each branch down (mutate/).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    METHOD_DEAD = "method_dead"
    CONFIG_FAULT = "config_fault"
    OUR_BUG = "our_bug"


@dataclass(frozen=True, slots=True)
class Delivery:
    """The classified answer to one message."""

    channel: str  # "webpush" | "email" | "sms"
    outcome: Outcome
    status: int  # HTTP status, SMTP reply code; 0 when no answer arrived
    reason: str | None = None  # provider code: "410", "21211", "550", a transport error
    message_id: str | None = None  # push Location, Twilio SM sid, our Message-ID
    retry_after_s: float | None = None  # the provider's Retry-After, if it gave one
    detail: str | None = None  # for logs and the household's delivery view

    @property
    def delivered(self) -> bool:
        return self.outcome is Outcome.DELIVERED


#: Twilio error codes that mean the number itself will never take our messages.
TWILIO_DEAD_NUMBER = frozenset({21211, 21610, 21614})
#: Twilio's "too many requests".
TWILIO_RATE_LIMITED = 20429
#: Twilio's "Authenticate" (bad Account SID / Auth Token).
TWILIO_AUTH = 20003
#: SMTP replies about our login, not the recipient (RFC 4954: 530 auth required, 535 bad
#: credentials, 534 mechanism too weak, 538 encryption required).
SMTP_AUTH_CODES = frozenset({530, 534, 535, 538})
#: SMTP permanent replies about the recipient's mailbox (RFC 5321 section 4.2.3).
SMTP_DEAD_MAILBOX = frozenset({550, 551, 553, 554})


def classify_webpush(status: int) -> Outcome:
    """A push service's answer (RFC 8030 section 5, RFC 8292 section 4.1)."""
    if status == 201 or 200 <= status < 300:
        return Outcome.DELIVERED
    if status in (404, 410):
        return Outcome.METHOD_DEAD
    if status in (401, 403):
        return Outcome.CONFIG_FAULT
    if status == 429 or status >= 500:
        return Outcome.RETRY
    return Outcome.OUR_BUG  # 400 malformed, 413 too large, anything else we caused


def classify_twilio(status: int, code: int | None) -> Outcome:
    """Twilio's Messages API answer: HTTP status and the error body's `code`."""
    if 200 <= status < 300:
        return Outcome.DELIVERED
    if code in TWILIO_DEAD_NUMBER:
        return Outcome.METHOD_DEAD
    if status == 401 or code == TWILIO_AUTH:
        return Outcome.CONFIG_FAULT
    if status == 429 or code == TWILIO_RATE_LIMITED or status >= 500:
        return Outcome.RETRY
    return Outcome.OUR_BUG


def classify_smtp(code: int) -> Outcome:
    """An SMTP reply code to our submission (0: the connection failed)."""
    if 200 <= code < 300:
        return Outcome.DELIVERED
    if code in SMTP_AUTH_CODES:
        return Outcome.CONFIG_FAULT
    if code in SMTP_DEAD_MAILBOX:
        return Outcome.METHOD_DEAD
    if code == 0 or 400 <= code < 500:
        return Outcome.RETRY
    return Outcome.OUR_BUG  # other 5xx: a syntax error, a size limit, a policy on the message
