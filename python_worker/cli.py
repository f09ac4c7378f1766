"""`callpanion`: the command line of the CallPanion backend."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg
from dotenv import load_dotenv

from python_worker.api.settings import api_settings
from python_worker.bench import schedule as bench_schedule
from python_worker.config import load_env
from python_worker.errors import CallPanionError
from python_worker.push.settings import apns_settings, fcm_settings
from python_worker.stack import migrations
from python_worker.stack.cluster import LocalStack, StackStatus
from python_worker.stack.settings import DEFAULT_DB_PORT, stack_settings
from python_worker.worker.settings import DEFAULT_PUBLIC_API_URL, worker_settings

#: The post-call webhook's route on the API (kept here: the CLI does not import the API's app
#: for commands that do not serve it).
WEBHOOK_PATH = "/v1/webhooks/elevenlabs"


def _print_status(status: StackStatus) -> None:
    if status.running:
        print(f"local stack: running (pid {status.pid}, port {status.port})")
        print(f"  database url: {status.database_url}")
    elif status.initialised:
        print("local stack: stopped")
    else:
        print("local stack: not created yet (run `callpanion stack up`)")
    print(f"  data folder:  {status.data_dir}")


def _live_summary(database_url: str) -> list[str]:
    """What the database holds right now, for `stack status` and the demo."""
    lines: list[str] = []
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            "select version, name from supabase_migrations.schema_migrations order by version"
        ).fetchall()
        lines.append(f"  migrations applied: {len(rows)}")
        lines.extend(f"    {version}_{name}" for version, name in rows)
        tables = conn.execute(
            """
            select c.relname, c.relrowsecurity, c.reltuples::bigint
            from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = 'public' and c.relkind = 'r' order by c.relname
            """
        ).fetchall()
        lines.append(f"  tables in public: {len(tables)}")
        for name, rls, _ in tables:
            count = conn.execute(
                psycopg.sql.SQL("select count(*) from {}").format(psycopg.sql.Identifier(name))
            ).fetchone()
            n = count[0] if count else 0
            lines.append(f"    {name:<20} rows={n:<6} rls={'on' if rls else 'OFF'}")
        published = conn.execute(
            "select string_agg(tablename, ', ' order by tablename) from pg_publication_tables"
            " where pubname = 'supabase_realtime'"
        ).fetchone()
        lines.append(f"  realtime publication: {published[0] if published else ''}")
        cron = conn.execute(
            "select exists (select 1 from pg_extension where extname = 'pg_cron')"
        ).fetchone()
        if cron and cron[0]:
            jobs = conn.execute("select jobname, schedule from cron.job order by jobid").fetchall()
            lines.append(f"  pg_cron jobs: {len(jobs)}")
            lines.extend(f"    {name} ({schedule})" for name, schedule in jobs)
        else:
            preloaded = conn.execute("show shared_preload_libraries").fetchone()
            lines.append(f"  pg_cron: preloaded ({preloaded[0] if preloaded else ''}), no jobs yet")
    return lines


def _next_calls(database_url: str, limit: int = 5) -> list[str]:
    """The soonest scheduled calls, in each relative's own time and in UTC."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(
            """
            select r.display_name, coalesce(s.title, s.kind), s.timezone,
                   to_char(s.next_run_at at time zone s.timezone, 'Dy DD Mon HH24:MI'),
                   to_char(s.next_run_at at time zone 'UTC', 'YYYY-MM-DD HH24:MI')
            from public.schedules s join public.relatives r on r.id = s.relative_id
            where s.active and s.next_run_at is not null
            order by s.next_run_at limit %s
            """,
            [limit],
        ).fetchall()
    if not rows:
        return ["(none: no active schedules)"]
    return [f"{who} - {title}: {local} {zone} ({utc} UTC)" for who, title, zone, local, utc in rows]


