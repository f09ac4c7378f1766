"""Who reads a transcript, retention and export (issue 24, items 1, 3 and 4), from the
attacker's side where it matters. Real Postgres; time moves by explicit `p_now`."""

from __future__ import annotations

from datetime import datetime, timedelta

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.db import Conn, one
from tests.support.privacy import Household, add_household, as_user


def session_of(hh: Household) -> object:
    return hh.people[0].sessions[0]


def set_reads(db: Conn, hh: Household, value: str) -> None:
    with as_user(db, hh.admin):
        db.execute("select set_privacy_settings(%s, %s)", [hh.id, Jsonb({"member_reads": value})])


@pytest.mark.parametrize(
    "query",
    [
        "select transcript from call_logs",
        "select * from call_logs",
        "select data_collection from call_logs",
        "select evaluation from call_logs",
        "select l.transcript from call_sessions s join call_logs l on l.call_session_id = s.id",
        "select to_jsonb(l) from call_logs l",
    ],
)
def test_nobody_reads_the_transcript_column_through_the_table(db: Conn, query: str) -> None:
    hh = add_household(db)
    for who in (hh.member, hh.admin):
        with pytest.raises(psycopg.errors.InsufficientPrivilege), as_user(db, who):
            db.execute(query)


def test_a_member_still_reads_summaries_and_the_dashboards_history(db: Conn) -> None:
    hh = add_household(db)
    with as_user(db, hh.member):
        rows = db.execute("select summary, mood, duration_secs from call_logs").fetchall()
        history = db.execute("select * from call_history(%s)", [hh.id]).fetchall()
    assert len(rows) == 2
    assert all(r["summary"] for r in rows)
    assert {r["summary"] for r in history} == {r["summary"] for r in rows}


def test_no_view_a_signed_in_user_may_read_exposes_the_transcript(db: Conn) -> None:
    leaks = db.execute(
        """select u.view_schema, u.view_name, u.column_name
           from information_schema.view_column_usage u
           join pg_catalog.pg_class v on v.relname = u.view_name
           join pg_catalog.pg_namespace n on n.oid = v.relnamespace and n.nspname = u.view_schema
           where u.table_schema = 'public' and u.table_name = 'call_logs'
             and u.column_name in ('transcript', 'data_collection', 'evaluation', 'discrepancies')
             and (pg_catalog.has_table_privilege('authenticated', v.oid, 'SELECT')
                  or pg_catalog.has_table_privilege('anon', v.oid, 'SELECT'))"""
    ).fetchall()
    assert leaks == []


def test_realtime_never_carries_the_transcript(db: Conn) -> None:
    published = one(
        db,
        "select attnames from pg_catalog.pg_publication_tables"
        " where pubname = 'supabase_realtime' and tablename = 'call_logs'",
    )["attnames"]
    assert isinstance(published, list)
    assert "summary" in published
    assert not {"transcript", "data_collection", "evaluation", "discrepancies"} & set(published)


def test_summaries_only_a_member_is_refused_an_admin_reads_and_is_audited(db: Conn) -> None:
    hh = add_household(db)
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="admins only"),
        as_user(db, hh.member),
    ):
        db.execute("select read_transcript(%s)", [session_of(hh)])
    with as_user(db, hh.admin):
        got = one(db, "select read_transcript(%s) as t", [session_of(hh)])["t"]
    assert isinstance(got, dict)
    assert hh.people[0].phrase in str(got["transcript"])
    reads = db.execute("select user_id, call_session_id, via from transcript_reads").fetchall()
    assert reads == [{"user_id": hh.admin, "call_session_id": session_of(hh), "via": "read"}]
    with as_user(db, hh.member):
        assert db.execute("select * from transcript_reads").fetchall() == []
    with as_user(db, hh.admin):
        assert len(db.execute("select * from transcript_reads").fetchall()) == 1


def test_when_members_may_read_transcripts_their_reads_are_audited_too(db: Conn) -> None:
    hh = add_household(db)
    set_reads(db, hh, "transcripts")
    with as_user(db, hh.member):
        got = one(db, "select read_transcript(%s) as t", [session_of(hh)])["t"]
    assert isinstance(got, dict)
    assert got["transcript"]
    assert one(db, "select user_id from transcript_reads")["user_id"] == hh.member


