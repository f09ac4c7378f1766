"""Migrations run as a role shaped like hosted Supabase's `postgres`, not as a superuser.

The test cluster (tests/support/db.py) is built the way `callpanion stack up` builds the local
stack: `supabase_admin` is the superuser and only runs the platform stand-ins; the migrations and
the seed run as `postgres`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from python_worker.errors import MigrationError, StackError
from python_worker.stack import migrations
from python_worker.stack.cluster import ADMIN_ROLE, OWNER_ROLE, LocalStack
from tests.support.db import Conn, throwaway_stack

HOSTED_MEMBERSHIPS = {
    "anon",
    "authenticated",
    "service_role",
    "authenticator",
    "pg_monitor",
    "pg_read_all_data",
    "pg_signal_backend",
}


def test_postgres_is_shaped_like_hosted_supabase_and_is_not_a_superuser(db: Conn) -> None:
    role = db.execute(
        """select rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication,
                  rolbypassrls, current_user as me
           from pg_roles where rolname = 'postgres'"""
    ).fetchone()
    assert role == {
        "rolsuper": False,
        "rolinherit": True,
        "rolcreaterole": True,
        "rolcreatedb": True,
        "rolcanlogin": True,
        "rolreplication": True,
        "rolbypassrls": True,
        "me": OWNER_ROLE,
    }
    granted = db.execute(
        """select r.rolname, m.admin_option from pg_auth_members m
           join pg_roles r on r.oid = m.roleid
           where m.member = 'postgres'::regrole"""
    ).fetchall()
    assert {g["rolname"] for g in granted} == HOSTED_MEMBERSHIPS
    assert all(g["admin_option"] for g in granted)
    admin = db.execute("select rolsuper from pg_roles where rolname = %s", [ADMIN_ROLE]).fetchone()
    assert admin == {"rolsuper": True}


def test_the_schema_was_migrated_by_postgres(db: Conn) -> None:
    owners = db.execute(
        """select distinct pg_get_userbyid(c.relowner) as owner from pg_class c
           where c.relnamespace in ('public'::regnamespace, 'private'::regnamespace)
           union
           select distinct pg_get_userbyid(p.proowner) from pg_proc p
           where p.pronamespace in ('public'::regnamespace, 'private'::regnamespace)"""
    ).fetchall()
    assert owners == [{"owner": OWNER_ROLE}]
    rest = db.execute(
        """select (select pg_get_userbyid(pubowner) from pg_publication
                   where pubname = 'supabase_realtime') as publication,
                  (select pg_get_userbyid(datdba) from pg_database
                   where datname = current_database()) as database,
                  (select pg_get_userbyid(extowner) from pg_extension
                   where extname = 'pg_cron') as pg_cron,
                  (select array_agg(distinct username) from cron.job) as job_owners"""
    ).fetchone()
    assert rest == {
        "publication": OWNER_ROLE,
        "database": OWNER_ROLE,
        "pg_cron": ADMIN_ROLE,  # the platform enables extensions, as on hosted Supabase
        "job_owners": [OWNER_ROLE],
    }


def test_postgres_reads_cron_jobs_but_changes_them_only_through_pg_cron(db: Conn) -> None:
    # The scheduler's three jobs and the alerts' escalation job (issue 21).
    assert db.execute("select count(*) as n from cron.job").fetchone() == {"n": 4}
    with db.transaction(force_rollback=True), pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("update cron.job set active = true")


@pytest.fixture
def fresh_database(pg_stack: LocalStack) -> Iterator[str]:
    """A new database as a new hosted project is: platform applied, no migration yet."""
    url = pg_stack.create_database("hosted_shape")
    try:
        yield url
    finally:
        pg_stack.drop_database(url)


@pytest.mark.parametrize(
    ("statement", "refusal"),
    [
        ("create event trigger log_ddl on ddl_command_end execute function pg_catalog.now()",
         "permission denied to create event trigger"),
        ("create extension plpgsql_check", "permission denied to create extension"),
        ("alter role postgres superuser", "must be superuser to alter superuser roles"),
        ("copy (select 1) to program 'true'",
         "must be superuser or have privileges of the pg_execute_server_program role"),
    ],
)  # fmt: skip
def test_a_migration_that_needs_a_superuser_fails_here_first(
    fresh_database: str, tmp_path: Path, statement: str, refusal: str
) -> None:
    (tmp_path / "20990101000001_needs_superuser.sql").write_text(f"{statement};\n")
    with (
        migrations.connect(fresh_database) as conn,
        pytest.raises(MigrationError, match=refusal),
    ):
        migrations.apply_migrations(conn, tmp_path)


def test_the_ordinary_work_of_migrations_goes_through_as_postgres(
    fresh_database: str, tmp_path: Path
) -> None:
    """DDL, functions, RLS policies, grants to the API roles, the publication, extension use."""
    (tmp_path / "20990101000001_ordinary.sql").write_text(
        """
        create schema if not exists private;
        create table public.notes (id uuid primary key default extensions.gen_random_uuid(),
                                   body text, owner uuid references auth.users (id));
        alter table public.notes enable row level security;
        create policy notes_own on public.notes for select to authenticated
          using (owner = (select auth.uid()));
        revoke all on public.notes from anon;
        grant select on public.notes to authenticated;
        grant all on public.notes to service_role;
        create function private.note_count() returns bigint language sql stable
          set search_path = '' as $$ select count(*) from public.notes $$;
        alter publication supabase_realtime add table public.notes;
        create index notes_owner_idx on public.notes (owner);
        select pg_catalog.current_setting('shared_preload_libraries');
        """
    )
    with migrations.connect(fresh_database) as conn:
        applied = migrations.apply_migrations(conn, tmp_path)
        assert [m.name for m in applied] == ["ordinary"]
        row = conn.execute("select pg_get_userbyid(relowner) from pg_class where relname = 'notes'")
        assert row.fetchone() == (OWNER_ROLE,)


def test_scheduler_jobs_are_found_through_the_catalog(db: Conn, pg_stack: LocalStack) -> None:
    jobs = db.execute("select private.ensure_scheduler_jobs() as jobs").fetchone()
    assert jobs == {
        "jobs": ["callpanion-phase1-queue", "callpanion-phase2-release", "callpanion-cleanup"]
    }
    # Its three, and the alerts' escalation job (issue 21), each once.
    assert db.execute("select count(*) as n from cron.job").fetchone() == {"n": 4}
    with pg_stack.scratch_database("no_cron") as url, psycopg.connect(url) as conn:
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        assert conn.execute("select private.ensure_scheduler_jobs()").fetchone() == ([],)
    assert notices == [
        f"pg_cron is not enabled in database {url.rsplit('/', 1)[1]}: "
        "the scheduler phases were not scheduled"
    ]


def test_a_cluster_from_before_the_hosted_shape_is_refused_with_the_way_out() -> None:
    """A stack created when `postgres` was the superuser (and `supabase_admin` did not exist)."""
    with throwaway_stack("old-shape") as stack:
        stack.up(apply=False)
        with psycopg.connect(stack.admin_conninfo(), autocommit=True) as conn:
            conn.execute("alter role postgres superuser")
        with psycopg.connect(stack.settings.database_url, autocommit=True) as conn:
            conn.execute(f"alter role {ADMIN_ROLE} rename to old_admin")
        with pytest.raises(StackError, match="created when `postgres` was its superuser") as err:
            stack.up()
    assert "callpanion stack reset --hard" in str(err.value)
