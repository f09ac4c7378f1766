"""`Senders` against the emulators: each claimed row goes to its provider with its ids.

The APNs push carries the queue row id as `apns-id`, the FCM message goes to the row's token,
and the row's provider attempt count reaches the provider's retry backoff (issue 17).
"""

from __future__ import annotations

import datetime as dt

from python_worker.emulators.faults import Fault
from python_worker.emulators.suite import Endpoints, ThreadedSuite
from python_worker.push.outcomes import Outcome, SendResult
from python_worker.worker.db import ClaimedRow
from python_worker.worker.dispatcher import CallText, Senders, incoming_call
from tests.support.push import apns_token, fcm_token, make_apns_sender, make_fcm_sender, run
from tests.unit.worker.test_worker_units import claimed

TEXT = CallText("CallPanion", "https://api.callpanion.test")


def send(endpoints: Endpoints, row: ClaimedRow) -> SendResult:
    async def body() -> SendResult:
        senders = Senders(make_fcm_sender(endpoints), make_apns_sender(endpoints))
        try:
            now = dt.datetime.now(dt.UTC)
            return await senders.send(row, incoming_call(row, TEXT, now))
        finally:
            await senders.aclose()

    return run(body())


def test_an_ios_row_goes_to_apns_with_the_queue_id_as_apns_id(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    row = claimed(provider="apns", push_token=apns_token(), send_at=dt.datetime.now(dt.UTC))
    result = send(endpoints, row)
    assert (result.outcome, result.message_id) == (Outcome.DELIVERED, str(row.queue_id))
    [delivery] = emulators.suite.apns.deliveries
    assert (delivery.token, delivery.apns_id) == (row.push_token, str(row.queue_id))
    assert delivery.payload is not None
    assert delivery.payload["id"] == str(row.call_session_id)


def test_an_android_row_goes_to_fcm_with_its_token(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    row = claimed(provider="fcm", platform="android", push_token=fcm_token())
    assert send(endpoints, row).outcome is Outcome.DELIVERED
    [delivery] = emulators.suite.fcm.deliveries
    assert (delivery.token, delivery.data["id"]) == (row.push_token, str(row.call_session_id))


def test_the_rows_provider_attempts_set_the_backoff(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    ios = claimed(provider="apns", push_token=apns_token(), provider_attempts=6)
    android = claimed(provider="fcm", push_token=fcm_token(), provider_attempts=6)
    emulators.suite.apns.faults.add(ios.push_token, Fault(status=503, reason="ServiceUnavailable"))
    emulators.suite.fcm.faults.add(android.push_token, Fault(reason="UNAVAILABLE"))
    for row in (ios, android):
        result = send(endpoints, row)
        assert result.outcome is Outcome.RETRY
        assert 16.0 <= (result.retry_after_s or 0) <= 32.0  # attempt 6: 2**5 = 32 s, halved
