"""`callpanion gen-types`: the dashboard's TypeScript `Database` types, as
`supabase gen types typescript` emits them, without Docker.

The Supabase CLI generates types by running postgres-meta (in a container) with
`PG_META_GENERATE_TYPES=typescript`; we run the same postgres-meta release from npm
(tools/npm, pinned to what the pinned CLI uses) with the same settings, against a database
migrated from `supabase/migrations`.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from python_worker.errors import CallPanionError
from python_worker.stack.cluster import throwaway_stack
from python_worker.stack.settings import StackSettings

#: The checked-in types, relative to the project.
TYPES_FILE = Path("supabase") / "types" / "database.ts"
#: The schemas the API exposes (supabase/config.toml [api] schemas), as the CLI's default.
TYPE_SCHEMAS = ("public",)
#: postgres-meta's entry point inside tools/npm/node_modules.
_PG_META = Path("@supabase") / "postgres-meta" / "dist" / "server" / "server.js"
#: Seconds the generator may take (it reads the catalogs once).
TYPEGEN_TIMEOUT_S = 180


def node_modules(project_dir: Path) -> Path:
    """Where scripts/ensure-npm-tools.sh installs the pinned npm tools."""
    return project_dir / "tools" / "npm" / "node_modules"


def generate_typescript(database_url: str, project_dir: Path) -> str:
    """The `Database` types of `database_url`'s exposed schemas, exactly as postgres-meta
    prints them for `supabase gen types typescript`."""
    server = node_modules(project_dir) / _PG_META
    if not server.is_file():
        raise CallPanionError(
            f"postgres-meta is not installed ({server} is missing); run "
            "scripts/ensure-npm-tools.sh (make types and make test do)"
        )
    # The same variables the Supabase CLI gives the postgres-meta container.
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),  # noqa: S108 - npm's cache dir when unset
        "PG_META_DB_URL": database_url,
        "PG_META_GENERATE_TYPES": "typescript",
        "PG_META_GENERATE_TYPES_INCLUDED_SCHEMAS": ",".join(TYPE_SCHEMAS),
        "PG_META_GENERATE_TYPES_SWIFT_ACCESS_CONTROL": "internal",
        "PG_META_GENERATE_TYPES_DETECT_ONE_TO_ONE_RELATIONSHIPS": "true",
    }
    try:
        proc = subprocess.run(
            ["node", str(server)],
            capture_output=True,
            text=True,
            env=env,
            cwd=project_dir,
            timeout=TYPEGEN_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError:
        raise CallPanionError("node is not installed; the type generator needs Node.js") from None
    if proc.returncode != 0 or not proc.stdout.strip():
        raise CallPanionError(
            f"postgres-meta failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}"
        )
    return proc.stdout


def generate_from_migrations(settings: StackSettings) -> str:
    """Migrate a throw-away cluster from `supabase/migrations` and generate its types."""
    with throwaway_stack(settings, "typegen") as stack:
        stack.up()
        return generate_typescript(stack.settings.database_url, settings.project_dir)
