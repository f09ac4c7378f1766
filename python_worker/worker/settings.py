"""What `callpanion worker` needs besides the FCM_* / APNS_* provider settings."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Literal, Self

from pydantic import Field, field_validator, model_validator

from python_worker.config import (
    DEFAULT_ELEVENLABS_BASE_URL,
    KEEP_EMPTY,
    EnvSettings,
    read_settings,
)
from python_worker.stack.settings import default_database_url

#: How the worker learns of queued rows besides its timer and poll (README "Worker").
WAKEUP_MODES = ("notify", "realtime", "poll")
#: The backstop poll: a worker that misses every signal still sends within this long.
DEFAULT_POLL_INTERVAL_SECS = 5.0
#: Rows per claim: one statement, one round trip; a burst of 10,000 is 10 claims.
DEFAULT_BATCH_SIZE = 1000
#: A claimed row's lease. Well above a send's timeout (10 s) and renewed while sends run, so
#: only a dead or hung worker loses it; short enough that its rows ring within the grace.
DEFAULT_LEASE_SECS = 30
#: Claim rows this far ahead of their send_at, so the database work is done when the minute
#: comes and each push goes out at its send_at exactly.
DEFAULT_CLAIM_AHEAD_MS = 1000
#: Pushes in flight at once per worker (rows claimed and not yet recorded).
DEFAULT_MAX_IN_FLIGHT = 20000
#: On SIGTERM: stop claiming, finish sends, record, give back the rest and exit, all within
#: this long (sends get all but the last 2 s). Under `docker stop`'s default 10 s grace, so
#: the graceful path, not a SIGKILL, ends a container's worker.
DEFAULT_SHUTDOWN_GRACE_SECS = 8.0
#: /healthz and /metrics (loopback by default; the container listens on all interfaces).
DEFAULT_WORKER_HTTP_HOST = "127.0.0.1"
DEFAULT_WORKER_HTTP_PORT = 9108
#: What the relative's phone shows as the caller.
DEFAULT_CALLER_NAME = "CallPanion"
#: Where the app reports call events (the HTTP routes, `callpanion api`).
DEFAULT_PUBLIC_API_URL = "http://127.0.0.1:8000"
#: The database role the worker acts as: it holds exactly the grants of its SQL functions.
DEFAULT_WORKER_DB_ROLE = "service_role"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _default_worker_id() -> str:
    return f"{os.uname().nodename}-{os.getpid()}"


class WorkerSettings(EnvSettings):
    """What `callpanion worker` needs besides the FCM_* / APNS_* provider settings."""

    #: Default: DATABASE_URL, else the local stack's database.
    database_url: Annotated[str, Field(alias="CALLPANION_WORKER_DATABASE_URL")] = ""
    #: Empty: act as the connecting user (no SET ROLE), e.g. behind a transaction pooler.
    db_role: Annotated[
        str | None, Field(alias="CALLPANION_WORKER_DB_ROLE", json_schema_extra=KEEP_EMPTY)
    ] = DEFAULT_WORKER_DB_ROLE
    #: Default: `<hostname>-<pid>`.
    worker_id: Annotated[
        str, Field(alias="CALLPANION_WORKER_ID", default_factory=_default_worker_id)
    ]
    wakeup: Annotated[Literal["notify", "realtime", "poll"], Field(alias="CALLPANION_WAKEUP")] = (
        "notify"
    )
    supabase_url: Annotated[str | None, Field(alias="SUPABASE_URL")] = None
    supabase_service_key: Annotated[str | None, Field(alias="SUPABASE_SERVICE_ROLE_KEY")] = None
    poll_interval_s: Annotated[
        float, Field(alias="CALLPANION_POLL_INTERVAL_SECS", ge=0.05, le=3600, allow_inf_nan=False)
    ] = DEFAULT_POLL_INTERVAL_SECS
    batch_size: Annotated[int, Field(alias="CALLPANION_BATCH_SIZE", ge=1, le=10000)] = (
        DEFAULT_BATCH_SIZE
    )
    lease_s: Annotated[int, Field(alias="CALLPANION_LEASE_SECS", ge=5, le=3600)] = (
        DEFAULT_LEASE_SECS
    )
    claim_ahead_ms: Annotated[int, Field(alias="CALLPANION_CLAIM_AHEAD_MS", ge=0, le=60000)] = (
        DEFAULT_CLAIM_AHEAD_MS
    )
    max_in_flight: Annotated[int, Field(alias="CALLPANION_MAX_IN_FLIGHT", ge=1, le=1_000_000)] = (
        DEFAULT_MAX_IN_FLIGHT
    )
    shutdown_grace_s: Annotated[
        float, Field(alias="CALLPANION_SHUTDOWN_GRACE_SECS", ge=0, le=600, allow_inf_nan=False)
    ] = DEFAULT_SHUTDOWN_GRACE_SECS
    http_host: Annotated[str, Field(alias="CALLPANION_WORKER_HTTP_HOST")] = DEFAULT_WORKER_HTTP_HOST
    http_port: Annotated[int, Field(alias="CALLPANION_WORKER_HTTP_PORT", ge=0, le=65535)] = (
        DEFAULT_WORKER_HTTP_PORT
    )
    caller_name: Annotated[str, Field(alias="CALLPANION_CALLER_NAME")] = DEFAULT_CALLER_NAME
    public_api_url: Annotated[str, Field(alias="CALLPANION_PUBLIC_API_URL")] = (
        DEFAULT_PUBLIC_API_URL
    )
    log_level: Annotated[str, Field(alias="CALLPANION_LOG_LEVEL")] = "INFO"
    #: For erasure's provider deletions (the API's names); without a key they stay queued.
    elevenlabs_api_key: Annotated[str | None, Field(alias="ELEVENLABS_API_KEY")] = None
    elevenlabs_base_url: Annotated[str, Field(alias="ELEVENLABS_BASE_URL")] = (
        DEFAULT_ELEVENLABS_BASE_URL
    )

    @property
    def claim_ahead_s(self) -> float:
        """The claim-ahead horizon in seconds."""
        return self.claim_ahead_ms / 1000

    @field_validator("wakeup", mode="before")
    @classmethod
    def _wakeup(cls, value: str) -> str:
        mode = value.strip().lower()
        if mode not in WAKEUP_MODES:
            raise ValueError(f"must be one of {', '.join(WAKEUP_MODES)}, got {mode!r}")
        return mode

    @field_validator("worker_id")
    @classmethod
    def _worker_id(cls, value: str) -> str:
        value = value.strip()
        if not 1 <= len(value) <= 200:
            raise ValueError("must be 1 to 200 characters")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"must be DEBUG, INFO, WARNING or ERROR, got {level!r}")
        return level

    @field_validator("db_role")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @field_validator("supabase_url", "public_api_url", "elevenlabs_base_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _realtime_needs_supabase(self) -> Self:
        if self.wakeup == "realtime" and not (self.supabase_url and self.supabase_service_key):
            raise ValueError(
                "CALLPANION_WAKEUP=realtime needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
            )
        return self


def worker_settings(env: Mapping[str, str] | None = None) -> WorkerSettings:
    """Build the worker settings from environment variables (README, "Configuration")."""
    return read_settings(WorkerSettings, env, defaults={"database_url": default_database_url(env)})
