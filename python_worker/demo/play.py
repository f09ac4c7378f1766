"""`callpanion demo`: bring everything up and play two calls while printing their timeline.

Top to bottom: the local stack (with pg_cron) and its demo data; the emulators, the API and
the worker as background processes reading the emulators' settings file; a simulated phone
for each seed relative, paired for real with a code an admin created; then

(a) a scheduled call: a one-off schedule for Joe (Android) shortly after pg_cron's next
    minute, queued by pg_cron's phase 1, sent at its second, answered, talked through and
    logged by the post-call webhook;
(b) a call nobody answers: a one-off for Mum (iPhone) with two attempts, the shortest ring
    (15 s) and retry interval (1 min): it rings out twice, then the `missed_calls` alert,
    and the family is told (demo/family.py): alice by email, Web Push and SMS, then bob
    when nobody acknowledges, until bob acknowledges with the link in his email.

The timeline is what the family's dashboard shows, read from the database as it changes.
The services keep running afterwards (`make stop` stops them).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from python_worker.demo.family import set_up_family, watch_family
from python_worker.demo.services import (
    DemoDirs,
    Service,
    http_ok,
    require_free_port,
    start_service,
    stop_services,
    wait_until,
)
from python_worker.errors import CallPanionError
from python_worker.stack.cluster import LocalStack
from python_worker.stack.member import acting_as_member, member_claims
from python_worker.stack.settings import StackSettings

#: The seed's people (supabase/seed.sql).
ADMIN_EMAIL = "alice@example.com"
MUM = uuid.UUID("20000000-0000-4000-8000-000000000001")
JOE = uuid.UUID("20000000-0000-4000-8000-000000000002")
#: A schedule must be queued by pg_cron's minute tick: leave the tick this much room.
MIN_LEAD_BEFORE_TICK_S = 12
#: (a) rings this long after the tick, (b) a little earlier.
ANSWERED_AFTER_TICK_S = 20
MISSED_AFTER_TICK_S = 10
#: The whole play must be over by then (it takes about two and a half minutes).
PLAY_TIMEOUT_S = 300.0
POLL_S = 0.2
Out = Callable[[str], None]


@dataclass(frozen=True)
class DemoPorts:
    """Where the demo's API and worker listen."""

    api: int
    worker_http: int


@dataclass
class Watch:
    """What the timeline has shown so far."""

    statuses: dict[uuid.UUID, str] = field(default_factory=dict)
    pushes: dict[str, dict[str, Any]] = field(default_factory=dict)
    alerts: set[uuid.UUID] = field(default_factory=set)
    logs: set[uuid.UUID] = field(default_factory=set)
    offsets: dict[Path, int] = field(default_factory=dict)


def _clock() -> str:
    return dt.datetime.now(dt.UTC).strftime("%H:%M:%S")


def start_everything(
    stack: LocalStack, dirs: DemoDirs, ports: DemoPorts, out: Out
) -> dict[str, Service]:
    """Emulators, API and worker in the background, each waited for until ready."""
    stopped = stop_services(dirs)
    if stopped:
        out(f"stopped the previous demo's {', '.join(stopped)}")
    require_free_port(ports.api, "CALLPANION_API_PORT")
    require_free_port(ports.worker_http, "CALLPANION_WORKER_HTTP_PORT")
    dirs.env_file.unlink(missing_ok=True)
    dirs.phones.mkdir(parents=True, exist_ok=True)
    for stale in dirs.phones.glob("*.json"):
        stale.unlink()
    api_url = f"http://127.0.0.1:{ports.api}"
    env = {
        **os.environ,
        "CALLPANION_API_PORT": str(ports.api),
        "CALLPANION_WORKER_HTTP_PORT": str(ports.worker_http),
        "CALLPANION_PUBLIC_API_URL": api_url,
        "CALLPANION_DB_PORT": str(stack.settings.port),
        "CALLPANION_STACK_DIR": str(stack.settings.stack_dir),
    }
    project = stack.settings.project_dir
    services: dict[str, Service] = {}
    services["emulators"] = start_service(
        dirs,
        "emulators",
        [
            "emulators",
            "--dir",
            str(dirs.emulators),
            "--webhook-url",
            f"{api_url}/v1/webhooks/elevenlabs",
        ],
        env,
        project,
    )
    wait_until("the emulators", dirs.env_file.is_file, services["emulators"])
    out(f"{_clock()}  emulators up (FCM, APNs, ElevenLabs); settings in {dirs.env_file}")
    with_settings = ["--env-file", str(dirs.env_file)]
    services["api"] = start_service(dirs, "api", [*with_settings, "api"], env, project)
    wait_until("the API", lambda: http_ok(f"{api_url}/healthz"), services["api"])
    out(f"{_clock()}  API up on {api_url}")
    services["worker"] = start_service(dirs, "worker", [*with_settings, "worker"], env, project)
    health = f"http://127.0.0.1:{ports.worker_http}/healthz"
    wait_until("the worker", lambda: http_ok(health), services["worker"])
    out(f"{_clock()}  worker up (health {health})")
    return services