def cmd_stack(args: argparse.Namespace) -> int:
    stack = LocalStack(stack_settings())
    action: str = args.action
    if action == "up":
        result = stack.up()
        if result.initialised:
            print(f"created a new cluster in {stack.data_dir}")
        print("started PostgreSQL" if result.started else "PostgreSQL was already running")
        print(f"applied platform SQL: {', '.join(result.platform_files) or 'none'}")
        if result.applied:
            for m in result.applied:
                print(f"applied migration {m.version}_{m.name}")
        else:
            print("migrations: up to date")
        _print_status(stack.status())
    elif action == "down":
        print("stopped the local stack" if stack.down() else "the local stack was not running")
    elif action == "status":
        status = stack.status()
        _print_status(status)
        if status.running:
            for line in _live_summary(status.database_url):
                print(line)
        return 0 if status.running else 3
    elif action == "reset":
        result = stack.reset(hard=args.hard)
        print(
            f"recreated database {stack.settings.database}: "
            f"{len(result.applied)} migrations applied, seed loaded"
        )
        _print_status(stack.status())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = stack_settings()
    url = args.database_url or os.environ.get("DATABASE_URL")
    if not url:
        raise CallPanionError("migrate needs --database-url or DATABASE_URL")
    migrations_dir = Path(args.migrations_dir) if args.migrations_dir else settings.migrations_dir
    platform = settings.platform_dir if args.with_platform else None
    applied = migrations.migrate(url, migrations_dir, platform)
    for m in applied:
        print(f"applied migration {m.version}_{m.name}")
    if not applied:
        print("migrations: up to date")
    return 0


def _stack_up_with_seed(out: Callable[[str], None]) -> LocalStack:
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
        empty = conn.execute("select not exists (select 1 from public.households)").fetchone()
        if empty and empty[0] and migrations.apply_seed(conn, settings.seed_file):
            out("loaded the demo data (supabase/seed.sql) into the empty database")
    for line in _live_summary(settings.database_url):
        out(line)
    out("  next calls (pg_cron queues each 5 minutes ahead, then releases it on time):")
    for line in _next_calls(settings.database_url):
        out(f"    {line}")
    return stack