def test_another_household_reads_no_transcript(db: Conn) -> None:
    hh, attacker = add_household(db), add_household(db)
    for who in (attacker.admin, attacker.member):
        with pytest.raises(psycopg.errors.NoDataFound), as_user(db, who):
            db.execute("select read_transcript(%s)", [session_of(hh)])


@pytest.mark.parametrize(
    "attempt",
    [
        "update transcript_reads set read_at = now() - interval '1 year'",
        "delete from transcript_reads",
        "insert into transcript_reads (household_id, call_session_id) select household_id, call_session_id from transcript_reads",
        "truncate transcript_reads",
    ],
)
def test_nobody_edits_the_audit(db: Conn, attempt: str) -> None:
    hh = add_household(db)
    with as_user(db, hh.admin):
        db.execute("select read_transcript(%s)", [session_of(hh)])
    # The owner (postgres: migrations, our SECURITY DEFINER functions) may insert (and
    # truncate a test database), nobody else; nobody at all may change or delete a row.
    roles = ("authenticated", "service_role") + (
        () if attempt.startswith(("insert", "truncate")) else ("postgres",)
    )
    for role in roles:
        with db.transaction(force_rollback=True):
            if role != "postgres":
                db.execute(f"set local role {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                db.execute(attempt)
    assert one(db, "select count(*) as n from transcript_reads")["n"] == 1


def test_only_admins_change_the_settings_and_bad_input_names_the_field(db: Conn) -> None:
    hh = add_household(db)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), as_user(db, hh.member):
        db.execute('select set_privacy_settings(%s, \'{"member_reads": "transcripts"}\')', [hh.id])
    for body, message in (
        ({"transcript": "1 day"}, "invalid p_settings.transcript: not a setting"),
        ({"transcripts": "soon"}, 'invalid p_settings.transcripts: "soon" is not a period'),
    ):
        with (
            pytest.raises(psycopg.errors.InvalidParameterValue, match=message),
            as_user(db, hh.admin),
        ):
            db.execute("select set_privacy_settings(%s, %s)", [hh.id, Jsonb(body)])
    with (
        pytest.raises(psycopg.errors.CheckViolation, match=r"privacy_settings\.transcripts"),
        as_user(db, hh.admin),
    ):
        db.execute("select set_privacy_settings(%s, %s)", [hh.id, Jsonb({"transcripts": "1 hour"})])
    assert one(
        db, "select member_reads from privacy_settings where household_id = %s", [hh.id]
    ) == {"member_reads": "summaries"}


