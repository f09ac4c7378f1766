"""Benchmarks that print figures (never timed assertions in tests).

`callpanion bench schedule --schedules N`: phase 1 (queue_upcoming_calls) on N schedules due in
the same minute, beside the floor for the same work: a plain INSERT … SELECT of the same rows
(one call session and one queue row per schedule, same columns, same tables). The bench data is
committed (so statistics are as production has them), each timed run is rolled back, and the
bench households are deleted at the end: nothing is left behind.
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from python_worker.errors import CallPanionError

#: A moment far from the real clock, so the stack's own pg_cron runs never touch bench rows.
BENCH_NOW = datetime(2031, 1, 6, 9, 26, tzinfo=UTC)

# N households of one relative each (as real ones are), an iOS or Android device each, and a
# recurring daily schedule at 09:30 London time (09:30 UTC in January), planned from BENCH_NOW.
# Every bench row carries the run's tag, so the bench touches nothing else.
_SETUP = (
    """
with h as (
  insert into households (name) select %(tag)s from generate_series(1, %(n)s) returning id
),
r as (
  insert into relatives (household_id, display_name, timezone)
  select id, 'Relative', 'Europe/London' from h
  returning id, household_id
)
insert into device_pairs (household_id, relative_id, status, platform, voip_token, fcm_token,
                          secret_hash, paired_at)
select household_id, id, 'active', p.platform,
       case when p.platform = 'ios' then md5(id::text) || md5(household_id::text) end,
       'bench:' || md5(id::text) || md5(household_id::text), 'h', now()
from r, lateral (select case when ascii(id::text) %% 2 = 0 then 'ios' else 'android' end
                 as platform) p
""",
    """
insert into schedules (relative_id, kind, local_time, days_of_week, timezone, title)
select r.id, 'recurring', '09:30', '{1,2,3,4,5,6,7}', 'Europe/London', %(tag)s
from relatives r join households h on h.id = r.household_id where h.name = %(tag)s
""",
    """
update schedules s set next_run_at = private.schedule_next_run(s, %(now)s) where s.title = %(tag)s
""",
)

# Inside each timed (rolled back) transaction, untimed: only the bench's schedules are active.
_PAUSE_OTHERS = """
update schedules set active = false where active and title is distinct from %(tag)s
"""

# The floor: the same rows (one session and one queue row per due schedule, same columns)
# written by plain INSERT … SELECT, finding the due schedules through the same index.
_BASELINE = (
    """
with s as (
  insert into call_sessions (household_id, relative_id, schedule_id, device_id, occurrence_at,
                             attempt, origin, status, ring_timeout, max_attempts, retry_interval)
  select s.household_id, s.relative_id, s.id, d.id, s.next_run_at, 1, 'schedule', 'queued',
         s.ring_timeout, s.max_attempts, s.retry_interval
  from schedules s join device_pairs d on d.relative_id = s.relative_id and d.status = 'active'
  where s.active and s.next_run_at <= %(now)s::timestamptz + interval '5 minutes'
  returning id, household_id, schedule_id, device_id, occurrence_at
)
insert into notification_queue (call_session_id, household_id, schedule_id, device_id,
                                occurrence_at, attempt, status, send_at, deadline_at, platform,
                                provider, push_token, fallback_provider, fallback_token, payload)
select s.id, s.household_id, s.schedule_id, s.device_id, s.occurrence_at, 1, 'queued',
       s.occurrence_at, s.occurrence_at + interval '2 minutes', d.platform,
       case when d.platform = 'ios' then 'apns' else 'fcm' end,
       coalesce(d.voip_token, d.fcm_token),
       case when d.platform = 'ios' then 'fcm' end,
       case when d.platform = 'ios' then d.fcm_token end,
       jsonb_build_object('relative_name', 'x', 'household_name', 'y', 'title', 'Morning chat',
                          'ring_timeout_ms', 45000)
