"""The integration tier's fixtures: one migrated cluster for the session, the push emulators
(HTTP/2 over TLS), the served API with the ElevenLabs emulator, and worker processes.

The fixtures are defined in the plain support modules and named here, so that only this tier
loads them; tests import helpers from `tests.support`, never from a conftest.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from python_worker.stack.cluster import LocalStack
from tests.support.api import api, api_database, elevenlabs, sql_conn, webhook_secret
from tests.support.db import Conn, migrated_stack, rolled_back
from tests.support.push import emulator_suite, emulators, endpoints
from tests.support.worker import wdb, worker_database, workers

__all__ = [
    "api",
    "api_database",
    "database_url",
    "db",
    "elevenlabs",
    "emulator_suite",
    "emulators",
    "endpoints",
    "pg_stack",
    "sql_conn",
    "wdb",
    "webhook_secret",
    "worker_database",
    "workers",
]


@pytest.fixture(scope="session")
def pg_stack() -> Iterator[LocalStack]:
    """The session's migrated cluster (pg_cron's jobs off: tests drive the phases)."""
    with migrated_stack("test-db") as stack:
        yield stack


@pytest.fixture(scope="session")
def database_url(pg_stack: LocalStack) -> str:
    """The session cluster's URL, as `postgres`."""
    return pg_stack.settings.database_url


@pytest.fixture
def db(database_url: str) -> Iterator[Conn]:
    """A connection as `postgres` in a transaction that is rolled back after the test."""
    with rolled_back(database_url) as conn:
        yield conn
