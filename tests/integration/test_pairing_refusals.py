"""Pairing's refusals at the SQL level (issue 26): what must stay true however pairing counts.

- a wrong, an expired and a locked code, and an unknown pairing id, get the same answer,
  byte for byte (the API collapsed them, so the SQL answers were never compared);
- a code expiring exactly now is expired, a code at its last allowed failure is locked;
- a guess naming an active or revoked device's id (a revoked code included) changes no
  device;
- `replaced_device_id` names the relative's active device, and is null when the relative
  has only revoked ones (which stay as they were);
- two apps claiming one code at the same moment (two real connections): one pairs.

These hold whatever budget the guesses are counted against, so no test reads the budget
(every refusal naming an existing pairing counts against its household by design:
test_pairing_budgets.py and test_api_pairing.py test that).
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from tests.support.edges import Conn, Family, add_family, row
from tests.support.worker import wait_for

CODE = "424242"
WRONG = "424243"

CLAIM = """select claim_pairing_code(p_pairing_id => %s, p_code => %s, p_secret_hash => %s,
             p_platform => 'ios', p_app_version => '2.0.0', p_label => 'Nan''s phone',
             p_voip_token => %s) as r"""


def add_pending(db: Conn, family: Family, *, expires_in: timedelta = timedelta(minutes=10),
                failures: int = 0) -> uuid.UUID:  # fmt: skip
    """A pending device of the family's relative with code CODE (as create_pairing_code
    leaves it), expiring `expires_in` after the transaction's now."""
    device = uuid.uuid4()
    db.execute(
        """insert into device_pairs (id, household_id, relative_id, status, pairing_code_hash,
               pairing_code_expires_at, pairing_failed_attempts)
           values (%s, %s, %s, 'pending', private.pairing_code_hash(%s, %s), now() + %s, %s)""",
        [device, family.household, family.relative, device, CODE, expires_in, failures],
    )
    return device


def claim(db: Conn, pairing: uuid.UUID, code: str) -> Any:
    return row(db, CLAIM, [pairing, code, secrets.token_hex(32), secrets.token_hex(32)])["r"]


def pairing_state(db: Conn) -> dict[str, Any]:
    """Every device row and every row of pairing's own tables (whatever they are named) but
    the budget counters, which every refusal spends by design."""
    state: dict[str, Any] = {
        "devices": db.execute("select to_jsonb(d) as d from device_pairs d order by id").fetchall()
    }
    tables = db.execute(
        "select quote_ident(table_name) as t from information_schema.tables"
        " where table_schema = 'private' and table_name like 'pairing%%'"
        " and table_name not in ('pairing_keys', 'pairing_budgets') order by table_name"
    ).fetchall()
    for t in tables:
        state[t["t"]] = db.execute(
            f"select to_jsonb(x) as x from private.{t['t']} x order by 1"  # noqa: S608
        ).fetchall()
    return state


def max_failures(db: Conn) -> int:
    value = row(db, "select private.pairing_max_failures() as n")["n"]
    assert isinstance(value, int)
    return value


def device(db: Conn, device_id: uuid.UUID) -> dict[str, Any]:
    return row(db, "select * from device_pairs where id = %s", [device_id])


def test_wrong_expired_locked_and_unknown_get_one_answer_byte_for_byte(db: Conn) -> None:
    family = add_family(db)
    wrong = add_pending(db, family)
    answers = {"wrong": claim(db, wrong, WRONG)}
    other = add_family(db)
    expired = add_pending(db, other, expires_in=timedelta(0))  # expires exactly now
    answers["expired"] = claim(db, expired, CODE)
    third = add_family(db)
    locked = add_pending(db, third, failures=max_failures(db))
    answers["locked"] = claim(db, locked, CODE)
    answers["unknown"] = claim(db, uuid.uuid4(), CODE)
    texts = {
        name: row(db, "select %s::jsonb::text as t", [psycopg.types.json.Jsonb(a)])["t"]
        for name, a in answers.items()
    }
    assert len(set(texts.values())) == 1, texts
    assert answers["wrong"] == {"outcome": "invalid"}
    # The right code did not pair the expired or the locked device.
    assert device(db, expired)["status"] == "pending"
    assert device(db, locked)["status"] == "pending"


def test_a_code_expiring_a_moment_from_now_still_pairs(db: Conn) -> None:
    family = add_family(db)
    pending = add_pending(db, family, expires_in=timedelta(microseconds=1))
    assert claim(db, pending, CODE)["outcome"] == "paired"


