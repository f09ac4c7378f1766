"""A lease owner is the configured worker id plus a per-boot suffix, within 200 characters;
building a Presence connects to nothing (no cluster here)."""

from __future__ import annotations

import re
import time

import pytest

from python_worker.worker.presence import Presence, lease_owner


def test_a_lease_owner_keeps_the_id_and_adds_a_random_suffix() -> None:
    first, second = lease_owner("worker-a"), lease_owner("worker-a")
    assert re.fullmatch(r"worker-a#[0-9a-f]{8}", first)
    assert first != second  # two processes sharing an id never share a lease


def test_a_long_worker_id_is_cut_so_the_owner_fits_in_200_characters() -> None:
    owner = lease_owner("w" * 500)
    assert owner.startswith("w" * 190 + "#")
    assert len(owner) == 199
    assert len(lease_owner("w" * 190)) == 199
    assert lease_owner("w" * 189).startswith("w" * 189 + "#")


def test_the_presence_clock_is_named_never_positional() -> None:
    # Presence(url, role, owner, clock=...): a fourth positional argument is a mistake.
    with pytest.raises(TypeError):
        Presence("postgresql://localhost/x", None, "w", time.monotonic)  # type: ignore[call-arg]
    assert Presence("postgresql://localhost/x", None, "w", clock=time.monotonic).held is False
