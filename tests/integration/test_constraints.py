"""Each invalid value is refused with a message naming the field, the value and the rule,
and a refused change leaves what was stored untouched."""

from __future__ import annotations

from typing import LiteralString

import pytest
from psycopg import errors, sql

from tests.support.db import Conn, one
from tests.support.world import World, build_world


@pytest.fixture
def world(db: Conn) -> World:
    return build_world(db)


# (update statement with %s = target id, attribute of the household with the id, expected message)
INVALID_UPDATES: list[tuple[LiteralString, str, str]] = [
    ("update call_sessions set status = 'ringingg' where id = %s", "session",
     'invalid call_sessions.status: "ringingg" is not allowed; allowed values: queued, ringing, '
     "accepted, in_progress, completed, declined, missed, failed, cancelled, expired"),
    ("update notification_queue set status = 'done' where id = %s", "queue_row",
     'invalid notification_queue.status: "done" is not allowed; allowed values: queued, due, '
     "claimed, sent, failed, expired, cancelled"),
    ("update notification_queue set provider = 'gcm' where id = %s", "queue_row",
     'invalid notification_queue.provider: "gcm" is not allowed; allowed values: apns, fcm'),
    ("update device_pairs set status = 'paired' where id = %s", "device",
     'invalid device_pairs.status: "paired" is not allowed'),
    ("update device_pairs set platform = 'windows' where id = %s", "device",
     'invalid device_pairs.platform: "windows" is not allowed; allowed values: ios, android'),
    ("update call_logs set outcome = 'great' where id = %s", "call_log",
     'invalid call_logs.outcome: "great" is not allowed'),
    ("update call_logs set call_successful = 'yes' where id = %s", "call_log",
     'invalid call_logs.call_successful: "yes" is not allowed; allowed values: success, failure, unknown'),
    ("update webhook_events set status = 'ok' where id = %s", "webhook_event",
     'invalid webhook_events.status: "ok" is not allowed'),
    ("update alerts set kind = 'spam' where id = %s", "alert",
     'invalid alerts.kind: "spam" is not allowed'),
    ("update alerts set severity = 'panic' where id = %s", "alert",
     'invalid alerts.severity: "panic" is not allowed; allowed values: info, warning, critical'),
    ("update relatives set timezone = 'Mars/Olympus_Mons' where id = %s", "relative",
     'invalid relatives.timezone: unknown time zone "Mars/Olympus_Mons"'),
    ("update relatives set timezone = 'EST' where id = %s", "relative",
     'invalid relatives.timezone: unknown time zone "EST"'),
    ("update relatives set timezone = 'UTC+5' where id = %s", "relative",
     'invalid relatives.timezone: unknown time zone "UTC+5"'),
    ("update schedules set timezone = 'Europe/Londn' where id = %s", "schedule",
     'invalid schedules.timezone: unknown time zone "Europe/Londn"'),
    ("update schedules set days_of_week = '{0,1}' where id = %s", "schedule",
     'invalid schedules.days_of_week: "{0,1}" must list ISO days of week 1 (Monday) to 7 (Sunday)'),
    ("update schedules set days_of_week = '{1,8}' where id = %s", "schedule",
     'invalid schedules.days_of_week: "{1,8}"'),
    ("update schedules set days_of_week = '{3,3}' where id = %s", "schedule",
     'invalid schedules.days_of_week: "{3,3}"'),
    ("update schedules set days_of_week = '{}' where id = %s", "schedule",
     'invalid schedules.days_of_week: "{}"'),
    ("update schedules set days_of_week = '{1,NULL}' where id = %s", "schedule",
     'invalid schedules.days_of_week: "{1,NULL}"'),
    ("update schedules set max_attempts = 6 where id = %s", "schedule",
     'invalid schedules.max_attempts: "6" is out of range: must be between 1 and 5'),
    ("update schedules set max_attempts = 0 where id = %s", "schedule",
     'invalid schedules.max_attempts: "0" is out of range'),
    ("update schedules set ring_timeout = '5 seconds' where id = %s", "schedule",
     'invalid schedules.ring_timeout: "00:00:05" is out of range: must be between 00:00:15 and 00:02:00'),
    ("update schedules set ring_timeout = '10 minutes' where id = %s", "schedule",
     'invalid schedules.ring_timeout: "00:10:00" is out of range'),
    ("update schedules set retry_interval = '10 seconds' where id = %s", "schedule",
     'invalid schedules.retry_interval: "00:00:10" is out of range'),
    ("update schedules set kind = 'one_off' where id = %s", "schedule",
     'invalid schedules.kind: "one_off" needs local_time and days_of_week (recurring) or run_at alone'),
    ("update schedules set kind = 'weekly' where id = %s", "schedule",
     'invalid schedules.kind: "weekly" is not allowed; allowed values: recurring, one_off'),
    ("update schedules set title = '   ' where id = %s", "schedule",
     'invalid schedules.title: "   " must be non-blank text of at most 200 characters'),
    ("update household_members set role = 'owner' where household_id = %s and role = 'member'", "id",
     'invalid household_members.role: "owner" is not allowed; allowed values: admin, member'),
    ("update device_pairs set voip_token = 'abc123' where id = %s", "device",
     'invalid device_pairs.voip_token: "abc123" is not an APNs device token (64 hexadecimal characters)'),
    ("update device_pairs set apns_token = repeat('g', 64) where id = %s", "device",
     'invalid device_pairs.apns_token: "gggg'),
    ("update device_pairs set voip_token = repeat('a', 65) where id = %s", "device",
     "is not an APNs device token (64 hexadecimal characters)"),
    ("update device_pairs set fcm_token = 'short:token' where id = %s", "device",
     'invalid length of device_pairs.fcm_token: "11" is out of range: must be between 32 and 4096'),
    ("update device_pairs set fcm_token = repeat('x', 40) || ' ' where id = %s", "device",
     "invalid device_pairs.fcm_token: \"xxxx"),
    ("update call_sessions set attempt = 6 where id = %s", "session",
     'invalid call_sessions.attempt: "6" is out of range: must be between 1 and 5'),
]  # fmt: skip


