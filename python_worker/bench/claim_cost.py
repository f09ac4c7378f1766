"""`callpanion bench claim-cost`: what one claim, record and look costs the database while a
worker holds many rows.

Wall-clock time on a shared machine moves with the load; the shared buffers a statement
touches and the rows it reads do not. For each number of rows held (default 1,000 and
10,000), a scratch database of the local cluster (migrated from this checkout, or from
`--checkout DIR` to compare with another one) gets that many calls claimed by one live worker
(it holds its presence lock, as a running worker does), plus a batch of calls still due. Then
each of the worker's hot statements runs under `EXPLAIN (ANALYZE, BUFFERS)` in a transaction
that is rolled back, so every repetition sees the same rows:

- claim: `claim_due_calls` of the next batch (with the orphan reclaim and the expired-lease
  return it runs first);
- record: `record_push_results` of a batch just claimed, all delivered;
- look: `next_work_at`, which the worker's loop runs after every claim.

Printed per statement and rows held: shared buffers hit + read (the median of the
repetitions; they are the same from one to the next) and the execution time (median, ms).
A per-claim cost that grows with the rows held shows as buffers that grow ten-fold from
1,000 to 10,000.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from python_worker.bench.dispatch import _QUEUE, _SETUP, _VACUUM
from python_worker.errors import CallPanionError
from python_worker.stack import migrations
from python_worker.stack.cluster import LocalStack

#: The lease owner whose presence lock the bench holds (it stands for a running worker).
OWNER = "bench-claim-cost#0000"
#: Rows per claim and per record call: the worker's default batch.
BATCH = 100
#: Claims made to reach the rows held (claim_due_calls takes at most 10,000 at a time).
FILL_LIMIT = 1000
REPEATS = 5

Conn = psycopg.Connection[dict[str, Any]]


@dataclass(frozen=True)
class Cost:
    """One statement's cost at one number of rows held."""

    statement: str
    held: int
    buffers: int  # shared buffers hit + read
    ms: float


def _explain(conn: Conn, statement: str, params: dict[str, Any], setup: str = "") -> list[Any]:
    """(buffers, ms) of one run of `statement`, in a transaction that is rolled back."""
    conn.execute("begin")
    try:
        if setup:
            conn.execute(setup, params)
        row = conn.execute(
            "explain (analyze, buffers, format json) " + statement, params
        ).fetchone()
    finally:
        conn.execute("rollback")
    assert row is not None
    [plan] = row["QUERY PLAN"]
    top = plan["Plan"]
    return [top["Shared Hit Blocks"] + top["Shared Read Blocks"], plan["Execution Time"]]


_CLAIM = (
    "select * from public.claim_due_calls(%(owner)s, %(batch)s, interval '30 seconds',"
    " now(), interval '1 second')"
)
_RECORD_SETUP = (
    "create temp table just_claimed on commit drop as select queue_id from"
    " public.claim_due_calls(%(owner)s, %(batch)s, interval '30 seconds', now(),"
    " interval '1 second')"
)
_RECORD = (
    "select * from public.record_push_results(%(owner)s, (select jsonb_agg(jsonb_build_object("
    "'queue_id', j.queue_id, 'outcome', 'delivered', 'provider', 'fcm', 'status', 200,"
    " 'message_id', 'm')) from just_claimed j))"
)
_LOOK = "select * from public.next_work_at(now(), %(owner)s)"
STATEMENTS = {"claim": ("", _CLAIM), "record": (_RECORD_SETUP, _RECORD), "look": ("", _LOOK)}


def measure(url: str, held: int) -> list[Cost]:
    """Hold `held` claimed rows under a live presence lock; cost each hot statement."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("set synchronous_commit = off")
        conn.execute("delete from call_sessions")
        conn.execute("delete from device_pairs")
        conn.execute("delete from relatives")
        conn.execute("delete from households")
        conn.execute(_SETUP, {"n": held + 2 * BATCH})
        # Due a minute ago: claimable at once, far from the two-minute deadline.
        conn.execute(
            _QUEUE.replace("%(send_at)s", "date_trunc('second', now() - interval '1 minute')")
        )
        registered = conn.execute("select public.register_worker(%(o)s) as ok", {"o": OWNER})
        if not (row := registered.fetchone()) or not row["ok"]:
            raise CallPanionError("could not take the bench's presence lock")
        claimed = 0
        while claimed < held:
            limit = min(FILL_LIMIT, held - claimed)
            got = conn.execute(
                "select count(*) as n from public.claim_due_calls(%(o)s, %(l)s,"
                " interval '10 minutes')",
                {"o": OWNER, "l": limit},
            ).fetchone()
            assert got is not None
            if got["n"] == 0:
                raise CallPanionError(f"only {claimed} of {held} rows could be claimed")
            claimed += got["n"]
        conn.execute(_VACUUM)
        params = {"owner": OWNER, "batch": BATCH}
        out = []
        for name, (setup, statement) in STATEMENTS.items():
            runs = [_explain(conn, statement, params, setup) for _ in range(REPEATS)]
            out.append(
                Cost(
                    name,
                    held,
                    int(statistics.median(r[0] for r in runs)),
                    statistics.median(r[1] for r in runs),
                )
            )
        return out


def migrated_database(stack: LocalStack, checkout: Path | None) -> str:
    """A scratch database migrated from this checkout, or from `checkout`'s migrations."""
    if checkout is None:
        return stack.create_migrated_database("bench_claim_cost")
    folder = checkout / "supabase" / "migrations"
    if not folder.is_dir():
        raise CallPanionError(f"--checkout {checkout}: no supabase/migrations folder there")
    url = stack.create_database("bench_claim_cost")
    with migrations.connect(url) as conn:
        conn.execute("set client_min_messages = error")
        migrations.apply_migrations(conn, folder)
    return url


def bench_claim_cost(
    stack: LocalStack, held: Sequence[int], checkout: Path | None = None
) -> list[Cost]:
    """The costs at every number of rows held, in one scratch database (dropped after)."""
    if not held or min(held) < 0:
        raise CallPanionError("--held needs one or more counts of rows, each at least 0")
    url = migrated_database(stack, checkout)
    try:
        return [cost for n in held for cost in measure(url, n)]
    finally:
        stack.drop_database(url)


def report_claim_cost(costs: Sequence[Cost], label: str) -> str:
    """A table (statement x rows held), then one JSON line."""
    helds = sorted({c.held for c in costs})
    lines = [
        f"claim-cost ({label}): shared buffers hit+read and execution ms per statement,"
        f" batch {BATCH}, one live worker holding N claimed rows (median of {REPEATS})",
        f"{'statement':<10}" + "".join(f"{f'N={n:,}':>22}" for n in helds),
    ]
    for name in STATEMENTS:
        cells = []
        for n in helds:
            [c] = [c for c in costs if c.statement == name and c.held == n]
            cells.append(f"{c.buffers:>10,} buf {c.ms:>7.1f} ms")
        lines.append(f"{name:<10}" + "".join(f"{cell:>22}" for cell in cells))
    lines.append(json.dumps([c.__dict__ for c in costs]))
    return "\n".join(lines)
