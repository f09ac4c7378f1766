"""How every provider answer is classified, and how a classified answer becomes the outbox's
result: each row pins one branch (make mutate's `notify_outcomes` and `outbox` targets)."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

import pytest

from python_worker.notify.messages import links, push_payload, sms_text
from python_worker.notify.outcomes import (
    Delivery,
    Outcome,
    classify_smtp,
    classify_twilio,
    classify_webpush,
)
from python_worker.notify.senders import not_configured
from python_worker.push.retry import RetryPolicy
from python_worker.worker.outbox import OutboxRow, result_json

D, R, M, C, B = (
    Outcome.DELIVERED,
    Outcome.RETRY,
    Outcome.METHOD_DEAD,
    Outcome.CONFIG_FAULT,
    Outcome.OUR_BUG,
)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (201, D), (200, D), (202, D), (299, D), (300, B), (199, B),
        (404, M), (410, M),
        (401, C), (403, C),
        (429, R), (500, R), (502, R), (503, R),
        (400, B), (413, B), (405, B), (411, B), (499, B),
    ],
)  # fmt: skip
def test_web_push_answers(status: int, outcome: Outcome) -> None:
    assert classify_webpush(status) is outcome


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (201, None, D), (200, None, D), (299, None, D), (300, None, B),
        (400, 21211, M), (400, 21610, M), (400, 21614, M),
        (401, 20003, C), (401, None, C), (400, 20003, C),
        (429, 20429, R), (429, None, R), (400, 20429, R), (500, None, R), (503, 20500, R),
        (400, 21602, B), (400, 21606, B), (400, None, B), (404, 20404, B), (499, None, B),
    ],
)  # fmt: skip
def test_twilio_answers(status: int, code: int | None, outcome: Outcome) -> None:
    assert classify_twilio(status, code) is outcome


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (250, D), (200, D), (299, D), (300, B),
        (530, C), (534, C), (535, C), (538, C),
        (550, M), (551, M), (553, M), (554, M),
        (0, R), (400, R), (421, R), (451, R), (452, R), (499, R),
        (500, B), (501, B), (552, B), (555, B), (399, B),
    ],
)  # fmt: skip
def test_smtp_replies(code: int, outcome: Outcome) -> None:
    assert classify_smtp(code) is outcome


def row(attempts: int = 1, **change: Any) -> OutboxRow:
    now = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    values: dict[str, Any] = {
        "outbox_id": uuid.UUID(int=7),
        "kind": "alert",
        "channel": "sms",
        "household_id": uuid.UUID(int=1),
        "alert_id": uuid.UUID(int=2),
        "user_id": uuid.UUID(int=3),
        "method_id": uuid.UUID(int=4),
        "step": 1,
        "attempts": attempts,
        "destination": {"phone": "+447700900123"},
        "message": {},
        "send_at": now,
        "deadline_at": None,
        "locked_until": now,
    }
    values.update(change)
    return OutboxRow(**values)


def fixed_policy() -> RetryPolicy:
    return RetryPolicy(base_s=1.0, cap_s=300.0, rng=random.Random(0))


def test_a_delivered_message_keeps_its_provider_id_and_no_retry_time() -> None:
    got = result_json(row(), Delivery("sms", D, 201, None, message_id="SM1"), fixed_policy())
    assert got == {
        "outbox_id": str(uuid.UUID(int=7)),
        "outcome": "delivered",
        "status": 201,
        "reason": None,
        "message_id": "SM1",
        "retry_after_s": None,
        "detail": None,
    }


@pytest.mark.parametrize("outcome", [R, C])
def test_a_retry_or_config_fault_waits_the_backoff_of_its_attempt(outcome: Outcome) -> None:
    for attempts, low, high in ((1, 0.5, 1.0), (2, 1.0, 2.0), (4, 4.0, 8.0), (20, 150.0, 300.0)):
        got = result_json(row(attempts), Delivery("sms", outcome, 429, "20429"), fixed_policy())
        assert got["outcome"] == outcome.value
        assert isinstance(got["retry_after_s"], float)
        assert low <= got["retry_after_s"] <= high, (attempts, got)


def test_a_providers_retry_after_is_a_floor() -> None:
    got = result_json(
        row(1), Delivery("webpush", R, 429, "429", retry_after_s=42.0), fixed_policy()
    )
    assert got["retry_after_s"] == 42.0


@pytest.mark.parametrize("outcome", [M, B])
def test_a_dead_method_or_our_bug_has_no_retry_time(outcome: Outcome) -> None:
    got = result_json(row(3), Delivery("email", outcome, 550, "550", detail="no"), fixed_policy())
    assert (got["outcome"], got["retry_after_s"], got["detail"], got["reason"]) == (
        outcome.value, None, "no", "550",
    )  # fmt: skip


def test_a_channel_without_settings_is_a_config_fault_naming_the_variable() -> None:
    for channel, variable in (
        ("webpush", "VAPID_PRIVATE_KEY_FILE"),
        ("email", "SMTP_HOST"),
        ("sms", "TWILIO_ACCOUNT_SID"),
    ):
        result = not_configured(channel)
        assert result.outcome is C
        assert result.reason == "not_configured"
        assert variable in (result.detail or "")


MESSAGE = {
    "kind": "alert",
    "what": "Mum did not answer 2 calls",
    "ack_token": "a.x",
    "call_token": "c.y",
    "critical": True,
}


def test_links_are_built_on_the_public_url_with_the_tokens_escaped() -> None:
    got = links({"ack_token": "a.b+c", "call_token": None}, "https://api.example.org/")
    assert got.ack == "https://api.example.org/alerts/ack?token=a.b%2Bc"
    assert got.call is None


def test_an_sms_fits_two_segments_and_keeps_both_links() -> None:
    link = links(MESSAGE, "https://api.example.org")
    text = sms_text({**MESSAGE, "what": "x" * 1000}, link)
    assert len(text) <= 306
    assert text.endswith(f"Reply OK to acknowledge, or: {link.ack}")
    assert f"Call her now: {link.call}" in text


def test_a_push_payload_fits_one_record() -> None:
    link = links(MESSAGE, "https://api.example.org")
    data = push_payload({**MESSAGE, "text": "y" * 5000, "subject": "z" * 300}, link, "id")
    assert len(data) <= 3993
