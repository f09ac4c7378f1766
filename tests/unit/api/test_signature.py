"""The webhook's signature check and envelope parser, case by case at their exact edges.

Written to kill the mutants that survived the earlier suite (issue 17): header parts that are
malformed before the real ones, a non-numeric or overlong `t`, `v0` without `t`, the window's
last second on each side, a `type` of exactly 100 characters, unpaired surrogates, and the
audio strip. `make mutate` runs these first against python_worker/api/elevenlabs.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from python_worker.api.elevenlabs import (
    MAX_EVENT_TIMESTAMP,
    SIGNATURE_FUTURE_SKEW_SECS,
    SIGNATURE_TOLERANCE_SECS,
    SignatureError,
    WebhookEvent,
    WebhookPayloadError,
    parse_webhook,
    signature,
    signature_header,
    verify_signature,
    without_audio,
)

SECRET = "wsec_edges"
NOW = 1_795_000_000
BODY = b'{"type":"post_call_transcription"}'


def v0(body: bytes = BODY, stamp: int = NOW, secret: str = SECRET) -> str:
    """The signature computed independently of the module under test."""
    return hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()


def refused(header: str | None, body: bytes = BODY, now: float = NOW) -> SignatureError:
    with pytest.raises(SignatureError) as caught:
        verify_signature(header, body, SECRET, now)
    return caught.value


# -- the header ----------------------------------------------------------------------------


def test_the_signature_is_the_hex_hmac_of_timestamp_dot_body() -> None:
    assert signature(SECRET, BODY, NOW) == v0()
    assert signature_header(SECRET, BODY, NOW) == f"t={NOW},v0={v0()}"


@pytest.mark.parametrize(
    "header",
    [
        f"t={NOW},v0={v0()}",
        f"  t={NOW} ,  v0={v0()}  ",  # blanks around the parts
        f"v0={v0()},t={NOW}",  # any order
        f"garbage,t={NOW},v0={v0()}",  # a part without "=" before the real ones is skipped
        f"t={NOW},nonsense,v0={v0()}",
        f"v1=abc,t={NOW},v0={v0()}",  # an unknown scheme is ignored
        f"a=zzz,s=-1,t={NOW},v0={v0()}",  # ... whether it sorts before "t" and "v0" or after
        f"t={NOW},v0={'0' * 64},v0={v0()}",  # rotation: one of several matches
    ],
)
def test_well_formed_headers_verify(header: str) -> None:
    assert verify_signature(header, BODY, SECRET, NOW) == NOW


@pytest.mark.parametrize("header", [None, "", "   "])
def test_a_missing_header_is_missing_signature(header: str | None) -> None:
    error = refused(header)
    assert (error.reason, str(error)) == (
        "missing_signature",
        "ElevenLabs-Signature header is missing",
    )


@pytest.mark.parametrize(
    "header",
    [
        f"t=17950000a0,v0={v0()}",  # not a number
        f"t=,v0={v0()}",
        f"t=-{NOW},v0={v0()}",
        f"t={NOW}.5,v0={v0()}",
        f"t=\u0661\u0667\u0669\u0665\u0660\u0660\u0660\u0660\u0660\u0660,v0={v0()}",  # Arabic-Indic digits
        f"t=1{NOW:012d},v0={v0()}",  # 13 digits
    ],
)
def test_a_timestamp_that_is_not_unix_seconds_is_a_bad_signature(header: str) -> None:
    error = refused(header)
    assert (error.reason, str(error)) == (
        "bad_signature",
        "ElevenLabs-Signature: t must be UNIX seconds",
    )


def test_a_twelve_digit_timestamp_is_read_and_refused_as_future() -> None:
    stamp = 999_999_999_999
    error = refused(f"t={stamp},v0={v0(stamp=stamp)}")
    assert error.reason == "future_signature"
    # ... and it is accepted when the clock is there (the digit limit is 12, not fewer).
    assert verify_signature(f"t={stamp},v0={v0(stamp=stamp)}", BODY, SECRET, stamp) == stamp


@pytest.mark.parametrize(
    "header",
    [
        f"v0={v0()}",  # v0 without t
        f"t={NOW}",  # t without v0
        f"t{NOW},v0{v0()}",  # no "=" anywhere
        f"x={NOW},y={v0()}",
        f"t={NOW},a={v0()}",  # the signature under another name is no v0
        f"t={NOW},v={v0()}",
        f"t={NOW},v1={v0()}",
    ],
)
def test_a_header_without_both_parts_is_a_bad_signature(header: str) -> None:
    error = refused(header)
    assert (error.reason, str(error)) == (
        "bad_signature",
        "ElevenLabs-Signature must be t=<unix seconds>,v0=<hex signature>",
    )


def test_the_window_ends_exactly_at_thirty_minutes_old_and_five_minutes_ahead() -> None:
    oldest = NOW - SIGNATURE_TOLERANCE_SECS
    newest = NOW + SIGNATURE_FUTURE_SKEW_SECS
    assert (SIGNATURE_TOLERANCE_SECS, SIGNATURE_FUTURE_SKEW_SECS) == (1800, 300)
    assert verify_signature(f"t={oldest},v0={v0(stamp=oldest)}", BODY, SECRET, NOW) == oldest
    assert verify_signature(f"t={newest},v0={v0(stamp=newest)}", BODY, SECRET, NOW) == newest
    stale = refused(f"t={oldest - 1},v0={v0(stamp=oldest - 1)}")
    assert (stale.reason, str(stale)) == (
        "stale_signature",
        "ElevenLabs-Signature: timestamp is more than 30 minutes old",
    )
    future = refused(f"t={newest + 1},v0={v0(stamp=newest + 1)}")
    assert (future.reason, str(future)) == (
        "future_signature",
        "ElevenLabs-Signature: timestamp is in the future",
    )


@pytest.mark.parametrize(
    "header",
    [
        f"t={NOW},v0={v0(secret='other')}",
        f"t={NOW},v0={v0().upper()}",
        f"t={NOW - 1},v0={v0()}",  # the timestamp is part of what is signed
    ],
)
def test_a_wrong_signature_does_not_match(header: str) -> None:
    error = refused(header)
    assert (error.reason, str(error)) == (
        "bad_signature",
        "ElevenLabs-Signature: signature does not match",
    )


@pytest.mark.parametrize(
    "header",
    [
        f"t={NOW},v0={v0()[:-1]}",
        f"t={NOW},v0={v0()}0",
        f"t={NOW},v0={v0()[:-1]}é",  # non-ASCII: refused by its shape, not a crash
        f"t={NOW},v0={'g' * 64}",
    ],
)
def test_a_v0_that_is_not_64_hex_characters_is_refused_by_its_shape(header: str) -> None:
    # Told apart before a byte of the body is read (issue 25, item 4).
    error = refused(header)
    assert (error.reason, str(error)) == (
        "bad_signature",
        "ElevenLabs-Signature: v0 must be 64 hexadecimal characters",
    )


def test_an_overlong_header_is_refused_before_anything_else() -> None:
    error = refused(f"t={NOW}," + ",".join(f"v0={v0()}" for _ in range(20)))
    assert (error.reason, str(error)) == (
        "bad_signature",
        "ElevenLabs-Signature: header is too long",
    )


# The header's grammar, so that hypothesis forms `t=…` and `v0=…` parts (random text almost
# never does): real and broken parts in any order, with blanks and stray separators.
_parts = st.one_of(
    st.builds(lambda s: f"t={s}", st.integers(0, 10**13).map(str) | st.text(max_size=14)),
    st.builds(lambda s: f"v0={s}", st.text(alphabet="0123456789abcdef", max_size=64)),
    st.just(f"v0={v0()}"),
    st.just(f"t={NOW}"),
    st.text(max_size=12),
    st.builds(lambda k, v: f"{k}={v}", st.text(max_size=4), st.text(max_size=8)),
)


@given(parts=st.lists(_parts, max_size=6), blank=st.sampled_from(["", " ", "  "]))
def test_any_header_of_the_grammar_is_verified_or_refused_never_crashes(
    parts: list[str], blank: str
) -> None:
    header = ",".join(blank + p + blank for p in parts)
    try:
        stamp = verify_signature(header, BODY, SECRET, NOW)
    except SignatureError as error:
        assert error.reason in (
            "missing_signature",
            "bad_signature",
            "stale_signature",
            "future_signature",
        )
        return
    # It verified: only the genuine pair can do that.
    assert stamp == NOW
    assert f"v0={v0()}" in parts
    assert f"t={NOW}" in [p.strip() for p in parts]


# -- the envelope --------------------------------------------------------------------------


def envelope(**fields: Any) -> bytes:
    payload: dict[str, Any] = {"type": "post_call_transcription", "event_timestamp": NOW}
    payload["data"] = {"conversation_id": "conv_1"}
    payload.update(fields)
    return json.dumps(payload).encode()


def payload_error(body: bytes) -> tuple[str, str]:
    with pytest.raises(WebhookPayloadError) as caught:
        parse_webhook(body)
    assert str(caught.value) == f"{caught.value.field}: {caught.value.reason}"
    return caught.value.field, caught.value.reason


def test_a_well_formed_event_is_parsed_whole() -> None:
    event = parse_webhook(envelope(extra={"kept": [1, 2]}))
    assert event == WebhookEvent(
        type="post_call_transcription",
        event_timestamp=NOW,
        conversation_id="conv_1",
        payload={
            "type": "post_call_transcription",
            "event_timestamp": NOW,
            "data": {"conversation_id": "conv_1"},
            "extra": {"kept": [1, 2]},
        },
    )
    assert parse_webhook(envelope(data={})).conversation_id is None


def test_a_type_of_exactly_100_characters_is_kept_and_101_refused() -> None:
    assert parse_webhook(envelope(type="t" * 100)).type == "t" * 100
    refusal = ("type", "must be a non-empty string of at most 100 characters")
    assert payload_error(envelope(type="t" * 101)) == refusal
    assert payload_error(envelope(type="   ")) == refusal
    assert payload_error(envelope(type=7)) == refusal


@pytest.mark.parametrize("stamp", [0, MAX_EVENT_TIMESTAMP])
def test_event_timestamps_at_the_plausible_ends_are_kept(stamp: int) -> None:
    assert MAX_EVENT_TIMESTAMP == 10**11
    assert parse_webhook(envelope(event_timestamp=stamp)).event_timestamp == stamp


@pytest.mark.parametrize(
    ("stamp", "reason"),
    [
        (-1, "is not a plausible UNIX time in seconds"),
        (10**11 + 1, "is not a plausible UNIX time in seconds"),
        (True, "must be an integer (UNIX seconds)"),
        (1.5, "must be an integer (UNIX seconds)"),
        ("1795000000", "must be an integer (UNIX seconds)"),
    ],
)
def test_implausible_event_timestamps_are_refused(stamp: object, reason: str) -> None:
    assert payload_error(envelope(event_timestamp=stamp)) == ("event_timestamp", reason)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b"{not json",
            (
                "body",
                "is not valid JSON (Expecting property name enclosed in double"
                " quotes at line 1 column 2)",
            ),
        ),
        (b"[" * 100_000 + b"]" * 100_000, ("body", "is nested too deeply to read")),
        (
            b'{"type": "x", "event_timestamp": ' + b"9" * 5000 + b"}",
            ("body", "has a number with more than 4300 digits"),
        ),
        (b'{"event_timestamp": NaN}', ("body", "NaN is not valid JSON")),
        (b'{"event_timestamp": -Infinity}', ("body", "-Infinity is not valid JSON")),
        (b"[]", ("body", "must be a JSON object")),
        (envelope(data=[]), ("data", "must be a JSON object")),
        (envelope(data={"conversation_id": 7}), ("data.conversation_id", "must be a string")),
    ],
)
def test_bodies_that_are_not_events_name_the_field(body: bytes, expected: tuple[str, str]) -> None:
    assert payload_error(body) == expected


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (envelope(note="\x00"), "note", "contains a NUL character (\\u0000)"),
        (envelope(data={"a": [{"b": "x\x00"}]}), "data.a[0].b", "contains a NUL character (\\u0000)"),
        (envelope(data={"k\x00": 1}), "data", "contains a NUL character (\\u0000)"),
        (envelope(type="call\x00ended"), "type", "contains a NUL character (\\u0000)"),
        (b'{"type": "x", "event_timestamp": 1, "data": {"a": "\\ud800"}}', "data.a",
         "contains an unpaired UTF-16 surrogate"),
        (b'{"type": "x", "event_timestamp": 1, "data": {"b": [["\\udfff x"]]}}', "data.b[0][0]",
         "contains an unpaired UTF-16 surrogate"),
        (b'{"type": "x", "event_timestamp": 1, "data": {"\\ud800": 1}}', "data",
         "contains an unpaired UTF-16 surrogate"),
        (b'{"type": "x", "event_timestamp": 1, "data": {"metadata": {"start": 1e400}}}',
         "data.metadata.start", "is a number too large to store"),
    ],
)  # fmt: skip
def test_text_postgres_cannot_store_is_refused_naming_where(
    body: bytes, field: str, reason: str
) -> None:
    assert payload_error(body) == (field, reason)


def test_a_paired_surrogate_is_an_ordinary_character() -> None:
    body = b'{"type": "x", "event_timestamp": 1, "data": {"smile": "\\ud83d\\ude00"}}'
    assert parse_webhook(body).payload["data"] == {"smile": "\U0001f600"}


# -- the audio strip (the Python layer; tests/integration/test_webhook_sql.py checks the SQL layer) ------


def test_post_call_audio_is_stored_without_its_audio_and_nothing_else_is_touched() -> None:
    event = parse_webhook(
        envelope(
            type="post_call_audio",
            data={"conversation_id": "c", "full_audio": "QUJD", "status": "done"},
        )
    )
    stored = without_audio(event)
    assert stored == {
        "type": "post_call_audio",
        "event_timestamp": NOW,
        "data": {"conversation_id": "c", "status": "done"},
    }
    assert event.payload["data"]["full_audio"] == "QUJD"  # the parsed event is not changed


@pytest.mark.parametrize("kind", ["post_call_transcription", "call_initiation_failure"])
def test_only_post_call_audio_loses_full_audio(kind: str) -> None:
    # Types sorting after and before "post_call_audio" keep whatever they carry.
    other = parse_webhook(envelope(type=kind, data={"full_audio": "QUJD"}))
    assert without_audio(other) is other.payload
    audio_without_audio = parse_webhook(envelope(type="post_call_audio", data={}))
    assert without_audio(audio_without_audio) is audio_without_audio.payload
