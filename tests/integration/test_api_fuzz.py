"""Fuzzing: the served API from its own OpenAPI document (schemathesis). No 5xx, no partial
writes. (The webhook's signature verifier and parser: tests/unit/api/test_webhook_fuzz.py.)"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from psycopg.rows import dict_row
from schemathesis import GenerationMode
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from python_worker.api.app import openapi_document
from python_worker.api.settings import api_settings
from tests.integration.test_stack import run_cli
from tests.support.api import Paired, Row, ServedApi, fetch, new_family, pair
from tests.support.db import PROJECT_DIR

SqlConn = psycopg.Connection[Row]
FUZZ_EXAMPLES = 40
CHECKS = [response_schema_conformance, status_code_conformance, content_type_conformance]


def test_the_checked_in_openapi_document_is_current() -> None:
    checked_in = (PROJECT_DIR / "openapi.json").read_text()
    assert checked_in == openapi_document(api_settings({})), (
        "openapi.json is stale: run `callpanion api --openapi > openapi.json`"
    )
    printed = run_cli("api", "--openapi")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == checked_in


def test_the_api_refuses_bad_configuration_clearly() -> None:
    printed = run_cli("api", "--openapi", env={"CALLPANION_PAIRING_RATE_LIMIT": "0"})
    assert printed.returncode == 1
    assert (
        printed.stderr.strip()
        == "error: CALLPANION_PAIRING_RATE_LIMIT must be a positive integer, got 0"
    )


@pytest.fixture(scope="module")
def fuzz_device(api: ServedApi, api_database: str) -> Paired:
    with psycopg.connect(api_database, autocommit=True, row_factory=dict_row) as conn:
        return pair(api, conn, new_family(conn, "Fuzz"))


def counts(api_database: str) -> dict[str, int]:
    """Rows of the tables only signed webhooks and the device's own sessions may write."""
    with psycopg.connect(api_database, autocommit=True, row_factory=dict_row) as conn:
        return {t: fetch(conn, f"select count(*) as n from {t}")["n"]  # noqa: S608 - fixed names
                for t in ("webhook_events", "call_logs", "alerts", "call_sessions")}  # fmt: skip


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize("as_device", [False, True], ids=["stranger", "paired-device"])
def test_fuzz_every_operation_of_the_openapi_document(
    api: ServedApi, api_database: str, fuzz_device: Paired, mode: GenerationMode, as_device: bool
) -> None:
    """Cases generated from the checked-in document (the API serves none unless
    CALLPANION_API_DOCS is on; a test keeps the two equal), valid ones and ones that break it, get
    documented answers, never a 5xx. As a paired device, requests pass authentication and
    reach the SQL functions (with random session ids, so they end in 404s and 422s)."""
    schema = schemathesis.openapi.from_path(str(PROJECT_DIR / "openapi.json"))
    results = list(schema.get_all_operations())
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) == len(results), "the served OpenAPI document has invalid operations"
    # 7 of the phone app and ElevenLabs, 6 of the family's alerts (links, Twilio's webhooks).
    assert len(operations) == 13
    headers = fuzz_device.headers if as_device else None
    statuses: set[int] = set()
    before = counts(api_database)
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and operation.path == "/healthz":
            continue  # nothing to break: no parameters, no body

        @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: Any) -> None:
            response = case.call(base_url=api.url, headers=headers)
            assert response.status_code < 500, (case.path, response.status_code, response.text)
            statuses.add(response.status_code)
            case.validate_response(response, checks=CHECKS)

        run()
    assert statuses <= {200, 201, 400, 401, 403, 404, 409, 410, 413, 422, 423, 429}
    assert (401 in statuses) is True
    # Unsigned webhooks and other people's session ids wrote nothing; the device is intact.
    assert counts(api_database) == before
    with psycopg.connect(api_database, autocommit=True, row_factory=dict_row) as conn:
        device = fetch(conn, "select status from device_pairs where id = %s", [fuzz_device.id])
    assert device["status"] == "active"