def pairing_code(conn: psycopg.Connection[Any], relative: uuid.UUID) -> tuple[str, str]:
    """A fresh pairing (its id, as the QR code carries it, and its code) for the relative,
    created as the household's admin would."""
    claims = member_claims(conn, ADMIN_EMAIL)
    with acting_as_member(conn, claims):
        row = conn.execute(
            "select pairing_id, code from public.create_pairing_code(%s)", [relative]
        ).fetchone()
    assert row is not None
    values = (row["pairing_id"], row["code"]) if isinstance(row, dict) else (row[0], row[1])
    return str(values[0]), str(values[1])


def start_phones(
    conn: psycopg.Connection[Any],
    stack: LocalStack,
    dirs: DemoDirs,
    ports: DemoPorts,
    out: Out,
) -> dict[str, Service]:
    """Mum's iPhone (rings out twice, then waits for a person) and Joe's Android tablet
    (answers after 3 s, then waits for a person), each paired with a fresh code."""
    env = {**os.environ, "CALLPANION_STACK_DIR": str(stack.settings.stack_dir)}
    phones = {
        "mum": ("ios", MUM, "ignore,ignore,manual"),
        "joe": ("android", JOE, "answer:3,manual"),
    }
    started: dict[str, Service] = {}
    for name, (platform, relative, script) in phones.items():
        pairing_id, code = pairing_code(conn, relative)
        started[name] = start_service(
            dirs,
            f"phone-{name}",
            [
                "--env-file",
                str(dirs.env_file),
                "phone",
                "run",
                "--name",
                name,
                "--platform",
                platform,
                "--pairing-id",
                pairing_id,
                "--code",
                code,
                "--api",
                f"http://127.0.0.1:{ports.api}",
                "--script",
                script,
                "--state-dir",
                str(dirs.phones),
            ],
            env,
            stack.settings.project_dir,
        )
    for name, service in started.items():
        state = dirs.phones / f"{name}.json"
        wait_until(f"{name}'s phone", state.is_file, service)
        out(
            f"{_clock()}  {name}'s simulated {phones[name][0]} phone paired with a code "
            f"(device {json.loads(state.read_text())['device_id']})"
        )
    return started


def create_schedules(conn: psycopg.Connection[Any], out: Out) -> tuple[uuid.UUID, uuid.UUID]:
    """The two one-off schedules, as the family creates them on the dashboard."""
    now = conn.execute("select now() as now").fetchone()
    assert now is not None
    db_now: dt.datetime = now["now"]
    tick = db_now.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
    if (tick - db_now).total_seconds() < MIN_LEAD_BEFORE_TICK_S:
        tick += dt.timedelta(minutes=1)
    answered_at = tick + dt.timedelta(seconds=ANSWERED_AFTER_TICK_S)
    missed_at = tick + dt.timedelta(seconds=MISSED_AFTER_TICK_S)
    claims = member_claims(conn, ADMIN_EMAIL)
    with acting_as_member(conn, claims):
        answered = conn.execute(
            """insert into public.schedules (relative_id, title, kind, run_at, max_attempts,
                   ring_timeout)
               values (%s, 'Demo: a chat with Joe', 'one_off', %s, 1, interval '30 seconds')
               returning id""",
            [JOE, answered_at],
        ).fetchone()
        missed = conn.execute(
            """insert into public.schedules (relative_id, title, kind, run_at, max_attempts,
                   retry_interval, ring_timeout)
               values (%s, 'Demo: Mum does not answer', 'one_off', %s, 2, interval '1 minute',
                       interval '15 seconds')
               returning id""",
            [MUM, missed_at],
        ).fetchone()
    assert answered is not None
    assert missed is not None
    out(f"{_clock()}  alice@example.com (dashboard) created two one-off schedules:")
    out(f"            (a) Joe at {answered_at:%H:%M:%S} UTC, answered after 3 s")
    out(
        f"            (b) Mum at {missed_at:%H:%M:%S} UTC, 2 attempts, 15 s ring, "
        "1 min retry: nobody answers"
    )
    out(f"            pg_cron's phase 1 queues both at its {tick:%H:%M:%S} tick")
    return answered["id"], missed["id"]


