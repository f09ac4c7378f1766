"""The end-to-end tier's fixtures: its own migrated cluster and the served API.

Whole calls, the demo and chaos run as separate processes that the tests start themselves;
what they share is a cluster (in its own folder, so this tier runs alone or beside the
integration tier) and, for the newcomer's path, the API with the ElevenLabs emulator.
Tests import helpers from `tests.support`, never from a conftest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from python_worker.stack.cluster import LocalStack
from tests.support.api import api, api_database, elevenlabs, webhook_secret
from tests.support.db import migrated_stack

__all__ = ["api", "api_database", "database_url", "elevenlabs", "pg_stack", "webhook_secret"]


@pytest.fixture(scope="session")
def pg_stack() -> Iterator[LocalStack]:
    """The tier's migrated cluster (pg_cron's jobs off)."""
    with migrated_stack("e2e-db") as stack:
        yield stack


@pytest.fixture(scope="session")
def database_url(pg_stack: LocalStack) -> str:
    """The tier cluster's URL, as `postgres`."""
    return pg_stack.settings.database_url
