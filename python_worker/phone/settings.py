"""Where a phone simulator reaches the push emulators and ElevenLabs: the emulators' settings.

`callpanion emulators` writes these variables to its settings file; the simulator needs all
of them explicitly (the providers' real defaults would send it to Google and Apple).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field

from python_worker.config import EnvSettings, read_settings
from python_worker.errors import CallPanionError
from python_worker.phone.simulator import PhoneEndpoints


class PhoneSettings(EnvSettings):
    """The emulators' endpoints, as the worker and the API read them (no defaults here)."""

    fcm_base_url: Annotated[str | None, Field(alias="FCM_BASE_URL")] = None
    fcm_ca_file: Annotated[str | None, Field(alias="FCM_CA_FILE")] = None
    apns_host: Annotated[str | None, Field(alias="APNS_HOST")] = None
    apns_port: Annotated[int | None, Field(alias="APNS_PORT", ge=1, le=65535)] = None
    elevenlabs_base_url: Annotated[str | None, Field(alias="ELEVENLABS_BASE_URL")] = None

    def endpoints(self, api_url: str) -> PhoneEndpoints:
        """The simulator's endpoints; a clear error naming what is not set."""
        required = {
            "FCM_BASE_URL": self.fcm_base_url,
            "FCM_CA_FILE": self.fcm_ca_file,
            "APNS_PORT": self.apns_port,
            "ELEVENLABS_BASE_URL": self.elevenlabs_base_url,
        }
        missing = [name for name, value in required.items() if not value]
        if missing:
            raise CallPanionError(
                f"{', '.join(missing)} not set: run `callpanion emulators` and pass its "
                "settings file with `callpanion --env-file <dir>/emulators.env phone run ...`"
            )
        return PhoneEndpoints(
            api_url=api_url.rstrip("/"),
            fcm_url=str(self.fcm_base_url).rstrip("/"),
            apns_url=f"https://{self.apns_host or 'localhost'}:{self.apns_port}",
            ca_file=str(self.fcm_ca_file),
            elevenlabs_url=str(self.elevenlabs_base_url).rstrip("/"),
        )


def phone_settings(env: Mapping[str, str] | None = None) -> PhoneSettings:
    """Build the phone simulator's settings from environment variables."""
    return read_settings(PhoneSettings, env)
