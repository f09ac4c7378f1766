"""Email over SMTP submission: STARTTLS (or implicit TLS), AUTH with configured credentials.

One connection per message (aiosmtplib), at most `MAX_CONNECTIONS` at once: submission
servers limit concurrent sessions, and alert mail is a few messages per alert. Every mail
has its own `Message-ID` (kept as the outbox row's message id), a plain-text part and an
HTML part.
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
    """Submits alert mail to one SMTP server."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._tls = ssl.create_default_context(cafile=settings.ca_file)
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)
        self.domain = email.utils.parseaddr(settings.sender)[1].partition("@")[2] or "callpanion"

    def message_id(self, unique: str) -> str:
        """`<unique@our domain>`: one per outbox row, so a resend is recognisable."""
        return f"<{unique}@{self.domain}>"

    async def send(
        self, to: str, subject: str, text: str, html: str | None, *, unique: str
    ) -> Delivery:
        """Submit one mail; its classified answer."""
        message_id = self.message_id(unique)
        mail = build_mail(self.settings.sender, to, subject, text, html, message_id)
        s = self.settings
        try:
            async with self._slots:
                await aiosmtplib.send(
                    mail,
                    hostname=s.host,
                    port=s.port,
                    username=s.username,
                    password=s.password,
                    use_tls=s.tls == "implicit",
                    start_tls=s.tls == "starttls",
                    tls_context=self._tls,
                    timeout=20,
                )
        except aiosmtplib.SMTPRecipientsRefused as refused:
            first = refused.recipients[0]
            return self._refused(first.code, first.message)
        except aiosmtplib.SMTPResponseException as error:
            return self._refused(error.code, error.message)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
            return Delivery("email", Outcome.RETRY, 0, type(error).__name__, detail=str(error))
        return Delivery("email", Outcome.DELIVERED, 250, None, message_id=message_id)

    def _refused(self, code: int, message: str) -> Delivery:
        return Delivery("email", classify_smtp(code), code, str(code), detail=message[:300])

    async def aclose(self) -> None:
        """Nothing held between messages."""
