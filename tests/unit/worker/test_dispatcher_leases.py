"""A lost lease stops a send before it starts (issue 23): `Dispatcher._send_one` and
`Dispatcher.lease_lost` with an injected clock and no database (the pool is never opened).

The provider stand-in records every call, so "not sent" means it was never asked.
"""

from __future__ import annotations

import asyncio
import datetime as dt

from python_worker.push.outcomes import Outcome
from python_worker.worker.db import ClaimedRow
from tests.unit.worker.test_dispatcher_results import Raising, dispatcher, sample
from tests.unit.worker.test_worker_units import NOW, claimed


def in_flight(lease_ends: dt.datetime) -> tuple[Raising, ClaimedRow, float]:
    """A provider that records its calls, a row in flight with that lease, and now."""
    return Raising(RuntimeError("sent")), claimed(locked_until=lease_ends), NOW.timestamp()


def test_a_row_whose_lease_ran_out_by_our_clock_is_not_sent() -> None:
    senders, row, now = in_flight(NOW)  # the lease ends at this very instant
    d = dispatcher(senders, lambda: now)
    d.in_flight[row.queue_id] = row
    assert asyncio.run(d._send_one(row)) is None
    assert senders.calls == []
    assert sample(d, "callpanion_leases_lost_total") == 1.0
    assert sample(d, "callpanion_push_lateness_seconds_count") == 0.0


def test_a_row_whose_lease_ended_a_while_ago_is_not_sent() -> None:
    senders, row, now = in_flight(NOW - dt.timedelta(seconds=5))  # renewals failed meanwhile
    d = dispatcher(senders, lambda: now)
    d.in_flight[row.queue_id] = row
    assert asyncio.run(d._send_one(row)) is None
    assert senders.calls == []
    assert sample(d, "callpanion_leases_lost_total") == 1.0


def test_a_row_with_a_moment_of_lease_left_is_sent() -> None:
    senders, row, now = in_flight(NOW + dt.timedelta(milliseconds=1))
    d = dispatcher(senders, lambda: now)
    d.in_flight[row.queue_id] = row
    result = asyncio.run(d._send_one(row))
    assert result is not None
    assert result.outcome is Outcome.RETRY  # the provider was asked (and raised)
    assert len(senders.calls) == 1
    assert sample(d, "callpanion_leases_lost_total") == 0.0


def test_a_row_a_renewal_did_not_return_is_not_sent_however_long_its_lease() -> None:
    senders, row, now = in_flight(NOW + dt.timedelta(minutes=10))
    d = dispatcher(senders, lambda: now)
    d.in_flight[row.queue_id] = row
    d.lost.add(row.queue_id)
    assert d.lease_lost(row.queue_id, now)
    assert asyncio.run(d._send_one(row)) is None
    assert senders.calls == []
    assert sample(d, "callpanion_leases_lost_total") == 1.0


def test_the_lease_is_read_from_the_renewed_row_not_the_claimed_one() -> None:
    senders, row, now = in_flight(NOW - dt.timedelta(seconds=5))  # as claimed: over
    d = dispatcher(senders, lambda: now)
    d.in_flight[row.queue_id] = claimed(
        queue_id=row.queue_id, locked_until=NOW + dt.timedelta(seconds=30)
    )  # as renewed since
    assert not d.lease_lost(row.queue_id, now)
    assert asyncio.run(d._send_one(row)) is not None
    assert len(senders.calls) == 1
