"""The checked-in TypeScript `Database` types (supabase/types/database.ts) match the schema."""

from __future__ import annotations

from python_worker.stack.cluster import LocalStack
from python_worker.stack.typegen import TYPES_FILE, generate_typescript
from tests.support.db import PROJECT_DIR


def test_checked_in_types_are_what_the_migrations_generate(pg_stack: LocalStack) -> None:
    fresh = generate_typescript(pg_stack.settings.database_url, PROJECT_DIR)
    checked_in = (PROJECT_DIR / TYPES_FILE).read_text(encoding="utf-8")
    assert checked_in == fresh, f"{TYPES_FILE} is stale: run `make types` and commit it"


def test_types_carry_the_dashboard_reads() -> None:
    text = (PROJECT_DIR / TYPES_FILE).read_text(encoding="utf-8")
    assert text.startswith("export type Json =")
    for name in ("upcoming_calls", "call_history", "open_alerts", "acknowledge_alert"):
        assert f"      {name}: {{" in text, name
    assert "export type Database = {" in text
