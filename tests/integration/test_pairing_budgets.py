"""Issue 25, items 2 and 7a, from the attacker's side: nobody can spend another household's
pairing budget, and a pairing without a push token never revokes a working device.

The attacker is one signed-up account acting only through what any account may do: create
households (RPC), relatives and pairing codes (under RLS), and send pairing requests to the
running API, concurrently, as fast as it can.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg

from tests.support.api import (
    Row,
    ServedApi,
    Ticket,
    as_user,
    fetch,
    new_family,
    pair_body,
    pairing_code,
)

SqlConn = psycopg.Connection[Row]
WRONG = "code: not a valid pairing code (wrong, expired or locked)"


def _attacker_codes(conn: SqlConn, households: int, relatives: int) -> list[Ticket]:
    """One account's own households, relatives and fresh codes, made as the dashboard would."""
    user = fetch(conn, "insert into auth.users (email) values (%s) returning id",
                 [f"{uuid.uuid4().hex}@attacker.test"])["id"]  # fmt: skip
    tickets = []
    for h in range(households):
        household = as_user(conn, user, "select id from create_household(%s)", [f"Mine {h}"])
        for r in range(relatives):
            relative = as_user(
                conn, user,
                "insert into relatives (household_id, display_name, timezone)"
                " values (%s, %s, 'UTC') returning id",
                [household[0]["id"], f"R{r}"],
            )[0]["id"]  # fmt: skip
            code = as_user(conn, user, "select * from create_pairing_code(%s)", [relative])[0]
            tickets.append(Ticket(code["pairing_id"], code["code"]))
    return tickets


def _unknown_spent(conn: SqlConn) -> int:
    return int(
        fetch(
            conn,
            "select coalesce(sum(spent), 0) as n from private.pairing_budgets"
            " where scope like 'unknown:%%'",
        )["n"]
    )


def test_one_account_spending_as_fast_as_it_can_changes_nothing_for_another_household(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    victim = new_family(sql_conn, "Victim")
    tickets = _attacker_codes(sql_conn, households=3, relatives=2)
    unknown_before = _unknown_spent(sql_conn)

    def guess(index: int) -> int:
        ticket = tickets[index % len(tickets)]
        wrong = ticket.guess(f"{(int(ticket.code) + 1 + index) % 1_000_000:06d}")
        with httpx.Client(base_url=api.url, timeout=30) as client:
            return client.post("/v1/devices/pair", json=pair_body(wrong)).status_code

    # 3 households x 25 = 75 refusals spend all of the account's budgets; send 240.
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(guess, range(240)))
    assert set(statuses) == {403, 429}
    assert statuses.count(429) > 0  # its own budgets are spent: it is refused
    # Its own codes are locked, and its households' budgets spent ...
    locked = fetch(
        sql_conn,
        "select count(*) as n from device_pairs where id = any(%s)"
        " and pairing_failed_attempts >= 5",
        [[t.pairing_id for t in tickets]],
    )
    assert locked["n"] == len(tickets)
    # ... but the shared pool is untouched, and another household's codes answer as before.
    assert _unknown_spent(sql_conn) == unknown_before
    theirs = pairing_code(sql_conn, victim)
    wrong = api.client.post(
        "/v1/devices/pair", json=pair_body(theirs.guess(f"{(int(theirs.code) + 1) % 10**6:06d}"))
    )
    assert (wrong.status_code, wrong.json()["error"]) == (403, WRONG)
    right = api.client.post("/v1/devices/pair", json=pair_body(theirs))
    assert right.status_code == 201, right.text


def test_a_pairing_without_any_push_token_is_refused_and_the_working_device_stays(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    family = new_family(sql_conn)
    first = api.client.post("/v1/devices/pair", json=pair_body(pairing_code(sql_conn, family)))
    assert first.status_code == 201
    ticket = pairing_code(sql_conn, family)
    bare = pair_body(ticket, fcm_token=None, voip_token=None)
    bare.pop("apns_token")
    refused = api.client.post("/v1/devices/pair", json=bare)
    assert refused.status_code == 422
    assert refused.json()["field"] == "fcm_token"
    assert "push token" in refused.json()["error"]
    working = fetch(sql_conn, "select status from device_pairs where id = %s",
                    [first.json()["device_id"]])  # fmt: skip
    assert working["status"] == "active"
    # The code is left as it was (not spent, not counted): with a token it pairs.
    row = fetch(sql_conn, "select pairing_failed_attempts as n from device_pairs where id = %s",
                [ticket.pairing_id])  # fmt: skip
    assert row["n"] == 0
    assert api.client.post("/v1/devices/pair", json=pair_body(ticket)).status_code == 201
