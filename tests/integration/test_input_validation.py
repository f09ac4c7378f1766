"""Input that would mean something else, or could not be read back, is refused (issue 11,
item 8): time zones are exact canonical IANA names, a local time is a time of day before
24:00, and days of week are a one-dimensional list. Each refusal names the field and the
reason, and leaves what was stored untouched."""

from __future__ import annotations

import zoneinfo

import pytest
from psycopg import errors

from tests.support.db import Conn, acting_as, one
from tests.support.world import World, build_world


@pytest.fixture
def world(db: Conn) -> World:
    return build_world(db)


# Postgres reads these as POSIX rules (a fixed -05:00 offset, no DST), or case-insensitively;
# Python's zoneinfo on Linux loads none of them.
NOT_IANA = ["Mars/Olympus5", "Foo/Bar3Baz", "europe/london", "EUROPE/LONDON", "America/new_york",
            "posix/Europe/London", "right/Europe/London", "Europe/London5"]  # fmt: skip


@pytest.mark.parametrize("zone", NOT_IANA)
@pytest.mark.parametrize(
    ("table", "target"), [("relatives", "relative"), ("schedules", "schedule")]
)
def test_a_zone_that_is_not_an_exact_iana_name_is_refused_and_nothing_changes(
    db: Conn, world: World, zone: str, table: str, target: str
) -> None:
    target_id = getattr(world.a, target)
    before = one(db, f"select to_jsonb(t) as row from {table} t where id = %s", [target_id])  # noqa: S608 - fixed names
    with pytest.raises(errors.CheckViolation) as caught, db.transaction():
        db.execute(f"update {table} set timezone = %s where id = %s", [zone, target_id])  # noqa: S608
    assert f'invalid {table}.timezone: unknown time zone "{zone}"' in str(caught.value)
    after = one(db, f"select to_jsonb(t) as row from {table} t where id = %s", [target_id])  # noqa: S608
    assert after == before


def test_a_miscased_zone_is_told_its_canonical_spelling(db: Conn, world: World) -> None:
    with pytest.raises(errors.CheckViolation) as caught, db.transaction():
        db.execute(
            "update relatives set timezone = 'europe/london' where id = %s", [world.a.relative]
        )
    assert caught.value.diag.message_hint is not None
    assert "Europe/London" in caught.value.diag.message_hint


def test_a_member_creating_a_schedule_in_a_posix_zone_is_refused(db: Conn, world: World) -> None:
    with (
        acting_as(db, "authenticated", world.a.members["member_a"]),
        pytest.raises(errors.CheckViolation, match=r'invalid schedules.timezone: unknown time zone "Foo/Bar3Baz"'),
    ):  # fmt: skip
        db.execute(
            "insert into schedules (relative_id, local_time, days_of_week, timezone)"
            " values (%s, '09:00', '{1}', 'Foo/Bar3Baz')",
            [world.a.relative],
        )


def test_every_zone_the_database_accepts_loads_in_python(db: Conn) -> None:
    # One statement over every name Postgres knows (a round trip per name is slow).
    db.execute(
        """create function pg_temp.accepts(p_zone text) returns boolean language plpgsql as $$
           begin
             return private.is_timezone('relatives.timezone', p_zone);
           exception when check_violation then
             return false;
           end $$"""
    )
    rows = db.execute(
        "select name from pg_timezone_names where pg_temp.accepts(name) order by name"
    ).fetchall()
    accepted = [str(row["name"]) for row in rows]
    assert len(accepted) > 300  # every real place, not a handful
    for name in accepted:
        assert not name.startswith(("posix/", "right/")), name
        zoneinfo.ZoneInfo(name)  # raises if Python cannot load it
    for name in ("Europe/London", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "UTC"):
        assert name in accepted


@pytest.mark.parametrize("value", ["24:00", "24:00:00"])
def test_local_time_24_00_is_refused_and_the_row_stays_readable(
    db: Conn, world: World, value: str
) -> None:
    before = one(db, "select local_time from schedules where id = %s", [world.a.schedule])
    with pytest.raises(errors.CheckViolation) as caught, db.transaction():
        db.execute("update schedules set local_time = %s where id = %s", [value, world.a.schedule])
    assert 'invalid schedules.local_time: "24:00:00" must be a time of day before 24:00' in str(
        caught.value
    )
    # psycopg reads the stored value back (a 24:00 would raise DataError here).
    assert one(db, "select local_time from schedules where id = %s", [world.a.schedule]) == before


def test_local_time_just_before_midnight_is_accepted(db: Conn, world: World) -> None:
    db.execute("update schedules set local_time = '23:59:59' where id = %s", [world.a.schedule])
    row = one(db, "select local_time::text as t from schedules where id = %s", [world.a.schedule])
    assert row == {"t": "23:59:59"}


@pytest.mark.parametrize("days", ["{{1,2},{3,4}}", "{{1}}", "[0:1]={1,2}"])
def test_days_of_week_that_are_not_a_plain_list_get_the_field_named_error(
    db: Conn, world: World, days: str
) -> None:
    with pytest.raises(errors.CheckViolation) as caught, db.transaction():
        db.execute("update schedules set days_of_week = %s where id = %s", [days, world.a.schedule])
    assert "invalid schedules.days_of_week: " in str(caught.value)
    assert "must list ISO days of week 1 (Monday) to 7 (Sunday)" in str(caught.value)