from s join device_pairs d on d.id = s.device_id
""",
)

_VACUUM = "vacuum (analyze) schedules, device_pairs, relatives, call_sessions, notification_queue"


@dataclass(frozen=True)
class ScheduleBench:
    schedules: int
    phase1_s: float
    baseline_s: float
    phase1_runs: list[float]
    baseline_runs: list[float]

    @property
    def ratio(self) -> float:
        return self.phase1_s / self.baseline_s


Conn = psycopg.Connection[tuple[object, ...]]


def _timed(conn: Conn, work: list[str], params: dict[str, object]) -> tuple[float, int]:
    """Run statements in a transaction that is rolled back; (seconds, rows of the last).

    Other households' schedules are paused inside that transaction (untimed) so that only
    the bench's own rows are due.
    """
    with conn.transaction(force_rollback=True):
        conn.execute(_PAUSE_OTHERS.encode(), params)
        started = time.perf_counter()
        rows = 0
        for statement in work:
            cur = conn.execute(statement.encode(), params)
            rows = cur.rowcount
            if cur.description is not None:
                fetched = cur.fetchone()
                rows = int(fetched[0]) if fetched and isinstance(fetched[0], int) else rows
        return time.perf_counter() - started, rows


def bench_schedule(database_url: str, schedules: int, rounds: int = 3) -> ScheduleBench:
    """Time phase 1 and the plain-insert floor on `schedules` schedules, `rounds` times each.

    The bench data is committed and analysed first, as production data is (autovacuum keeps
    statistics current); every timed run is rolled back and the tables vacuumed before the
    next, and the bench households are deleted at the end.
    """
    tag = f"bench-{uuid.uuid4()}"
    params: dict[str, object] = {"tag": tag, "n": schedules, "now": BENCH_NOW}
    phase1_runs: list[float] = []
    baseline_runs: list[float] = []
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("set synchronous_commit = off")
        try:
            for statement in _SETUP:
                conn.execute(statement.encode(), params)
                conn.execute(_VACUUM)
            for _ in range(rounds):
                for runs, work, what in (
                    (baseline_runs, list(_BASELINE), "the baseline wrote"),
                    (phase1_runs, ["select queue_upcoming_calls(%(now)s)"], "phase 1 queued"),
                ):
                    conn.execute(_VACUUM)
                    seconds, rows = _timed(conn, work, params)
                    if rows != schedules:
                        raise CallPanionError(f"{what} {rows} calls, expected {schedules}")
                    runs.append(seconds)
        finally:
            conn.execute("delete from households where name = %(tag)s", params)
            conn.execute(_VACUUM)
    return ScheduleBench(
        schedules=schedules,
        phase1_s=statistics.median(phase1_runs),
        baseline_s=statistics.median(baseline_runs),
        phase1_runs=phase1_runs,
        baseline_runs=baseline_runs,
    )


def report_schedule(result: ScheduleBench) -> str:
    """A readable table, then one JSON line with the figures."""

    def runs(values: list[float]) -> str:
        return ", ".join(f"{v:.3f}" for v in values)

    lines = [
        f"phase 1 vs plain INSERT … SELECT, {result.schedules:,} schedules due in the same minute",
        f"{'':<34}{'median s':>10}{'rows/s':>12}   runs (s)",
        f"{'queue_upcoming_calls()':<34}{result.phase1_s:>10.3f}"
        f"{result.schedules / result.phase1_s:>12,.0f}   {runs(result.phase1_runs)}",
        f"{'plain INSERT … SELECT (baseline)':<34}{result.baseline_s:>10.3f}"
        f"{result.schedules / result.baseline_s:>12,.0f}   {runs(result.baseline_runs)}",
        f"ratio phase 1 / baseline: {result.ratio:.2f}x",
        json.dumps(
            {
                "schedules": result.schedules,
                "phase1_s": round(result.phase1_s, 4),
                "baseline_s": round(result.baseline_s, 4),
                "ratio": round(result.ratio, 3),
            }
        ),
    ]
    return "\n".join(lines)
