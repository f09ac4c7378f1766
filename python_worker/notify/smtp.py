"""Email over SMTP submission: STARTTLS (or implicit TLS), AUTH with configured credentials.

At most `MAX_CONNECTIONS` sessions (aiosmtplib), each kept open and reused for the next
message (RSET between messages, as RFC 5321 allows): a TLS handshake and an AUTH per message
cost more than the message, and a burst of alerts is a thousand of them. A session that
fails in any way is closed and the next message opens a fresh one; a server that drops idle
sessions (the usual 5 minutes) costs one reconnect. Every mail has its own `Message-ID`
(kept as the outbox row's message id), a plain-text part and an HTML part.
"""

from __future__ import annotations

import asyncio
import email.utils
import ssl
from email.message import EmailMessage

import aiosmtplib

from python_worker.notify.outcomes import Delivery, Outcome, classify_smtp
from python_worker.notify.settings import SmtpSettings

#: Concurrent SMTP sessions per worker.
MAX_CONNECTIONS = 20


def build_mail(
    sender: str, to: str, subject: str, text: str, html: str | None, message_id: str
) -> EmailMessage:
    """The mail as sent: headers, a text part, an HTML alternative."""
    mail = EmailMessage()
    mail["From"] = sender
    mail["To"] = to
    mail["Subject"] = subject
    mail["Date"] = email.utils.formatdate(usegmt=True)
    mail["Message-ID"] = message_id
    mail["Auto-Submitted"] = "auto-generated"  # RFC 3834: no out-of-office replies to it
    mail.set_content(text)
    if html:
        mail.add_alternative(html, subtype="html")
    return mail


class EmailSender:
    """Submits alert mail to one SMTP server over a few reused sessions."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._tls = ssl.create_default_context(cafile=settings.ca_file)
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self._idle: list[aiosmtplib.SMTP] = []
        self.domain = email.utils.parseaddr(settings.sender)[1].partition("@")[2] or "callpanion"

    async def _session(self) -> aiosmtplib.SMTP:
        """An idle, authenticated session, or a new one."""
        while self._idle:
            client = self._idle.pop()
            if client.is_connected:
                return client
        s = self.settings
        client = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            use_tls=s.tls == "implicit",
            start_tls=s.tls == "starttls",
            tls_context=self._tls,
            timeout=20,
        )
        await client.connect()
        if s.username and s.password:
            await client.login(s.username, s.password)
        return client

    @staticmethod
    def _discard(client: aiosmtplib.SMTP | None) -> None:
        if client is not None:
            client.close()

    def message_id(self, unique: str) -> str:
        """`<unique@our domain>`: one per outbox row, so a resend is recognisable."""
        return f"<{unique}@{self.domain}>"

    async def send(
        self, to: str, subject: str, text: str, html: str | None, *, unique: str
    ) -> Delivery:
        """Submit one mail; its classified answer."""
        message_id = self.message_id(unique)
        mail = build_mail(self.settings.sender, to, subject, text, html, message_id)
        async with self._slots:
            client: aiosmtplib.SMTP | None = None
            try:
                client = await self._session()
                await client.send_message(mail)
            except aiosmtplib.SMTPRecipientsRefused as refused:
                first = refused.recipients[0]
                await self._keep(client)  # the session is fine: only that address was refused
                return self._refused(first.code, first.message)
            except aiosmtplib.SMTPResponseException as error:
                self._discard(client)
                return self._refused(error.code, error.message)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
                self._discard(client)
                return Delivery("email", Outcome.RETRY, 0, type(error).__name__, detail=str(error))
            self._idle.append(client)
        return Delivery("email", Outcome.DELIVERED, 250, None, message_id=message_id)

    async def _keep(self, client: aiosmtplib.SMTP | None) -> None:
        """Back to the idle sessions after a refused recipient (reset first), or closed."""
        if client is None:
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self._discard(client)
            return
        self._idle.append(client)

    def _refused(self, code: int, message: str) -> Delivery:
        return Delivery("email", classify_smtp(code), code, str(code), detail=message[:300])

    async def aclose(self) -> None:
        """Close the idle sessions politely (QUIT)."""
        idle, self._idle = self._idle, []
        for client in idle:
            try:
                await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
