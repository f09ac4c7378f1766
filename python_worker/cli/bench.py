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
    "storm-clearing, storm-forever, twins, twins-one-stopped, past-deadline; alerts-kill"
    " (family alerts across a worker SIGKILL, on the local stack)"
)


def configure(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `bench schedule|push|dispatch|claim-cost|pairing|webhooks` and `chaos`."""
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
    dispatch.add_argument(
        "--worker-checkout",
        type=Path,
        metavar="DIR",
        help="run the workers and migrations of another checkout (compare before/after)",
    )
    claim_cost = bench_sub.add_parser(
        "claim-cost",
        help="buffers and ms of one claim, record and look while a worker holds N rows",
    )
    claim_cost.add_argument(
        "--held", default="1000,10000", help="rows held, comma-separated (default 1000,10000)"
    )
    claim_cost.add_argument(
        "--checkout",
        type=Path,
        metavar="DIR",
        help="migrate from another checkout's supabase/migrations (compare before/after)",
    )
    pairing = bench_sub.add_parser(
        "pairing", help="the time of each pairing refusal path over HTTP (medians)"
    )
    pairing.add_argument("--samples", type=int, default=300, help="per path (default 300)")
    webhooks = bench_sub.add_parser(
        "webhooks",
        help="a long call's post_call_audio webhook size, and the API's memory under a flood"
        " of large unsigned webhooks",
    )
    webhooks.add_argument("--minutes", type=float, default=30.0, help="call length (default 30)")
    webhooks.add_argument(
        "--bitrate", type=int, action="append", help="MP3 kbps, repeatable (default 64 and 128)"
    )
    webhooks.add_argument("--posts", type=int, default=48, help="concurrent posts (default 48)")
    webhooks.add_argument("--body-mib", type=int, default=24, help="MiB per post (default 24)")
    webhooks.add_argument(
        "--api-checkout",
        action="append",
        help="run the API from this checkout (repeatable; default: this one)",
    )
    alerts = bench_sub.add_parser(
        "alerts", help="N alerts raised at once: delay to the first contact's message (p50/p99)"
    )
    alerts.add_argument("--alerts", type=int, default=1000, help="default: 1000")
    alerts.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
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
    if args.bench == "pairing":
        from python_worker.bench import pairing as bench_pairing

        if not 10 <= args.samples <= 5000:
            raise CallPanionError("--samples must be 10..5000")
        print(bench_pairing.bench_pairing(stack, args.samples, settings.project_dir))
        return 0
    if args.bench == "webhooks":
        from python_worker.bench import webhooks as bench_webhooks

        if not 0 < args.posts <= 200 or not 0 < args.body_mib <= 64:
            raise CallPanionError("--posts must be 1..200 and --body-mib 1..64")
        checkouts = [Path(c).resolve() for c in args.api_checkout or [settings.project_dir]]
        report = bench_webhooks.bench_webhooks(
            stack, args.minutes, args.bitrate or [64, 128], args.posts, args.body_mib, checkouts
        )
        print(report)
        return 0
    if args.bench == "alerts":
        from python_worker.bench import alerts as bench_alerts

        return bench_alerts.bench_command(stack, args.alerts, args.workers)
    if args.bench == "dispatch":
        from python_worker.bench import dispatch as bench_dispatch

        result = bench_dispatch.bench_dispatch(
            stack, args.calls, args.workers, args.rounds, args.worker_checkout
        )
        print(bench_dispatch.report_dispatch(result))
    if args.bench == "claim-cost":
        from python_worker.bench import claim_cost

        held = [int(n) for n in args.held.split(",") if n.strip()]
        label = f"migrations of {args.checkout}" if args.checkout else "this checkout"
        costs = claim_cost.bench_claim_cost(stack, held, args.checkout)
        print(claim_cost.report_claim_cost(costs, label))
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
    scenarios = list(args.scenario or [])
    if "alerts-kill" in scenarios:  # the family alerts' SIGKILL (bench/alerts.py)
        from python_worker.bench import alerts as bench_alerts

        scenarios.remove("alerts-kill")
        stack = LocalStack(stack_settings())
        stack.up()
        bench_alerts.chaos_command(stack, args.calls or 1000)
        if not scenarios:
            return 0
    outcomes = chaos.run_chaos(config, scenarios or None, args.worker_checkout)
    print(chaos.report_chaos(outcomes, config))
    return 0
