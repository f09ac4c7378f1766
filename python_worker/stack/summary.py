"""What a running stack's database holds right now, in lines for `stack status` and the demo.

The SQL is in queries.sql beside this module (catalog reads only).
"""

from __future__ import annotations

from pathlib import Path

import psycopg

from python_worker.named_queries import load_queries

_QUERIES = load_queries(Path(__file__).with_name("queries.sql"))


def live_summary(database_url: str) -> list[str]:
    """Migrations applied, public tables (rows, RLS), the realtime publication, pg_cron jobs."""
    lines: list[str] = []
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(_QUERIES["applied_migrations"]).fetchall()
        lines.append(f"  migrations applied: {len(rows)}")
        lines.extend(f"    {version}_{name}" for version, name in rows)
        tables = conn.execute(_QUERIES["public_tables"]).fetchall()
        lines.append(f"  tables in public: {len(tables)}")
        for name, rls, n in tables:
            lines.append(f"    {name:<20} rows={n:<6} rls={'on' if rls else 'OFF'}")
        published = conn.execute(_QUERIES["realtime_table_names"]).fetchone()
        lines.append(f"  realtime publication: {published[0] if published else ''}")
        cron = conn.execute(_QUERIES["pg_cron_installed"]).fetchone()
        if cron and cron[0]:
            jobs = conn.execute(_QUERIES["cron_jobs_by_id"]).fetchall()
            lines.append(f"  pg_cron jobs: {len(jobs)}")
            lines.extend(f"    {name} ({schedule})" for name, schedule in jobs)
        else:
            preloaded = conn.execute(_QUERIES["preloaded_libraries"]).fetchone()
            lines.append(f"  pg_cron: preloaded ({preloaded[0] if preloaded else ''}), no jobs yet")
    return lines


def next_calls(database_url: str, limit: int = 5) -> list[str]:
    """The soonest scheduled calls, in each relative's own time and in UTC."""
    with psycopg.connect(database_url, connect_timeout=5) as conn:
        rows = conn.execute(_QUERIES["next_calls"], {"limit": limit}).fetchall()
    if not rows:
        return ["(none: no active schedules)"]
    return [f"{who} - {title}: {local} {zone} ({utc} UTC)" for who, title, zone, local, utc in rows]


def database_is_empty(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """No household yet (the demo loads its seed into such a database)."""
    row = conn.execute(_QUERIES["database_is_empty"]).fetchone()
    return bool(row and row[0])
