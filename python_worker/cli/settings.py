"""The command line's own settings: read before, and beside, the programs' settings classes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import Field

from python_worker.config import EnvSettings, read_settings


class CliSettings(EnvSettings):
    """What only the `callpanion` command reads."""

    #: The settings file read after the environment, before ./.env (as `--env-file`).
    env_file: Annotated[str | None, Field(alias="CALLPANION_ENV_FILE")] = None
    #: `callpanion migrate`'s target when `--database-url` is not given.
    database_url: Annotated[str | None, Field(alias="DATABASE_URL")] = None


def cli_settings(env: Mapping[str, str] | None = None) -> CliSettings:
    """Build the command line's settings from environment variables."""
    return read_settings(CliSettings, env)