@pytest.mark.parametrize(
    ("statement", "target", "message"),
    INVALID_UPDATES,
    ids=[stmt.split(" set ")[1].split(" where")[0] for stmt, _, _ in INVALID_UPDATES],
)
def test_invalid_value_is_refused_with_a_clear_message(
    db: Conn, world: World, statement: LiteralString, target: str, message: str
) -> None:
    target_id = getattr(world.a, target)
    with db.transaction(force_rollback=True), pytest.raises(errors.CheckViolation) as caught:
        db.execute(statement, [target_id])
    assert message in str(caught.value)


def test_refused_update_keeps_the_stored_row(db: Conn, world: World) -> None:
    before = one(db, "select to_jsonb(s) as row from schedules s where id = %s", [world.a.schedule])
    with pytest.raises(errors.CheckViolation), db.transaction():
        db.execute(
            "update schedules set title = 'New title', days_of_week = '{9}' where id = %s",
            [world.a.schedule],
        )
    after = one(db, "select to_jsonb(s) as row from schedules s where id = %s", [world.a.schedule])
    assert after == before


def test_apns_tokens_are_stored_lowercase(db: Conn, world: World) -> None:
    token = "AB" * 32
    db.execute("update device_pairs set voip_token = %s where id = %s", [token, world.a.device])
    assert one(db, "select voip_token from device_pairs where id = %s", [world.a.device]) == {
        "voip_token": token.lower()
    }


@pytest.mark.parametrize(
    "zone",
    ["Europe/London", "America/New_York", "Asia/Jakarta", "Australia/Lord_Howe",
     "Asia/Kathmandu", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "UTC"],
)  # fmt: skip
def test_iana_time_zones_are_accepted(db: Conn, world: World, zone: str) -> None:
    db.execute("update relatives set timezone = %s where id = %s", [zone, world.a.relative])
    assert (
        one(db, "select timezone from relatives where id = %s", [world.a.relative])["timezone"]
        == zone
    )


def test_token_invalidation_needs_a_reason(db: Conn, world: World) -> None:
    with (
        pytest.raises(errors.CheckViolation, match="device_pairs_invalid_reason_check"),
        db.transaction(),
    ):
        db.execute(
            "update device_pairs set voip_token_invalidated_at = now() where id = %s",
            [world.a.device],
        )


def test_only_one_active_device_per_relative(db: Conn, world: World) -> None:
    with (
        pytest.raises(errors.UniqueViolation, match="device_pairs_one_active_idx"),
        db.transaction(),
    ):
        db.execute(
            """insert into device_pairs (household_id, relative_id, status, platform, fcm_token,
                   secret_hash, paired_at) values (%s, %s, 'active', 'android', %s, 'h', now())""",
            [world.a.id, world.a.relative, "x" * 40],
        )


