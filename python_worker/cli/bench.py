"""`callpanion bench` (figures on the local stack) and `callpanion chaos` (outcomes table)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from python_worker.errors import CallPanionError
from python_worker.stack.cluster import LocalStack
from python_worker.stack.settings import stack_settings

_SCENARIOS = (
    "baseline, kill-in-flight, kill-recording, pg-restart-short, pg-restart-long, "
    "storm-clearing, storm-forever, twins, twins-one-stopped, past-deadline"
)


def configure(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `bench schedule|push|dispatch` and `chaos`."""
    bench_parser = sub.add_parser("bench", help="benchmarks on the local stack (print figures)")
    bench_sub = bench_parser.add_subparsers(dest="bench", required=True)
    schedule = bench_sub.add_parser("schedule", help="phase 1 vs a plain INSERT … SELECT")
    schedule.add_argument("--schedules", type=int, default=100_000, help="default: 100000")
    schedule.add_argument("--rounds", type=int, default=3, help="timed runs of each (median)")
    push = bench_sub.add_parser("push", help="our FCM/APNs senders vs firebase-admin and aioapns")
    push.add_argument("--count", type=int, default=10_000, help="pushes per run (default 10000)")
    push.add_argument("--rounds", type=int, default=3, help="timed runs of each (median)")
    dispatch = bench_sub.add_parser(
        "dispatch", help="N calls due at one second through K real workers: lateness, pushes/s"
    )
    dispatch.add_argument("--calls", type=int, default=10_000, help="default: 10000")
    dispatch.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    dispatch.add_argument("--rounds", type=int, default=1, help="bursts (default 1; median)")
    bench_parser.set_defaults(func=cmd_bench)

    chaos_parser = sub.add_parser(
        "chaos",
        help="bursts of calls through real workers while things go wrong: a table of outcomes",
    )
    chaos_parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help=f"run only this scenario (repeatable): {_SCENARIOS}",
    )
    chaos_parser.add_argument("--calls", type=int, help="calls per burst (default 2000)")
    chaos_parser.add_argument(
        "--short", action="store_true", help="the short version the test suite runs"
    )
    chaos_parser.add_argument(
        "--worker-checkout",
        type=Path,
        metavar="DIR",
        help="run the workers and migrations of another checkout (compare before/after)",
    )
    chaos_parser.set_defaults(func=cmd_chaos)


def cmd_bench(args: argparse.Namespace) -> int:
    """`bench push` needs no database; the others bring the local stack up first."""
    if args.bench == "push":
        from python_worker.bench import push as bench_push

        if args.count < 1:
            raise CallPanionError("--count must be at least 1")
        print(bench_push.report_push(bench_push.bench_push(args.count, args.rounds)))
        return 0
    settings = stack_settings()
    stack = LocalStack(settings)
    stack.up()
    if args.bench == "dispatch":
        from python_worker.bench import dispatch as bench_dispatch

        result = bench_dispatch.bench_dispatch(stack, args.calls, args.workers, args.rounds)
        print(bench_dispatch.report_dispatch(result))
    if args.bench == "schedule":
        from python_worker.bench import schedule as bench_schedule

        if args.schedules < 1:
            raise CallPanionError("--schedules must be at least 1")
        timed = bench_schedule.bench_schedule(settings.database_url, args.schedules, args.rounds)
        print(bench_schedule.report_schedule(timed))
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    """`chaos`: the scenarios' table of outcomes."""
    from python_worker.bench import chaos

    config = chaos.SHORT if args.short else chaos.FULL
    if args.calls is not None:
        if args.calls < 2:
            raise CallPanionError("--calls must be at least 2")
        config = dataclasses.replace(config, calls=args.calls)
    outcomes = chaos.run_chaos(config, args.scenario, args.worker_checkout)
    print(chaos.report_chaos(outcomes, config))
    return 0
