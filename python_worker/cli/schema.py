"""What is made from the migrations: `lint-sql`, `gen-types` and `schema`.

Each migrates a throw-away cluster of its own (python_worker/stack does the work).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from python_worker.stack.settings import stack_settings


def configure(sub: argparse._SubParsersAction[Any]) -> None:
    """Register `lint-sql`, `gen-types` and `schema`."""
    lint_sql = sub.add_parser(
        "lint-sql", help="plpgsql_check over every function of the migrations (make lint)"
    )
    lint_sql.set_defaults(func=cmd_lint_sql)

    gen_types = sub.add_parser(
        "gen-types",
        help="write supabase/types/database.ts (as `supabase gen types typescript`, no Docker)",
    )
    gen_types.add_argument(
        "--check", action="store_true", help="only report whether the checked-in file is stale"
    )
    gen_types.set_defaults(func=cmd_gen_types)

    schema = sub.add_parser(
        "schema",
        help="write supabase/schema.sql (pg_dump of a migrated cluster, normalised)",
    )
    schema.add_argument(
        "--check", action="store_true", help="only report whether the checked-in file is stale"
    )
    schema.set_defaults(func=cmd_schema)


def cmd_lint_sql(_: argparse.Namespace) -> int:
    """`lint-sql`: exit 1 with the findings, if any."""
    from python_worker.stack import sql_lint

    findings = sql_lint.lint_migrations(stack_settings())
    for finding in findings:
        print(finding.describe())
    if findings:
        print(f"plpgsql_check: {len(findings)} finding(s)", file=sys.stderr)
        return 1
    print("plpgsql_check: every function is clean (with and without pg_cron)")
    return 0


def write_or_check(project_dir: Path, name: Path, fresh: str, make_target: str, check: bool) -> int:
    """Write a generated file, or with `check` only say whether the checked-in one is stale."""
    target = project_dir / name
    current = target.read_text(encoding="utf-8") if target.is_file() else None
    if check:
        if current != fresh:
            print(f"{name} is stale: run `make {make_target}` and commit it", file=sys.stderr)
            return 1
        print(f"{name} is up to date")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(fresh, encoding="utf-8")
    print(f"{name} {'unchanged' if current == fresh else 'written'}")
    return 0


def cmd_gen_types(args: argparse.Namespace) -> int:
    """`gen-types [--check]`."""
    from python_worker.stack import typegen

    settings = stack_settings()
    fresh = typegen.generate_from_migrations(settings)
    return write_or_check(settings.project_dir, typegen.TYPES_FILE, fresh, "types", args.check)


def cmd_schema(args: argparse.Namespace) -> int:
    """`schema [--check]`."""
    from python_worker.stack import schema

    settings = stack_settings()
    fresh = schema.generate_from_migrations(settings)
    return write_or_check(settings.project_dir, schema.SCHEMA_FILE, fresh, "schema", args.check)
