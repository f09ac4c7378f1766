"""The push providers' settings: FCM v1 (service account) and APNs (token-based auth).

A provider whose key variable is unset is disabled (its reader returns None).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator

from python_worker.config import EnvSettings, read_settings

#: FCM's endpoint; the emulators print another one.
DEFAULT_FCM_BASE_URL = "https://fcm.googleapis.com"
#: APNs production; `api.sandbox.push.apple.com` for development builds.
DEFAULT_APNS_HOST = "api.push.apple.com"
DEFAULT_APNS_PORT = 443


def _existing_file(value: Path) -> Path:
    if not value.is_file():
        raise ValueError(f": no such file: {value}")
    return value


class FcmSettings(EnvSettings):
    """Where and as whom to send FCM v1 messages."""

    service_account_file: Annotated[Path, Field(alias="FCM_SERVICE_ACCOUNT_FILE")]
    project_id: Annotated[str | None, Field(alias="FCM_PROJECT_ID")] = None
    base_url: Annotated[str, Field(alias="FCM_BASE_URL")] = DEFAULT_FCM_BASE_URL
    ca_file: Annotated[str | None, Field(alias="FCM_CA_FILE")] = None

    _file = field_validator("service_account_file")(_existing_file)


class ApnsSettings(EnvSettings):
    """Where and as whom to send APNs pushes (token-based auth)."""

    key_file: Annotated[Path, Field(alias="APNS_KEY_FILE")]
    key_id: Annotated[str, Field(alias="APNS_KEY_ID")] = ""
    team_id: Annotated[str, Field(alias="APNS_TEAM_ID")] = ""
    bundle_id: Annotated[str, Field(alias="APNS_BUNDLE_ID")] = ""
    host: Annotated[str, Field(alias="APNS_HOST")] = DEFAULT_APNS_HOST
    port: Annotated[int, Field(alias="APNS_PORT", ge=1, le=65535)] = DEFAULT_APNS_PORT
    ca_file: Annotated[str | None, Field(alias="APNS_CA_FILE")] = None

    _file = field_validator("key_file")(_existing_file)

    @model_validator(mode="after")
    def _identity(self) -> Self:
        missing = [
            name
            for name, value in (
                ("APNS_KEY_ID", self.key_id),
                ("APNS_TEAM_ID", self.team_id),
                ("APNS_BUNDLE_ID", self.bundle_id),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"APNS_KEY_FILE is set, so {', '.join(missing)} must be set too")
        return self


def fcm_settings(env: Mapping[str, str] | None = None) -> FcmSettings | None:
    """FCM settings, or None when FCM_SERVICE_ACCOUNT_FILE is not set (FCM disabled)."""
    if not (os.environ if env is None else env).get("FCM_SERVICE_ACCOUNT_FILE"):
        return None
    return read_settings(FcmSettings, env)


def apns_settings(env: Mapping[str, str] | None = None) -> ApnsSettings | None:
    """APNs settings, or None when APNS_KEY_FILE is not set (APNs disabled)."""
    if not (os.environ if env is None else env).get("APNS_KEY_FILE"):
        return None
    return read_settings(ApnsSettings, env)
