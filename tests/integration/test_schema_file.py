"""The checked-in current schema (supabase/schema.sql) is what the migrations make.

Like the `Database` types (test_types.py): regenerated from a freshly migrated cluster and
compared byte for byte, so a migration cannot land without the file a reader starts from.
"""

from __future__ import annotations

from python_worker.config import DEFAULT_PROJECT_DIR
from python_worker.stack.schema import SCHEMA_FILE, generate_from_migrations
from python_worker.stack.settings import stack_settings


def test_checked_in_schema_is_what_the_migrations_make() -> None:
    fresh = generate_from_migrations(stack_settings({}), "schema-test")
    checked_in = (DEFAULT_PROJECT_DIR / SCHEMA_FILE).read_text(encoding="utf-8")
    assert checked_in == fresh, f"{SCHEMA_FILE} is stale: run `make schema` and commit it"


def test_schema_holds_every_kind_of_object() -> None:
    text = (DEFAULT_PROJECT_DIR / SCHEMA_FILE).read_text(encoding="utf-8")
    for marker in (
        "CREATE TABLE public.notification_queue",
        "CREATE FUNCTION public.claim_due_calls(",
        "CREATE INDEX ",
        "CREATE TRIGGER ",
        "CREATE POLICY ",
        "GRANT ",
        "ALTER PUBLICATION supabase_realtime ADD TABLE ONLY public.notification_queue (",
        "SELECT cron.schedule('callpanion-phase2-release', '* * * * *',",
    ):
        assert marker in text, marker
    # Nothing that changes from run to run: versions, the per-run restrict key, owners.
    for noise in ("\\restrict", "Dumped from", "Dumped by", "; Owner: ", "OWNER TO"):
        assert noise not in text, noise