def _read_phone_events(dirs: DemoDirs, watch: Watch) -> None:
    for log in dirs.logs.glob("phone-*.log"):
        with log.open("rb") as handle:
            handle.seek(watch.offsets.get(log, 0))
            chunk = handle.read()
        complete = chunk.rfind(b"\n") + 1
        watch.offsets[log] = watch.offsets.get(log, 0) + complete
        for line in chunk[:complete].splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("event") == "push_received":
                watch.pushes[record["call_id"]] = record


def _sessions(conn: psycopg.Connection[Any], schedules: list[uuid.UUID]) -> list[dict[str, Any]]:
    return conn.execute(
        """
        select s.id, s.schedule_id, s.attempt, s.status, s.failure_reason, s.conversation_id,
               r.display_name as who, q.send_at,
               extract(epoch from q.send_at) as send_epoch
        from public.call_sessions s
        join public.relatives r on r.id = s.relative_id
        left join public.notification_queue q on q.call_session_id = s.id
        where s.schedule_id = any(%s)
        order by s.created_at
        """,
        [schedules],
    ).fetchall()


#: The answered path, in order: states a look may have skipped between two others.
ANSWERED_PATH = ("queued", "ringing", "accepted", "in_progress", "completed")


def _passed_through(before: str | None, now: str) -> list[str]:
    """The answered path's states strictly between `before` and `now` (none off the path)."""
    if now not in ANSWERED_PATH:
        return []
    start = ANSWERED_PATH.index(before) + 1 if before in ANSWERED_PATH else 0
    return list(ANSWERED_PATH[start : ANSWERED_PATH.index(now)])


def watch_calls(
    conn: psycopg.Connection[Any],
    dirs: DemoDirs,
    answered_schedule: uuid.UUID,
    missed_schedule: uuid.UUID,
    services: dict[str, Service],
    out: Out,
) -> dict[str, Any]:
    """Print the timeline until (a) is logged and (b) raised its alert; the JSON summary."""
    watch = Watch()
    result: dict[str, Any] = {"answered": {}, "missed": {}}
    deadline = time.monotonic() + PLAY_TIMEOUT_S
    schedules = [answered_schedule, missed_schedule]
    while True:
        for service in services.values():
            service.check_alive()
        _read_phone_events(dirs, watch)
        sessions = _sessions(conn, schedules)
        for s in sessions:
            key, status = s["id"], s["status"]
            previous = watch.statuses.get(key)
            if previous != status:
                watch.statuses[key] = status
                # A state that lasted less than one look (accepted, say) is still shown.
                for skipped in _passed_through(previous, status):
                    out(f"{_clock()}  {s['who']}, attempt {s['attempt']}: {skipped}")
                detail = ""
                push = watch.pushes.get(str(key))
                if status == "ringing" and push and s["send_epoch"] is not None:
                    late = push["provider_received_at"] - float(s["send_epoch"])
                    detail = f" (push {push['provider']}, {late:+.3f} s after its send time)"
                if s["failure_reason"]:
                    detail += f" ({s['failure_reason']})"
                out(f"{_clock()}  {s['who']}, attempt {s['attempt']}: {status}{detail}")
        session_ids = [s["id"] for s in sessions]
        for log in conn.execute(
            """select call_session_id, summary, concerns, duration_secs, mood, id
               from public.call_logs where call_session_id = any(%s)""",
            [session_ids],
        ).fetchall():
            if log["id"] not in watch.logs:
                watch.logs.add(log["id"])
                concerns = ", ".join(log["concerns"] or []) or "none"
                out(
                    f"{_clock()}  call log: {log['duration_secs']} s, mood {log['mood']}, "
                    f"concerns: {concerns}"
                )
                out(f"            summary: {log['summary']}")
        for alert in conn.execute(
            "select id, kind, message from public.alerts where call_session_id = any(%s)",
            [session_ids],
        ).fetchall():
            if alert["id"] not in watch.alerts:
                watch.alerts.add(alert["id"])
                out(f"{_clock()}  ALERT {alert['kind']}: {alert['message']}")
        answered = [s for s in sessions if s["schedule_id"] == answered_schedule]
        missed = [s for s in sessions if s["schedule_id"] == missed_schedule]
        logs = conn.execute(
            "select id, call_session_id, summary from public.call_logs"
            " where call_session_id = any(%s) and summary is not null",
            [[s["id"] for s in answered]],
        ).fetchall()
        alerts = conn.execute(
            "select kind from public.alerts where kind = 'missed_calls'"
            " and call_session_id = any(%s)",
            [[s["id"] for s in missed]],
        ).fetchall()
        if answered and logs and answered[-1]["status"] == "completed" and alerts:
            a = answered[-1]
            push = watch.pushes.get(str(a["id"]))
            lateness = (
                round(push["provider_received_at"] - float(a["send_epoch"]), 3)
                if push and a["send_epoch"] is not None
                else None
            )
            result["answered"] = {
                "session_id": str(a["id"]),
                "final_status": a["status"],
                "push_lateness_s": lateness,
                "call_log_id": str(logs[0]["id"]),
                "summary": logs[0]["summary"],
            }
            result["missed"] = {
                "session_ids": [str(s["id"]) for s in missed],
                "attempts": len(missed),
                "final_status": missed[-1]["status"],
                "alert_kind": alerts[0]["kind"],
            }
            return result
        if time.monotonic() > deadline:
            raise CallPanionError(
                f"the demo's calls did not finish within {PLAY_TIMEOUT_S:g} s; "
                f"see the logs in {dirs.logs}"
            )
        time.sleep(POLL_S)


