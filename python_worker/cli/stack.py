"""`callpanion stack` (the local cluster) and `callpanion migrate` (any Postgres)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from python_worker.cli.settings import cli_settings
from python_worker.errors import CallPanionError
from python_worker.stack import migrations
from python_worker.stack.cluster import LocalStack, StackStatus
from python_worker.stack.settings import stack_settings
from python_worker.stack.summary import live_summary


def configure(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `stack` and `migrate`."""
    stack = sub.add_parser("stack", help="the embedded local Postgres + pg_cron stack")
    stack_sub = stack.add_subparsers(dest="action", required=True)
    stack_sub.add_parser("up", help="create/start the cluster and apply platform SQL + migrations")
    stack_sub.add_parser("down", help="stop the cluster")
    stack_sub.add_parser(
        "status", help="show whether it runs and what it holds (exit 3 if stopped)"
    )
    reset = stack_sub.add_parser("reset", help="recreate the database, migrate and load seed.sql")
    reset.add_argument("--hard", action="store_true", help="also delete and re-create the cluster")
    stack.set_defaults(func=cmd_stack)

    migrate = sub.add_parser("migrate", help="apply pending migrations to any Postgres")
    migrate.add_argument("--database-url", help="target database (default: $DATABASE_URL)")
    migrate.add_argument("--migrations-dir", help="default: supabase/migrations")
    migrate.add_argument(
        "--with-platform",
        action="store_true",
        help="first apply sql/platform/*.sql (plain Postgres only; never on hosted Supabase)",
    )
    migrate.set_defaults(func=cmd_migrate)


def print_status(status: StackStatus) -> None:
    """Whether the stack runs, where, and where its data lives."""
    if status.running:
        print(f"local stack: running (pid {status.pid}, port {status.port})")
        print(f"  database url: {status.database_url}")
    elif status.initialised:
        print("local stack: stopped")
    else:
        print("local stack: not created yet (run `callpanion stack up`)")
    print(f"  data folder:  {status.data_dir}")


def _print_applied(applied: list[migrations.Migration]) -> None:
    for m in applied:
        print(f"applied migration {m.version}_{m.name}")
    if not applied:
        print("migrations: up to date")


def cmd_stack(args: argparse.Namespace) -> int:
    """`stack up|down|status|reset`."""
    stack = LocalStack(stack_settings())
    action: str = args.action
    if action == "up":
        result = stack.up()
        if result.initialised:
            print(f"created a new cluster in {stack.data_dir}")
        print("started PostgreSQL" if result.started else "PostgreSQL was already running")
        print(f"applied platform SQL: {', '.join(result.platform_files) or 'none'}")
        _print_applied(result.applied)
        print_status(stack.status())
    elif action == "down":
        print("stopped the local stack" if stack.down() else "the local stack was not running")
    elif action == "status":
        status = stack.status()
        print_status(status)
        if status.running:
            for line in live_summary(status.database_url):
                print(line)
        return 0 if status.running else 3
    elif action == "reset":
        result = stack.reset(hard=args.hard)
        print(
            f"recreated database {stack.settings.database}: "
            f"{len(result.applied)} migrations applied, seed loaded"
        )
        print_status(stack.status())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """`migrate`: the pending migrations (and, on plain Postgres, the platform stand-ins)."""
    settings = stack_settings()
    url = args.database_url or cli_settings().database_url
    if not url:
        raise CallPanionError("migrate needs --database-url or DATABASE_URL")
    migrations_dir = Path(args.migrations_dir) if args.migrations_dir else settings.migrations_dir
    platform = settings.platform_dir if args.with_platform else None
    _print_applied(migrations.migrate(url, migrations_dir, platform))
    return 0
