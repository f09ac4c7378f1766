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
from tests.support.push import emulator_suite, emulators, endpoints
from tests.support.worker import wdb, worker_database, workers

# The family-alert flow (test_family_told.py) runs real workers against the tier's cluster.
__all__ = [
    "api",
    "api_database",
    "database_url",
    "elevenlabs",
    "emulator_suite",
    "emulators",
    "endpoints",
    "pg_stack",
    "wdb",
    "webhook_secret",
    "worker_database",
    "workers",
]


@pytest.fixture(scope="session")
def pg_stack() -> Iterator[LocalStack]:
    """The tier's migrated cluster (pg_cron's jobs off)."""
    with migrated_stack("e2e-db") as stack:
        yield stack


@pytest.fixture(scope="session")
def database_url(pg_stack: LocalStack) -> str:
    """The tier cluster's URL, as `postgres`."""
    return pg_stack.settings.database_url
