"""FCM answers the emulator does not give: Google front-end errors without an FCM error code,
error bodies of odd shapes, and the order of error details.

The emulator always answers like FCM's API itself (FcmError details); Google's front end can
answer a bare 429, 5xx, 403 or 404 before the request reaches FCM, with an HTML or empty
body. These go straight to `classify`, the function that reads every FCM answer, with the
Response the HTTP/2 client would hand it (issue 17, items 1 and 2).
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from python_worker.push.fcm import BAD_REQUEST_TYPE, FCM_ERROR_TYPE, _RefreshAndRetry, classify
from python_worker.push.http2 import Response
from python_worker.push.outcomes import Outcome, SendResult
from python_worker.push.retry import RetryPolicy

SEED = 17


def answer(status: int, body: bytes | object = b"", retry_after: str | None = None) -> Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {b"retry-after": retry_after.encode()} if retry_after is not None else {}
    return Response(status, headers, raw, headers_only=not raw)


def classified(response: Response, attempt: int = 1) -> SendResult:
    return classify(response, attempt, RetryPolicy(rng=random.Random(SEED)))


def backoff(attempt: int) -> float:
    """What a policy seeded like `classified`'s waits for this attempt."""
    return RetryPolicy(rng=random.Random(SEED)).backoff(attempt)


def fcm_error(code: str, status: int, *details: dict[str, Any]) -> dict[str, Any]:
    return {
        "error": {
            "code": status,
            "message": f"{code} happened",
            "status": "INVALID_ARGUMENT" if code == "INVALID_ARGUMENT" else "UNAVAILABLE",
            "details": [*details, {"@type": FCM_ERROR_TYPE, "errorCode": code}],
        }
    }


HTML = b"<html><title>Error 503 (Server Error)!!1</title></html>"


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504])
def test_a_bare_front_end_429_or_5xx_is_retried(status: int) -> None:
    result = classified(answer(status, HTML), attempt=2)
    assert result == SendResult(
        "fcm", Outcome.RETRY, status, str(status), retry_after_s=backoff(2), detail=HTML.decode()
    )


def test_a_bare_429_honours_retry_after() -> None:
    result = classified(answer(429, b"", retry_after="30"))
    assert (result.outcome, result.retry_after_s) == (Outcome.RETRY, 30.0)


@pytest.mark.parametrize("status", [403, 404])
def test_a_bare_403_or_404_is_a_configuration_fault(status: int) -> None:
    result = classified(answer(status, HTML))
    assert result == SendResult(
        "fcm", Outcome.CONFIG_FAULT, status, str(status), detail=HTML.decode()
    )


@pytest.mark.parametrize("status", [405, 413, 428, 430, 499])
def test_other_bare_4xx_are_our_bug_and_not_retried(status: int) -> None:
    result = classified(answer(status, b"nope"))
    assert result == SendResult("fcm", Outcome.OUR_BUG, status, str(status), detail="nope")


def test_a_bare_400_is_our_bug_and_names_the_status() -> None:
    assert classified(answer(400, b"Bad Request")) == SendResult(
        "fcm", Outcome.OUR_BUG, 400, "400", detail="Bad Request"
    )


def test_a_bare_401_asks_for_a_new_access_token() -> None:
    with pytest.raises(_RefreshAndRetry, match="expired"):
        classified(answer(401, {"error": {"code": 401, "message": "token expired"}}))


@pytest.mark.parametrize("body", [b"{}", b"[]", b'{"error": "text"}', b'{"error": []}', b"null"])
def test_a_json_body_without_an_error_object_is_classified_by_status(body: bytes) -> None:
    assert classified(answer(503, body)).outcome is Outcome.RETRY
    assert classified(answer(404, body)).outcome is Outcome.CONFIG_FAULT
    assert classified(answer(400, body)) == SendResult(
        "fcm", Outcome.OUR_BUG, 400, "400", detail=body.decode()
    )


def test_details_of_odd_shapes_are_ignored() -> None:
    body: dict[str, Any] = {
        "error": {"code": 503, "message": "m", "status": "UNAVAILABLE", "details": "x"}
    }
    assert classified(answer(503, body)).reason == "UNAVAILABLE"
    body["error"]["details"] = ["x", 7, {"@type": FCM_ERROR_TYPE, "errorCode": "UNREGISTERED"}]
    assert classified(answer(404, body)).outcome is Outcome.TOKEN_DEAD


def test_the_body_is_the_detail_cut_at_200_bytes_when_there_is_no_message() -> None:
    body = b"x" * 199 + b"yz"
    assert classified(answer(503, body)).detail == "x" * 199 + "y"


