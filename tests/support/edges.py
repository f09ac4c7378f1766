"""Rows for the state-machine edge tests, inserted exactly as each scenario needs them.

A plain support module (tests/support, never a conftest): the scenarios put sessions, queue rows and alerts
in the states they need directly, so each test reaches the one edge it is about. Everything
happens inside the `db` fixture's transaction, at times before the database's clock (the
webhook checks a report's times against now).
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from tests.support.world import call_binding

Conn = psycopg.Connection[dict[str, Any]]

#: A Monday morning well before the real clock.
OCCURRENCE = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
CONCERNS = ["wellbeing_concern", "safety_concern"]
WITHDRAWN = "withdrawn: a conversation for this occurrence took place (attempt {})"


def row(db: Conn, query: Any, params: Any = None) -> dict[str, Any]:
    """The one row a query returns."""
    rows = db.execute(query, params).fetchall()
    assert len(rows) == 1, (query, rows)
    return rows[0]


@dataclass(frozen=True)
class Family:
    """A household with one relative, its active device and a member."""

    household: uuid.UUID
    relative: uuid.UUID
    device: uuid.UUID
    member: uuid.UUID


def add_family(db: Conn) -> Family:
    """A household, a member, a relative in UTC and an active iOS device."""
    household = row(db, "insert into households (name) values ('Edges') returning id")["id"]
    member = row(
        db,
        "insert into auth.users (email) values (%s) returning id",
        [f"{uuid.uuid4().hex}@example.test"],
    )["id"]
    db.execute(
        "insert into household_members (household_id, user_id, role) values (%s, %s, 'admin')",
        [household, member],
    )
    relative = row(
        db,
        "insert into relatives (household_id, display_name, timezone)"
        " values (%s, 'Nan', 'UTC') returning id",
        [household],
    )["id"]
    device = row(
        db,
        """insert into device_pairs (household_id, relative_id, status, platform, voip_token,
               secret_hash, paired_at)
           values (%s, %s, 'active', 'ios', %s, 'h', now()) returning id""",
        [household, relative, secrets.token_hex(32)],
    )["id"]
    return Family(household, relative, device, member)


def add_schedule(db: Conn, family: Family, max_attempts: int = 5) -> uuid.UUID:
    """A daily 09:30 schedule of the family's relative (its phases are never run here)."""
    return row(  # type: ignore[no-any-return]
        db,
        """insert into schedules (relative_id, kind, local_time, days_of_week, max_attempts)
           values (%s, 'recurring', '09:30', '{1,2,3,4,5,6,7}', %s) returning id""",
        [family.relative, max_attempts],
    )["id"]