def test_a_code_is_locked_at_its_last_allowed_failure(db: Conn) -> None:
    family = add_family(db)
    limit = max_failures(db)
    pending = add_pending(db, family, failures=limit - 2)
    assert claim(db, pending, WRONG) == {"outcome": "invalid"}
    assert device(db, pending)["pairing_failed_attempts"] == limit - 1
    # One failure short of the limit: the right code still pairs ...
    with db.transaction(force_rollback=True):
        assert claim(db, pending, CODE)["outcome"] == "paired"
    # ... at the limit it is locked, the right code included, and nothing more is counted.
    assert claim(db, pending, WRONG) == {"outcome": "invalid"}
    assert device(db, pending)["pairing_failed_attempts"] == limit
    before = pairing_state(db)
    assert claim(db, pending, CODE) == {"outcome": "invalid"}
    assert pairing_state(db) == before


@pytest.mark.parametrize("status", ["active", "revoked", "revoked_code"])
def test_a_guess_at_a_paired_devices_id_costs_nothing(db: Conn, status: str) -> None:
    family = add_family(db)
    pending = add_pending(db, family)  # an open code in the same household
    guessed = family.device
    if status == "revoked_code":
        # A code revoked before anyone claimed it keeps its hash and expiry: the right code
        # must not bring it back.
        guessed = pending
    if status != "active":
        db.execute(
            "update device_pairs set status = 'revoked', revoked_at = now(),"
            " revoked_reason = 'lost' where id = %s",
            [guessed],
        )
    before = pairing_state(db)
    for code in (CODE, WRONG, "000000"):
        assert claim(db, guessed, code) == {"outcome": "invalid"}
    assert pairing_state(db) == before


def test_pairing_replaces_the_active_device_and_names_it(db: Conn) -> None:
    family = add_family(db)
    # Another relative's active device, in the same household and in another: not touched.
    sibling = row(
        db,
        "insert into relatives (household_id, display_name, timezone)"
        " values (%s, 'Grandad', 'UTC') returning id",
        [family.household],
    )["id"]
    siblings_device = row(
        db,
        """insert into device_pairs (household_id, relative_id, status, platform, voip_token,
               secret_hash, paired_at)
           values (%s, %s, 'active', 'ios', %s, 'h', now()) returning id""",
        [family.household, sibling, secrets.token_hex(32)],
    )["id"]
    neighbour = add_family(db)
    pending = add_pending(db, family)
    answer = claim(db, pending, CODE)
    assert (answer["outcome"], answer["device_id"], answer["replaced_device_id"]) == (
        "paired",
        str(pending),
        str(family.device),
    )
    old = device(db, family.device)
    assert (old["status"], old["revoked_reason"]) == (
        "revoked",
        "replaced by a newly paired device",
    )
    assert device(db, neighbour.device)["status"] == "active"
    assert device(db, siblings_device)["status"] == "active"


def test_with_only_revoked_devices_nothing_is_replaced(db: Conn) -> None:
    family = add_family(db)
    lost_at = datetime(2026, 1, 2, 3, 4, 5).astimezone()
    db.execute(
        "update device_pairs set status = 'revoked', revoked_at = %s, revoked_reason = 'lost'"
        " where id = %s",
        [lost_at, family.device],
    )
    before = device(db, family.device)
    pending = add_pending(db, family)
    answer = claim(db, pending, CODE)
    assert answer["outcome"] == "paired"
    assert "replaced_device_id" in answer
    assert answer["replaced_device_id"] is None
    after = device(db, family.device)
    assert (after["status"], after["revoked_at"], after["revoked_reason"]) == (
        "revoked",
        lost_at,
        "lost",
    )
    assert after == before


def test_two_apps_claiming_one_code_at_once_pair_one_device(worker_database: str) -> None:
    # Real connections: the first claim holds the pending row; the second waits for it and
    # then finds no open code (the same answer as any refusal).
    with psycopg.connect(worker_database, autocommit=True, row_factory=dict_row) as setup:
        family = add_family(setup)
        pending = add_pending(setup, family)
        try:
            first = psycopg.connect(worker_database, row_factory=dict_row)
            answers: dict[str, Any] = {}
            first_answer = claim(first, pending, CODE)  # in its transaction, not committed
            second_pid: list[int] = []

            def second_claim() -> None:
                with psycopg.connect(worker_database, row_factory=dict_row) as second:
                    second_pid.append(row(second, "select pg_backend_pid() as p")["p"])
                    answers["second"] = claim(second, pending, CODE)
                    second.commit()

            thread = threading.Thread(target=second_claim)
            thread.start()
            waiting: Callable[[], bool] = lambda: bool(  # noqa: E731
                second_pid
                and setup.execute(
                    "select 1 from pg_locks where pid = %s and not granted", second_pid
                ).fetchall()
            )
            wait_for("the second claim to wait for the first", waiting)
            first.commit()
            first.close()
            thread.join(timeout=30)
            assert not thread.is_alive()
            assert first_answer["outcome"] == "paired"
            assert answers["second"] == {"outcome": "invalid"}
            active = setup.execute(
                "select id from device_pairs where relative_id = %s and status = 'active'",
                [family.relative],
            ).fetchall()
            assert active == [{"id": pending}]
        finally:
            setup.execute("truncate households, auth.users cascade")
