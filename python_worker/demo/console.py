"""What `callpanion demo` does and prints: the stack with its demo data, then the calls.

With `--json` the readable timeline goes to stderr and stdout ends with one JSON line.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Callable

from python_worker.demo import play
from python_worker.demo.services import stop_services
from python_worker.phone.control import control_request
from python_worker.stack import migrations
from python_worker.stack.cluster import LocalStack
from python_worker.stack.settings import DEFAULT_DB_PORT, StackSettings, stack_settings
from python_worker.stack.summary import database_is_empty, live_summary, next_calls

Out = Callable[[str], None]


def _env_prefix(settings: StackSettings) -> str:
    """What a reader must put before a command to reach this stack (its port, if not default)."""
    return "" if settings.port == DEFAULT_DB_PORT else f"CALLPANION_DB_PORT={settings.port} "


def _printer(as_json: bool) -> Out:
    return functools.partial(print, file=sys.stderr if as_json else sys.stdout, flush=True)


def stack_up_with_seed(out: Out) -> LocalStack:
    """`stack up`, plus the demo data when the database is empty; prints what is live."""
    settings = stack_settings()
    stack = LocalStack(settings)
    out("== CallPanion local stack ==")
    result = stack.up()
    state = "started" if result.started else "already running"
    out(f"PostgreSQL {state} on 127.0.0.1:{settings.port}")
    platform = ", ".join(result.platform_files)
    out(f"applied {len(result.applied)} new migration(s); platform SQL: {platform}")
    out(f"database url: {settings.database_url}")
    with migrations.connect(settings.database_url) as conn:
        if database_is_empty(conn) and migrations.apply_seed(conn, settings.seed_file):
            out("loaded the demo data (supabase/seed.sql) into the empty database")
    for line in live_summary(settings.database_url):
        out(line)
    out("  next calls (pg_cron queues each 5 minutes ahead, then releases it on time):")
    for line in next_calls(settings.database_url):
        out(f"    {line}")
    return stack


def stop() -> int:
    """`demo stop`: stop the demo's background services."""
    stopped = stop_services(play.settings_dirs(stack_settings()))
    print(f"stopped the demo's {', '.join(stopped)}" if stopped else "no demo services ran")
    return 0


def stack_only(as_json: bool) -> int:
    """`demo stack`: only the stack and its demo data, and how to use it."""
    out = _printer(as_json)
    stack = stack_up_with_seed(out)
    env = _env_prefix(stack.settings)
    out("")
    out("What is live: a private Postgres 15 cluster with pg_cron, the CallPanion schema with")
    out("Row Level Security on every table, and the supabase_realtime publication.")
    out(f"Connect:   psql '{stack.settings.database_url}'")
    out(f"Status:    {env}.venv/bin/callpanion stack status")
    out(f"Stop it:   {env}make stop   (or {env}.venv/bin/callpanion stack down)")
    return 0


def play_calls(ports: play.DemoPorts, as_json: bool) -> int:
    """`demo` (play): every part started, two calls played, then how to ring Mum by hand."""
    out = _printer(as_json)
    stack = stack_up_with_seed(out)
    env = _env_prefix(stack.settings)
    dirs = play.settings_dirs(stack.settings)
    out("")
    out("== Two calls, as the family's dashboard shows them ==")
    started = time.monotonic()
    result = play.play(stack, dirs, ports, out, control_request)
    out("")
    out(f"Both calls played in {time.monotonic() - started:.0f} s. Still running: the stack,")
    out("the emulators, the API, the worker and both phones (logs in " + f"{dirs.logs}).")
    out("Ring Mum now and answer by hand:")
    out(
        f"  {env}.venv/bin/callpanion sql --as alice@example.com "
        "\"select request_call_now('20000000-0000-4000-8000-000000000001')\""
    )
    out(f"  {env}.venv/bin/callpanion phone answer      (or: phone decline)")
    out(f"Act as a household member: {env}.venv/bin/callpanion sql --as alice@example.com")
    out(f"Status:    {env}.venv/bin/callpanion stack status")
    out(f"Stop all:  {env}make stop   (the demo's services, then the stack)")
    if as_json:
        print(json.dumps(result), flush=True)
    return 0
