"""Erasure reaches ElevenLabs through the running worker: a real `callpanion worker` process
claims the outbox's `provider_deletion` rows beside the alerts, sends the DELETE to the
ElevenLabs emulator and records the answer, which `public.erasures` shows.

Without an ElevenLabs key the worker leaves those rows queued and says so once.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from python_worker.emulators.elevenlabs import ElevenLabsEmulator
from tests.support.db import one
from tests.support.privacy import add_household, as_user
from tests.support.worker import Conn, Workers, wait_for

API_KEY = "test-worker-deletion-key"


@pytest.fixture
def provider() -> Iterator[ElevenLabsEmulator]:
    emulator = ElevenLabsEmulator(api_key=API_KEY)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()


def test_the_worker_deletes_an_erased_relatives_conversation_at_elevenlabs(
    wdb: Conn, workers: Workers, provider: ElevenLabsEmulator
) -> None:
    # The household first: its helper tells the alerts itself, before any worker could.
    hh = add_household(wdb)
    workers.start(ELEVENLABS_API_KEY=API_KEY, ELEVENLABS_BASE_URL=provider.base_url)
    gone, kept = hh.people
    provider.held.update(gone.conversations + kept.conversations)

    with as_user(wdb, hh.admin):
        result = one(wdb, "select erase_relative(%s) as r", [gone.id])["r"]
    assert isinstance(result, dict)
    assert result["conversations"] == 1

    wait_for("the DELETE at ElevenLabs", lambda: provider.deleted)
    assert provider.deleted == gone.conversations
    sent = wait_for(
        "the outbox row recorded as confirmed",
        lambda: wdb.execute(
            "select status, attempts from private.outbox"
            " where kind = 'provider_deletion' and status = 'sent'"
            " and payload->>'erasure_id' = %s",
            [str(result["id"])],
        ).fetchone(),
    )
    assert sent["attempts"] == 1
    done = wait_for(
        "the erasure to show the confirmation",
        lambda: wdb.execute(
            "select provider_confirmed, provider_done_at from public.erasures"
            " where id = %s and provider_done_at is not null",
            [result["id"]],
        ).fetchone(),
    )
    assert done["provider_confirmed"] == 1
    assert kept.conversations[0] not in provider.deleted


def test_a_worker_without_elevenlabs_settings_leaves_deletions_queued_and_says_so_once(
    wdb: Conn, workers: Workers, provider: ElevenLabsEmulator
) -> None:
    hh = add_household(wdb)
    worker = workers.start(ELEVENLABS_API_KEY="", ELEVENLABS_BASE_URL=provider.base_url)
    gone, _kept = hh.people
    provider.held.update(gone.conversations)
    with as_user(wdb, hh.admin):
        erased = one(wdb, "select erase_relative(%s) as r", [gone.id])["r"]
    assert isinstance(erased, dict)

    def warnings() -> list[object]:
        return [e for e in worker.logs() if "provider deletions stay queued" in str(e)]

    wait_for("the configuration warning", warnings)
    worker.stop()
    assert len(warnings()) == 1
    assert provider.deleted == []
    queued = one(
        wdb,
        "select status, attempts from private.outbox where kind = 'provider_deletion'"
        " and payload->>'erasure_id' = %s",
        [str(erased["id"])],
    )
    assert queued == {"status": "queued", "attempts": 0}
