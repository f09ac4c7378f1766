"""Typed pairing and forgiving input (issue 27, item 2): the 6-digit code plus the short
reference the dashboard shows beside it pairs as the QR code does; guessing references
is as hopeless as guessing pairing ids; an empty token string is "no token"."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.support.api import (
    Row,
    ServedApi,
    Ticket,
    as_user,
    bearer,
    fetch,
    new_family,
    pair_body,
    pairing_code,
)
from tests.support.world import apns_token, fcm_token

SqlConn = psycopg.Connection[Row]
REFUSED = {"error": "code: not a valid pairing code (wrong, expired or locked)", "field": "code"}
ALPHABET = set("0123456789ABCDEFGHJKMNPQRSTVWXYZ")


def _create(conn: SqlConn, relative: uuid.UUID, admin: uuid.UUID) -> Row:
    return as_user(conn, admin, "select * from create_pairing(%s)", [relative])[0]


def _typed(reference: str, code: str, platform: str = "android", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "pairing_reference": reference,
        "code": code,
        "platform": platform,
        "fcm_token": fcm_token(),
    }
    return body | extra


def _device(conn: SqlConn, device: object) -> Row:
    return fetch(conn, "select * from device_pairs where id = %s", [device])


def test_the_dashboard_shows_a_reference_beside_the_code(sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    created = _create(sql_conn, family.relative, family.admin)
    reference = created["reference"]
    assert len(reference) == 9
    assert reference[4] == "-"
    assert set(reference.replace("-", "")) <= ALPHABET
    assert created["pairing_id"] == created["device_id"]
    assert len(created["code"]) == 6
    row = _device(sql_conn, created["pairing_id"])
    assert row["pairing_reference"] == reference.replace("-", "")
    # Another family's admin cannot create one for this relative (same answer as none).
    other = new_family(sql_conn)
    with pytest.raises(psycopg.errors.NoDataFound):
        _create(sql_conn, family.relative, other.admin)


def test_typing_the_code_and_the_reference_pairs_like_the_qr_code(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    family = new_family(sql_conn)
    created = _create(sql_conn, family.relative, family.admin)
    # As a person types it: lower case, a space instead of the hyphen, O for 0, l for 1.
    typed = created["reference"].lower().replace("-", " ").replace("0", "o").replace("1", "l")
    response = api.client.post("/v1/devices/pair", json=_typed(typed, created["code"]))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["device_id"] == str(created["pairing_id"])
    assert (body["household_id"], body["relative_id"]) == (
        str(family.household),
        str(family.relative),
    )
    row = _device(sql_conn, created["pairing_id"])
    # Claimed: the reference can never pair again, so it is not kept.
    assert (row["status"], row["pairing_reference"]) == ("active", None)
    # No label, no app version sent: the family sees a default label.
    assert (row["label"], row["app_version"]) == ("Android phone", None)
    again = api.client.post("/v1/devices/pair", json=_typed(typed, created["code"]))
    assert (again.status_code, again.json()) == (403, REFUSED)
    me = api.client.put(
        "/v1/devices/me/tokens", json={"voip_token": ""}, headers=bearer(body["device_id"],
                                                                         body["device_secret"]),
    )  # fmt: skip
    assert me.status_code == 200, me.text


def test_a_wrong_code_counts_against_that_pairing_only(api: ServedApi, sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    created = _create(sql_conn, family.relative, family.admin)
    wrong = f"{(int(created['code']) + 1) % 1_000_000:06d}"
    response = api.client.post("/v1/devices/pair", json=_typed(created["reference"], wrong))
    assert (response.status_code, response.json()) == (403, REFUSED)
    assert _device(sql_conn, created["pairing_id"])["pairing_failed_attempts"] == 1


def test_an_unknown_reference_is_answered_as_an_unknown_pairing_and_touches_nothing(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    family = new_family(sql_conn)
    created = _create(sql_conn, family.relative, family.admin)
    before = sql_conn.execute("select * from device_pairs order by id").fetchall()
    # The attacker's side: a reference nobody was shown, with the right code even.
    unknown = "ZZZZZZZZ" if created["reference"] != "ZZZZ-ZZZZ" else "YYYYYYYY"
    typed = api.client.post("/v1/devices/pair", json=_typed(unknown, created["code"]))
    scanned = api.client.post(
        "/v1/devices/pair", json=pair_body(pairing_code(sql_conn, new_family(sql_conn)).guess(
            "000000"), "android") | {"pairing_id": str(uuid.uuid4())},
    )  # fmt: skip
    assert (
        (typed.status_code, typed.json())
        == (scanned.status_code, scanned.json())
        == (
            403,
            REFUSED,
        )
    )
    after = sql_conn.execute(
        "select * from device_pairs where id = any(%s) order by id", [[r["id"] for r in before]]
    ).fetchall()
    assert after == before
    # In SQL: an unknown reference names a pairing id that no device has, never NULL.
    resolved = fetch(
        sql_conn, "select private.pairing_id_for_reference(%s) as id", [unknown]
    )["id"]  # fmt: skip
    assert resolved is not None
    assert sql_conn.execute("select 1 from device_pairs where id = %s", [resolved]).fetchall() == []


def test_an_expired_codes_reference_resolves_to_nobody(api: ServedApi, sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    created = _create(sql_conn, family.relative, family.admin)
    sql_conn.execute(
        "update device_pairs set pairing_code_expires_at = now() - interval '1 second'"
        " where id = %s",
        [created["pairing_id"]],
    )
    response = api.client.post(
        "/v1/devices/pair", json=_typed(created["reference"], created["code"])
    )
    assert (response.status_code, response.json()) == (403, REFUSED)
    assert _device(sql_conn, created["pairing_id"])["status"] == "pending"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"pairing_reference": "ABCD-EFGU"}, "pairing_reference"),  # U is not in the alphabet
        ({"pairing_reference": "ABC"}, "pairing_reference"),
        ({}, "pairing_id"),  # neither
        ({"pairing_reference": "ABCD-EFGH", "pairing_id": str(uuid.uuid4())}, "pairing_id"),
    ],
)
def test_a_bad_reference_is_refused_naming_the_field(
    api: ServedApi, body: dict[str, Any], field: str
) -> None:
    request = {"code": "123456", "platform": "android"} | body
    response = api.client.post("/v1/devices/pair", json=request)
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert f"{field}: " in response.json()["error"]


def test_an_empty_token_string_is_no_token(api: ServedApi, sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    ticket = pairing_code(sql_conn, family)
    # Android's getDevicePushTokenVoIP() answers "": the app sends it as the VoIP token.
    body = pair_body(ticket, "android", voip_token="", apns_token="")
    response = api.client.post("/v1/devices/pair", json=body)
    assert response.status_code == 201, response.text
    answer = response.json()
    row = _device(sql_conn, answer["device_id"])
    assert (row["voip_token"], row["apns_token"], row["fcm_token"]) == (
        None,
        None,
        body["fcm_token"],
    )
    headers = bearer(answer["device_id"], answer["device_secret"])
    ios_token = apns_token()
    stored = api.client.put("/v1/devices/me/tokens", json={"apns_token": ios_token},
                            headers=headers)  # fmt: skip
    assert stored.status_code == 200, stored.text
    # "" is "no token": the stored ones are kept, exactly as when the key is absent.
    kept = api.client.put(
        "/v1/devices/me/tokens",
        json={"fcm_token": "", "voip_token": "", "apns_token": ""},
        headers=headers,
    )
    assert kept.status_code == 200, kept.text
    row = _device(sql_conn, answer["device_id"])
    assert (row["fcm_token"], row["apns_token"], row["voip_token"]) == (
        body["fcm_token"],
        ios_token,
        None,
    )
    # A token that is not empty but malformed is still refused, naming the field.
    bad = api.client.put("/v1/devices/me/tokens", json={"voip_token": " "}, headers=headers)
    assert (bad.status_code, bad.json()["field"]) == (422, "voip_token")


def test_the_reference_functions_are_not_callable_by_clients(sql_conn: SqlConn) -> None:
    family = new_family(sql_conn)
    for function in (
        "private.pairing_id_for_reference('ABCDEFGH')",
        "public.pair_device_by_reference('ABCDEFGH', '123456', repeat('a', 64), 'ios', null,"
        " 'x', null, null, null)",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            as_user(sql_conn, family.admin, f"select {function}")
        sql_conn.rollback() if sql_conn.info.transaction_status else None


def _scans(conn: SqlConn) -> tuple[int, int, int]:
    row = fetch(
        conn,
        "select coalesce(seq_scan, 0) as seq, coalesce(idx_scan, 0) as idx,"
        " coalesce(n_tup_upd, 0) as upd from pg_stat_xact_user_tables"
        " where relid = 'public.device_pairs'::regclass",
    )
    return row["seq"], row["idx"], row["upd"]


def test_resolving_a_known_and_an_unknown_reference_does_the_same_work(
    sql_conn: SqlConn,
) -> None:
    family = new_family(sql_conn)
    created = _create(sql_conn, family.relative, family.admin)
    sql_conn.commit()
    work = []
    # (A reference of the wrong form never gets here: 422 before, as its form is public.)
    unknown = "ZZZZ-ZZZZ" if created["reference"] != "ZZZZ-ZZZZ" else "YYYY-YYYY"
    for reference in (created["reference"], unknown):
        # pg_stat_xact_* counts this transaction's reads only: exact, not sampled.
        with sql_conn.transaction():
            before = _scans(sql_conn)
            fetch(sql_conn, "select private.pairing_id_for_reference(%s) as id", [reference])
            after = _scans(sql_conn)
        work.append(tuple(a - b for a, b in zip(after, before, strict=True)))
    assert work[0] == work[1], work
    assert work[0][1] == 1  # one index lookup, found or not
    assert work[0][2] == 0  # resolving writes nothing


def _budgets(conn: SqlConn, household: uuid.UUID) -> tuple[int, int]:
    """What the global pool of unknown ids and the household's budget have spent (the
    counters of the current window, whichever shard)."""
    spent = fetch(
        conn,
        """select coalesce(sum(spent) filter (where scope like 'unknown:%%'), 0) as unknown,
                  coalesce(sum(spent) filter (where scope = 'household:' || %s::text), 0)
                    as household
             from private.pairing_budgets""",
        [household],
    )
    return int(spent["unknown"]), int(spent["household"])


def test_an_unknown_reference_spends_the_unknown_pool_as_an_unknown_pairing_id_does(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    # The attacker's side: typed references nobody was shown cost what unknown pairing ids
    # cost (one each from the global pool), and never the household whose code is open: else
    # a stranger typing guesses could lock a family out of pairing.
    family = new_family(sql_conn)
    created = _create(sql_conn, family.relative, family.admin)
    household = family.household
    unknown = "ZZZZZZZZ" if created["reference"] != "ZZZZ-ZZZZ" else "YYYYYYYY"
    unknown_before, household_before = _budgets(sql_conn, household)

    typed = api.client.post("/v1/devices/pair", json=_typed(unknown, created["code"]))
    assert (typed.status_code, typed.json()) == (403, REFUSED)
    after_typed = _budgets(sql_conn, household)
    assert after_typed == (unknown_before + 1, household_before)

    scanned = api.client.post(
        "/v1/devices/pair",
        json=pair_body(Ticket(uuid.uuid4(), created["code"]), "android"),
    )
    assert (scanned.status_code, scanned.json()) == (403, REFUSED)
    assert _budgets(sql_conn, household) == (after_typed[0] + 1, household_before)

    # The household's budget is the one a guess at its own reference spends (so the
    # counters read above are the right ones), and the unknown pool is left alone.
    wrong = "000000" if created["code"] != "000000" else "111111"
    known = api.client.post("/v1/devices/pair", json=_typed(created["reference"], wrong))
    assert (known.status_code, known.json()) == (403, REFUSED)
    assert _budgets(sql_conn, household) == (after_typed[0] + 1, household_before + 1)
