"""A Twilio Programmable Messaging emulator: the Messages API, its errors and its webhooks.

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json     send one SMS (form body)
    GET  /2010-04-01/Accounts/{AccountSid}/Messages/{Sid}.json   read it back

As Twilio's API: HTTP Basic auth with the Account SID and Auth Token (401, code 20003,
otherwise), a form-encoded body (`To`, `From` or `MessagingServiceSid`, `Body`, optional
`StatusCallback`), 201 with the Message resource, and errors as `{code, message, more_info,
status}`: 21211 (`To` is not a valid phone number), 21610 (the recipient replied STOP),
21602 (no body), 21606 (`From` is not one of the account's numbers), 429/20429 when a fault
says so. The official `twilio` client is the oracle for this shape (tests).

After accepting a message it posts the status callbacks Twilio posts (`sent`, then
`delivered`; or `undelivered` with an `ErrorCode` for a number set unreachable) to the
message's `StatusCallback`, form-encoded and signed with `X-Twilio-Signature` (HMAC-SHA1 of
the URL and the sorted parameters with the Auth Token, base64). A reply from a phone is
simulated by POST /_emulator/inbound {"from", "to", "body"}: it is posted, signed, to the
inbound webhook URL (the number's "A message comes in" setting).

Admin: GET /_emulator/inbox?token=<E.164 number> (the messages sent to it, long poll),
POST /_emulator/tokens {"token": number, "state": "unsubscribed"|"unreachable"|"active"},
faults by number (`token`), deliveries, reset.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from python_worker.emulators.admin import AdminRoutes, json_response
from python_worker.emulators.faults import Faults
from python_worker.emulators.inbox import Inbox
from python_worker.emulators.server import Request, Response

API_VERSION = "2010-04-01"
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
MESSAGES = re.compile(
    rf"^/{API_VERSION}/Accounts/(AC[0-9a-f]{{32}})/Messages(?:/(SM[0-9a-f]{{32}}))?\.json$"
)
SIGNATURE_HEADER = "X-Twilio-Signature"


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """X-Twilio-Signature: base64(HMAC-SHA1(token, url + each name and value, by name))."""
    data = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def error_body(status: int, code: int, message: str) -> Response:
    """Twilio's error shape."""
    return json_response(
        status,
        {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        },
    )


def new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


