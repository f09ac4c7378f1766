"""A real SMTP submission server (aiosmtpd) for the alert emails of the tests and the demo.

It is a mail server, not a stand-in for one: RFC 5321 over TCP with STARTTLS required before
AUTH (PLAIN / LOGIN) and AUTH required before MAIL, exactly what a submission port (587)
asks of our sender. Every message accepted is kept as sent (the raw bytes) and, parsed, in
an inbox per recipient, read over HTTPS like the push emulators' inboxes:

    GET /_emulator/inbox?token=<address>&after=N&wait=S   the mails to one address

A recipient can be made to fail permanently (550) with POST /_emulator/tokens
{"token": address, "state": "rejected"}, or for a while (451) with a fault for it.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import ssl
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from python_worker.emulators.admin import AdminRoutes
from python_worker.emulators.faults import Faults
from python_worker.emulators.inbox import Inbox
from python_worker.emulators.server import Request

LINK = re.compile(r"https?://[^\s\"'<>]+")


def parse_mail(raw: bytes) -> dict[str, object]:
    """The parts of one mail a test reads: headers, text and HTML bodies, the links."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    text = message.get_body(preferencelist=("plain",))
    html = message.get_body(preferencelist=("html",))
    text_body = text.get_content() if text is not None else ""
    html_body = html.get_content() if html is not None else ""
    return {
        "headers": {name: str(value) for name, value in message.items()},
        "subject": str(message.get("Subject", "")),
        "from": str(message.get("From", "")),
        "to": str(message.get("To", "")),
        "message_id": str(message.get("Message-ID", "")),
        "text": text_body,
        "html": html_body,
        "links": sorted(set(LINK.findall(text_body)) | set(LINK.findall(html_body))),
    }


@dataclass
class SmtpEmulator:
    """The mailbox side: who may log in, what was received, which recipients fail."""

    username: str
    password: str
    faults: Faults = field(default_factory=Faults)
    inbox: Inbox = field(default_factory=Inbox)
    rejected: set[str] = field(default_factory=set)
    accepted: int = 0
    refused: int = 0

    def __post_init__(self) -> None:
        self.admin = AdminRoutes(
            self.faults,
            self._deliveries,
            self._set_token,
            self._reset,
            token_key=str.lower,
            inbox=self.inbox,
        )

    def handle(self, request: Request) -> object:
        """The HTTPS admin routes (the inbox)."""
        return self.admin.handle(request)

    # -- aiosmtpd handler hooks -----------------------------------------------------------
    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        key = address.lower()
        if key in self.rejected:
            self.refused += 1
            return "550 5.1.1 mailbox unavailable"
        fault = self.faults.take(key)
        if fault is not None and fault.status is not None:
            self.refused += 1
            return f"{fault.status} {fault.reason or '4.3.0 try again later'}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        parsed = parse_mail(raw)
        for recipient in envelope.rcpt_tos:
            self.inbox.put(
                recipient.lower(),
                {
                    **parsed,
                    "envelope_from": envelope.mail_from,
                    "raw": raw.decode("utf-8", "replace"),
                    "received_at": time.time(),
                    "tls": session.ssl is not None,
                    "authenticated": session.authenticated,
                },
            )
        self.accepted += 1
        return "250 Message accepted for delivery"

    def authenticator(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        ok = data.login.decode() == self.username and data.password.decode() == self.password
        # handled=False on failure: aiosmtpd then answers 535 itself (True would mean "already
        # answered" and leave the client waiting).
        return AuthResult(success=ok, handled=False)

    # -- admin ----------------------------------------------------------------------------
    def _deliveries(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "refused": self.refused,
            "deliveries": self.inbox.received(),
        }

    def _set_token(self, body: dict[str, object]) -> dict[str, object]:
        token, state = body.get("token"), body.get("state")
        if not isinstance(token, str) or "@" not in token:
            raise ValueError("token: an email address")
        if state not in ("rejected", "active"):
            raise ValueError("state must be 'rejected' or 'active'")
        if state == "rejected":
            self.rejected.add(token.lower())
        else:
            self.rejected.discard(token.lower())
        return {"token": token, "state": state}

    def _reset(self) -> None:
        self.inbox.clear()
        self.faults.clear()
        self.rejected.clear()
        self.accepted = self.refused = 0


class SmtpServer:
    """The SMTP listener on this event loop: STARTTLS with `tls`, AUTH required."""

    def __init__(
        self, mailbox: SmtpEmulator, tls: ssl.SSLContext, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.mailbox = mailbox
        self.tls = tls
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._sessions: list[SMTP] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()

        def protocol() -> SMTP:
            # Clients keep sessions open between mails: remember them to close them on stop.
            self._sessions = [p for p in self._sessions if p.transport is not None]
            session = SMTP(
                self.mailbox,
                hostname="localhost",
                tls_context=self.tls,
                require_starttls=True,
                auth_required=True,
                auth_require_tls=True,
                authenticator=self.mailbox.authenticator,
                loop=loop,
            )
            self._sessions.append(session)
            return session

        self._server = await loop.create_server(protocol, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for session in self._sessions:
                if session.transport is not None:
                    session.transport.close()
                if session._handler_coroutine is not None:
                    session._handler_coroutine.cancel()
            await self._server.wait_closed()
            self._server = None


def smtp_tls_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The server side of STARTTLS (no ALPN: SMTP does not negotiate one)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    return context
