"""Fuzzing the webhook's signature verifier and parser (hypothesis): no crash, no false accept.

(The served API's fuzzing, on a real cluster: tests/integration/test_api_fuzz.py.)
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from python_worker.api.elevenlabs import (
    SIGNATURE_FUTURE_SKEW_SECS,
    SIGNATURE_TOLERANCE_SECS,
    SignatureError,
    WebhookPayloadError,
    parse_webhook,
    signature_header,
    verify_signature,
)

# The verifier and the parser -------------------------------------------------------------

SECRET = "wsec_hypothesis"
NOW = 1_795_000_000


@given(
    body=st.binary(max_size=2048),
    offset=st.integers(-SIGNATURE_TOLERANCE_SECS, SIGNATURE_FUTURE_SKEW_SECS),
)
def test_a_correct_signature_verifies_within_the_window(body: bytes, offset: int) -> None:
    stamp = NOW + offset
    assert verify_signature(signature_header(SECRET, body, stamp), body, SECRET, NOW) == stamp


@given(body=st.binary(min_size=1, max_size=512), data=st.data())
def test_any_change_to_the_body_breaks_the_signature(body: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(body) - 1))
    flip = data.draw(st.integers(1, 255))
    tampered = body[:index] + bytes([body[index] ^ flip]) + body[index + 1 :]
    with pytest.raises(SignatureError) as refused:
        verify_signature(signature_header(SECRET, body, NOW), tampered, SECRET, NOW)
    assert refused.value.reason == "bad_signature"


@given(offset=st.one_of(st.integers(max_value=-SIGNATURE_TOLERANCE_SECS - 1),
                        st.integers(min_value=SIGNATURE_FUTURE_SKEW_SECS + 1, max_value=10**9)))  # fmt: skip
def test_timestamps_outside_the_window_are_refused(offset: int) -> None:
    stamp = max(NOW + offset, 0)
    with pytest.raises(SignatureError) as refused:
        verify_signature(signature_header(SECRET, b"{}", stamp), b"{}", SECRET, NOW)
    assert refused.value.reason in ("stale_signature", "future_signature")


@given(header=st.one_of(st.none(), st.text(max_size=300)), body=st.binary(max_size=256))
def test_arbitrary_headers_never_verify_and_never_crash(header: str | None, body: bytes) -> None:
    with pytest.raises(SignatureError):
        verify_signature(header, body, SECRET, NOW)


def _independent_hmac(body: bytes, stamp: int) -> str:
    return hmac.new(SECRET.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()


@given(
    body=st.binary(max_size=256),
    extra=st.lists(st.text(alphabet="0123456789abcdef", max_size=64), max_size=3),
)
def test_the_right_signature_among_several_v0_values_verifies(
    body: bytes, extra: list[str]
) -> None:
    values = [f"v0={v}" for v in extra] + [f"v0={_independent_hmac(body, NOW)}"]
    assert verify_signature(f"t={NOW}," + ",".join(values), body, SECRET, NOW) == NOW


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.one_of(st.binary(max_size=512), json_values.map(lambda v: json.dumps(v).encode())))
def test_the_parser_accepts_events_or_names_the_field(body: bytes) -> None:
    try:
        event = parse_webhook(body)
    except WebhookPayloadError as error:
        assert error.field in ("body", "type", "event_timestamp", "data", "data.conversation_id")
        assert str(error).startswith(f"{error.field}: ")
        return
    assert event.payload["type"] == event.type
    assert isinstance(event.payload["data"], dict)
    json.dumps(event.payload).encode("utf-8")  # storable as jsonb


def storable(value: Any) -> bool:
    """What Postgres jsonb can hold: no NUL characters, no unpaired surrogates."""
    if isinstance(value, str):
        return "\x00" not in value and not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return all(storable(v) for v in value)
    if isinstance(value, dict):
        return all(storable(k) and storable(v) for k, v in value.items())
    return True


@given(
    kind=st.text(min_size=1, max_size=40).filter(str.strip),
    stamp=st.integers(0, 10**11),
    data=st.dictionaries(st.text(max_size=10), json_values, max_size=5),
)
def test_well_formed_envelopes_parse_with_unknown_fields_kept(
    kind: str, stamp: int, data: dict[str, Any]
) -> None:
    data = {k: v for k, v in data.items() if k != "conversation_id"}
    payload = {"type": kind, "event_timestamp": stamp, "data": data, "future_field": [1, 2]}
    body = json.dumps(payload).encode()
    if not storable(payload):
        with pytest.raises(WebhookPayloadError) as refused:
            parse_webhook(body)
        # Named where it is (issue 25, item 6): the key or value's path, or its dict's.
        assert refused.value.field.split(".")[0].split("[")[0] in ("type", "data", "body")
        assert refused.value.reason in (
            "contains a NUL character (\\u0000)",
            "contains an unpaired UTF-16 surrogate",
        )
        return
    event = parse_webhook(body)
    assert (event.type, event.event_timestamp, event.payload) == (kind, stamp, payload)
