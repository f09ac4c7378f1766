"""The alert senders' settings: VAPID (Web Push), SMTP submission and Twilio.

A method whose key variable is unset is off (its reader returns None); a message for it is
then a configuration fault the household sees, never a silent loss.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from python_worker.config import EnvSettings, read_settings

DEFAULT_TWILIO_BASE_URL = "https://api.twilio.com"
#: Submission with STARTTLS (RFC 6409); 465 is implicit TLS (`SMTP_TLS=implicit`).
DEFAULT_SMTP_PORT = 587
#: How long a push service keeps an alert for an offline browser: a day, as the alert's
#: own deadline (the outbox expires older rows anyway).
DEFAULT_WEBPUSH_TTL_SECS = 86400


def _existing_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f": no such file: {value}")
    return value


class WebPushSettings(EnvSettings):
    """Who signs the pushes (VAPID, RFC 8292)."""

    private_key_file: Annotated[Path, Field(alias="VAPID_PRIVATE_KEY_FILE")]
    subject: Annotated[str, Field(alias="VAPID_SUBJECT")] = ""
    ttl_s: Annotated[int, Field(alias="WEBPUSH_TTL_SECS", ge=0, le=2_419_200)] = (
        DEFAULT_WEBPUSH_TTL_SECS
    )
    ca_file: Annotated[str | None, Field(alias="WEBPUSH_CA_FILE")] = None

    _file = field_validator("private_key_file")(_existing_file)

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        if not value.startswith(("mailto:", "https:")):
            raise ValueError(" must be a mailto: or https: URL (RFC 8292 `sub`)")
        return value


class SmtpSettings(EnvSettings):
    """Where and as whom alert emails are submitted."""

    host: Annotated[str, Field(alias="SMTP_HOST")]
    port: Annotated[int, Field(alias="SMTP_PORT", ge=1, le=65535)] = DEFAULT_SMTP_PORT
    username: Annotated[str | None, Field(alias="SMTP_USERNAME")] = None
    password: Annotated[str | None, Field(alias="SMTP_PASSWORD")] = None
    sender: Annotated[str, Field(alias="SMTP_FROM")] = ""
    tls: Annotated[Literal["starttls", "implicit"], Field(alias="SMTP_TLS")] = "starttls"
    ca_file: Annotated[str | None, Field(alias="SMTP_CA_FILE")] = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if not self.sender:
            raise ValueError("SMTP_HOST is set, so SMTP_FROM must be set too")
        if bool(self.username) != bool(self.password):
            raise ValueError("SMTP_USERNAME and SMTP_PASSWORD go together")
        return self


class TwilioSettings(EnvSettings):
    """The Twilio account SMS go out through (and whose webhooks the API verifies)."""

    account_sid: Annotated[str, Field(alias="TWILIO_ACCOUNT_SID", pattern=r"^AC[0-9a-f]{32}$")]
    auth_token: Annotated[str, Field(alias="TWILIO_AUTH_TOKEN")] = ""
    sender: Annotated[str | None, Field(alias="TWILIO_FROM")] = None
    messaging_service_sid: Annotated[str | None, Field(alias="TWILIO_MESSAGING_SERVICE_SID")] = None
    base_url: Annotated[str, Field(alias="TWILIO_BASE_URL")] = DEFAULT_TWILIO_BASE_URL
    ca_file: Annotated[str | None, Field(alias="TWILIO_CA_FILE")] = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if not self.auth_token:
            raise ValueError("TWILIO_ACCOUNT_SID is set, so TWILIO_AUTH_TOKEN must be set too")
        if not (self.sender or self.messaging_service_sid):
            raise ValueError(
                "TWILIO_ACCOUNT_SID is set, so TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID must"
                " be set too"
            )
        return self


def _source(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def webpush_settings(env: Mapping[str, str] | None = None) -> WebPushSettings | None:
    """Web Push settings, or None when VAPID_PRIVATE_KEY_FILE is unset (Web Push off)."""
    if not _source(env).get("VAPID_PRIVATE_KEY_FILE"):
        return None
    return read_settings(WebPushSettings, env)


def smtp_settings(env: Mapping[str, str] | None = None) -> SmtpSettings | None:
    """SMTP settings, or None when SMTP_HOST is unset (email off)."""
    if not _source(env).get("SMTP_HOST"):
        return None
    return read_settings(SmtpSettings, env)


def twilio_settings(env: Mapping[str, str] | None = None) -> TwilioSettings | None:
    """Twilio settings, or None when TWILIO_ACCOUNT_SID is unset (SMS off)."""
    if not _source(env).get("TWILIO_ACCOUNT_SID"):
        return None
    return read_settings(TwilioSettings, env)
