"""`callpanion bench dispatch` on a small burst: real workers, a scratch database, emulators."""

from __future__ import annotations

import json

import psycopg

from python_worker.bench.dispatch import bench_dispatch, report_dispatch
from python_worker.stack.cluster import LocalStack

JSON_KEYS = {
    "calls",
    "workers",
    "p50_s",
    "p99_s",
    "max_s",
    "pushes_per_s",
    "duplicates",
    "lost",
    "peak_rss_mb",
}


def test_bench_dispatch_sends_every_call_once_and_ends_with_its_json_figures(
    pg_stack: LocalStack,
) -> None:
    databases_before = _databases(pg_stack)
    report = report_dispatch(bench_dispatch(pg_stack, calls=40, workers=1, rounds=1))
    figures = json.loads(report.splitlines()[-1])
    assert set(figures) == JSON_KEYS
    assert figures["calls"] == 40
    assert figures["lost"] == 0
    assert figures["duplicates"] == 0
    assert 0 <= figures["p50_s"] <= figures["p99_s"] <= figures["max_s"]
    assert figures["pushes_per_s"] > 0
    assert figures["peak_rss_mb"] > 0
    assert _databases(pg_stack) == databases_before  # the scratch database was dropped


def _databases(stack: LocalStack) -> set[str]:
    with psycopg.connect(stack.settings.database_url) as conn:
        return {row[0] for row in conn.execute("select datname from pg_database").fetchall()}
