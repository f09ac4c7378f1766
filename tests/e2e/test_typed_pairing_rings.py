"""Typed pairing, end to end as separate processes (issue 27): a phone paired by the code and
the reference a person typed rings for its relative's call and reports it; a phone in the
foreground takes the app's foreground path (with its ownership check) and rings too."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.whole_call import WholeCallWorld, sessions_of, world


@pytest.fixture(scope="module")
def whole(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WholeCallWorld]:
    with world(database_url, tmp_path_factory.mktemp("typed-pairing")) as started:
        yield started


def _is(event: str, **fields: Any) -> Any:
    return lambda e: e["event"] == event and all(e.get(k) == v for k, v in fields.items())


def _ring_soon(whole: WholeCallWorld, conn: Any, family: Any) -> Any:
    row = conn.execute("select now() + interval '3 seconds' as at").fetchone()
    schedule = whole.one_off(conn, family, row["at"], max_attempts=1)
    conn.execute("select queue_upcoming_calls()")  # what pg_cron's phase 1 runs
    return schedule


@pytest.mark.parametrize(("platform", "app_state"), [("android", "background"),
                                                     ("ios", "background"),
                                                     ("android", "foreground")])  # fmt: skip
def test_a_phone_paired_by_typing_rings_and_reports(
    whole: WholeCallWorld, platform: str, app_state: str
) -> None:
    with whole.connect() as conn:
        family = whole.family(conn)
        phone = whole.phone(conn, family, platform, "decline", typed=True, app_state=app_state)
        paired = phone.wait_event(_is("paired"), 5, "paired")
        device = conn.execute(
            "select status, pairing_reference, label from device_pairs where id = %s",
            [paired["device_id"]],
        ).fetchone()
        assert device is not None
        assert (device["status"], device["pairing_reference"]) == ("active", None)
        schedule = _ring_soon(whole, conn, family)
        ringing = phone.wait_event(_is("ringing"), 60, "ring")
        call_id = ringing["call_id"]
        phone.wait_event(_is("call_over", call_id=call_id), 30, "the decline")
        assert phone.reported(call_id) == [
            ("delivered", 200, "ringing"),
            ("declined", 200, "declined"),
        ]
        [session] = sessions_of(conn, schedule)
        assert (str(session["id"]), session["status"]) == (call_id, "declined")
        assert session["device_id"] is not None
        assert str(session["device_id"]) == paired["device_id"]
        assert isinstance(session["ringing_at"], dt.datetime)
    final = phone.stop()
    assert (final["rung"], final["duplicates"], final["refused"]) == ([call_id], 0, 0)