@dataclass
class TwilioEmulator:
    """One Twilio account with its numbers, the messages sent and the webhooks it posts."""

    account_sid: str = field(default_factory=lambda: new_sid("AC"))
    auth_token: str = field(default_factory=lambda: secrets.token_hex(16))
    numbers: set[str] = field(default_factory=lambda: {"+15005550006"})
    messaging_service_sid: str = field(default_factory=lambda: new_sid("MG"))
    #: Where a reply to one of our numbers is posted ("A message comes in").
    inbound_url: str | None = None
    #: Post status callbacks (off for benchmarks that measure only acceptance).
    callbacks: bool = True
    #: Between accepting a message and each status callback: Twilio hands the message to the
    #: carrier and reports back in about a second, not at once.
    callback_delay_s: float = 1.0
    faults: Faults = field(default_factory=Faults)
    inbox: Inbox = field(default_factory=Inbox)
    messages: dict[str, dict[str, object]] = field(default_factory=dict)
    number_states: dict[str, str] = field(default_factory=dict)
    callbacks_posted: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.admin = AdminRoutes(
            self.faults, self._deliveries, self._set_token, self._reset, inbox=self.inbox
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._client: httpx.AsyncClient | None = None

    # -- routes ---------------------------------------------------------------------------
    def handle(self, request: Request) -> object:
        path = urlsplit(request.path).path
        if path == "/_emulator/inbound" and request.method == "POST":
            return asyncio.ensure_future(self._inbound(request))
        if path.startswith("/_emulator/"):
            return self.admin.handle(request)
        match = MESSAGES.match(path)
        if match is None:
            return error_body(404, 20404, f"The requested resource {path} was not found")
        if not self._authorised(request, match.group(1)):
            return error_body(401, 20003, "Authenticate")
        if request.method == "GET" and match.group(2):
            message = self.messages.get(match.group(2))
            if message is None:
                return error_body(404, 20404, f"The requested resource {path} was not found")
            return json_response(200, message)
        if request.method != "POST" or match.group(2):
            return error_body(405, 20004, "Method not allowed")
        return self._send(dict(parse_qsl(request.body.decode(), keep_blank_values=True)))

    def _authorised(self, request: Request, sid: str) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic" or sid != self.account_sid:
            return False
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return False
        return hmac.compare_digest(user, self.account_sid) and hmac.compare_digest(
            password, self.auth_token
        )

    def _send(self, form: dict[str, str]) -> Response:
        to = form.get("To", "")
        sender = form.get("From")
        service = form.get("MessagingServiceSid")
        body = form.get("Body", "")
        if not to:
            return error_body(400, 21604, "A 'To' phone number is required.")
        if not E164.match(to):
            return error_body(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if service is None and sender is None:
            return error_body(400, 21603, "A 'From' phone number is required.")
        if service is not None and service != self.messaging_service_sid:
            return error_body(400, 21701, "The Messaging Service does not exist")
        if sender is not None and sender not in self.numbers:
            return error_body(
                400,
                21606,
                f"The From phone number {sender} is not a valid, SMS-capable inbound phone "
                "number or short code for your account.",
            )
        if not body.strip():
            return error_body(400, 21602, "Message body is required.")
        if len(body) > 1600:
            return error_body(
                400, 21617, "The concatenated message body exceeds the 1600 character limit."
            )
        fault = self.faults.take(to)
        if fault is not None and fault.status is not None:
            code = int(fault.reason) if fault.reason and fault.reason.isdigit() else 20429
            response = error_body(
                fault.status, code, "Too Many Requests" if code == 20429 else "fault"
            )
            if fault.retry_after is not None:
                response.headers.append(("retry-after", fault.retry_after))
            return response
        if self.number_states.get(to) == "unsubscribed":
            return error_body(400, 21610, "Attempt to send to unsubscribed recipient")
        sid = new_sid("SM")
        now = email.utils.formatdate(usegmt=True)
        message: dict[str, object] = {
            "account_sid": self.account_sid,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": sender,
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": str(max(1, -(-len(body) // 153))),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service else "queued",
            "subresource_uris": {
                "media": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}/Media.json"
            },
            "to": to,
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/Messages/{sid}.json",
        }
        self.messages[sid] = message
        self.inbox.put(to, {"sid": sid, "from": sender, "body": body, "received_at": time.time()})
        callback = form.get("StatusCallback")
        if callback and self.callbacks:
            self._spawn(self._status_callbacks(sid, callback))
        return json_response(201, message)

    # -- webhooks -------------------------------------------------------------------------
    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def post_signed(self, url: str, params: dict[str, str]) -> int:
        """POST a form to our webhook as Twilio does, signed; its HTTP status (0: no answer)."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=10.0)
        signature = twilio_signature(self.auth_token, url, params)
        headers = {SIGNATURE_HEADER: signature}
        try:
            response = await self._client.post(url, data=params, headers=headers)
        except httpx.HTTPError:
            status = 0
        else:
            status = response.status_code
        self.callbacks_posted.append(
            {"url": url, "params": params, "signature": signature, "status": status}
        )
        return status

    async def _status_callbacks(self, sid: str, url: str) -> None:
        message = self.messages[sid]
        to = str(message["to"])
        unreachable = self.number_states.get(to) == "unreachable"
        steps = (
            [("sent", None), ("undelivered", "30003")]
            if unreachable
            else [
                ("sent", None),
                ("delivered", None),
            ]
        )
        for status, error in steps:
            await asyncio.sleep(self.callback_delay_s)
            message["status"] = status
            params = {
                "AccountSid": self.account_sid,
                "ApiVersion": API_VERSION,
                "From": str(message["from"] or ""),
                "MessageSid": sid,
                "MessageStatus": status,
                "SmsSid": sid,
                "SmsStatus": status,
                "To": to,
            }
            if error is not None:
                params["ErrorCode"] = error
                message["error_code"] = int(error)
            await self.post_signed(url, params)

    async def _inbound(self, request: Request) -> Response:
        try:
            body = json.loads(request.body or b"{}")
            sender, to, text = body["from"], body["to"], body["body"]
        except (ValueError, KeyError, TypeError):
            return json_response(400, {"error": "body: {from, to, body} strings"})
        if not self.inbound_url:
            return json_response(409, {"error": "no inbound webhook URL is configured"})
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": API_VERSION,
            "Body": str(text),
            "From": str(sender),
            "MessageSid": new_sid("SM"),
            "NumMedia": "0",
            "SmsMessageSid": "",
            "SmsSid": "",
            "SmsStatus": "received",
            "To": str(to),
        }
        params["SmsMessageSid"] = params["SmsSid"] = params["MessageSid"]
        status = await self.post_signed(self.inbound_url, params)
        return json_response(200, {"posted_to": self.inbound_url, "status": status})

    # -- admin ----------------------------------------------------------------------------
    def _deliveries(self) -> dict[str, object]:
        return {
            "accepted": len(self.messages),
            "callbacks": self.callbacks_posted[-100:],
            "deliveries": self.inbox.received(),
        }

    def _set_token(self, body: dict[str, object]) -> dict[str, object]:
        token, state = body.get("token"), body.get("state")
        if not isinstance(token, str) or not token:
            raise ValueError("token: the E.164 number")
        if state not in ("unsubscribed", "unreachable", "active"):
            raise ValueError("state must be 'unsubscribed', 'unreachable' or 'active'")
        self.number_states[token] = str(state)
        return {"token": token, "state": state}

    def _reset(self) -> None:
        self.inbox.clear()
        self.faults.clear()
        self.messages.clear()
        self.number_states.clear()
        self.callbacks_posted.clear()

    async def aclose(self) -> None:
        """Stop posting webhooks."""
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()


def form_body(params: Mapping[str, str]) -> bytes:
    """A form body as Twilio posts it."""
    return urlencode(dict(params)).encode()