def test_a_bad_request_detail_before_the_fcm_error_still_invalidates_the_token() -> None:
    violation = {
        "@type": BAD_REQUEST_TYPE,
        "fieldViolations": [{"field": "message.token", "description": "bad token"}],
    }
    result = classified(answer(400, fcm_error("INVALID_ARGUMENT", 400, violation)))
    assert result == SendResult(
        "fcm", Outcome.TOKEN_DEAD, 400, "INVALID_ARGUMENT", detail="INVALID_ARGUMENT happened"
    )


@pytest.mark.parametrize("field", ["message.android.ttl", "message.topic", "message"])
def test_a_bad_request_about_another_field_is_our_bug_whatever_the_order(field: str) -> None:
    # Fields sorting before and after "message.token": only that exact field is the token.
    violation = {"@type": BAD_REQUEST_TYPE, "fieldViolations": ["odd", {"field": field}]}
    result = classified(answer(400, fcm_error("INVALID_ARGUMENT", 400, violation)))
    assert (result.outcome, result.reason) == (Outcome.OUR_BUG, "INVALID_ARGUMENT")


def test_a_token_violation_without_fcm_detail_invalidates_the_token() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "bad token",
            "status": "INVALID_ARGUMENT",
            "details": [
                {"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": "message.token"}]}
            ],
        }
    }
    result = classified(answer(400, body))
    assert (result.outcome, result.reason) == (Outcome.TOKEN_DEAD, "INVALID_ARGUMENT")


def test_the_first_fcm_error_detail_decides() -> None:
    body = fcm_error("UNREGISTERED", 404)
    body["error"]["details"].append({"@type": FCM_ERROR_TYPE, "errorCode": "INTERNAL"})
    assert classified(answer(404, body)).outcome is Outcome.TOKEN_DEAD


@pytest.mark.parametrize(
    ("code", "status", "outcome"),
    [
        ("UNREGISTERED", 404, Outcome.TOKEN_DEAD),
        ("SENDER_ID_MISMATCH", 403, Outcome.TOKEN_DEAD),
        ("QUOTA_EXCEEDED", 429, Outcome.RETRY),
        ("UNAVAILABLE", 503, Outcome.RETRY),
        ("INTERNAL", 500, Outcome.RETRY),
        ("THIRD_PARTY_AUTH_ERROR", 401, Outcome.CONFIG_FAULT),
    ],
)
def test_every_fcm_error_code_maps_as_the_protocol_table_says(
    code: str, status: int, outcome: Outcome
) -> None:
    result = classified(answer(status, fcm_error(code, status)), attempt=3)
    delay = backoff(3) if outcome is Outcome.RETRY else None
    assert result == SendResult(
        "fcm", outcome, status, code, retry_after_s=delay, detail=f"{code} happened"
    )


def test_an_unknown_fcm_error_code_falls_back_to_the_status() -> None:
    result = classified(answer(503, fcm_error("SOMETHING_NEW", 503)))
    assert (result.outcome, result.reason) == (Outcome.RETRY, "SOMETHING_NEW")


@pytest.mark.parametrize(
    ("body", "message_id"),
    [
        (b'{"name": "projects/p/messages/1"}', "projects/p/messages/1"),
        (b"not json", None),
        (b"[]", None),
    ],
)
def test_success_keeps_the_message_name_when_there_is_one(
    body: bytes, message_id: str | None
) -> None:
    assert classified(answer(200, body)) == SendResult(
        "fcm", Outcome.DELIVERED, 200, message_id=message_id
    )


def test_only_the_fcm_error_detail_names_the_code() -> None:
    # FCM puts an ApnsError detail (sorting before FcmError) beside FcmError for iOS targets.
    apns_error = {
        "@type": "type.googleapis.com/google.firebase.fcm.v1.ApnsError",
        "statusCode": 410,
        "reason": "Unregistered",
    }
    result = classified(answer(404, fcm_error("UNREGISTERED", 404, apns_error)))
    assert (result.outcome, result.reason) == (Outcome.TOKEN_DEAD, "UNREGISTERED")


@pytest.mark.parametrize("kind", ["google.rpc.ErrorInfo", "google.firebase.fcm.v1.ApnsError"])
def test_only_bad_request_field_violations_count(kind: str) -> None:
    # Detail types sorting after and before BadRequest: a field list in them is not its.
    error_info = {
        "@type": f"type.googleapis.com/{kind}",
        "fieldViolations": [{"field": "message.token"}],
    }
    result = classified(answer(400, fcm_error("INVALID_ARGUMENT", 400, error_info)))
    assert (result.outcome, result.reason) == (Outcome.OUR_BUG, "INVALID_ARGUMENT")


def test_a_redirect_from_a_proxy_is_our_bug_whatever_its_body() -> None:
    body = {
        "error": {
            "details": [
                {"@type": BAD_REQUEST_TYPE, "fieldViolations": [{"field": "message.token"}]}
            ]
        }
    }
    assert classified(answer(302, body)) == SendResult(
        "fcm", Outcome.OUR_BUG, 302, "302", detail=json.dumps(body)
    )
