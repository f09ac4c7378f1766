"""Row Level Security from the attacker's side.

Every table x every operation x every kind of caller, acting as PostgREST does (role plus
`request.jwt.claims`), against household A's rows. Each cell asserts allowed or denied; a
statement that fails for any other reason than a privilege/RLS refusal fails the test, so a
"denied" cell can never pass merely because the probe statement was broken.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import LiteralString, cast

import psycopg
import pytest
from psycopg import errors

from tests.support.db import Conn, acting_as, affected, one
from tests.support.world import World, apns_token, build_world


@dataclass(frozen=True)
class Probe:
    sql: LiteralString
    params: Callable[[World], list[object]]


S, AA, MA, AB, OUT, ANON = "service_role", "admin_a", "member_a", "admin_b", "outsider", "anon"
ACTORS = (S, AA, MA, AB, OUT, ANON)
EVERYONE_IN_A = {S, AA, MA}
ADMIN_OF_A = {S, AA}
SERVICE_ONLY = {S}

# table -> operation -> (probe against household A, who may do it)
MATRIX: dict[str, dict[str, tuple[Probe, set[str]]]] = {
    "households": {
        "select": (Probe("select count(*) as n from households where id = %s", lambda w: [w.a.id]), EVERYONE_IN_A),
        "insert": (Probe("insert into households (name) values ('Intruders') returning 1", lambda w: []), SERVICE_ONLY),
        "update": (Probe("update households set name = 'Renamed' where id = %s returning 1", lambda w: [w.a.id]), ADMIN_OF_A),
        "delete": (Probe("delete from households where id = %s returning 1", lambda w: [w.a.id]), ADMIN_OF_A),
    },
    "household_members": {
        "select": (Probe("select count(*) as n from household_members where household_id = %s and user_id = %s", lambda w: [w.a.id, w.a.members["member_a2"]]), EVERYONE_IN_A),
        "insert": (Probe("insert into household_members (household_id, user_id, role) values (%s, %s, 'admin') returning 1", lambda w: [w.a.id, w.outsider]), ADMIN_OF_A),
        "update": (Probe("update household_members set role = 'admin' where household_id = %s and user_id = %s returning 1", lambda w: [w.a.id, w.a.members["member_a2"]]), ADMIN_OF_A),
        "delete": (Probe("delete from household_members where household_id = %s and user_id = %s returning 1", lambda w: [w.a.id, w.a.members["member_a2"]]), ADMIN_OF_A),
    },
    "relatives": {
        "select": (Probe("select count(*) as n from relatives where id = %s", lambda w: [w.a.relative]), EVERYONE_IN_A),
        "insert": (Probe("insert into relatives (household_id, display_name, timezone) values (%s, 'Dad', 'Europe/Paris') returning 1", lambda w: [w.a.id]), ADMIN_OF_A),
        "update": (Probe("update relatives set display_name = 'Mother' where id = %s returning 1", lambda w: [w.a.relative]), ADMIN_OF_A),
        "delete": (Probe("delete from relatives where id = %s returning 1", lambda w: [w.a.relative]), ADMIN_OF_A),
    },
    "device_pairs": {
        "select": (Probe("select count(id) as n from device_pairs where id = %s", lambda w: [w.a.device]), EVERYONE_IN_A),
        "insert": (Probe("insert into device_pairs (household_id, relative_id, status, pairing_code_hash, pairing_code_expires_at) values (%s, %s, 'pending', 'h', now()) returning 1", lambda w: [w.a.id, w.a.relative]), SERVICE_ONLY),
        "update": (Probe("update device_pairs set label = 'Kitchen iPad' where id = %s returning 1", lambda w: [w.a.device]), ADMIN_OF_A),
        "delete": (Probe("delete from device_pairs where id = %s returning 1", lambda w: [w.a.device]), ADMIN_OF_A),
    },
    "schedules": {
        "select": (Probe("select count(*) as n from schedules where id = %s", lambda w: [w.a.schedule]), EVERYONE_IN_A),
        "insert": (Probe("insert into schedules (household_id, relative_id, local_time, days_of_week) values (%s, %s, '10:00', '{2}') returning 1", lambda w: [w.a.id, w.a.relative]), EVERYONE_IN_A),
        "update": (Probe("update schedules set title = 'Lunch call' where id = %s returning 1", lambda w: [w.a.schedule]), EVERYONE_IN_A),
        "delete": (Probe("delete from schedules where id = %s returning 1", lambda w: [w.a.schedule]), ADMIN_OF_A),
    },
    "call_sessions": {
        "select": (Probe("select count(*) as n from call_sessions where id = %s", lambda w: [w.a.session]), EVERYONE_IN_A),
        "insert": (Probe("insert into call_sessions (household_id, relative_id, occurrence_at, origin) values (%s, %s, now(), 'call_now') returning 1", lambda w: [w.a.id, w.a.relative]), SERVICE_ONLY),
        "update": (Probe("update call_sessions set status = 'completed' where id = %s returning 1", lambda w: [w.a.session]), SERVICE_ONLY),
        "delete": (Probe("delete from call_sessions where id = %s returning 1", lambda w: [w.a.session]), SERVICE_ONLY),
    },
    "notification_queue": {
        "select": (Probe("select count(*) as n from notification_queue where id = %s", lambda w: [w.a.queue_row]), SERVICE_ONLY),
        "insert": (Probe("insert into notification_queue (call_session_id, household_id, occurrence_at, send_at, deadline_at, platform, provider, push_token) values (%s, %s, now(), now(), now(), 'ios', 'apns', %s) returning 1", lambda w: [w.a.spare_session, w.a.id, apns_token()]), SERVICE_ONLY),
        "update": (Probe("update notification_queue set push_token = %s where id = %s returning 1", lambda w: [apns_token(), w.a.queue_row]), SERVICE_ONLY),
        "delete": (Probe("delete from notification_queue where id = %s returning 1", lambda w: [w.a.queue_row]), SERVICE_ONLY),
    },
    "call_logs": {
        "select": (Probe("select count(*) as n from call_logs where id = %s", lambda w: [w.a.call_log]), EVERYONE_IN_A),
        "insert": (Probe("insert into call_logs (call_session_id, household_id, relative_id, outcome) values (%s, %s, %s, 'completed') returning 1", lambda w: [w.a.spare_session, w.a.id, w.a.relative]), SERVICE_ONLY),
        "update": (Probe("update call_logs set summary = 'forged' where id = %s returning 1", lambda w: [w.a.call_log]), SERVICE_ONLY),
        "delete": (Probe("delete from call_logs where id = %s returning 1", lambda w: [w.a.call_log]), SERVICE_ONLY),
    },
    "webhook_events": {
        "select": (Probe("select count(*) as n from webhook_events where id = %s", lambda w: [w.a.webhook_event]), SERVICE_ONLY),
        "insert": (Probe("insert into webhook_events (event_type, dedupe_key, household_id) values ('post_call_transcription', %s, %s) returning 1", lambda w: [uuid.uuid4().hex, w.a.id]), SERVICE_ONLY),
        "update": (Probe("update webhook_events set status = 'processed' where id = %s returning 1", lambda w: [w.a.webhook_event]), SERVICE_ONLY),
        "delete": (Probe("delete from webhook_events where id = %s returning 1", lambda w: [w.a.webhook_event]), SERVICE_ONLY),
    },
    "alerts": {
        "select": (Probe("select count(*) as n from alerts where id = %s", lambda w: [w.a.alert]), EVERYONE_IN_A),
        "insert": (Probe("insert into alerts (household_id, kind, message) values (%s, 'call_failed', 'forged') returning 1", lambda w: [w.a.id]), SERVICE_ONLY),
        "update": (Probe("update alerts set acknowledged_at = now() where id = %s returning 1", lambda w: [w.a.alert]), SERVICE_ONLY),
        "delete": (Probe("delete from alerts where id = %s returning 1", lambda w: [w.a.alert]), SERVICE_ONLY),
    },
    # Issue 21. contact_methods: a member reads only their own; every write goes through the
    # RPCs (verification). member_alert_settings: a member writes only their own row.
    "contact_methods": {
        "select": (Probe("select count(*) as n from contact_methods where id = %s", lambda w: [w.a.contact_method]), {S, MA}),
        "insert": (Probe("insert into contact_methods (household_id, user_id, channel, address, verified_at) values (%s, %s, 'sms', '+447700900999', now()) returning 1", lambda w: [w.a.id, w.a.members["member_a"]]), SERVICE_ONLY),
        "update": (Probe("update contact_methods set verified_at = now(), address = 'stranger@example.test' where id = %s returning 1", lambda w: [w.a.contact_method]), SERVICE_ONLY),
        "delete": (Probe("delete from contact_methods where id = %s returning 1", lambda w: [w.a.contact_method]), SERVICE_ONLY),
    },
    "member_alert_settings": {
        "select": (Probe("select count(*) as n from member_alert_settings where household_id = %s and user_id = %s", lambda w: [w.a.id, w.a.members["member_a"]]), EVERYONE_IN_A),
        "insert": (Probe("insert into member_alert_settings (household_id, user_id, quiet_start, quiet_end) values (%s, %s, '00:00', '23:59') returning 1", lambda w: [w.a.id, w.a.members["member_a2"]]), SERVICE_ONLY),
        "update": (Probe("update member_alert_settings set quiet_start = '00:00', quiet_end = '23:59' where household_id = %s and user_id = %s returning 1", lambda w: [w.a.id, w.a.members["member_a"]]), {S, MA}),
        "delete": (Probe("delete from member_alert_settings where household_id = %s and user_id = %s returning 1", lambda w: [w.a.id, w.a.members["member_a"]]), {S, MA}),
    },
    "escalation_policies": {
        "select": (Probe("select count(*) as n from escalation_policies where household_id = %s", lambda w: [w.a.id]), EVERYONE_IN_A),
        "insert": (Probe("insert into escalation_policies (household_id, wait) values (%s, '5 minutes') on conflict (household_id) do update set wait = excluded.wait returning 1", lambda w: [w.a.id]), ADMIN_OF_A),
        "update": (Probe("update escalation_policies set repeats = 3 where household_id = %s returning 1", lambda w: [w.a.id]), ADMIN_OF_A),
        "delete": (Probe("delete from escalation_policies where household_id = %s returning 1", lambda w: [w.a.id]), ADMIN_OF_A),
    },
    "escalation_contacts": {
        "select": (Probe("select count(*) as n from escalation_contacts where household_id = %s and user_id = %s", lambda w: [w.a.id, w.a.members["admin_a"]]), EVERYONE_IN_A),
        "insert": (Probe("insert into escalation_contacts (household_id, user_id, step) values (%s, %s, 2) returning 1", lambda w: [w.a.id, w.a.members["member_a2"]]), ADMIN_OF_A),
        "update": (Probe("update escalation_contacts set step = 3 where household_id = %s and user_id = %s returning 1", lambda w: [w.a.id, w.a.members["admin_a"]]), ADMIN_OF_A),
        "delete": (Probe("delete from escalation_contacts where household_id = %s and user_id = %s returning 1", lambda w: [w.a.id, w.a.members["admin_a"]]), ADMIN_OF_A),
    },
    # Issue 24. privacy_settings: the household reads, admins write through set_privacy_settings
    # only; erasures: the household reads, written only by erase_*; transcript_reads: admins
    # read, nobody writes (read_transcript / export_relative insert as the owner).
    "privacy_settings": {
        "select": (Probe("select count(*) as n from privacy_settings where household_id = %s", lambda w: [w.a.id]), EVERYONE_IN_A),
        "insert": (Probe("insert into privacy_settings (household_id) values (%s) on conflict (household_id) do update set member_reads = 'transcripts' returning 1", lambda w: [w.a.id]), SERVICE_ONLY),
        "update": (Probe("update privacy_settings set member_reads = 'transcripts' where household_id = %s returning 1", lambda w: [w.a.id]), SERVICE_ONLY),
        "delete": (Probe("delete from privacy_settings where household_id = %s returning 1", lambda w: [w.a.id]), SERVICE_ONLY),
    },
    "erasures": {
        "select": (Probe("select count(*) as n from erasures where household_id = %s", lambda w: [w.a.id]), EVERYONE_IN_A),
        "insert": (Probe("insert into erasures (household_id, scope) values (%s, 'household') returning 1", lambda w: [w.a.id]), SERVICE_ONLY),
        "update": (Probe("update erasures set provider_done_at = now() where household_id = %s returning 1", lambda w: [w.a.id]), SERVICE_ONLY),
        "delete": (Probe("delete from erasures where household_id = %s returning 1", lambda w: [w.a.id]), SERVICE_ONLY),
    },
    "transcript_reads": {
        "select": (Probe("select count(*) as n from transcript_reads where household_id = %s", lambda w: [w.a.id]), ADMIN_OF_A),
        "insert": (Probe("insert into transcript_reads (household_id, call_session_id) values (%s, %s) returning 1", lambda w: [w.a.id, w.a.session]), set()),
        "update": (Probe("update transcript_reads set read_at = now() where household_id = %s returning 1", lambda w: [w.a.id]), set()),
        "delete": (Probe("delete from transcript_reads where household_id = %s returning 1", lambda w: [w.a.id]), set()),
    },
}  # fmt: skip

CASES = [
    pytest.param(table, op, actor, actor in allowed, id=f"{table}-{op}-{actor}")
    for table, ops in MATRIX.items()
    for op, (_, allowed) in ops.items()
    for actor in ACTORS
]


@pytest.fixture
def world(db: Conn) -> World:
    return build_world(db)


def actor_identity(world: World, actor: str) -> tuple[str, uuid.UUID | None]:
    if actor == S:
        return "service_role", None
    if actor == ANON:
        return "anon", None
    if actor == OUT:
        return "authenticated", world.outsider
    household = world.a if actor in (AA, MA) else world.b
    return "authenticated", household.members[actor]


def attempt(conn: Conn, probe: Probe, world: World, op: str) -> bool:
    """Run the probe; True when the operation took effect, False when it was refused."""
    try:
        rows = conn.execute(probe.sql, probe.params(world)).fetchall()
    except errors.InsufficientPrivilege:
        return False  # table/column privilege or a WITH CHECK (RLS) violation
    except errors.ForeignKeyViolation as error:
        # A row the caller cannot see (RLS) is "not found" to the defaults trigger.
        assert "not found" in str(error)
        return False
    if op == "select":
        count = rows[0]["n"]
        assert count in (0, 1)
        return count == 1
    return len(rows) == 1


def test_every_public_table_is_in_the_matrix_and_has_rls(db: Conn) -> None:
    rows = db.execute(
        """select c.relname, c.relrowsecurity from pg_class c
           join pg_namespace n on n.oid = c.relnamespace
           where n.nspname = 'public' and c.relkind = 'r'"""
    ).fetchall()
    assert {r["relname"] for r in rows} == set(MATRIX)
    assert all(r["relrowsecurity"] for r in rows), rows


@pytest.mark.parametrize(("table", "op", "actor", "allowed"), CASES)
def test_rls_matrix(db: Conn, world: World, table: str, op: str, actor: str, allowed: bool) -> None:
    probe, _ = MATRIX[table][op]
    role, user_id = actor_identity(world, actor)
    with acting_as(db, role, user_id):
        assert attempt(db, probe, world, op) is allowed


def test_admin_of_b_has_admin_rights_on_b_only(db: Conn, world: World) -> None:
    with acting_as(db, "authenticated", world.b.members[AB]):
        assert (
            affected(
                db,
                "update relatives set display_name = 'Nan' where id = %s returning 1",
                [world.b.relative],
            )
            == 1
        )
    with acting_as(db, "authenticated", world.b.members[AB]):
        assert (
            affected(db, "delete from schedules where id = %s returning 1", [world.b.schedule]) == 1
        )
    with acting_as(db, "authenticated", world.b.members[AB]):
        assert (
            affected(db, "delete from schedules where id = %s returning 1", [world.a.schedule]) == 0
        )


@pytest.mark.parametrize(
    "column", ["secret_hash", "pairing_code_hash", "voip_token", "apns_token", "fcm_token"]
)
@pytest.mark.parametrize("actor", [AA, MA])
def test_device_secrets_and_tokens_are_never_readable(
    db: Conn, world: World, column: LiteralString, actor: str
) -> None:
    with (
        acting_as(db, "authenticated", world.a.members[actor]),
        pytest.raises(
            errors.InsufficientPrivilege, match="permission denied for table device_pairs"
        ),
    ):
        db.execute(
            psycopg.sql.SQL("select {} from device_pairs").format(psycopg.sql.Identifier(column))
        )


def test_devices_view_shows_own_household_without_secrets(db: Conn, world: World) -> None:
    with acting_as(db, "authenticated", world.a.members[MA]):
        rows = db.execute("select * from devices").fetchall()
        assert [r["id"] for r in rows] == [world.a.device]
        assert not {"secret_hash", "pairing_code_hash", "voip_token", "fcm_token"} & set(rows[0])
    with acting_as(db, "authenticated", world.b.members[AB]):
        assert [r["id"] for r in db.execute("select * from devices").fetchall()] == [world.b.device]
    with acting_as(db, "anon"), pytest.raises(errors.InsufficientPrivilege):
        db.execute("select * from devices")


def test_member_cannot_promote_themselves(db: Conn, world: World) -> None:
    me = world.a.members[MA]
    with acting_as(db, "authenticated", me):
        rows = db.execute(
            "update household_members set role = 'admin' where user_id = %s returning 1", [me]
        ).fetchall()
        assert rows == []
    assert (
        one(db, "select role from household_members where user_id = %s", [me])["role"] == "member"
    )


def test_member_can_leave_their_household(db: Conn, world: World) -> None:
    me = world.a.members[MA]
    with acting_as(db, "authenticated", me):
        assert (
            affected(db, "delete from household_members where user_id = %s returning 1", [me]) == 1
        )


def test_last_admin_cannot_leave_or_step_down(db: Conn, world: World) -> None:
    admin = world.a.members[AA]
    with (
        acting_as(db, "authenticated", admin),
        pytest.raises(errors.CheckViolation, match="must keep at least one admin"),
    ):
        db.execute("delete from household_members where user_id = %s", [admin])
    with (
        acting_as(db, "authenticated", admin),
        pytest.raises(errors.CheckViolation, match="must keep at least one admin"),
    ):
        db.execute("update household_members set role = 'member' where user_id = %s", [admin])
    # Deleting the whole household is fine: its admin goes with it.
    with acting_as(db, "authenticated", admin):
        assert affected(db, "delete from households where id = %s returning 1", [world.a.id]) == 1


def test_member_cannot_attach_a_schedule_to_another_households_relative(
    db: Conn, world: World
) -> None:
    with (
        acting_as(db, "authenticated", world.a.members[MA]),
        pytest.raises(errors.ForeignKeyViolation, match=r"relative .* not found"),
    ):
        db.execute(
            "insert into schedules (household_id, relative_id, local_time, days_of_week)"
            " values (%s, %s, '10:00', '{1}')",
            [world.a.id, world.b.relative],
        )


def test_member_cannot_move_a_schedule_to_another_household(db: Conn, world: World) -> None:
    with (
        acting_as(db, "authenticated", world.a.members[MA]),
        pytest.raises((errors.ForeignKeyViolation, errors.InsufficientPrivilege)),
    ):
        db.execute(
            "update schedules set relative_id = %s where id = %s",
            [world.b.relative, world.a.schedule],
        )


def test_schedule_created_by_is_taken_from_the_jwt(db: Conn, world: World) -> None:
    me = world.a.members[MA]
    with acting_as(db, "authenticated", me):
        row = one(
            db,
            "insert into schedules (relative_id, local_time, days_of_week)"
            " values (%s, '08:00', '{6,7}') returning created_by, household_id, timezone",
            [world.a.relative],
        )
        assert row == {"created_by": me, "household_id": world.a.id, "timezone": "Europe/London"}


def test_create_household_makes_the_caller_its_admin(db: Conn, world: World) -> None:
    with acting_as(db, "authenticated", world.outsider):
        household = one(db, "select * from create_household('The Joneses')")
        members = db.execute(
            "select user_id, role from household_members where household_id = %s", [household["id"]]
        ).fetchall()
        assert members == [{"user_id": world.outsider, "role": "admin"}]
    with acting_as(db, "anon"), pytest.raises(errors.InsufficientPrivilege):
        db.execute("select create_household('Anon family')")


def test_acknowledge_alert_only_within_own_household(db: Conn, world: World) -> None:
    with (
        acting_as(db, "authenticated", world.b.members[AB]),
        pytest.raises(errors.NoDataFound, match="not found"),
    ):
        db.execute("select acknowledge_alert(%s)", [world.a.alert])
    with acting_as(db, "authenticated", world.a.members[MA]):
        row = one(db, "select * from acknowledge_alert(%s)", [world.a.alert])
        assert row["acknowledged_by"] == world.a.members[MA]
        assert row["acknowledged_at"] is not None
    with acting_as(db, "anon"), pytest.raises(errors.InsufficientPrivilege):
        db.execute("select acknowledge_alert(%s)", [world.a.alert])


@pytest.mark.parametrize("actor", [MA, AB, OUT])
def test_only_an_admin_of_the_household_revokes_its_device(
    db: Conn, world: World, actor: str
) -> None:
    role, user_id = actor_identity(world, actor)
    with acting_as(db, role, user_id), pytest.raises(errors.NoDataFound, match="not found"):
        db.execute("select revoke_device(%s)", [world.a.device])
    assert (
        one(db, "select status from device_pairs where id = %s", [world.a.device])["status"]
        == "active"
    )


def test_admin_revokes_device(db: Conn, world: World) -> None:
    with acting_as(db, "authenticated", world.a.members[AA]):
        db.execute("select revoke_device(%s, 'lost phone')", [world.a.device])
        row = one(
            db,
            "select status, revoked_reason, revoked_at from devices where id = %s",
            [world.a.device],
        )
        assert row["status"] == "revoked"
        assert row["revoked_reason"] == "lost phone"
        assert row["revoked_at"] is not None


def test_anon_holds_no_privilege_on_any_table(db: Conn) -> None:
    rows = db.execute(
        """select table_name, privilege_type from information_schema.role_table_grants
           where grantee = 'anon' and table_schema = 'public'"""
    ).fetchall()
    assert rows == []


def test_realtime_publication_carries_dashboard_tables_without_secrets(db: Conn) -> None:
    rows = db.execute(
        "select tablename, attnames from pg_publication_tables where pubname = 'supabase_realtime'"
    ).fetchall()
    published = {str(r["tablename"]): set(cast(list[str], r["attnames"])) for r in rows}
    assert set(published) == {
        "schedules",
        "call_sessions",
        "call_logs",
        "alerts",
        "device_pairs",
        "notification_queue",  # the worker's Realtime wake-ups
    }
    secret = {"secret_hash", "pairing_code_hash", "voip_token", "apns_token", "fcm_token"}
    assert not published["device_pairs"] & secret
    assert {"id", "status", "last_seen_at"} <= published["device_pairs"]
    # The queue: only what a wake-up hint needs, never tokens or the payload.
    assert published["notification_queue"] == {"id", "status", "send_at", "next_attempt_at"}


def test_nobody_but_the_service_role_reads_the_published_queue(db: Conn, world: World) -> None:
    # Realtime delivers a change to a subscriber only if that subscriber may SELECT the row.
    for role in ("anon", "authenticated"):
        user = world.a.members[AA] if role == "authenticated" else None
        with acting_as(db, role, user), pytest.raises(errors.InsufficientPrivilege):
            db.execute("select id, send_at from notification_queue")
