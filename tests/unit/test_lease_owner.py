"""A lease owner is the configured worker id plus a per-boot suffix, within 200 characters."""

from __future__ import annotations

import re

from python_worker.worker.presence import lease_owner


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
