"""Erasure of a relative and of a household (issue 24, item 2): every row, every column, JSON
included, found from the catalog; ElevenLabs asked through the outbox (the emulator's DELETE
over real HTTP); the attacker's side. Real Postgres, in a transaction rolled back afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from python_worker.emulators.elevenlabs import ElevenLabsEmulator, transcription_payload
from python_worker.worker import provider_deletion
from tests.support.db import Conn, one
from tests.support.privacy import add_household, as_user, occurrences, rows_about

API_KEY = "test-erasure-key"


@pytest.fixture
def provider() -> Iterator[ElevenLabsEmulator]:
    emulator = ElevenLabsEmulator(api_key=API_KEY)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


def deliver(db: Conn, provider: ElevenLabsEmulator, api_key: str = API_KEY) -> dict[str, str]:
    """One batch of the worker's provider_deletion delivery, against the emulator."""
    with httpx.Client(timeout=10) as client:
        return provider_deletion.run_once(
            db, client, base_url=provider.base_url, api_key=api_key, worker="privacy-test"
        )


def erasure(db: Conn, erasure_id: object) -> dict[str, object]:
    return one(db, "select * from erasures where id = %s", [erasure_id])


def test_erasing_a_relative_leaves_nothing_anywhere_and_the_other_relative_keeps_all(
    db: Conn, provider: ElevenLabsEmulator
) -> None:
    hh = add_household(db)
    gone, kept = hh.people
    provider.held.update(gone.conversations + kept.conversations)
    assert occurrences(db, gone.needles()), "the search finds nothing even before the erasure"
    before = rows_about(db, kept)

    with as_user(db, hh.admin):
        result = one(db, "select erase_relative(%s) as r", [gone.id])["r"]
    assert isinstance(result, dict)
    assert result["conversations"] == 1
    assert result["provider_done_at"] is None
    assert result["removed"]["call_logs"] == 1
    assert result["removed"]["alerts"] == 2

    # Until ElevenLabs confirms, only the outbox row that asks it holds the conversation id.
    hits = occurrences(db, gone.needles())
    assert {h[0] for h in hits} == {"private.outbox.payload"}, hits
    assert {h[1] for h in hits} == set(gone.conversations)

    assert set(deliver(db, provider).values()) == {"sent"}
    assert provider.deleted == gone.conversations
    assert occurrences(db, gone.needles()) == []
    done = erasure(db, result["id"])
    assert done["provider_confirmed"] == 1
    assert done["provider_done_at"] is not None
    assert rows_about(db, kept) == before


def test_erasure_finds_an_unmatched_webhook_by_the_ids_inside_its_body(db: Conn) -> None:
    hh = add_household(db)
    gone = hh.people[0]
    # A webhook no session claimed (another conversation id), whose dynamic variables still
    # name the relative's session: only the ids inside the body tie it to them.
    stray = transcription_payload("conv_stray" + uuid.uuid4().hex[:8], summary="unmatched")
    variables = stray["data"]["conversation_initiation_client_data"]["dynamic_variables"]
    variables["relative_id"] = str(gone.id)
    one(db, "select * from store_webhook_event(%s, 0)", [Jsonb(stray)])
    with as_user(db, hh.admin):
        db.execute("select erase_relative(%s)", [gone.id])
    assert occurrences(db, [str(gone.id)]) == []


def test_an_outage_at_elevenlabs_only_delays_the_deletion(
    db: Conn, provider: ElevenLabsEmulator
) -> None:
    hh = add_household(db)
    gone = hh.people[0]
    provider.held.update(gone.conversations)
    with as_user(db, hh.admin):
        erased = one(db, "select erase_relative(%s) as r", [gone.id])["r"]
    provider.delete_faults.append(503)
    assert set(deliver(db, provider).values()) == {"retry"}
    assert provider.deleted == []
    pending = one(
        db,
        "select status, next_attempt_at from private.outbox where kind = 'provider_deletion'"
        " and payload ->> 'erasure_id' = %s",
        [erasure_id := erased["id"]],  # type: ignore[index]
    )
    assert pending["status"] == "queued"
    assert erasure(db, erasure_id)["provider_done_at"] is None
    db.execute("update private.outbox set next_attempt_at = now() where kind = 'provider_deletion'")
    assert set(deliver(db, provider).values()) == {"sent"}
    assert provider.deleted == gone.conversations
    assert erasure(db, erasure_id)["provider_done_at"] is not None


def test_a_conversation_elevenlabs_no_longer_has_counts_as_deleted(
    db: Conn, provider: ElevenLabsEmulator
) -> None:
    hh = add_household(db)
    with as_user(db, hh.admin):
        erased = one(db, "select erase_relative(%s) as r", [hh.people[0].id])["r"]
    assert set(deliver(db, provider).values()) == {"sent"}  # the emulator answered 404
    assert erasure(db, erased["id"])["provider_confirmed"] == 1  # type: ignore[index]


