"""`callpanion bench pairing [--samples N]`: how long each refusal of a pairing takes, as
the attacker of issue 25 (item 5) measured it: over HTTP, against `callpanion api` as its own
process, one request at a time on a kept-alive connection.

Paths: a pairing id that does not exist, a wrong code at an open pairing, an expired code, a
locked code, a code already used. Each sample names a pairing of its own (created beforehand
in a migrated database of its own in the local cluster, with the per-household budget and
the per-address limit raised so that no sample is refused for a budget), and the paths take
turns within every round, so drift in the machine's load falls on all of them alike.
Printed per path: median, p10 and p90 in milliseconds, and the median's difference from the
unknown-id path.
"""

from __future__ import annotations

import os
import secrets
import statistics
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from psycopg.rows import dict_row

from python_worker.bench.webhooks import api_process
from python_worker.stack.cluster import LocalStack

PATHS = ("unknown id", "wrong code", "expired code", "locked code", "used code")


@dataclass
class Pairings:
    """Per path, the (pairing_id, code) each sample sends."""

    by_path: dict[str, list[tuple[str, str]]] = field(default_factory=dict)


def _body(pairing_id: str, code: str) -> dict[str, str]:
    return {
        "pairing_id": pairing_id,
        "code": code,
        "platform": "android",
        "app_version": "bench",
        "label": "bench",
        "fcm_token": "f" * 40,
    }


def prepare(database_url: str, samples: int) -> Pairings:
    """One household, a relative and an open code per sample and path, set in its state."""
    made = Pairings()
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        columns = {
            r["column_name"]
            for r in conn.execute(
                "select column_name from information_schema.columns"
                " where table_schema = 'private' and table_name = 'pairing_settings'"
            ).fetchall()
        }
        # No sample may be refused for a budget (the old schema had one global budget).
        for column, value in (("household_budget", 100000), ("unknown_budget", 10000000),
                              ("guess_budget", 1000000)):  # fmt: skip
            if column in columns:
                conn.execute(f"update private.pairing_settings set {column} = {value}")  # noqa: S608
        user = conn.execute(
            "insert into auth.users (email) values (%s) returning id",
            [f"bench-{uuid.uuid4().hex}@example.test"],
        ).fetchone()
        household = conn.execute(
            "insert into households (name) values ('Bench') returning id"
        ).fetchone()
        assert user is not None
        assert household is not None
        conn.execute(
            "insert into household_members (household_id, user_id, role) values (%s, %s, 'admin')",
            [household["id"], user["id"]],
        )
        for path in PATHS[1:]:
            rows = conn.execute(
                "insert into relatives (household_id, display_name, timezone)"
                " select %s, 'R' || g, 'UTC' from generate_series(1, %s) g returning id",
                [household["id"], samples],
            ).fetchall()
            codes = []
            with conn.transaction():
                conn.execute("set local role authenticated")
                conn.execute(
                    "select set_config('request.jwt.claims', %s, true)",
                    [f'{{"role": "authenticated", "sub": "{user["id"]}"}}'],
                )
                for row in rows:
                    code = conn.execute(
                        "select pairing_id, code from public.create_pairing_code(%s)", [row["id"]]
                    ).fetchone()
                    assert code is not None
                    codes.append((str(code["pairing_id"]), code["code"]))
            ids = [c[0] for c in codes]
            if path == "expired code":
                conn.execute(
                    "update device_pairs set pairing_code_expires_at = now() - interval '1 s'"
                    " where id = any(%s::uuid[])",
                    [ids],
                )
            elif path == "locked code":
                conn.execute(
                    "update device_pairs set pairing_failed_attempts = 5"
                    " where id = any(%s::uuid[])",
                    [ids],
                )
            elif path == "used code":
                for pairing_id, code in codes:
                    conn.execute(  # the old and the new signature alike
                        "select public.claim_pairing_code(%s, %s, %s, 'android', 'b', 'b', %s)",
                        [pairing_id, code, secrets.token_hex(32), "f" * 40],
                    )
            if path == "wrong code":
                codes = [(p, f"{(int(c) + 1) % 1_000_000:06d}") for p, c in codes]
            made.by_path[path] = codes
        made.by_path["unknown id"] = [(str(uuid.uuid4()), "123456") for _ in range(samples)]
    return made


def measure(url: str, pairings: Pairings, samples: int) -> dict[str, list[float]]:
    """Milliseconds per request, per path; every answer must be the one 403."""
    timings: dict[str, list[float]] = {path: [] for path in PATHS}
    with httpx.Client(base_url=url, timeout=30) as client:
        client.get("/healthz")  # the connection is open before the first sample
        for index in range(samples):
            for path in PATHS:
                pairing_id, code = pairings.by_path[path][index]
                started = time.perf_counter()
                answer = client.post("/v1/devices/pair", json=_body(pairing_id, code))
                timings[path].append((time.perf_counter() - started) * 1000)
                if answer.status_code != 403:
                    raise AssertionError(f"{path}: HTTP {answer.status_code} {answer.text}")
    return timings


def report(timings: dict[str, list[float]]) -> str:
    base = statistics.median(timings["unknown id"])
    lines = [
        f"pairing refusals over HTTP, {len(timings['unknown id'])} samples per path",
        f"{'path':<14} {'median ms':>10} {'p10':>7} {'p90':>7} {'vs unknown':>11}",
    ]
    for path, values in timings.items():
        deciles = statistics.quantiles(values, n=10)
        median = statistics.median(values)
        lines.append(
            f"{path:<14} {median:>10.2f} {deciles[0]:>7.2f} {deciles[-1]:>7.2f}"
            f" {median - base:>+11.2f}"
        )
    return "\n".join(lines)


def bench_pairing(stack: LocalStack, samples: int, checkout: Path) -> str:
    """Prepare, serve, measure; everything started here is stopped and dropped."""
    with stack.scratch_database("bench_pairing") as database_url:
        pairings = prepare(database_url, samples)
        secret = "wsec_" + os.urandom(8).hex()
        with api_process(
            checkout, database_url, secret, {"CALLPANION_PAIRING_RATE_LIMIT": "10000000"}
        ) as (_, url):
            return report(measure(url, pairings, samples))
