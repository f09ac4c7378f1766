"""The local stack's settings: where the private cluster lives and how to reach it.

Also the cluster's path and OS-user logic: when the CLI runs as root the cluster runs as the
`postgres` OS user, which may not be able to enter the project (a clone under /root).
"""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from python_worker.config import DEFAULT_PROJECT_DIR, EnvSettings, read_settings

#: Supabase's local stack uses 54322 for Postgres; we keep the same so tools feel familiar.
DEFAULT_DB_PORT = 54322
#: Supabase's local default; the cluster listens on loopback only.
DEFAULT_DB_PASSWORD = "postgres"  # noqa: S105 - local loopback-only dev cluster
#: The database pg_cron runs in (`cron.database_name`), as on hosted Supabase.
DEFAULT_DB_NAME = "postgres"
#: OS user that owns the cluster when the CLI runs as root (Postgres refuses to run as root).
SERVER_OS_USER = "postgres"


class StackSettings(EnvSettings):
    """Where the private cluster lives and how to reach it."""

    project_dir: Annotated[Path, Field(alias="CALLPANION_PROJECT_DIR")] = DEFAULT_PROJECT_DIR
    #: Default: `<stack root>/stack` (see default_stack_root), filled in by _paths.
    stack_dir: Annotated[Path, Field(alias="CALLPANION_STACK_DIR")] = Path(".callpanion/stack")
    port: Annotated[int, Field(alias="CALLPANION_DB_PORT", ge=1024, le=65535)] = DEFAULT_DB_PORT
    password: Annotated[str, Field(alias="CALLPANION_DB_PASSWORD")] = DEFAULT_DB_PASSWORD
    pg_bindir: Annotated[Path | None, Field(alias="CALLPANION_PG_BINDIR")] = None
    database: str = DEFAULT_DB_NAME

    @model_validator(mode="before")
    @classmethod
    def _paths(cls, data: Any) -> Any:
        """Resolve the project folder, and put the stack under its stack root by default."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        project_key = (
            "CALLPANION_PROJECT_DIR" if "CALLPANION_PROJECT_DIR" in data else "project_dir"
        )
        project_dir = Path(data.get(project_key) or DEFAULT_PROJECT_DIR).resolve()
        data[project_key] = project_dir
        stack_key = "stack_dir" if "stack_dir" in data else "CALLPANION_STACK_DIR"
        stack_dir = data.get(stack_key)
        data[stack_key] = Path(stack_dir or default_stack_root(project_dir) / "stack").resolve()
        return data

    @property
    def migrations_dir(self) -> Path:
        return self.project_dir / "supabase" / "migrations"

    @property
    def platform_dir(self) -> Path:
        return self.project_dir / "sql" / "platform"

    @property
    def seed_file(self) -> Path:
        return self.project_dir / "supabase" / "seed.sql"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres:{self.password}@127.0.0.1:{self.port}/{self.database}"


def stack_settings(env: Mapping[str, str] | None = None) -> StackSettings:
    """Build the local-stack settings from environment variables."""
    return read_settings(StackSettings, env)


def default_database_url(env: Mapping[str, str] | None = None) -> str:
    """DATABASE_URL, else the local stack's database: where a program connects by default."""
    source = os.environ if env is None else env
    return source.get("DATABASE_URL") or stack_settings(env).database_url


def server_user_can(test_flag: str, path: Path) -> bool:
    """Whether the server's OS user passes `test <flag> <path>` (always true unless we are root:
    then the cluster runs as that user)."""
    if os.geteuid() != 0:
        return True
    try:
        account = pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        return True  # no such user: the stack reports the missing server packages instead
    probe = subprocess.run(
        ["test", test_flag, str(path)],
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[],
        check=False,
    )
    return probe.returncode == 0


def default_stack_root(project_dir: Path) -> Path:
    """`<project>/.callpanion`, or a per-project folder in /var/tmp when, running as root, the
    server's OS user cannot enter the project (a clone under /root, say)."""
    if server_user_can("-x", project_dir):
        return project_dir / ".callpanion"
    digest = hashlib.sha256(str(project_dir).encode()).hexdigest()[:10]
    return Path("/var/tmp") / f"callpanion-{digest}"  # noqa: S108 - owned by us, not shared
