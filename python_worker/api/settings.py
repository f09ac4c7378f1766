"""What `callpanion api` needs: where to listen, the database, ElevenLabs, limits."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from python_worker.config import (
    DEFAULT_ELEVENLABS_BASE_URL,
    KEEP_EMPTY,
    EnvSettings,
    read_settings,
)
from python_worker.stack.settings import default_database_url

#: Where `callpanion api` listens unless told otherwise (loopback: put a proxy in front).
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
#: The database role the API acts as: it holds exactly the grants of the SQL functions it calls.
DEFAULT_API_DB_ROLE = "service_role"
#: Data-collection or evaluation fields that flag a concern unless configured otherwise.
DEFAULT_CONCERN_FIELDS = ("wellbeing_concern", "safety_concern")
#: post_call_audio carries a base64 MP3 of the whole call: allow long calls, refuse the absurd.
DEFAULT_WEBHOOK_MAX_BYTES = 64 * 1024 * 1024
#: The API's public URL (as the worker's CALLPANION_PUBLIC_API_URL).
DEFAULT_PUBLIC_API_URL = "http://127.0.0.1:8000"
#: Pairing requests one client address may make per window (in-process, per API instance).
DEFAULT_PAIRING_RATE_LIMIT = 10
DEFAULT_PAIRING_RATE_WINDOW_SECS = 600
#: Conversation tokens minted per call session at most (a repeated `accepted` mints another).
DEFAULT_CONVERSATION_TOKENS_PER_SESSION = 5


class ApiSettings(EnvSettings):
    """What `callpanion api` needs: where to listen, the database, ElevenLabs, limits."""

    host: Annotated[str, Field(alias="CALLPANION_API_HOST")] = DEFAULT_API_HOST
    port: Annotated[int, Field(alias="CALLPANION_API_PORT", ge=1, le=65535)] = DEFAULT_API_PORT
    #: Default: DATABASE_URL, else the local stack's database.
    database_url: Annotated[str, Field(alias="CALLPANION_API_DATABASE_URL")] = ""
    #: Empty: act as the connecting user (no SET ROLE).
    db_role: Annotated[
        str | None, Field(alias="CALLPANION_API_DB_ROLE", json_schema_extra=KEEP_EMPTY)
    ] = DEFAULT_API_DB_ROLE
    elevenlabs_api_key: Annotated[str | None, Field(alias="ELEVENLABS_API_KEY")] = None
    elevenlabs_agent_id: Annotated[str | None, Field(alias="ELEVENLABS_AGENT_ID")] = None
    elevenlabs_base_url: Annotated[str, Field(alias="ELEVENLABS_BASE_URL")] = (
        DEFAULT_ELEVENLABS_BASE_URL
    )
    elevenlabs_webhook_secret: Annotated[str | None, Field(alias="ELEVENLABS_WEBHOOK_SECRET")] = (
        None
    )
    concern_fields: Annotated[
        tuple[str, ...], NoDecode, Field(alias="CALLPANION_CONCERN_FIELDS")
    ] = DEFAULT_CONCERN_FIELDS
    webhook_max_bytes: Annotated[int, Field(alias="CALLPANION_WEBHOOK_MAX_BYTES", ge=1)] = (
        DEFAULT_WEBHOOK_MAX_BYTES
    )
    pairing_rate_limit: Annotated[int, Field(alias="CALLPANION_PAIRING_RATE_LIMIT", ge=1)] = (
        DEFAULT_PAIRING_RATE_LIMIT
    )
    pairing_rate_window_secs: Annotated[
        int, Field(alias="CALLPANION_PAIRING_RATE_WINDOW_SECS", ge=1)
    ] = DEFAULT_PAIRING_RATE_WINDOW_SECS

    #: Peers whose X-Forwarded-For is believed: addresses or networks, comma separated;
    #: empty (the default): nobody's, the TCP peer is the client.
    trusted_proxies: Annotated[str, Field(alias="CALLPANION_TRUSTED_PROXIES")] = ""
    #: Serve /docs, /redoc and /openapi.json (off: the API's description is not public).
    api_docs: Annotated[bool, Field(alias="CALLPANION_API_DOCS")] = False
    conversation_tokens_per_session: Annotated[
        int, Field(alias="CALLPANION_CONVERSATION_TOKENS_PER_SESSION", ge=1, le=100)
    ] = DEFAULT_CONVERSATION_TOKENS_PER_SESSION

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        for item in proxy_list(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    #: Where Twilio reaches us (its webhooks' signatures cover this URL, not the local one).
    public_api_url: Annotated[str, Field(alias="CALLPANION_PUBLIC_API_URL")] = (
        DEFAULT_PUBLIC_API_URL
    )
    twilio_auth_token: Annotated[str | None, Field(alias="TWILIO_AUTH_TOKEN")] = None

    @field_validator("concern_fields", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(f.strip() for f in value.split(",") if f.strip())
        return value

    @field_validator("elevenlabs_base_url", "public_api_url")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("db_role")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        return (value or "").strip() or None


def proxy_list(value: str) -> list[str]:
    """The comma-separated entries of CALLPANION_TRUSTED_PROXIES."""
    return [item.strip() for item in value.split(",") if item.strip()]


def api_settings(env: Mapping[str, str] | None = None) -> ApiSettings:
    """Build the API settings from environment variables (README, "Configuration")."""
    return read_settings(ApiSettings, env, defaults={"database_url": default_database_url(env)})
