"""`callpanion chaos --short`: every scenario against real workers, a private cluster and the
emulators, and nothing is ever lost."""

from __future__ import annotations

import json

from python_worker.bench.chaos import SCENARIOS, SHORT, report_chaos, run_chaos


def test_every_chaos_scenario_loses_no_call() -> None:
    outcomes = run_chaos(SHORT)
    report = report_chaos(outcomes, SHORT)
    print(report)  # the figures, for whoever reads the test log
    by_name = {outcome.scenario: outcome for outcome in outcomes}
    assert list(by_name) == list(SCENARIOS)
    for outcome in outcomes:
        assert (outcome.scenario, outcome.calls) == (outcome.scenario, SHORT.calls)
        assert (outcome.scenario, outcome.lost, outcome.non_final) == (outcome.scenario, 0, 0)
    # Every call of these either rang or expired with its alert: nothing in between.
    for outcome in outcomes:
        accounted = outcome.once + outcome.duplicates + outcome.expired
        assert (outcome.scenario, accounted) == (outcome.scenario, SHORT.calls)
    assert by_name["storm-forever"].expired == SHORT.calls
    assert by_name["past-deadline"].expired == SHORT.calls
    # Twin ids, a clean run and a storm that clears: every call rings exactly once.
    for name in ("baseline", "twins", "twins-one-stopped", "storm-clearing"):
        assert (name, by_name[name].duplicates, by_name[name].once) == (name, 0, SHORT.calls)
    # The killed worker's calls were re-sent by the other (and counted as its victims).
    assert by_name["kill-in-flight"].victim_lateness_s
    lines = report.splitlines()
    assert [json.loads(line)["scenario"] for line in lines[-len(SCENARIOS) :]] == list(SCENARIOS)
