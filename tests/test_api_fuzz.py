"""Fuzzing: the served API from its own OpenAPI document (schemathesis), and the webhook's
signature verifier and parser (hypothesis). No 5xx, no partial writes."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from python_worker.api.app import openapi_document
from python_worker.api.elevenlabs import (
    SIGNATURE_FUTURE_SKEW_SECS,
    SIGNATURE_TOLERANCE_SECS,
    SignatureError,
    WebhookPayloadError,
    parse_webhook,
    signature_header,
    verify_signature,
)
from python_worker.api.settings import api_settings
from tests.api_support import Paired, Row, ServedApi, fetch, new_family, pair
from tests.conftest import PROJECT_DIR
from tests.test_stack import run_cli

SqlConn = psycopg.Connection[Row]
FUZZ_EXAMPLES = 40
CHECKS = [response_schema_conformance, status_code_conformance, content_type_conformance]


def test_the_checked_in_openapi_document_is_current() -> None:
    checked_in = (PROJECT_DIR / "openapi.json").read_text()
    assert checked_in == openapi_document(api_settings({})), (
        "openapi.json is stale: run `callpanion api --openapi > openapi.json`"
    )
    printed = run_cli("api", "--openapi")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == checked_in


def test_the_api_refuses_bad_configuration_clearly() -> None:
    printed = run_cli("api", "--openapi", env={"CALLPANION_PAIRING_RATE_LIMIT": "0"})
    assert printed.returncode == 1
    assert (
        printed.stderr.strip()
        == "error: CALLPANION_PAIRING_RATE_LIMIT must be a positive integer, got 0"
    )


@pytest.fixture(scope="module")
def fuzz_device(api: ServedApi, api_database: str) -> Paired:
    with psycopg.connect(api_database, autocommit=True, row_factory=dict_row) as conn:
        return pair(api, conn, new_family(conn, "Fuzz"))


def counts(api_database: str) -> dict[str, int]:
    """Rows of the tables only signed webhooks and the device's own sessions may write."""
    with psycopg.connect(api_database, autocommit=True, row_factory=dict_row) as conn:
        return {t: fetch(conn, f"select count(*) as n from {t}")["n"]  # noqa: S608 - fixed names
                for t in ("webhook_events", "call_logs", "alerts", "call_sessions")}  # fmt: skip


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("as_device", [False, True], ids=["stranger", "paired-device"])
def test_fuzz_every_operation_of_the_openapi_document(
    api: ServedApi, api_database: str, fuzz_device: Paired, mode: GenerationMode, as_device: bool
) -> None:
    """Cases generated from the served document (valid ones, and ones that break it) get
    documented answers, never a 5xx. As a paired device, requests pass authentication and
    reach the SQL functions (with random session ids, so they end in 404s and 422s)."""
    schema = schemathesis.openapi.from_url(api.url + "/openapi.json")
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the served OpenAPI document has invalid operations"
    # 7 of the phone app and ElevenLabs, 6 of the family's alerts (links, Twilio's webhooks).
    assert len(operations) == 13
    headers = fuzz_device.headers if as_device else None
    statuses: set[int] = set()
    before = counts(api_database)
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.path == "/healthz":
            continue  # nothing to break: no parameters, no body

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call(base_url=api.url, headers=headers)
            assert response.status_code < 500, (case.path, response.status_code, response.text)
            statuses.add(response.status_code)
            case.validate_response(response, checks=CHECKS)

        run()
    assert statuses <= {200, 201, 400, 401, 403, 404, 409, 410, 413, 422, 423, 429}
    assert (401 in statuses) is True
    # Unsigned webhooks and other people's session ids wrote nothing; the device is intact.
    assert counts(api_database) == before
    with psycopg.connect(api_database, autocommit=True, row_factory=dict_row) as conn:
        device = fetch(conn, "select status from device_pairs where id = %s", [fuzz_device.id])
    assert device["status"] == "active"


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
        assert refused.value.field == "body"
        return
    event = parse_webhook(body)
    assert (event.type, event.event_timestamp, event.payload) == (kind, stamp, payload)
