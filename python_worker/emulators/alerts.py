"""The family-alert services together: a Web Push service, Twilio's Messages API, an SMTP
server, with fresh credentials (a VAPID key for our sender, SMTP and Twilio secrets).

Each speaks its real protocol on loopback: the push service and Twilio over TLS (HTTP/2 or
HTTP/1.1 by ALPN, the emulators' shared server), SMTP with STARTTLS and AUTH; the SMTP
server's inbox is read over its own HTTPS admin port. `AlertEmulators.env()` gives the
settings that point the worker (and, for Twilio's webhooks, the API) at them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from python_worker.emulators.credentials import make_tls_files
from python_worker.emulators.server import HttpServer, server_ssl_context
from python_worker.emulators.smtp import SmtpEmulator, SmtpServer, smtp_tls_context
from python_worker.emulators.twilio import TwilioEmulator
from python_worker.emulators.webpush import WebPushEmulator

#: The demo household's Twilio number (one of Twilio's documented test numbers).
TWILIO_NUMBER = "+15005550006"
VAPID_SUBJECT = "mailto:alerts@callpanion.test"
MAIL_FROM = "CallPanion <alerts@callpanion.test>"


def make_vapid_key(path: Path) -> Path:
    """A P-256 VAPID private key as PEM (`openssl ecparam -name prime256v1 -genkey` does the
    same; see README, "Web Push")."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class AlertEndpoints:
    ca_file: Path
    webpush_base_url: str
    twilio_base_url: str
    smtp_host: str
    smtp_port: int
    smtp_admin_url: str
    vapid_key_file: Path


class AlertEmulators:
    """Web Push, Twilio and SMTP emulators on loopback ports."""

    def __init__(
        self,
        folder: Path,
        *,
        inbound_url: str | None = None,
        twilio_callbacks: bool = True,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.tls = make_tls_files(folder / "tls")
        context = server_ssl_context(str(self.tls.cert_file), str(self.tls.key_file))
        self.webpush = WebPushEmulator()
        self.twilio = TwilioEmulator(
            numbers={TWILIO_NUMBER}, inbound_url=inbound_url, callbacks=twilio_callbacks
        )
        self.smtp = SmtpEmulator(username="callpanion", password=secrets.token_urlsafe(16))
        self.webpush_server = HttpServer(self.webpush.handle, ssl_context=context)  # type: ignore[arg-type]
        self.twilio_server = HttpServer(self.twilio.handle, ssl_context=context)  # type: ignore[arg-type]
        self.smtp_admin = HttpServer(self.smtp.handle, ssl_context=context)  # type: ignore[arg-type]
        self.smtp_server = SmtpServer(
            self.smtp, smtp_tls_context(str(self.tls.cert_file), str(self.tls.key_file))
        )
        self._endpoints: AlertEndpoints | None = None

    async def start(self) -> AlertEndpoints:
        for server in (self.webpush_server, self.twilio_server, self.smtp_admin):
            await server.start()
        await self.smtp_server.start()
        self.webpush.origin = f"https://localhost:{self.webpush_server.port}"
        self._endpoints = AlertEndpoints(
            ca_file=self.tls.ca_file,
            webpush_base_url=self.webpush.origin,
            twilio_base_url=f"https://localhost:{self.twilio_server.port}",
            smtp_host="localhost",
            smtp_port=self.smtp_server.port,
            smtp_admin_url=f"https://localhost:{self.smtp_admin.port}",
            vapid_key_file=make_vapid_key(self.folder / "vapid.pem"),
        )
        return self._endpoints

    async def stop(self) -> None:
        await self.twilio.aclose()
        await self.smtp_server.stop()
        for server in (self.webpush_server, self.twilio_server, self.smtp_admin):
            await server.stop()

    @property
    def endpoints(self) -> AlertEndpoints:
        assert self._endpoints is not None, "start() first"
        return self._endpoints

    def env(self) -> dict[str, str]:
        """The alert senders' settings (the worker) and Twilio's token (the API's webhooks)."""
        e = self.endpoints
        return {
            "VAPID_PRIVATE_KEY_FILE": str(e.vapid_key_file),
            "VAPID_SUBJECT": VAPID_SUBJECT,
            "WEBPUSH_CA_FILE": str(e.ca_file),
            "SMTP_HOST": e.smtp_host,
            "SMTP_PORT": str(e.smtp_port),
            "SMTP_USERNAME": self.smtp.username,
            "SMTP_PASSWORD": self.smtp.password,
            "SMTP_FROM": MAIL_FROM,
            "SMTP_CA_FILE": str(e.ca_file),
            "TWILIO_ACCOUNT_SID": self.twilio.account_sid,
            "TWILIO_AUTH_TOKEN": self.twilio.auth_token,
            "TWILIO_FROM": TWILIO_NUMBER,
            "TWILIO_BASE_URL": e.twilio_base_url,
            "TWILIO_CA_FILE": str(e.ca_file),
            # Not settings of ours: where a test or the demo reads what was received.
            "CALLPANION_EMULATED_WEBPUSH_URL": e.webpush_base_url,
            "CALLPANION_EMULATED_SMTP_ADMIN_URL": e.smtp_admin_url,
        }