def _phone_control(address: str, method: str = "GET", path: str = "/state") -> dict[str, Any]:
    """One request to a running phone simulator's control server (loopback)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"http://{address}{path}", method=method)
    try:
        with opener.open(request, timeout=5) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            answer = json.loads(error.read() or b"{}")
    return answer


def cmd_demo(args: argparse.Namespace) -> int:
    from python_worker.demo import play
    from python_worker.demo.services import stop_services

    settings = stack_settings()
    dirs = play.settings_dirs(settings)
    env = "" if settings.port == DEFAULT_DB_PORT else f"CALLPANION_DB_PORT={settings.port} "
    if args.action == "stop":
        stopped = stop_services(dirs)
        print(f"stopped the demo's {', '.join(stopped)}" if stopped else "no demo services ran")
        return 0
    # With --json, the readable timeline goes to stderr and stdout ends with one JSON line.
    out = functools.partial(print, file=sys.stderr if args.json else sys.stdout, flush=True)
    stack = _stack_up_with_seed(out)
    if args.action == "stack":
        out("")
        out("What is live: a private Postgres 15 cluster with pg_cron, the CallPanion schema with")
        out("Row Level Security on every table, and the supabase_realtime publication.")
        out(f"Connect:   psql '{stack.settings.database_url}'")
        out(f"Status:    {env}.venv/bin/callpanion stack status")
        out(f"Stop it:   {env}make stop   (or {env}.venv/bin/callpanion stack down)")
        return 0
    api, worker = api_settings(), worker_settings()
    ports = play.DemoPorts(api=api.port, worker_http=worker.http_port)
    out("")
    out("== Two calls, as the family's dashboard shows them ==")
    started = time.monotonic()
    result = play.play(stack, dirs, ports, out, _phone_control)
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
    if args.json:
        print(json.dumps(result), flush=True)
    return 0


def cmd_phone(args: argparse.Namespace) -> int:
    from python_worker.demo import play

    dirs = play.settings_dirs(stack_settings())
    state_dir = Path(args.state_dir) if getattr(args, "state_dir", None) else dirs.phones
    if args.action == "run":
        from python_worker.phone.script import parse_script
        from python_worker.phone.simulator import Phone, PhoneEndpoints, run_phone

        try:
            script = parse_script(args.script)
        except ValueError as error:
            raise CallPanionError(f"--script: {error}") from None
        env = os.environ
        missing = [
            name
            for name in ("FCM_BASE_URL", "FCM_CA_FILE", "APNS_PORT", "ELEVENLABS_BASE_URL")
            if not env.get(name)
        ]
        if missing:
            raise CallPanionError(
                f"{', '.join(missing)} not set: run `callpanion emulators` and pass its "
                "settings file with `callpanion --env-file <dir>/emulators.env phone run ...`"
            )
        endpoints = PhoneEndpoints(
            api_url=args.api.rstrip("/"),
            fcm_url=env["FCM_BASE_URL"].rstrip("/"),
            apns_url=f"https://{env.get('APNS_HOST') or 'localhost'}:{env['APNS_PORT']}",
            ca_file=env["FCM_CA_FILE"],
            elevenlabs_url=env["ELEVENLABS_BASE_URL"].rstrip("/"),
        )
        phone = Phone(
            args.name,
            args.platform,
            endpoints,
            script,
            state_dir=state_dir,
            control_port=args.control_port,
        )
        asyncio.run(run_phone(phone, args.pairing_id, args.code))
        return 0
    states = [json.loads(p.read_text()) for p in sorted(state_dir.glob("*.json"))]
    if args.name:
        states = [s for s in states if s.get("name") == args.name]
    if not states:
        raise CallPanionError(
            f"no phone simulator is running (none in {state_dir}); `make demo` starts two"
        )
    if args.action == "state":
        for state in states:
            print(json.dumps(_phone_control(state["control"])))
        return 0
    for state in states:
        answer = _phone_control(state["control"], "POST", f"/{args.action}")
        if answer.get("call_id"):
            print(f"{state['name']}: {args.action} {answer['call_id']}")
            return 0
    raise CallPanionError("no simulated phone is ringing for a person right now")


def cmd_webhook(args: argparse.Namespace) -> int:
    """Send a sample post-call webhook, signed with ELEVENLABS_WEBHOOK_SECRET, to the API."""
    from python_worker.emulators.elevenlabs import post_signed_webhook, transcription_payload

    secret = args.secret or os.environ.get("ELEVENLABS_WEBHOOK_SECRET")
    if not secret:
        raise CallPanionError(
            "--secret or ELEVENLABS_WEBHOOK_SECRET: the API's webhook signing secret is needed"
        )
    url = args.url or f"{worker_settings().public_api_url}/v1/webhooks/elevenlabs"
    if args.session_id:
        try:
            uuid.UUID(args.session_id)
        except ValueError:
            raise CallPanionError(f"--session-id must be a UUID, got {args.session_id!r}") from None
    conversation = args.conversation_id or "conv_sample_" + uuid.uuid4().hex[:12]
    payload = transcription_payload(conversation, call_session_id=args.session_id)
    if args.print:
        print(json.dumps(payload, indent=2))
    response = post_signed_webhook(url, secret, payload)
    print(f"POST {url}: HTTP {response.status_code} {response.text}")
    return 0 if response.status_code == 200 else 1


def cmd_sql(args: argparse.Namespace) -> int:
    """Run SQL (or open psql) on the local stack as a household member, under RLS."""
    from python_worker.stack.member import acting_as_member, member_claims, psql_options

    settings = stack_settings()
    with psycopg.connect(settings.database_url, connect_timeout=5) as conn:
        claims = member_claims(conn, args.as_user)
        if args.statement is None:
            conn.close()
            env = {**os.environ, "PGOPTIONS": psql_options(claims)}
            print(f"psql as {claims['email']} (role authenticated, auth.uid() = {claims['sub']})")
            os.execvpe("psql", ["psql", settings.database_url], env)  # noqa: S606
        with acting_as_member(conn, claims):
            cursor = conn.execute(args.statement)
            if cursor.description is not None:
                names = [column.name for column in cursor.description]
                print("\t".join(names))
                for row in cursor.fetchall():
                    print("\t".join("" if v is None else str(v) for v in row))
            else:
                print(cursor.statusmessage or "ok")
    return 0


def cmd_lint_sql(_: argparse.Namespace) -> int:
    from python_worker.stack import sql_lint

    findings = sql_lint.lint_migrations(stack_settings())
    for finding in findings:
        print(finding.describe())
    if findings:
        print(f"plpgsql_check: {len(findings)} finding(s)", file=sys.stderr)
        return 1
    print("plpgsql_check: every function is clean (with and without pg_cron)")
    return 0


def cmd_gen_types(args: argparse.Namespace) -> int:
    from python_worker.stack import typegen

    settings = stack_settings()
    target = settings.project_dir / typegen.TYPES_FILE
    fresh = typegen.generate_from_migrations(settings)
    current = target.read_text(encoding="utf-8") if target.is_file() else None
    if args.check:
        if current != fresh:
            print(f"{typegen.TYPES_FILE} is stale: run `make types` and commit it", file=sys.stderr)
            return 1
        print(f"{typegen.TYPES_FILE} is up to date")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(fresh, encoding="utf-8")
    state = "unchanged" if current == fresh else "written"
    print(f"{typegen.TYPES_FILE} {state}")
    return 0


def cmd_emulators(args: argparse.Namespace) -> int:
    from python_worker.emulators.suite import serve

    folder = Path(args.dir) if args.dir else stack_settings().stack_dir.parent / "emulators"
    folder.mkdir(parents=True, exist_ok=True)
    announce = functools.partial(print, flush=True)
    asyncio.run(
        serve(
            folder,
            fast=args.fast,
            fcm_port=args.fcm_port,
            apns_port=args.apns_port,
            elevenlabs_port=args.elevenlabs_port,
            webhook_url=args.webhook_url or f"{worker_settings().public_api_url}{WEBHOOK_PATH}",
            twilio_inbound_url=f"{worker_settings().public_api_url}/v1/webhooks/twilio/sms",
            env_file=Path(args.write_env_file) if args.write_env_file else None,
            as_json=args.json,
            announce=announce,
        )
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
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

        print(
            bench_dispatch.report_dispatch(
                bench_dispatch.bench_dispatch(stack, args.calls, args.workers, args.rounds)
            )
        )
    if args.bench == "alerts":
        from python_worker.bench import alerts as bench_alerts

        return bench_alerts.bench_command(stack, args.alerts, args.workers)
    if args.bench == "schedule":
        if args.schedules < 1:
            raise CallPanionError("--schedules must be at least 1")
        result = bench_schedule.bench_schedule(settings.database_url, args.schedules, args.rounds)
        print(bench_schedule.report_schedule(result))
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
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


def cmd_api(args: argparse.Namespace) -> int:
    # Imported here: the other commands need neither FastAPI nor uvicorn.
    from python_worker.api import app as api

    settings = api_settings()
    if args.openapi:
        sys.stdout.write(api.openapi_document(settings))
        return 0
    print(f"serving the CallPanion API on http://{settings.host}:{settings.port}")
    api.serve(settings)
    return 0


def cmd_worker(_: argparse.Namespace) -> int:
    from python_worker import logs
    from python_worker.worker import loop as worker

    settings = worker_settings()
    if fcm_settings() is None and apns_settings() is None:
        # Started like this it would claim every due call and fail it: refuse instead.
        raise CallPanionError(
            "no push provider is configured: set FCM_SERVICE_ACCOUNT_FILE (FCM) and/or "
            "APNS_KEY_FILE with APNS_KEY_ID, APNS_TEAM_ID, APNS_BUNDLE_ID (APNs); locally, run "
            "`callpanion emulators` and start the worker with "
            "`callpanion --env-file .callpanion/emulators/emulators.env worker`"
        )
    logs.configure(settings.log_level)
    asyncio.run(worker.run_worker(settings))
    return 0


#: `callpanion healthcheck` gives up after this long (the container's HEALTHCHECK allows 5 s).
HEALTHCHECK_TIMEOUT_S = 3.0


def default_healthz_url(host: str, port: int) -> str:
    """The worker's /healthz as seen from its own host: a wildcard address means loopback."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - we connect to it, we do not bind it
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def cmd_healthcheck(args: argparse.Namespace) -> int:
    """GET /healthz: exit 0 on 200, 1 on anything else; print one line either way."""
    if args.url:
        url: str = args.url
    else:
        settings = worker_settings()
        url = default_healthz_url(settings.http_host, settings.http_port)
    if not url.startswith(("http://", "https://")):
        raise CallPanionError(f"--url must be an http(s) URL, got {url!r}")
    # No proxies: an HTTP_PROXY meant for the providers must not carry a loopback probe away.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=HEALTHCHECK_TIMEOUT_S) as response:
            status, body = response.status, response.read(500)
    except urllib.error.HTTPError as error:
        with error:
            status, body = error.code, error.read(500)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        print(f"unhealthy: {url}: {reason}")
        return 1
    detail = " ".join(body.decode(errors="replace").split())
    print(f"{'healthy' if status == 200 else 'unhealthy'}: {url}: HTTP {status} {detail}".rstrip())
    return 0 if status == 200 else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callpanion", description=__doc__)
    parser.add_argument(
        "--env-file",
        dest="read_env_file",
        help="read settings from this dotenv file too (the environment wins over it, it wins "
        "over ./.env); default: $CALLPANION_ENV_FILE, e.g. the emulators' settings file",
    )
    sub = parser.add_subparsers(dest="command", required=True)

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

    demo = sub.add_parser(
        "demo", help="play a whole call: stack, emulators, API, worker, simulated phones"
    )
    demo.add_argument(
        "action", nargs="?", choices=("play", "stack", "stop"), default="play",
        help="play the calls (default); stack: only bring up the stack and its demo data, "
        "and report it; stop: stop the demo's background services",
    )  # fmt: skip
    demo.add_argument(
        "--json", action="store_true", help="end with one JSON line summarising both calls"
    )
    demo.set_defaults(func=cmd_demo)

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

    phone = sub.add_parser("phone", help="the phone simulator: run one, or answer it by hand")
    phone_sub = phone.add_subparsers(dest="action", required=True)
    phone_run = phone_sub.add_parser("run", help="pair with a code and ring until stopped")
    phone_run.add_argument("--name", required=True, help="a short name (state file, output)")
    phone_run.add_argument("--platform", required=True, choices=("ios", "android"))
    phone_run.add_argument(
        "--pairing-id", required=True, help="the pairing id (the dashboard's QR code or link)"
    )
    phone_run.add_argument("--code", required=True, help="the 6-digit pairing code")
    phone_run.add_argument(
        "--api", default=DEFAULT_PUBLIC_API_URL, help=f"the API (default {DEFAULT_PUBLIC_API_URL})"
    )
    phone_run.add_argument(
        "--script",
        default="manual",
        help="per call, in order: answer:N, decline, ignore, manual, offline (default manual)",
    )
    phone_run.add_argument("--control-port", type=int, default=0, help="default: a free port")
    for action, text in (
        ("answer", "answer the call ringing for a person"),
        ("decline", "decline the call ringing for a person"),
        ("state", "print each running phone's state"),
    ):
        person = phone_sub.add_parser(action, help=text)
        person.add_argument("--name", help="only this phone (default: any that rings)")
        person.add_argument("--state-dir", help="default: <stack root>/demo/phones")
    phone_run.add_argument("--state-dir", help="default: <stack root>/demo/phones")
    phone.set_defaults(func=cmd_phone)

    webhook = sub.add_parser(
        "webhook", help="send a sample signed ElevenLabs post-call webhook to the API"
    )
    webhook.add_argument("--session-id", help="call_session_id in its dynamic variables")
    webhook.add_argument("--conversation-id", help="default: a new conv_sample_… id")
    webhook.add_argument("--url", help="default: CALLPANION_PUBLIC_API_URL + the webhook path")
    webhook.add_argument("--secret", help="default: ELEVENLABS_WEBHOOK_SECRET")
    webhook.add_argument("--print", action="store_true", help="also print the body sent")
    webhook.set_defaults(func=cmd_webhook)

    sql_parser = sub.add_parser(
        "sql", help="run SQL (or open psql) on the local stack as a household member, under RLS"
    )
    sql_parser.add_argument(
        "--as", dest="as_user", required=True, help="the member's email or user id"
    )
    sql_parser.add_argument("statement", nargs="?", help="SQL to run (default: open psql)")
    sql_parser.set_defaults(func=cmd_sql)

    emulators = sub.add_parser(
        "emulators", help="run the FCM (+OAuth), APNs and ElevenLabs emulators until interrupted"
    )
    emulators.add_argument("--fast", action="store_true", help="skip verification (benchmarks)")
    emulators.add_argument("--dir", help="where to write the generated credentials")
    emulators.add_argument("--fcm-port", type=int, default=0, help="default: a free port")
    emulators.add_argument("--apns-port", type=int, default=0, help="default: a free port")
    emulators.add_argument("--elevenlabs-port", type=int, default=0, help="default: a free port")
    emulators.add_argument(
        "--webhook-url",
        help="where conversations' post-call webhooks go "
        "(default: CALLPANION_PUBLIC_API_URL + /v1/webhooks/elevenlabs)",
    )
    emulators.add_argument(
        "--env-file",
        dest="write_env_file",
        help="where to write their settings (default: <dir>/emulators.env)",
    )
    emulators.add_argument("--json", action="store_true", help="print the endpoints as JSON")
    emulators.set_defaults(func=cmd_emulators)

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
    from python_worker.bench import alerts as bench_alerts

    bench_alerts.add_bench_parser(bench_sub)
    bench_parser.set_defaults(func=cmd_bench)

    chaos_parser = sub.add_parser(
        "chaos",
        help="bursts of calls through real workers while things go wrong: a table of outcomes",
    )
    chaos_parser.add_argument(
        "--scenario",
        action="append",
        metavar="NAME",
        help="run only this scenario (repeatable): baseline, kill-in-flight, kill-recording,"
        " pg-restart-short, pg-restart-long, storm-clearing, storm-forever, twins,"
        " twins-one-stopped, past-deadline; alerts-kill (family alerts across a worker"
        " SIGKILL, on the local stack)",
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

    api_parser = sub.add_parser("api", help="serve the HTTP API (device routes, webhook)")
    api_parser.add_argument(
        "--openapi", action="store_true", help="print the OpenAPI document and exit"
    )
    api_parser.set_defaults(func=cmd_api)

    worker_parser = sub.add_parser(
        "worker", help="send every queued call at its time (until SIGTERM); see README Worker"
    )
    worker_parser.set_defaults(func=cmd_worker)

    healthcheck = sub.add_parser(
        "healthcheck",
        help="GET the worker's /healthz: exit 0 on 200, 1 otherwise (the container HEALTHCHECK)",
    )
    healthcheck.add_argument(
        "--url",
        help="default: http://CALLPANION_WORKER_HTTP_HOST:CALLPANION_WORKER_HTTP_PORT/healthz "
        "(127.0.0.1 when the host is 0.0.0.0)",
    )
    healthcheck.set_defaults(func=cmd_healthcheck)
    return parser


def load_settings_files(env_file: str | None) -> None:
    """The environment wins; then the explicit settings file (the emulators'); then ./.env."""
    if env_file:
        path = Path(env_file)
        if not path.is_file():
            raise CallPanionError(
                f"--env-file: no such file: {path} (are the emulators running? "
                "`callpanion emulators` writes it)"
            )
        load_dotenv(path, override=False)
    load_env()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `callpanion` console script."""
    args = build_parser().parse_args(argv)
    try:
        load_settings_files(args.read_env_file or os.environ.get("CALLPANION_ENV_FILE"))
        code: int = args.func(args)
    except CallPanionError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