def phone_states(dirs: DemoDirs) -> list[dict[str, Any]]:
    """Each running phone's state file (name, control address, device)."""
    return [json.loads(p.read_text()) for p in sorted(dirs.phones.glob("*.json"))]


def play(
    stack: LocalStack,
    dirs: DemoDirs,
    ports: DemoPorts,
    out: Out,
    fetch_state: Callable[[str], dict[str, Any]],
) -> dict[str, Any]:
    """Start the services and the phones, play (a) and (b); the summary for `--json`."""
    services = start_everything(stack, dirs, ports, out)
    with psycopg.connect(stack.settings.database_url, row_factory=dict_row) as conn:
        conn.autocommit = True
        _require_demo_data(conn)
        _require_pg_cron(conn)
        services |= start_phones(conn, stack, dirs, ports, out)
        household = conn.execute(
            "select household_id from public.relatives where id = %s", [MUM]
        ).fetchone()
        assert household is not None
        family = set_up_family(conn, dirs.env_file, household["household_id"], out)
        answered, missed = create_schedules(conn, out)
        result = watch_calls(conn, dirs, answered, missed, services, out)
        alert = conn.execute(
            "select id from public.alerts where kind = 'missed_calls'"
            " and call_session_id = any(%s::uuid[]) order by created_at desc limit 1",
            [result["missed"]["session_ids"]],
        ).fetchone()
        assert alert is not None
        result["missed"]["family"] = watch_family(conn, family, alert["id"], _clock, out)
    rings: list[str] = []
    for state in phone_states(dirs):
        rings += fetch_state(state["control"]).get("rung", [])
    result["duplicate_rings"] = len(rings) - len(set(rings))
    return result


def _require_demo_data(conn: psycopg.Connection[Any]) -> None:
    found = conn.execute(
        "select count(*) as n from public.relatives where id = any(%s)", [[MUM, JOE]]
    ).fetchone()
    if not found or found["n"] != 2:
        raise CallPanionError(
            "the demo needs the seed's relatives (supabase/seed.sql); "
            "run `.venv/bin/callpanion stack reset` to start over from the demo data"
        )


def _require_pg_cron(conn: psycopg.Connection[Any]) -> None:
    jobs = conn.execute(
        "select count(*) as n from cron.job where active and jobname like 'callpanion-phase%%'"
    ).fetchone()
    if not jobs or jobs["n"] != 2:
        raise CallPanionError(
            "pg_cron's callpanion-phase1-queue and callpanion-phase2-release jobs are not "
            "active in this database; the demo needs pg_cron to queue its call"
        )


def settings_dirs(settings: StackSettings) -> DemoDirs:
    """The demo's folder: `<stack root>/demo` (beside the cluster's folder)."""
    return DemoDirs(settings.stack_dir.parent / "demo")