def test_updated_at_is_maintained(db: Conn, world: World) -> None:
    db.execute("update schedules set updated_at = '2000-01-01' where id = %s", [world.a.schedule])
    # The trigger overwrites whatever the client sends with the time of the change.
    row = one(
        db,
        "select updated_at > '2001-01-01' as fresh from schedules where id = %s",
        [world.a.schedule],
    )
    assert row["fresh"] is True
    tables = db.execute(
        """select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
           join pg_attribute a on a.attrelid = c.oid and a.attname = 'updated_at'
           where n.nspname = 'public' and c.relkind = 'r'
             and not exists (select 1 from pg_trigger t where t.tgrelid = c.oid
                             and t.tgname like '%%_touch')"""
    ).fetchall()
    assert tables == []


def test_deleting_a_household_removes_everything_of_it(db: Conn, world: World) -> None:
    db.execute("delete from households where id = %s", [world.a.id])
    for table in ("relatives", "device_pairs", "schedules", "call_sessions",
                  "notification_queue", "call_logs", "webhook_events", "alerts"):  # fmt: skip
        count = one(
            db,
            sql.SQL("select count(*) as n from {} where household_id = %s").format(
                sql.Identifier(table)
            ),
            [world.a.id],
        )
        assert count["n"] == 0, table
    remaining = one(
        db, "select count(*) as n from call_sessions where household_id = %s", [world.b.id]
    )
    assert remaining["n"] == 2


def test_deleting_a_schedule_keeps_call_history(db: Conn, world: World) -> None:
    db.execute("delete from schedules where id = %s", [world.a.schedule])
    row = one(db, "select schedule_id from call_sessions where id = %s", [world.a.session])
    assert row["schedule_id"] is None


def test_every_foreign_key_is_backed_by_a_selective_index(db: Conn) -> None:
    """Cascades and SET NULLs look rows up by the referencing columns. Without an index led by
    one of them (household_id alone is not selective: every row of a household shares it),
    deleting a large household runs one scan per child row: quadratic. References to
    auth.users are exempt: accounts are deleted one at a time."""
    rows = db.execute(
        """
        select c.conrelid::regclass::text as tab, c.conname,
               array(select a.attname::text from pg_attribute a
                     where a.attrelid = c.conrelid and a.attnum = any (c.conkey)) as cols
        from pg_constraint c
        where c.contype = 'f' and c.connamespace = 'public'::regnamespace
          and c.confrelid <> 'auth.users'::regclass
          and not exists (
            select 1 from pg_index i join pg_attribute a
              on a.attrelid = i.indrelid and a.attnum = i.indkey[0]
            where i.indrelid = c.conrelid and i.indpred is null
              and a.attnum = any (c.conkey)
              and (a.attname <> 'household_id' or cardinality(c.conkey) = 1))
        """
    ).fetchall()
    assert rows == []


# The scheduler's idempotency keys, tested on the constraint itself from direct inserts: the
# phases' `not exists` checks and row locks would hide the loss of either (issue 17, item 4).


def test_one_session_per_schedule_occurrence_and_attempt(db: Conn, world: World) -> None:
    copy = """insert into call_sessions (household_id, relative_id, schedule_id, device_id,
                  occurrence_at, attempt)
              select household_id, relative_id, schedule_id, device_id, occurrence_at, %s
              from call_sessions where id = %s returning id"""
    with (
        pytest.raises(errors.UniqueViolation, match="call_sessions_occurrence_key"),
        db.transaction(),
    ):
        db.execute(copy, [1, world.a.session])
    # Another attempt of the same occurrence is a session of its own.
    assert one(db, copy, [2, world.a.session])["id"] != world.a.session


def test_one_queue_row_per_schedule_occurrence_and_attempt(db: Conn, world: World) -> None:
    # The spare session (no queue row yet) takes a copy of the queued row's occurrence.
    copy = """insert into notification_queue (call_session_id, household_id, schedule_id,
                  device_id, occurrence_at, attempt, send_at, deadline_at, platform, provider,
                  push_token)
              select %s, household_id, schedule_id, device_id, occurrence_at, %s, send_at,
                     deadline_at, platform, provider, push_token
              from notification_queue where id = %s returning id"""
    with (
        pytest.raises(errors.UniqueViolation, match="notification_queue_occurrence_key"),
        db.transaction(),
    ):
        db.execute(copy, [world.a.spare_session, 1, world.a.queue_row])
    assert one(db, copy, [world.a.spare_session, 2, world.a.queue_row])["id"] != world.a.queue_row
