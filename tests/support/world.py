"""Test data: two households with one row in every table, built inside the test transaction."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field

from tests.support.db import Conn, one


def apns_token() -> str:
    return secrets.token_hex(32)


def fcm_token() -> str:
    return f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(100)}"


@dataclass
class Household:
    id: uuid.UUID
    relative: uuid.UUID
    device: uuid.UUID
    schedule: uuid.UUID
    session: uuid.UUID
    spare_session: uuid.UUID  # a session with no queue row or log, for insert checks
    queue_row: uuid.UUID
    call_log: uuid.UUID
    webhook_event: uuid.UUID
    alert: uuid.UUID
    members: dict[str, uuid.UUID] = field(default_factory=dict)
    # member_a's (or the first non-admin's) verified email method, when the household has one.
    contact_method: uuid.UUID | None = None


@dataclass
class World:
    a: Household
    b: Household
    outsider: uuid.UUID


def add_user(conn: Conn, email: str | None = None) -> uuid.UUID:
    row = one(
        conn,
        "insert into auth.users (email) values (%s) returning id",
        [email or f"{uuid.uuid4().hex}@example.test"],
    )
    return row["id"]  # type: ignore[return-value]


def add_household(conn: Conn, name: str, people: dict[str, str]) -> Household:
    """A household with its members (label -> role) and one row in every table."""
    hid = one(conn, "insert into households (name) values (%s) returning id", [name])["id"]
    members: dict[str, uuid.UUID] = {}
    for label, role in people.items():
        uid = add_user(conn)
        conn.execute(
            "insert into household_members (household_id, user_id, role) values (%s, %s, %s)",
            [hid, uid, role],
        )
        members[label] = uid
    rel = one(
        conn,
        "insert into relatives (household_id, display_name, timezone)"
        " values (%s, 'Mum', 'Europe/London') returning id",
        [hid],
    )["id"]
    dev = one(
        conn,
        """insert into device_pairs (household_id, relative_id, status, platform, voip_token,
               apns_token, fcm_token, secret_hash, paired_at)
           values (%s, %s, 'active', 'ios', %s, %s, %s, 'hash-of-secret', now()) returning id""",
        [hid, rel, apns_token(), apns_token(), fcm_token()],
    )["id"]
    sched = one(
        conn,
        "insert into schedules (relative_id, local_time, days_of_week)"
        " values (%s, '09:30', '{1,3,5}') returning id",
        [rel],
    )["id"]
    sessions = []
    for minutes in (0, 1):
        sessions.append(
            one(
                conn,
                """insert into call_sessions (household_id, relative_id, schedule_id, device_id,
                       occurrence_at) values (%s, %s, %s, %s, now() + make_interval(mins => %s))
                   returning id""",
                [hid, rel, sched, dev, minutes],
            )["id"]
        )
    queue = one(
        conn,
        """insert into notification_queue (call_session_id, household_id, schedule_id, device_id,
               occurrence_at, send_at, deadline_at, platform, provider, push_token)
           select id, household_id, schedule_id, device_id, occurrence_at, occurrence_at,
                  occurrence_at + interval '2 minutes', 'ios', 'apns', %s
           from call_sessions where id = %s returning id""",
        [apns_token(), sessions[0]],
    )["id"]
    log = one(
        conn,
        """insert into call_logs (call_session_id, household_id, relative_id, outcome, summary)
           values (%s, %s, %s, 'completed', 'Talked about the garden') returning id""",
        [sessions[0], hid, rel],
    )["id"]
    hook = one(
        conn,
        """insert into webhook_events (event_type, dedupe_key, payload, household_id)
           values ('post_call_transcription', %s, '{}', %s) returning id""",
        [uuid.uuid4().hex, hid],
    )["id"]
    alert = one(
        conn,
        """insert into alerts (household_id, relative_id, kind, message)
           values (%s, %s, 'missed_calls', 'Mum missed 3 calls') returning id""",
        [hid, rel],
    )["id"]
    # Issue 21: one row in each alert table (a member's method and quiet hours, the policy,
    # the first admin at step 1 of the chain).
    member = next((uid for label, uid in members.items() if people[label] == "member"), None)
    admin = next(uid for label, uid in members.items() if people[label] == "admin")
    method = None
    if member is not None:
        method = one(
            conn,
            """insert into contact_methods (household_id, user_id, channel, address, verified_at)
               values (%s, %s, 'email', %s, now()) returning id""",
            [hid, member, f"{uuid.uuid4().hex[:12]}@example.test"],
        )["id"]
        conn.execute(
            """insert into member_alert_settings (household_id, user_id, quiet_start, quiet_end)
               values (%s, %s, '22:00', '07:00')""",
            [hid, member],
        )
    conn.execute("insert into escalation_policies (household_id) values (%s)", [hid])
    # Issue 24: an erasure and a transcript read (privacy_settings is made with the household).
    conn.execute(
        "insert into erasures (household_id, scope, requested_by) values (%s, 'relative', %s)",
        [hid, admin],
    )
    conn.execute(
        "insert into transcript_reads (household_id, call_session_id, user_id) values (%s, %s, %s)",
        [hid, sessions[0], admin],
    )
    conn.execute(
        "insert into escalation_contacts (household_id, user_id, step) values (%s, %s, 1)",
        [hid, admin],
    )
    return Household(
        id=hid,  # type: ignore[arg-type]
        relative=rel,  # type: ignore[arg-type]
        device=dev,  # type: ignore[arg-type]
        schedule=sched,  # type: ignore[arg-type]
        session=sessions[0],  # type: ignore[arg-type]
        spare_session=sessions[1],  # type: ignore[arg-type]
        queue_row=queue,  # type: ignore[arg-type]
        call_log=log,  # type: ignore[arg-type]
        webhook_event=hook,  # type: ignore[arg-type]
        alert=alert,  # type: ignore[arg-type]
        members=members,
        contact_method=method,  # type: ignore[arg-type]
    )


def build_world(conn: Conn) -> World:
    a = add_household(
        conn, "Household A", {"admin_a": "admin", "member_a": "member", "member_a2": "member"}
    )
    b = add_household(conn, "Household B", {"admin_b": "admin"})
    return World(a=a, b=b, outsider=add_user(conn))


def call_binding(conn: Conn, session_id: uuid.UUID | str) -> str:
    """The `call_binding` the API gives the session's own device on `accepted` (issue 25):
    what a genuine post-call webhook echoes back beside `call_session_id`."""
    row = conn.execute(
        "select private.conversation_binding(c.id, c.device_id) as binding"
        " from call_sessions c where c.id = %s",
        [session_id],
    ).fetchone()
    assert row is not None, f"no call session {session_id}"
    binding = row["binding"] if isinstance(row, dict) else row[0]
    assert isinstance(binding, str)
    return binding
