"""`callpanion sql --as <member>`: SQL (or psql) on the local stack as a household member."""

from __future__ import annotations

import argparse
from typing import Any

from python_worker.stack.settings import stack_settings


def configure(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `sql`."""
    sql_parser = sub.add_parser(
        "sql", help="run SQL (or open psql) on the local stack as a household member, under RLS"
    )
    sql_parser.add_argument(
        "--as", dest="as_user", required=True, help="the member's email or user id"
    )
    sql_parser.add_argument("statement", nargs="?", help="SQL to run (default: open psql)")
    sql_parser.set_defaults(func=cmd_sql)


def cmd_sql(args: argparse.Namespace) -> int:
    """Run SQL (or open psql) on the local stack as a household member, under RLS."""
    from python_worker.stack.member import run_as_member

    run_as_member(stack_settings().database_url, args.as_user, args.statement)
    return 0