def test_a_late_webhook_for_an_erased_conversation_keeps_no_body(db: Conn) -> None:
    hh = add_household(db)
    gone = hh.people[0]
    with as_user(db, hh.admin):
        db.execute("select erase_relative(%s)", [gone.id])
    from psycopg.types.json import Jsonb

    from python_worker.emulators.elevenlabs import transcription_payload

    late = transcription_payload(gone.conversations[0], summary=gone.phrase)
    stored = one(db, "select * from store_webhook_event(%s, 0)", [Jsonb(late)])
    again = one(db, "select * from store_webhook_event(%s, 0)", [Jsonb(late)])
    assert again["duplicate"] is True
    assert again["event_id"] == stored["event_id"]
    # The id stays only in the outbox row that asks ElevenLabs, and in the late row's dedupe
    # key (how a resend finds its first copy) until the daily cleanup removes that row.
    assert {h[0] for h in occurrences(db, gone.conversations)} == {
        "private.outbox.payload",
        "public.webhook_events.dedupe_key",
    }
    assert occurrences(db, [gone.phrase, gone.name, str(gone.sessions[0])]) == []
    late_row = one(
        db, "select status, payload from webhook_events where id = %s", [stored["event_id"]]
    )
    assert late_row["status"] == "ignored"
    assert late_row["payload"] == {
        "type": "post_call_transcription",
        "event_timestamp": late["event_timestamp"],
        "data": {"erased": True},
    }
    processed = one(db, "select process_webhook_event(%s, '{}') as r", [stored["event_id"]])["r"]
    assert isinstance(processed, dict)
    assert processed["status"] == "ignored"


def test_erasing_a_household_leaves_nothing_and_goes_once_elevenlabs_confirms(
    db: Conn, provider: ElevenLabsEmulator
) -> None:
    hh = add_household(db)
    other = add_household(db)
    provider.held.update(c for p in hh.people for c in p.conversations)
    before = [rows_about(db, p) for p in other.people]
    needles = [n for p in hh.people for n in p.needles()]
    addresses = [
        str(r["address"])
        for r in db.execute(
            "select address from contact_methods where household_id = %s", [hh.id]
        ).fetchall()
    ]
    with as_user(db, hh.admin):
        result = one(db, "select erase_household(%s) as r", [hh.id])["r"]
    assert isinstance(result, dict)
    assert result["conversations"] == 2
    assert result["household_removed"] is False
    assert occurrences(db, addresses) == []
    with as_user(db, hh.admin):
        seen = one(db, "select provider_confirmed, provider_done_at from erasures")
    assert seen == {"provider_confirmed": 0, "provider_done_at": None}
    assert set(deliver(db, provider).values()) == {"sent"}
    assert sorted(provider.deleted) == sorted(c for p in hh.people for c in p.conversations)
    with as_user(db, hh.admin):
        assert one(db, "select provider_done_at from erasures")["provider_done_at"] is not None
    assert one(db, "select private.finish_erasures() as n")["n"] == 1
    assert occurrences(db, [*needles, str(hh.id)]) == []
    assert [rows_about(db, p) for p in other.people] == before


@pytest.mark.parametrize("function", ["erase_relative", "erase_household"])
def test_a_plain_member_cannot_erase(db: Conn, function: str) -> None:
    hh = add_household(db)
    target = hh.people[0].id if function == "erase_relative" else hh.id
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="only an admin"):  # noqa: SIM117
        with as_user(db, hh.member):
            db.execute(sql.SQL("select {}(%s)").format(sql.Identifier(function)), [target])
    assert one(db, "select count(*) as n from relatives where household_id = %s", [hh.id])["n"] == 2


@pytest.mark.parametrize("function", ["erase_relative", "erase_household"])
def test_another_household_cannot_erase(db: Conn, function: str) -> None:
    hh, attacker = add_household(db), add_household(db)
    target = hh.people[0].id if function == "erase_relative" else hh.id
    for who in (attacker.admin, None, uuid.uuid4()):
        with pytest.raises(psycopg.errors.NoDataFound, match="not found"):  # noqa: SIM117
            with as_user(db, who):
                db.execute(sql.SQL("select {}(%s)").format(sql.Identifier(function)), [target])
    assert one(db, "select count(*) as n from relatives where household_id = %s", [hh.id])["n"] == 2
    assert one(db, "select count(*) as n from erasures")["n"] == 0


def test_anon_may_not_call_erasure(db: Conn) -> None:
    hh = add_household(db)
    with db.transaction(force_rollback=True):
        db.execute("set local role anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("select erase_relative(%s)", [hh.people[0].id])


def test_a_household_without_conversations_is_gone_at_once(db: Conn) -> None:
    hh = add_household(db)
    db.execute("update call_sessions set conversation_id = null where household_id = %s", [hh.id])
    db.execute("update call_logs set conversation_id = null where household_id = %s", [hh.id])
    db.execute("delete from webhook_events where household_id = %s", [hh.id])
    with as_user(db, hh.admin):
        result = one(db, "select erase_household(%s) as r", [hh.id])["r"]
    assert isinstance(result, dict)
    assert result["household_removed"] is True
    assert one(db, "select count(*) as n from households where id = %s", [hh.id])["n"] == 0
    assert occurrences(db, [str(hh.id), *(p.name for p in hh.people)]) == []


def test_a_wrong_api_key_keeps_the_deletion_and_tells_the_household_once(
    db: Conn, provider: ElevenLabsEmulator
) -> None:
    hh = add_household(db)
    gone = hh.people[0]
    provider.held.update(gone.conversations)
    with as_user(db, hh.admin):
        db.execute("select erase_relative(%s)", [gone.id])
    assert set(deliver(db, provider, api_key="wrong").values()) == {"retry"}
    assert provider.deleted == []
    told = db.execute(
        "select kind, message from alerts where household_id = %s and kind = 'provider_config'",
        [hh.id],
    ).fetchall()
    assert len(told) == 1
    assert gone.name not in str(told)
    assert gone.conversations[0] not in str(told)