def test_retention_removes_content_and_keeps_the_statistics(db: Conn) -> None:
    hh, other = add_household(db), add_household(db)
    with as_user(db, hh.admin):
        db.execute(
            "select set_privacy_settings(%s, %s)",
            [hh.id, Jsonb({"transcripts": "10 days", "summaries": "20 days", "webhook_bodies": "2 days",
                           "snapshots": "3 days", "alert_messages": "30 days", "call_logs": "400 days"})],
        )  # fmt: skip
    now = one(db, "select now() as t")["t"]
    assert isinstance(now, datetime)
    with as_user(db, hh.member):
        overview = one(db, "select privacy_overview(%s, %s) as o", [hh.id, now])["o"]
    assert isinstance(overview, dict)
    kinds = {k["kind"]: k for k in overview["kinds"]}
    assert set(kinds) == {"webhook_bodies", "audio_refs", "transcripts", "summaries", "call_logs",
                          "snapshots", "alert_messages"}  # fmt: skip
    assert kinds["transcripts"]["period"] == "10 days"
    assert kinds["transcripts"]["oldest_goes_at"] is not None

    def run(days: int) -> dict[str, int]:
        out = one(db, "select enforce_retention(%s) as r", [now + timedelta(days=days)])["r"]
        assert isinstance(out, dict)
        return out

    run(1)
    assert (
        one(
            db,
            "select count(*) as n from webhook_events where household_id = %s and payload is null",
            [hh.id],
        )["n"]
        == 0
    )
    run(5)
    assert (
        one(
            db,
            "select count(*) as n from webhook_events where household_id = %s and payload is not null",
            [hh.id],
        )["n"]
        == 0
    )
    assert (
        one(
            db,
            "select count(*) as n from notification_queue where household_id = %s and payload <> '{}'",
            [hh.id],
        )["n"]
        == 0
    )
    run(15)
    logs = db.execute(
        "select transcript, data_collection, summary, transcript_expired_at, mood, duration_secs from call_logs where household_id = %s",
        [hh.id],
    ).fetchall()
    assert len(logs) == 2
    assert all(r["transcript"] == [] and r["data_collection"] == {} and r["summary"] for r in logs)
    assert all(r["transcript_expired_at"] is not None and r["duration_secs"] for r in logs)
    run(25)
    assert all(
        r["summary"] is None
        for r in db.execute(
            "select summary from call_logs where household_id = %s", [hh.id]
        ).fetchall()
    )
    run(35)
    alerts = db.execute(
        "select message, details, kind, severity, acknowledged_at from alerts where household_id = %s",
        [hh.id],
    ).fetchall()
    assert all(hh.people[0].name not in str(a) and hh.people[1].name not in str(a) for a in alerts)
    assert {a["kind"] for a in alerts} == {"missed_calls", "device_unreachable"}
    # The other household has the defaults (transcripts 90 days): untouched at 35 days.
    theirs = db.execute(
        "select transcript, summary from call_logs where household_id = %s", [other.id]
    ).fetchall()
    assert len(theirs) == 2
    assert all(r["transcript"] and r["summary"] for r in theirs)
    run(401)
    assert one(db, "select count(*) as n from call_logs where household_id = %s", [hh.id])["n"] == 0
    sessions = db.execute(
        "select status, occurrence_at, ended_at from call_sessions where household_id = %s", [hh.id]
    ).fetchall()
    assert len(sessions) == 2
    assert all(s["status"] == "completed" and s["ended_at"] for s in sessions)
    # Theirs at 401 days: transcripts (90) and summaries (365) gone, the logs (730) kept.
    theirs = db.execute(
        "select transcript, summary from call_logs where household_id = %s", [other.id]
    ).fetchall()
    assert theirs == [{"transcript": [], "summary": None}] * 2


def test_an_admin_exports_everything_about_a_relative_as_one_document(db: Conn) -> None:
    hh = add_household(db)
    person, other = hh.people
    with as_user(db, hh.admin):
        doc = one(db, "select export_relative(%s) as d", [person.id])["d"]
    assert isinstance(doc, dict)
    assert doc["format"] == "callpanion.relative-export/1"
    assert doc["relative"]["display_name"] == person.name
    assert set(doc) == {"format", "exported_at", "exported_by", "relative", "household",
                        "privacy_settings", "schedules", "devices", "calls", "alerts",
                        "webhook_events", "transcript_reads"}  # fmt: skip
    (call,) = doc["calls"]
    assert call["conversation_id"] == person.conversations[0]
    assert person.phrase in str(call["log"]["transcript"])
    assert set(doc["devices"][0]["push_tokens"].values()) == set(person.tokens)
    assert doc["alerts"][0]["deliveries"]
    assert person.phrase in str(doc["webhook_events"][0]["payload"])
    text = str(doc)
    assert other.name not in text
    assert other.phrase not in text
    assert "secret_hash" not in text
    assert one(db, "select via from transcript_reads")["via"] == "export"


def test_a_member_or_another_household_cannot_export(db: Conn) -> None:
    hh, attacker = add_household(db), add_household(db)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), as_user(db, hh.member):
        db.execute("select export_relative(%s)", [hh.people[0].id])
    with pytest.raises(psycopg.errors.NoDataFound), as_user(db, attacker.admin):
        db.execute("select export_relative(%s)", [hh.people[0].id])


def test_the_daily_cleanup_job_enforces_retention(db: Conn) -> None:
    hh = add_household(db)
    command = one(db, "select command from cron.job where jobname = 'callpanion-cleanup'")
    assert command["command"] == "select public.cleanup_finished()"
    now = one(db, "select now() as t")["t"]
    assert isinstance(now, datetime)
    db.execute("select cleanup_finished(%s)", [now + timedelta(days=100)])
    logs = db.execute(
        "select transcript, transcript_expired_at from call_logs where household_id = %s", [hh.id]
    ).fetchall()
    assert len(logs) == 2
    assert all(r["transcript"] == [] and r["transcript_expired_at"] for r in logs)
