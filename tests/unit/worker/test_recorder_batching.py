"""The result recorder's batching and timing, asserted by behaviour, not by the wall clock.

Issue 26. `interval_s` is set far beyond any test's run (an hour), so a batch that goes out
at all went out because it was full or because the recorder was told to flush, never
because time passed; the loop is stepped with `asyncio.sleep(0)` and the batches counted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import pytest

from python_worker.worker.recorder import RECORD_EVERY_S, ResultRecorder

HOUR = 3600.0
#: A bound on how long a test may wait for a fact before it fails (never reached when the
#: recorder is right; a wrong one would otherwise hang the test for the hour).
GUARD_S = 30.0


async def steps(n: int = 20) -> None:
    """Let the event loop run every ready callback, n times over."""
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_lone_result_waits_for_others_to_share_its_statement() -> None:
    batches: list[list[int]] = []

    async def record(items: Sequence[int]) -> None:
        batches.append(list(items))

    async def go() -> None:
        recorder: ResultRecorder[int] = ResultRecorder(record, interval_s=HOUR, max_rows=3)
        recorder.add(1)
        await steps()
        assert batches == []  # still waiting: neither full nor due
        assert recorder.pending == 1
        recorder.add(2)
        await steps()
        assert batches == []
        recorder.add(3)  # full: goes at once, all three in one statement
        await asyncio.wait_for(recorder.flushed(), GUARD_S)
        assert batches == [[1, 2, 3]]
        assert recorder.pending == 0
        # After a full batch the next lone result waits again (the full signal is spent).
        recorder.add(4)
        await steps()
        assert batches == [[1, 2, 3]]
        assert recorder.pending == 1
        await recorder.aclose()

    asyncio.run(go())


def test_a_full_batch_goes_without_waiting_and_the_rest_waits() -> None:
    batches: list[list[int]] = []

    async def record(items: Sequence[int]) -> None:
        batches.append(list(items))

    async def go() -> None:
        recorder: ResultRecorder[int] = ResultRecorder(record, interval_s=HOUR, max_rows=2)
        for item in range(5):
            recorder.add(item)
        await steps()
        # Two full statements at once; the fifth result waits for company.
        assert batches == [[0, 1], [2, 3]]
        assert recorder.pending == 1
        await recorder.aclose()

    asyncio.run(go())


def test_one_statement_in_flight_and_what_arrives_meanwhile_goes_in_the_next() -> None:
    batches: list[list[int]] = []
    in_flight = 0
    most_in_flight = 0
    release = asyncio.Event()

    async def record(items: Sequence[int]) -> None:
        nonlocal in_flight, most_in_flight
        in_flight += 1
        most_in_flight = max(most_in_flight, in_flight)
        batches.append(list(items))
        await release.wait()
        in_flight -= 1

    async def go() -> None:
        recorder: ResultRecorder[int] = ResultRecorder(record, interval_s=0.0, max_rows=100)
        recorder.add(1)
        await steps()
        assert batches == [[1]]  # in flight, held
        for item in (2, 3, 4):
            recorder.add(item)
        await steps()
        assert batches == [[1]]  # not a second statement while the first is in flight
        assert recorder.pending == 4
        release.set()
        await asyncio.wait_for(recorder.flushed(), GUARD_S)
        assert batches == [[1], [2, 3, 4]]
        assert most_in_flight == 1
        await recorder.aclose()

    asyncio.run(go())


def test_flushed_waits_only_for_what_was_added_before_it() -> None:
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def record(items: Sequence[int]) -> None:
        batches.append(list(items))
        if len(batches) == 2:
            await gate.wait()  # the second statement hangs until the test lets it go

    async def go() -> None:
        recorder: ResultRecorder[int] = ResultRecorder(record, interval_s=0.0, max_rows=1)
        recorder.add(1)
        waiter = asyncio.create_task(recorder.flushed())
        await asyncio.wait_for(waiter, GUARD_S)
        recorder.add(2)  # its statement hangs; a flush of what came before it is done
        await steps()
        assert batches == [[1], [2]]
        assert recorder.pending == 1
        second = asyncio.create_task(recorder.flushed())
        await steps()
        assert not second.done()
        gate.set()
        await asyncio.wait_for(second, GUARD_S)
        assert recorder.pending == 0
        await recorder.aclose()

    asyncio.run(go())


def test_aclose_stops_recording_and_leaves_the_rest_to_the_leases() -> None:
    batches: list[list[int]] = []

    async def record(items: Sequence[int]) -> None:
        batches.append(list(items))

    async def go() -> None:
        recorder: ResultRecorder[int] = ResultRecorder(record, interval_s=HOUR)
        recorder.add(1)
        await steps()
        await recorder.aclose()
        await steps()
        assert batches == []
        assert recorder.pending == 1
        await recorder.aclose()  # twice is fine

    asyncio.run(go())


def test_a_recorder_that_never_started_closes() -> None:
    async def record(items: Sequence[int]) -> None:
        raise AssertionError("nothing to record")

    async def go() -> None:
        recorder: ResultRecorder[int] = ResultRecorder(record)
        assert recorder.pending == 0
        await asyncio.wait_for(recorder.flushed(), GUARD_S)  # nothing added: done at once
        await recorder.aclose()

    asyncio.run(go())


def test_by_default_a_statement_carries_up_to_a_thousand_results() -> None:
    # The README's figures: results wait at most 20 ms, a statement carries 1,000 rows.
    batches: list[int] = []

    async def record(items: Sequence[int]) -> None:
        batches.append(len(items))

    async def go() -> None:
        recorder: ResultRecorder[int] = ResultRecorder(record)
        assert (recorder.interval_s, recorder.max_rows) == (RECORD_EVERY_S, 1000)
        for item in range(2501):
            recorder.add(item)
        await asyncio.wait_for(recorder.flushed(), GUARD_S)
        await recorder.aclose()

    asyncio.run(go())
    assert RECORD_EVERY_S == 0.02
    assert batches == [1000, 1000, 501]


def test_a_failed_statement_is_logged_and_what_came_meanwhile_still_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batches: list[list[int]] = []
    failing = asyncio.Event()
    go_on = asyncio.Event()

    async def record(items: Sequence[int]) -> None:
        batches.append(list(items))
        if len(batches) == 1:
            failing.set()
            await go_on.wait()
            raise RuntimeError("the database said no")

    async def go() -> None:
        recorder: ResultRecorder[int] = ResultRecorder(record, interval_s=0.0)
        recorder.add(1)
        await asyncio.wait_for(failing.wait(), GUARD_S)
        recorder.add(2)  # arrives while the failing statement is in flight
        go_on.set()
        # No further add: the recorder itself goes on to record it.
        await asyncio.wait_for(recorder.flushed(), GUARD_S)
        await recorder.aclose()

    with caplog.at_level(logging.ERROR, logger="callpanion.dispatch"):
        asyncio.run(go())
    assert batches == [[1], [2]]
    [failed] = [r for r in caplog.records if r.getMessage() == "recording results failed"]
    assert failed.rows == 1  # type: ignore[attr-defined]
    assert failed.exc_info is not None


def test_the_interval_and_the_batch_size_are_named_never_positional() -> None:
    async def record(items: Sequence[int]) -> None:
        raise AssertionError("nothing to record")

    with pytest.raises(TypeError):
        ResultRecorder(record, 0.5)  # type: ignore[call-arg]


def test_flushed_returns_when_a_batch_recorded_more_than_it_waited_for() -> None:
    batches: list[list[int]] = []

    async def record(items: Sequence[int]) -> None:
        batches.append(list(items))

    async def go() -> None:
        recorder: ResultRecorder[int] = ResultRecorder(record, interval_s=HOUR, max_rows=2)
        recorder.add(1)
        waiter = asyncio.ensure_future(recorder.flushed())
        await steps()  # the waiter waits for result 1 only
        assert not waiter.done()
        recorder.add(2)  # full: 1 and 2 are recorded together, past what the waiter needs
        await asyncio.wait_for(waiter, GUARD_S)
        assert batches == [[1, 2]]
        await recorder.aclose()

    asyncio.run(go())