def add_session(
    db: Conn,
    family: Family,
    schedule: uuid.UUID | None,
    occurrence: datetime,
    attempt: int,
    status: str,
    *,
    max_attempts: int = 5,
    **times: Any,
) -> uuid.UUID:
    """A session of `schedule` (None: call now) in `status`, with the times given and the
    ones its state implies (ringing_at for a rung call, answered_at for an answered one)."""
    columns: dict[str, Any] = {
        "status": status,
        "attempt": attempt,
        "max_attempts": max_attempts,
        "created_at": occurrence - timedelta(minutes=5),
        "origin": "call_now" if schedule is None else ("schedule" if attempt == 1 else "retry"),
    }
    if status not in ("queued", "expired", "cancelled"):
        columns["ringing_at"] = occurrence
    if status in ("accepted", "in_progress", "completed"):
        columns["answered_at"] = occurrence + timedelta(seconds=5)
    if status in ("missed", "declined", "completed"):
        columns["ended_at"] = occurrence + timedelta(seconds=45)
    columns.update(times)
    query = sql.SQL(
        """insert into call_sessions (household_id, relative_id, schedule_id, device_id,
               occurrence_at, {}) values (%s, %s, %s, %s, %s, {}) returning id"""
    ).format(
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    return row(  # type: ignore[no-any-return]
        db,
        query,
        [family.household, family.relative, schedule, family.device, occurrence, *columns.values()],
    )["id"]


def add_queue_row(db: Conn, session: uuid.UUID, status: str, **columns: Any) -> uuid.UUID:
    """The session's queue row in `status` (a claimed one with a worker's live lease)."""
    if status == "claimed":
        columns = {"locked_by": "worker-a", "locked_until": datetime.now(UTC), **columns}
    extra = sql.SQL("").join(sql.SQL(", {}").format(sql.Identifier(c)) for c in columns)
    values = sql.SQL("").join(sql.SQL(", {}").format(sql.Placeholder()) for _ in columns)
    query = sql.SQL(
        """insert into notification_queue (call_session_id, household_id, schedule_id,
               device_id, occurrence_at, attempt, send_at, deadline_at, platform, provider,
               push_token, status{})
           select id, household_id, schedule_id, device_id, occurrence_at, attempt,
                  occurrence_at, occurrence_at + interval '2 minutes', 'ios', 'apns', %s,
                  %s{} from call_sessions where id = %s returning id"""
    ).format(extra, values)
    return row(  # type: ignore[no-any-return]
        db, query, [secrets.token_hex(32), status, *columns.values(), session]
    )["id"]


def add_missed_alert(
    db: Conn,
    family: Family,
    schedule: uuid.UUID | None,
    occurrence: datetime,
    session: uuid.UUID | None,
    kind: str = "missed_calls",
) -> uuid.UUID:
    """An open alert (missed_calls: shaped as phase 2 raises it) for the occurrence."""
    return row(  # type: ignore[no-any-return]
        db,
        """insert into alerts (household_id, relative_id, call_session_id, device_id, kind,
               severity, message, details, dedupe_key)
           values (%s, %s, %s, %s, %s, 'critical', 'Nan missed her call', %s, %s)
           returning id""",
        [
            family.household,
            family.relative,
            session,
            family.device,
            kind,
            Jsonb(
                {
                    "schedule_id": str(schedule) if schedule else None,
                    "occurrence_at": occurrence.isoformat(),
                    "attempts": 1,
                }
            ),
            f"{kind}:{schedule or session}:{occurrence.isoformat()}",
        ],
    )["id"]


def event(
    db: Conn,
    family: Family,
    session: uuid.UUID,
    name: str,
    at: datetime,
    conversation_id: str | None = None,
) -> dict[str, Any]:
    """A device event, as the API records it (record_device_event)."""
    result = row(
        db,
        "select record_device_event(%s, %s, %s, %s, %s) as r",
        [family.device, session, name, at, conversation_id],
    )["r"]
    assert isinstance(result, dict)
    return result


def deliver(db: Conn, payload: dict[str, Any]) -> dict[str, Any]:
    """Store and ingest a webhook event exactly as the API does. A report naming a
    `call_session_id` is a genuine one: it carries the `call_binding` the API gave that
    session's own device (issue 25), unless the payload sets one itself."""
    variables = payload["data"]["conversation_initiation_client_data"]["dynamic_variables"]
    if "call_session_id" in variables and "call_binding" not in variables:
        variables["call_binding"] = call_binding(db, variables["call_session_id"])
    stored = row(db, "select * from store_webhook_event(%s, 0)", [Jsonb(payload)])
    result = row(db, "select process_webhook_event(%s, %s) as r", [stored["event_id"], CONCERNS])[
        "r"
    ]
    assert isinstance(result, dict)
    return result


def session(db: Conn, session_id: uuid.UUID) -> dict[str, Any]:
    """The session's row."""
    return row(db, "select * from call_sessions where id = %s", [session_id])


def queue_status(db: Conn, queue_id: uuid.UUID) -> str:
    """The queue row's status."""
    status = row(db, "select status from notification_queue where id = %s", [queue_id])["status"]
    assert isinstance(status, str)
    return status


def alert(db: Conn, alert_id: uuid.UUID) -> dict[str, Any]:
    """The alert's row."""
    return row(db, "select * from alerts where id = %s", [alert_id])


def conversation() -> str:
    """A fresh ElevenLabs-shaped conversation id."""
    return f"conv_{uuid.uuid4().hex}"


def unix(at: datetime) -> int:
    """Seconds since the epoch, as the webhook reports times."""
    return int(at.timestamp())
