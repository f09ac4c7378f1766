"""A lease the worker lost while a row waited for its send_at (issue 23): the row is not sent.

Real `callpanion worker` processes and the emulators; the lease is taken over in the database,
as another worker's claim would take it once it ran out.
"""

from __future__ import annotations

from python_worker.emulators.suite import ThreadedSuite
from tests.support.worker import (
    Conn,
    Workers,
    delivered_tokens,
    metric,
    queue_many,
    queue_row,
    status_is,
    wait_for,
)


def test_a_row_whose_lease_renewal_failed_is_not_sent(
    wdb: Conn, workers: Workers, emulators: ThreadedSuite
) -> None:
    # Claimed 30 s ahead under a 5 s lease: renewed every ~1.7 s while the rows wait.
    worker = workers.start(CALLPANION_LEASE_SECS="5", CALLPANION_CLAIM_AHEAD_MS="30000")
    stolen, kept = queue_many(wdb, 2, in_s=20)
    wait_for("both rows claimed", lambda: metric(worker, "callpanion_in_flight") == 2)
    before = queue_row(wdb, kept)["locked_until"]
    wdb.execute(
        "update notification_queue set locked_by = 'another-worker#0001',"
        " locked_until = now() + interval '10 minutes', presence_claimed_at = null"
        " where id = %s",
        [stolen],
    )
    # The next renewal (of both rows at once) moves the kept one's lease (to now + 5 s) and
    # not the stolen one's.
    wait_for(
        "a renewal after the takeover",
        lambda: queue_row(wdb, kept)["locked_until"] != before,
        timeout=30,
    )
    wait_for("the kept row sent", lambda: status_is(wdb, kept, "sent"), timeout=60)
    wait_for(
        "the lost row passed over",
        lambda: metric(worker, "callpanion_leases_lost_total") == 1,
        timeout=30,
    )
    stolen_token, kept_token = (queue_row(wdb, i)["push_token"] for i in (stolen, kept))
    delivered = delivered_tokens(emulators)
    assert delivered[kept_token] == 1
    assert delivered[stolen_token] == 0
    row = queue_row(wdb, stolen)
    assert (row["status"], row["locked_by"]) == ("claimed", "another-worker#0001")
