"""The family's routes outside the dashboard: the links in alert messages and Twilio's webhooks.

    GET  /alerts/ack?token=...    a page that says what the link will do, with one button
    POST /alerts/ack              token=...: acknowledge the alert (stops the escalation)
    GET  /alerts/call?token=...   the same for "call her now"
    POST /alerts/call             token=...: `request_call_now` for the alert's relative
    POST /v1/webhooks/twilio/sms     a reply to one of our SMS ("OK" acknowledges)
    POST /v1/webhooks/twilio/status  a delivery report for one of our SMS

The links work without logging in: the token is the credential, signed, single use and
expiring, and every check is in SQL (`redeem_alert_link`). A GET never uses a token up: mail
scanners and link previews fetch every link in a message, so only the button (a POST) acts.
Twilio's webhooks are verified before anything is read: `X-Twilio-Signature` over the public
URL Twilio called (CALLPANION_PUBLIC_API_URL + the path, as configured in Twilio's console;
behind a proxy the local URL differs) and the form parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal
from urllib.parse import parse_qsl

import psycopg
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from python_worker.api.db import ApiDatabase, ApiError
from python_worker.api.settings import ApiSettings

ACK_PATH = "/alerts/ack"
CALL_PATH = "/alerts/call"
TWILIO_SMS_PATH = "/v1/webhooks/twilio/sms"
TWILIO_STATUS_PATH = "/v1/webhooks/twilio/status"
TWILIO_SIGNATURE = "X-Twilio-Signature"
#: What a link token looks like (`<a|c>.<id>.<exp>.<mac>`); anything else is refused unread.
TOKEN_PATTERN = r"^[ac]\.[A-Za-z0-9_-]{22}\.[0-9]{1,12}\.[A-Za-z0-9_-]{22}$"  # noqa: S105
TokenQuery = Annotated[
    str, Query(pattern=TOKEN_PATTERN, description="the token from the alert's link")
]
#: HTTP status by the reason `redeem_alert_link` gives (SQLSTATE 28000).
LINK_STATUS = {"expired": 410, "already used": 409, "no longer valid": 410}


class LinkResult(BaseModel):
    """What a link did (`redeem_alert_link`)."""

    action: Literal["ack", "call"]
    result: str = Field(description="acknowledged, already_acknowledged or call_requested")
    alert_id: str | None = None
    relative_name: str | None = None
    call_session_id: str | None = None


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """Twilio's webhook signature: base64(HMAC-SHA1(auth token, URL + every POST parameter's
    name and value, sorted by name, concatenated))."""
    data = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    return base64.b64encode(
        hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    ).decode()


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width'>"
        f"<meta name='referrer' content='no-referrer'><title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
        headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex"},
    )


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _link_refusal(error: psycopg.Error) -> ApiError | None:
    message = error.diag.message_primary or str(error)
    if error.sqlstate == "28000":
        reason = message.removeprefix("invalid link token: ")
        return ApiError(LINK_STATUS.get(reason, 403), f"token: {reason}", "token")
    if error.sqlstate == "P0001":  # request_call_now's refusals ("already under way", ...)
        return ApiError(409, f"call: {message}", "call")
    return None


def alert_router(
    settings: ApiSettings,
    db: ApiDatabase,
    errors: Callable[..., dict[int | str, dict[str, Any]]],
) -> APIRouter:
    """The routes above, on the app's database pool and settings; `errors(*statuses)`
    documents refusals in the app's error shape."""
    router = APIRouter()
    form_doc: dict[str, Any] = {
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["token"],
                        "properties": {"token": {"type": "string", "pattern": TOKEN_PATTERN}},
                    }
                }
            },
        }
    }

    async def form_token(request: Request) -> str:
        """The `token` of a form POST (the page's button), or 422 naming it."""
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
        token = form.get("token", "")
        if not token:
            raise ApiError(422, "token: required (the token from the alert's link)", "token")
        if not re.fullmatch(TOKEN_PATTERN, token):
            raise ApiError(422, "token: malformed", "token")
        return token

    def redeem(token: str, action: str) -> LinkResult:
        if token[0] != action[0]:
            raise ApiError(422, f"token: not a {action} link", "token")
        try:
            result = db.result("redeem_alert_link", {"token": token})
        except psycopg.Error as error:
            mapped = _link_refusal(error)
            if mapped is None:
                raise
            raise mapped from None
        return LinkResult.model_validate(
            {k: (str(v) if v is not None and k != "action" else v) for k, v in result.items()}
        )

    def confirm_page(path: str, token: str, title: str, button: str) -> HTMLResponse:
        return _page(
            title,
            f"<form method='post' action='{path}'>"
            f"<input type='hidden' name='token' value='{html.escape(token)}'>"
            f"<button type='submit'>{html.escape(button)}</button></form>",
        )

    def done_page(result: LinkResult, request: Request) -> Response:
        if _wants_json(request):
            return JSONResponse(result.model_dump())
        name = html.escape(result.relative_name or "your relative")
        if result.action == "call":
            return _page("Calling now", f"<p>We are calling {name} now.</p>")
        if result.result == "already_acknowledged":
            return _page("Already acknowledged", "<p>Someone is already on it.</p>")
        return _page("Thank you", f"<p>Acknowledged: nobody else will be told about {name}.</p>")

    @router.get(
        ACK_PATH,
        tags=["alerts"],
        response_class=Response,
        responses={200: {"content": {"text/html": {}}}, **errors(422)},
    )
    def ack_page(token: TokenQuery) -> Response:
        """The acknowledgement link: a page with one button (nothing happens on GET)."""
        return confirm_page(ACK_PATH, token, "Are you on it?", "I'm on it: acknowledge")

    @router.post(
        ACK_PATH,
        tags=["alerts"],
        response_model=LinkResult,
        openapi_extra=form_doc,
        responses=errors(403, 409, 410, 413, 422, 503),
    )
    async def ack(request: Request) -> Response:
        """Acknowledge the alert the token names: the escalation stops for everyone. Forged
        (403), expired (410) or already used (409) tokens are refused."""
        token = await form_token(request)
        return done_page(await run_in_threadpool(redeem, token, "ack"), request)

    @router.get(
        CALL_PATH,
        tags=["alerts"],
        response_class=Response,
        responses={200: {"content": {"text/html": {}}}, **errors(422)},
    )
    def call_page(token: TokenQuery) -> Response:
        """The "call her now" link: a page with one button (nothing happens on GET)."""
        return confirm_page(CALL_PATH, token, "Call now?", "Call now")

    @router.post(
        CALL_PATH,
        tags=["alerts"],
        response_model=LinkResult,
        openapi_extra=form_doc,
        responses=errors(403, 409, 410, 413, 422, 503),
    )
    async def call(request: Request) -> Response:
        """Ring the alert's relative now (`request_call_now`); 409 when a call is under way
        (the token is then not used up)."""
        token = await form_token(request)
        return done_page(await run_in_threadpool(redeem, token, "call"), request)

    async def verified_form(request: Request) -> dict[str, str]:
        token = settings.twilio_auth_token
        if not token:
            raise ApiError(503, "webhook: TWILIO_AUTH_TOKEN is not configured", "webhook")
        body = (await request.body()).decode("utf-8", "replace")
        params = dict(parse_qsl(body, keep_blank_values=True))
        url = f"{settings.public_api_url}{request.url.path}"
        if request.url.query:
            url += f"?{request.url.query}"
        expected = twilio_signature(token, url, params)
        given = request.headers.get(TWILIO_SIGNATURE, "")
        if not hmac.compare_digest(expected.encode(), given.encode()):
            raise ApiError(401, f"{TWILIO_SIGNATURE}: does not match", TWILIO_SIGNATURE)
        return params

    webhook_doc: dict[str, Any] = {
        "parameters": [
            {
                "name": TWILIO_SIGNATURE,
                "in": "header",
                "required": True,
                "schema": {"type": "string"},
                "description": "base64 HMAC-SHA1 of the public URL and the sorted form fields",
            }
        ],
        "requestBody": {
            "required": True,
            "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
        },
    }

    @router.post(
        TWILIO_SMS_PATH,
        response_class=Response,
        tags=["webhooks"],
        openapi_extra=webhook_doc,
        responses={200: {"content": {"text/xml": {}}}, **errors(401, 413, 422, 503)},
    )
    async def twilio_sms(request: Request) -> Response:
        """A reply to our SMS: `OK` acknowledges the newest alert told to that number; STOP
        disables it. Answered with TwiML (`<Response>`, with a `<Message>` when there is a
        reply to send)."""
        form = await verified_form(request)
        for field in ("MessageSid", "From"):
            if not form.get(field):
                raise ApiError(422, f"{field}: required", field)
        result = await run_in_threadpool(
            db.result,
            "record_sms_reply",
            {"from": form["From"], "body": form.get("Body", ""), "message_sid": form["MessageSid"]},
        )
        reply = result.get("reply")
        twiml = "<Response/>"
        if reply:
            twiml = f"<Response><Message>{html.escape(str(reply))}</Message></Response>"
        return Response('<?xml version="1.0" encoding="UTF-8"?>' + twiml, media_type="text/xml")

    @router.post(
        TWILIO_STATUS_PATH,
        tags=["webhooks"],
        openapi_extra=webhook_doc,
        responses=errors(401, 413, 422, 503),
    )
    async def twilio_status(request: Request) -> dict[str, Any]:
        """A delivery report for one of our SMS (`MessageStatus`, `ErrorCode`)."""
        form = await verified_form(request)
        for field in ("MessageSid", "MessageStatus"):
            if not form.get(field):
                raise ApiError(422, f"{field}: required", field)
        result: dict[str, Any] = await run_in_threadpool(
            db.result,
            "record_sms_status",
            {
                "message_sid": form["MessageSid"],
                "status": form["MessageStatus"],
                "error_code": form.get("ErrorCode") or None,
            },
        )
        return {"result": result.get("result"), "outbox_id": str(result.get("outbox_id") or "")}

    return router
