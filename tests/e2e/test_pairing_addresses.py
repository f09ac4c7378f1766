"""Issue 25, items 2 and 3, as the attack was made: `callpanion api` as its own process, an
attacker on one loopback address sending X-Forwarded-For headers of its choosing as fast as it
can, and a family pairing from another address with its correct code."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from python_worker.stack.cluster import LocalStack
from tests.support.security import ApiBench, create_code, new_household, pair_body

LIMIT = 10  # the default CALLPANION_PAIRING_RATE_LIMIT per 600 s


def _from(address: str, bench: ApiBench) -> httpx.Client:
    """A client whose requests come from this loopback address."""
    return httpx.Client(
        base_url=bench.api_url,
        timeout=30,
        transport=httpx.HTTPTransport(local_address=address),
    )


@pytest.fixture(scope="module")
def bench(pg_stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiBench]:
    with pg_stack.scratch_database("addresses") as url:
        started = ApiBench(url, Path(tmp_path_factory.mktemp("addresses"))).start()
        try:
            yield started
        finally:
            started.stop()


def test_rotating_forwarded_for_does_not_escape_the_limit_nor_touch_another_family(
    bench: ApiBench,
) -> None:
    with bench.connect() as conn:
        attacker, family = new_household(conn, "Mallory"), new_household(conn, "Alice")
        own = create_code(conn, attacker)

    def attempt(index: int) -> int:
        # From 127.0.0.1, as through a same-host proxy that passes the header on: uvicorn's
        # own proxy handling believed it from there (issue 25, item 3).
        with _from("127.0.0.1", bench) as client:
            wrong = f"{(int(own[1]) + 1 + index) % 1_000_000:06d}"
            return client.post(
                "/v1/devices/pair",
                json=pair_body(own[0], wrong),
                headers={"X-Forwarded-For": f"198.51.100.{index % 250}"},
            ).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(attempt, range(60)))
    assert statuses.count(403) == LIMIT  # one address: ten weighed, whatever the header said
    assert statuses.count(429) == 60 - LIMIT
    with bench.connect() as conn:
        pairing_id, code = create_code(conn, family)
    with _from("127.0.0.3", bench) as client:
        answer = client.post("/v1/devices/pair", json=pair_body(pairing_id, code))
    assert answer.status_code == 201, answer.text
    assert uuid.UUID(answer.json()["household_id"]) == family.id
