"""Pairing a relative's device: the dashboard's code, the app's claim, and the attacks on it."""

from __future__ import annotations

import hashlib
import uuid

import psycopg
import pytest
from psycopg import errors

from tests.support.api import (
    Row,
    ServedApi,
    Ticket,
    as_user,
    bearer,
    fetch,
    new_family,
    pair,
    pair_body,
    pairing_code,
    settings_for,
)
from tests.support.db import Conn, acting_as
from tests.support.world import World, build_world

SqlConn = psycopg.Connection[Row]


def device_row(conn: SqlConn, device: uuid.UUID | str) -> Row:
    return fetch(conn, "select * from device_pairs where id = %s", [device])


def test_admin_creates_a_six_digit_code_valid_ten_minutes_stored_hashed(sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    rows = as_user(
        sql_conn, family.admin, "select * from create_pairing_code(%s)", [family.relative]
    )
    code = rows[0]["code"]
    assert rows[0]["pairing_id"] == rows[0]["device_id"]  # what the QR code or link carries
    assert len(code) == 6
    assert code.isdigit()
    row = device_row(sql_conn, rows[0]["device_id"])
    assert row["status"] == "pending"
    assert code not in (row["pairing_code_hash"] or "")
    lifetime = fetch(sql_conn, "select %s::timestamptz - now() as left", [rows[0]["expires_at"]])[
        "left"
    ]
    assert 9 * 60 < lifetime.total_seconds() <= 10 * 60


def test_a_new_code_replaces_the_unused_one(api: ServedApi, sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    first = pairing_code(sql_conn, family)
    second = pairing_code(sql_conn, family)
    assert first.pairing_id != second.pairing_id  # a leaked QR code of the old one is useless
    pending = sql_conn.execute(
        "select count(*) as n from device_pairs where relative_id = %s and status = 'pending'",
        [family.relative],
    ).fetchone()
    assert pending is not None
    assert pending["n"] == 1
    assert api.client.post("/v1/devices/pair", json=pair_body(first)).status_code == 403
    assert api.client.post("/v1/devices/pair", json=pair_body(second)).status_code == 201


def test_only_an_admin_of_the_household_creates_codes(db: Conn) -> None:
    world: World = build_world(db)
    for role, user in (
        ("authenticated", world.a.members["member_a"]),
        ("authenticated", world.b.members["admin_b"]),
        ("authenticated", world.outsider),
    ):
        with acting_as(db, role, user), pytest.raises(errors.NoDataFound, match="not found"):
            db.execute("select * from create_pairing_code(%s)", [world.a.relative])
    with acting_as(db, "anon"), pytest.raises(errors.InsufficientPrivilege):
        db.execute("select * from create_pairing_code(%s)", [world.a.relative])
    with acting_as(db, "authenticated", world.a.members["admin_a"]):
        assert db.execute("select * from create_pairing_code(%s)", [world.a.relative]).fetchall()


def test_api_functions_are_for_the_service_role_only(db: Conn) -> None:
    rows = db.execute(
        """select p.oid::regprocedure::text as fn,
                  has_function_privilege('authenticated', p.oid, 'execute') as authenticated,
                  has_function_privilege('anon', p.oid, 'execute') as anon,
                  has_function_privilege('service_role', p.oid, 'execute') as service
           from pg_proc p join pg_namespace n on n.oid = p.pronamespace
           where n.nspname = 'public' and p.proname in (
             'claim_pairing_code', 'device_credentials', 'update_device_tokens',
             'device_heartbeat', 'prepare_call_accept', 'record_call_event',
             'count_webhook_rejection', 'store_webhook_event', 'process_webhook_event',
             'pair_device', 'device_upcoming_calls', 'record_device_event')"""
    ).fetchall()
    assert len(rows) == 12
    for row in rows:
        assert (row["authenticated"], row["anon"], row["service"]) == (False, False, True), row


def test_pairing_activates_the_device_and_shows_the_secret_once(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    family = new_family(sql_conn, "Grandad")
    body = pair_body(pairing_code(sql_conn, family), "android")
    response = api.client.post("/v1/devices/pair", json=body)
    assert response.status_code == 201, response.text
    result = response.json()
    assert result["device_id"] == body["pairing_id"]
    assert result["relative"]["id"] == str(family.relative)
    assert result["relative"]["display_name"] == "Grandad"
    assert result["relative"]["timezone"] == "Europe/London"
    # What the app stores at pairing and compares every call push with (fcm_service.dart).
    assert (result["household_id"], result["relative_id"], result["relative_name"]) == (
        str(family.household),
        str(family.relative),
        "Grandad",
    )
    secret = result["device_secret"]
    assert len(secret) >= 43
    row = device_row(sql_conn, result["device_id"])
    assert row["status"] == "active"
    assert row["platform"] == "android"
    assert row["fcm_token"] == body["fcm_token"]
    assert row["label"] == body["label"]
    assert row["secret_hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert row["pairing_code_hash"] is None
    assert secret not in str(row.values())
    ok = api.client.post(
        "/v1/devices/me/heartbeat", json={}, headers=bearer(result["device_id"], secret)
    )
    assert ok.status_code == 200


WRONG = {"error": "code: not a valid pairing code (wrong, expired or locked)", "field": "code"}


def answer(api: ServedApi, ticket: Ticket) -> tuple[int, object, str | None]:
    """What a client can see of a refused claim: status, body, and the Retry-After."""
    response = api.client.post("/v1/devices/pair", json=pair_body(ticket))
    return response.status_code, response.json(), response.headers.get("Retry-After")


def test_a_code_works_once(api: ServedApi, sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    ticket = pairing_code(sql_conn, family)
    assert api.client.post("/v1/devices/pair", json=pair_body(ticket)).status_code == 201
    assert answer(api, ticket) == (403, WRONG, None)


def test_an_expired_code_is_answered_exactly_as_a_wrong_code(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    family = new_family(sql_conn)
    ticket = pairing_code(sql_conn, family)
    sql_conn.execute(
        "update device_pairs set pairing_code_expires_at = now() - interval '1 second'"
        " where relative_id = %s and status = 'pending'",
        [family.relative],
    )
    wrong = ticket.guess(f"{(int(ticket.code) + 1) % 1_000_000:06d}")
    assert answer(api, ticket) == answer(api, wrong) == (403, WRONG, None)
    row = device_row(sql_conn, ticket.pairing_id)
    # Guesses at a dead code are not weighed, so they count against nothing.
    assert (row["status"], row["pairing_failed_attempts"]) == ("pending", 0)


def test_five_wrong_codes_lock_the_code_and_then_the_right_one_looks_wrong(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    family = new_family(sql_conn)
    ticket = pairing_code(sql_conn, family)
    wrong = [ticket.guess(f"{(int(ticket.code) + k) % 1_000_000:06d}") for k in range(1, 6)]
    for attempt in wrong:
        assert answer(api, attempt) == (403, WRONG, None)
    row = device_row(sql_conn, ticket.pairing_id)
    assert row["pairing_failed_attempts"] == 5
    # Locked: the right digits get exactly the wrong-code answer, so they are not confirmed.
    assert answer(api, ticket) == (403, WRONG, None)
    assert device_row(sql_conn, ticket.pairing_id)["status"] == "pending"
    # A new code from the dashboard starts afresh.
    fresh = pairing_code(sql_conn, family)
    assert api.client.post("/v1/devices/pair", json=pair_body(fresh)).status_code == 201


def test_wrong_guesses_at_one_pairing_never_touch_another_households_code(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    victim, attacked = new_family(sql_conn), new_family(sql_conn)
    theirs = pairing_code(sql_conn, victim)
    target = pairing_code(sql_conn, attacked)
    for k in range(1, 21):
        guess = target.guess(f"{(int(target.code) + k) % 1_000_000:06d}")
        assert answer(api, guess)[0] == 403
    assert device_row(sql_conn, theirs.pairing_id)["pairing_failed_attempts"] == 0
    assert api.client.post("/v1/devices/pair", json=pair_body(theirs)).status_code == 201


def _spent(conn: SqlConn, scope: str) -> int:
    """What a pairing budget has spent in its current window (0 when it has none)."""
    return int(
        fetch(
            conn,
            "select coalesce(sum(b.spent), 0) as n from private.pairing_budgets b, "
            "private.pairing_settings s where b.scope like %s "
            "and b.window_start + s.guess_window > now()",
            [scope],
        )["n"]
    )


def test_guesses_naming_no_pairing_count_against_the_unknown_pool_only(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    family = new_family(sql_conn)
    ticket = pairing_code(sql_conn, family)
    before = _spent(sql_conn, "unknown:%")
    for _ in range(20):
        assert answer(api, Ticket(uuid.uuid4(), ticket.code)) == (403, WRONG, None)
    assert _spent(sql_conn, "unknown:%") == before + 20
    assert _spent(sql_conn, f"household:{family.household}") == 0
    assert device_row(sql_conn, ticket.pairing_id)["pairing_failed_attempts"] == 0
    assert api.client.post("/v1/devices/pair", json=pair_body(ticket)).status_code == 201


def test_a_spent_household_budget_stops_only_that_households_pairings(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    sql_conn.execute("update private.pairing_settings set household_budget = 3")
    try:
        spender, other = new_family(sql_conn), new_family(sql_conn)
        tickets = [pairing_code(sql_conn, spender)]
        for _ in range(3):  # wrong guesses at its own code: its own budget
            assert (
                answer(api, tickets[0].guess(f"{(int(tickets[0].code) + 1) % 10**6:06d}"))[0] == 403
            )
        fresh = pairing_code(sql_conn, spender)
        refused = api.client.post("/v1/devices/pair", json=pair_body(fresh))
        assert refused.status_code == 429
        assert refused.json()["field"] == "code"
        assert 0 < int(refused.headers["Retry-After"]) <= 3600
        # Not weighed at all: the code is untouched and still open.
        row = device_row(sql_conn, fresh.pairing_id)
        assert (row["status"], row["pairing_failed_attempts"]) == ("pending", 0)
        # Another household is not touched: its wrong code is 403, its right code pairs.
        theirs = pairing_code(sql_conn, other)
        assert answer(api, theirs.guess(f"{(int(theirs.code) + 1) % 10**6:06d}"))[0] == 403
        assert api.client.post("/v1/devices/pair", json=pair_body(theirs)).status_code == 201
        # The window ends: the household pairs again.
        sql_conn.execute(
            "update private.pairing_budgets set window_start = now() - interval '1 hour'"
            " where scope = %s",
            [f"household:{spender.household}"],
        )
        assert api.client.post("/v1/devices/pair", json=pair_body(fresh)).status_code == 201
    finally:
        sql_conn.execute("update private.pairing_settings set household_budget = default")


def test_a_spent_unknown_pool_stops_all_pairing_until_its_window_ends(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    family = new_family(sql_conn)
    ticket = pairing_code(sql_conn, family)
    spent = _spent(sql_conn, "unknown:%")
    sql_conn.execute("update private.pairing_settings set unknown_budget = %s", [spent + 2])
    try:
        for _ in range(2):
            assert answer(api, Ticket(uuid.uuid4(), ticket.code))[0] == 403
        refused = api.client.post("/v1/devices/pair", json=pair_body(ticket))
        assert refused.status_code == 429
        assert 0 < int(refused.headers["Retry-After"]) <= 3600
        assert device_row(sql_conn, ticket.pairing_id)["status"] == "pending"
    finally:
        sql_conn.execute("update private.pairing_settings set unknown_budget = default")
    assert api.client.post("/v1/devices/pair", json=pair_body(ticket)).status_code == 201


def test_codes_are_hashed_under_a_server_key_with_the_pairing_as_salt(
    sql_conn: SqlConn,
) -> None:
    family = new_family(sql_conn)
    ticket = pairing_code(sql_conn, family)
    stored = device_row(sql_conn, ticket.pairing_id)["pairing_code_hash"]
    for unkeyed in (ticket.code, f"callpanion-pairing:{ticket.code}",
                    f"{ticket.pairing_id}:{ticket.code}", f"{ticket.pairing_id}{ticket.code}"):  # fmt: skip
        assert stored != hashlib.sha256(unkeyed.encode()).hexdigest()
    other = uuid.uuid4()
    same_code = fetch(
        sql_conn,
        "select private.pairing_code_hash(%s, %s) as a, private.pairing_code_hash(%s, %s) as b",
        [ticket.pairing_id, ticket.code, other, ticket.code],
    )
    assert same_code["a"] == stored
    assert same_code["b"] != stored  # the pairing id salts it
    # Nobody but the owner reads the key or runs the hash (a reader of the table cannot
    # try the million codes).
    for role in ("authenticated", "service_role", "anon"):
        privileges = fetch(
            sql_conn,
            """select has_table_privilege(%s, 'private.pairing_keys', 'select') as key,
                      has_function_privilege(%s, 'private.pairing_code_hash(uuid, text)',
                                             'execute') as hash""",
            [role, role],
        )
        assert privileges == {"key": False, "hash": False}, role


def test_pairing_is_rate_limited_per_client_address(api_database: str, sql_conn: SqlConn) -> None:
    limited = ServedApi(settings_for(api_database, pairing_rate_limit=3))
    try:
        family = new_family(sql_conn)
        ticket = pairing_code(sql_conn, family)
        wrong = ticket.guess("000000" if ticket.code != "000000" else "000001")
        statuses = [limited.client.post("/v1/devices/pair", json=pair_body(wrong)).status_code
                    for _ in range(3)]  # fmt: skip
        assert statuses == [403, 403, 403]
        refused = limited.client.post("/v1/devices/pair", json=pair_body(ticket))
        assert refused.status_code == 429
        assert int(refused.headers["Retry-After"]) > 0
        assert refused.json()["field"] == "code"
        # Refused before the database: the right code is still open.
        assert fetch(sql_conn, "select status from device_pairs where relative_id = %s",
                     [family.relative])["status"] == "pending"  # fmt: skip
    finally:
        limited.stop()


def test_pairing_a_new_device_revokes_the_earlier_one(api: ServedApi, sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    old = pair(api, sql_conn, family)
    new = pair(api, sql_conn, family)
    assert device_row(sql_conn, old.id)["status"] == "revoked"
    assert device_row(sql_conn, old.id)["revoked_reason"] == "replaced by a newly paired device"
    assert device_row(sql_conn, new.id)["status"] == "active"
    refused = api.client.post("/v1/devices/me/heartbeat", json={}, headers=old.headers)
    assert refused.status_code == 401
    assert "revoked" in refused.json()["error"]
    assert (
        api.client.post("/v1/devices/me/heartbeat", json={}, headers=new.headers).status_code == 200
    )


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"fcm_token": "short"}, "fcm_token"),
        ({"voip_token": "z" * 64}, "voip_token"),
        ({"platform": "windows"}, "platform"),
        ({"label": "   "}, "label"),
        ({"app_version": "x" * 51}, "app_version"),
        ({"code": "12345"}, "code"),
        ({"pairing_id": "not-a-uuid"}, "pairing_id"),
        ({"pairing_id": None}, "pairing_id"),
    ],
)
def test_bad_pairing_input_is_refused_naming_the_field_and_keeps_the_code(
    api: ServedApi, sql_conn: SqlConn, change: dict[str, str], field: str
) -> None:
    family = new_family(sql_conn)
    code = pairing_code(sql_conn, family)
    response = api.client.post("/v1/devices/pair", json=pair_body(code) | change)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert response.json()["error"].startswith(f"{field}: ")
    row = fetch(sql_conn, "select status, pairing_failed_attempts from device_pairs where relative_id = %s",
                [family.relative])  # fmt: skip
    assert (row["status"], row["pairing_failed_attempts"]) == ("pending", 0)
    assert api.client.post("/v1/devices/pair", json=pair_body(code)).status_code == 201


def test_database_check_messages_reach_the_client(api: ServedApi, sql_conn: SqlConn) -> None:
    # An Android app sending an iOS token passes the schema; the device row still validates
    # it. Uppercase hex is accepted and stored lowercase.
    family = new_family(sql_conn)
    token = "AB" * 32
    response = api.client.post(
        "/v1/devices/pair", json=pair_body(pairing_code(sql_conn, family), voip_token=token)
    )
    assert response.status_code == 201
    assert device_row(sql_conn, response.json()["device_id"])["voip_token"] == token.lower()


def test_an_admin_revokes_the_device_and_it_gets_401(api: ServedApi, sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    device = pair(api, sql_conn, family)
    with pytest.raises(psycopg.errors.NoDataFound):
        as_user(sql_conn, family.member, "select revoke_device(%s)", [device.id])
    as_user(sql_conn, family.admin, "select revoke_device(%s)", [device.id])
    response = api.client.put(
        "/v1/devices/me/tokens", json={"fcm_token": "a" * 40}, headers=device.headers
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_members_see_the_failed_attempts_but_never_the_code_hash(db: Conn) -> None:
    world: World = build_world(db)
    with acting_as(db, "authenticated", world.a.members["member_a"]):
        row = db.execute(
            "select pairing_failed_attempts from devices where id = %s", [world.a.device]
        ).fetchone()
        assert row == {"pairing_failed_attempts": 0}
    for column in ("pairing_code_hash", "secret_hash"):
        with (
            acting_as(db, "authenticated", world.a.members["admin_a"]),
            pytest.raises(errors.InsufficientPrivilege),
        ):
            db.execute(f"select {column} from device_pairs")  # noqa: S608 - fixed names
    for role in ("authenticated", "service_role"):
        with acting_as(db, role, world.a.members["admin_a"]):
            privileged = db.execute(
                "select has_table_privilege(current_user, 'private.webhook_rejections', 'insert') as w"
            ).fetchone()
            assert privileged == {"w": False}
