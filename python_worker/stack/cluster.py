"""The embedded local stack: a private Postgres 15 cluster with pg_cron, owned by the project.

The cluster lives in a git-ignored folder (`.callpanion/stack` by default), listens on
127.0.0.1 only (no Unix socket), preloads pg_cron with `cron.database_name = postgres` and runs
with `wal_level = logical` like a hosted Supabase database. Postgres refuses to run as root, so
when we are root the server and its files belong to the `postgres` OS user.

Roles are those of hosted Supabase: the cluster's superuser is `supabase_admin`, used only
where the platform itself acts (creating databases and extensions, the `sql/platform` stand-ins);
migrations, the seed and every client run as `postgres`, which is not a superuser
(`sql/platform/10_hosted_postgres_role.sql` gives it hosted Supabase's attributes and grants).
"""

from __future__ import annotations

import contextlib
import errno
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from python_worker.errors import StackError
from python_worker.stack import migrations
from python_worker.stack.settings import SERVER_OS_USER, StackSettings, server_user_can

#: Oldest supported server: the migrations use PG15 publication column lists.
MIN_PG_MAJOR = 15
#: Seconds to wait for the server to start or stop before reporting it stuck.
PG_CTL_TIMEOUT_S = 60
#: The cluster's superuser, named as on hosted Supabase, where it is the platform's own role.
ADMIN_ROLE = "supabase_admin"
#: The role migrations run as: hosted Supabase's `postgres`, which is not a superuser.
OWNER_ROLE = "postgres"

_CONF_NAME = "callpanion.conf"
_SETTINGS = """\
# Written by `callpanion stack up`; the server reads it through an include in postgresql.conf.
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
shared_preload_libraries = 'pg_cron'
cron.database_name = '{database}'
# Jobs run in background workers, so pg_cron needs no password to connect back.
cron.use_background_workers = on
cron.max_running_jobs = 8
max_worker_processes = 32
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
max_connections = 200
shared_buffers = 256MB
timezone = 'UTC'
log_timezone = 'UTC'
logging_collector = off
"""


@dataclass(frozen=True)
class StackStatus:
    """What `stack status` reports."""

    running: bool
    initialised: bool
    data_dir: Path
    port: int | None
    pid: int | None
    database_url: str


@dataclass(frozen=True)
class UpResult:
    """What `stack up` did."""

    initialised: bool
    started: bool
    platform_files: list[str]
    applied: list[migrations.Migration]


def _pg_major(bindir: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    # "postgres (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"
    for word in out.split():
        head = word.split(".")[0]
        if head.isdigit():
            return int(head)
    return None


def find_bindir(explicit: Path | None) -> Path:
    """The PostgreSQL server binaries: explicit setting, else Debian's layout, else pg_config."""
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(explicit)
    else:
        debian = Path("/usr/lib/postgresql")
        if debian.is_dir():
            versions = sorted(
                (p for p in debian.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
            )
            # Prefer 15 (what hosted Supabase and our packages target), then newer ones.
            versions.sort(key=lambda p: (int(p.name) != MIN_PG_MAJOR, int(p.name)))
            candidates.extend(v / "bin" for v in versions)
        pg_config = shutil.which("pg_config")
        if pg_config:
            with contextlib.suppress(OSError, subprocess.CalledProcessError):
                out = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, check=True
                ).stdout.strip()
                candidates.append(Path(out))
    for bindir in candidates:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            major = _pg_major(bindir)
            if major is not None and major >= MIN_PG_MAJOR:
                return bindir
    where = str(explicit) if explicit else "/usr/lib/postgresql/*/bin or pg_config --bindir"
    raise StackError(
        f"PostgreSQL {MIN_PG_MAJOR}+ server binaries (initdb, pg_ctl, postgres) not found in "
        f"{where}. Install them with `apt-get install postgresql-15 postgresql-15-cron` "
        "(make demo / make test do this), or set CALLPANION_PG_BINDIR."
    )


def check_pg_cron(bindir: Path) -> None:
    """Fail clearly when the pg_cron extension is not installed for this server."""
    pg_config = bindir / "pg_config"
    libdir: Path | None = None
    sharedir: Path | None = None
    if pg_config.is_file():
        out = subprocess.run(
            [str(pg_config), "--pkglibdir", "--sharedir"], capture_output=True, text=True
        ).stdout.split()
        if len(out) == 2:
            libdir, sharedir = Path(out[0]), Path(out[1])
    if libdir is None or sharedir is None:
        libdir = bindir.parent / "lib"
        sharedir = Path(f"/usr/share/postgresql/{bindir.parent.name}")
    if (
        not (libdir / "pg_cron.so").is_file()
        or not (sharedir / "extension" / "pg_cron.control").is_file()
    ):
        major = _pg_major(bindir)
        raise StackError(
            f"the pg_cron extension is not installed for PostgreSQL {major} "
            f"(no {libdir / 'pg_cron.so'}). Install it with "
            f"`apt-get install postgresql-{major}-cron` (make demo / make test do this)."
        )


class LocalStack:
    """Start, stop, inspect and reset the project's private cluster."""

    def __init__(self, settings: StackSettings) -> None:
        self.settings = settings
        self.data_dir = settings.stack_dir / "pgdata"
        self.log_file = settings.stack_dir / "postgres.log"
        self._bindir: Path | None = None

    # -- process plumbing -------------------------------------------------------------------

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_bindir(self.settings.pg_bindir)
        return self._bindir

    @staticmethod
    def _as_root() -> bool:
        return os.geteuid() == 0

    def _run(
        self, args: list[str], *, check: bool = True, timeout: float = PG_CTL_TIMEOUT_S + 10
    ) -> subprocess.CompletedProcess[str]:
        """Run a server tool, as the `postgres` OS user when we are root."""
        env = dict(os.environ)
        user: int | None = None
        group: int | None = None
        if self._as_root():
            account = pwd.getpwnam(SERVER_OS_USER)
            user, group = account.pw_uid, account.pw_gid
            env.update(HOME=account.pw_dir, USER=SERVER_OS_USER, LOGNAME=SERVER_OS_USER)
        env.setdefault("LC_ALL", "C.UTF-8")
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=env,
            cwd="/",
            timeout=timeout,
            check=False,
            user=user,
            group=group,
            extra_groups=[] if user is not None else None,
        )
        if check and proc.returncode != 0:
            raise StackError(
                f"{Path(args[0]).name} failed (exit {proc.returncode}): "
                f"{(proc.stderr or proc.stdout).strip()}"
            )
        return proc

    def _prepare_dir(self) -> None:
        """Create the stack folder and hand it to the server's OS user."""
        self.settings.stack_dir.mkdir(parents=True, exist_ok=True)
        if not self._as_root():
            return
        account = pwd.getpwnam(SERVER_OS_USER)
        os.chown(self.settings.stack_dir, account.pw_uid, account.pw_gid)
        if not server_user_can("-w", self.settings.stack_dir):
            raise StackError(
                f"the {SERVER_OS_USER} OS user cannot reach {self.settings.stack_dir} (a parent "
                "folder is not searchable by other users). Set CALLPANION_STACK_DIR to a folder "
                "it can reach, e.g. a folder under /var/tmp."
            )

    # -- state ------------------------------------------------------------------------------

    def initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def _postmaster_info(self) -> tuple[int, int] | None:
        """(pid, port) from postmaster.pid when a live server owns this data dir."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return None
        if len(lines) < 4 or not lines[0].strip().isdigit():
            return None
        pid, port = int(lines[0]), int(lines[3])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, owned by another user
        return pid, port

    def status(self) -> StackStatus:
        info = self._postmaster_info() if self.initialised() else None
        url = self.settings.database_url
        if info is not None and info[1] != self.settings.port:
            # Describe the server that owns this data folder, not whatever holds our port.
            url = url.replace(f"127.0.0.1:{self.settings.port}/", f"127.0.0.1:{info[1]}/")
        return StackStatus(
            running=info is not None,
            initialised=self.initialised(),
            data_dir=self.data_dir,
            port=info[1] if info else None,
            pid=info[0] if info else None,
            database_url=url,
        )

    # -- lifecycle --------------------------------------------------------------------------

    def _initdb(self) -> None:
        self._prepare_dir()
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise StackError(
                f"{self.data_dir} exists but holds no PostgreSQL cluster; "
                "remove it or run `callpanion stack reset --hard`"
            )
        with tempfile.NamedTemporaryFile("w", dir=self.settings.stack_dir, delete=False) as pw:
            pw.write(self.settings.password + "\n")
        pwfile = Path(pw.name)
        try:
            if self._as_root():
                account = pwd.getpwnam(SERVER_OS_USER)
                os.chown(pwfile, account.pw_uid, account.pw_gid)
            self._run(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    f"--username={ADMIN_ROLE}",
                    f"--pwfile={pwfile}",
                    "--auth=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.data_dir / _CONF_NAME
        conf.write_text(_SETTINGS.format(database=self.settings.database))
        with (self.data_dir / "postgresql.conf").open("a") as main_conf:
            main_conf.write(f"\ninclude '{_CONF_NAME}'\n")
        if self._as_root():
            account = pwd.getpwnam(SERVER_OS_USER)
            os.chown(conf, account.pw_uid, account.pw_gid)

    def _ensure_port_free(self) -> None:
        port = self.settings.port
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As Postgres binds: a port left in TIME_WAIT by our own last shutdown is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise StackError(
                        f"port {port} on 127.0.0.1 is already in use by another process; stop it "
                        "or choose another port with CALLPANION_DB_PORT"
                    ) from None
                raise

    def _start(self) -> None:
        self._ensure_port_free()
        self._prepare_dir()
        proc = self._run(
            [
                str(self.bindir / "pg_ctl"),
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(PG_CTL_TIMEOUT_S),
                "-o",
                f"-p {self.settings.port}",
            ],
            check=False,
        )
        if proc.returncode != 0:
            raise StackError(
                f"PostgreSQL did not start (pg_ctl exit {proc.returncode}). "
                f"Last lines of {self.log_file}:\n{self._log_tail()}"
            )

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def admin_conninfo(self, database: str | None = None) -> str:
        """Connection string of the superuser (`supabase_admin`), for platform work only."""
        return make_conninfo(
            "",
            host="127.0.0.1",
            port=self.settings.port,
            user=ADMIN_ROLE,
            password=self.settings.password,
            dbname=database or self.settings.database,
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Block until the server accepts an authenticated connection of the superuser."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.admin_conninfo(), connect_timeout=2):
                    return
            except psycopg.OperationalError as error:
                last = str(error).strip()
                if "password authentication failed" in last:
                    raise self._login_refused() from None
            time.sleep(0.1)
        raise StackError(
            f"PostgreSQL on port {self.settings.port} is not accepting connections: {last}"
        )

    def _login_refused(self) -> StackError:
        """Why `supabase_admin` could not log in: a cluster made before it existed (when
        `postgres` was the superuser), or a password other than the cluster's."""
        try:
            with psycopg.connect(self.settings.database_url, connect_timeout=5) as conn:
                row = conn.execute(
                    "select rolsuper from pg_roles where rolname = current_user"
                ).fetchone()
        except psycopg.OperationalError:
            row = None
        if row is not None and row[0]:
            return StackError(
                f"this cluster was created when `postgres` was its superuser; migrations now run "
                f"as a hosted-shaped, non-superuser `postgres` with `{ADMIN_ROLE}` as the "
                "superuser. Recreate it with `callpanion stack reset --hard` (this deletes the "
                "local stack's data)."
            )
        return StackError(
            "the local cluster rejected the password; CALLPANION_DB_PASSWORD must be "
            "the one it was created with (or run `callpanion stack reset --hard`)"
        )

    def _ensure_owner_role(self) -> None:
        """Create the login role `postgres` (shaped by the platform SQL) if it is missing, and
        hand it its database, as hosted Supabase does."""
        with psycopg.connect(self.admin_conninfo(), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute(
                "select 1 from pg_roles where rolname = %s", [OWNER_ROLE]
            ).fetchone()
            if exists is None:
                conn.execute(
                    sql.SQL("create role {} login password {}").format(
                        sql.Identifier(OWNER_ROLE), sql.Literal(self.settings.password)
                    )
                )
            conn.execute(
                sql.SQL("alter database {} owner to {}").format(
                    sql.Identifier(self.settings.database), sql.Identifier(OWNER_ROLE)
                )
            )

    def _apply_platform(self, database: str) -> list[str]:
        """The `sql/platform` stand-ins, as the superuser (what Supabase itself provides)."""
        with migrations.connect(self.admin_conninfo(database)) as conn:
            conn.execute("set client_min_messages = error")
            return migrations.apply_platform(conn, self.settings.platform_dir)

    def up(self, *, apply: bool = True) -> UpResult:
        """Initialise if needed, start if stopped, then apply platform SQL and new migrations.

        Idempotent: on a running stack it only applies migrations that are not yet recorded.
        """
        check_pg_cron(self.bindir)
        initialised = False
        if not self.initialised():
            self._initdb()
            initialised = True
        started = False
        info = self._postmaster_info()
        if info is None:
            self._start()
            started = True
        elif info[1] != self.settings.port:
            raise StackError(
                f"the local stack is already running on port {info[1]}, not {self.settings.port}; "
                "run `callpanion stack down` first to change the port"
            )
        self.wait_ready()
        self._ensure_owner_role()
        platform_files: list[str] = []
        applied: list[migrations.Migration] = []
        if apply:
            platform_files = self._apply_platform(self.settings.database)
            # Migrations run as hosted-shaped `postgres`, never as the superuser.
            with migrations.connect(self.settings.database_url) as conn:
                applied = migrations.apply_migrations(conn, self.settings.migrations_dir)
        return UpResult(initialised, started, platform_files, applied)

    def down(self) -> bool:
        """Stop the server (fast shutdown); returns False when it was not running."""
        if not self.initialised() or self._postmaster_info() is None:
            return False
        self._run(
            [
                str(self.bindir / "pg_ctl"),
                "stop",
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                str(PG_CTL_TIMEOUT_S),
            ]
        )
        return True

    def reset(self, *, hard: bool = False) -> UpResult:
        """Recreate the database, apply everything and load `supabase/seed.sql`.

        `hard` also deletes the cluster itself (data folder) and initialises a new one.
        """
        if hard:
            self.down()
            if self.settings.stack_dir.exists():
                shutil.rmtree(self.data_dir, ignore_errors=True)
        result = self.up(apply=False)
        with psycopg.connect(
            self.admin_conninfo("template1"), autocommit=True, connect_timeout=10
        ) as admin:
            name = sql.Identifier(self.settings.database)
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(name))
            admin.execute(
                sql.SQL("create database {} owner {}").format(name, sql.Identifier(OWNER_ROLE))
            )
        # Dropping the database ends pg_cron's launcher (it lives in that database) and Postgres
        # does not start it again: restart the server so the scheduler runs in the new one.
        self.down()
        self._start()
        self.wait_ready()
        platform_files = self._apply_platform(self.settings.database)
        with migrations.connect(self.settings.database_url) as conn:
            applied = migrations.apply_migrations(conn, self.settings.migrations_dir)
            migrations.apply_seed(conn, self.settings.seed_file)
        return UpResult(result.initialised, result.started, platform_files, applied)

    # -- scratch databases (tests, benchmarks) ---------------------------------------------

    def create_database(self, prefix: str) -> str:
        """A new, empty database owned by `postgres` with the platform stand-ins applied (as a
        new hosted project is before its first migration); returns its URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(self.admin_conninfo(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("create database {} owner {}").format(
                    sql.Identifier(name), sql.Identifier(OWNER_ROLE)
                )
            )
        self._apply_platform(name)
        return self.settings.database_url.rsplit("/", 1)[0] + "/" + name

    def create_migrated_database(self, prefix: str) -> str:
        """A new database in the cluster with the platform SQL and every migration applied
        (as `postgres`); returns its URL. pg_cron runs only in the main database, so nothing
        moves its queue but the caller (and the workers it starts). Drop it with
        `drop_database`."""
        url = self.create_database(prefix)
        with migrations.connect(url) as conn:
            conn.execute("set client_min_messages = error")  # the pg_cron warning is expected
            migrations.apply_migrations(conn, self.settings.migrations_dir)
        return url

    @contextlib.contextmanager
    def scratch_database(self, prefix: str) -> Iterator[str]:
        """`create_migrated_database` for the length of a `with` block, then dropped."""
        url = self.create_migrated_database(prefix)
        try:
            yield url
        finally:
            self.drop_database(url)

    def drop_database(self, url: str) -> None:
        """Drop a database made by `create_migrated_database` (ending its connections)."""
        name = sql.Identifier(url.rsplit("/", 1)[1])
        with psycopg.connect(self.admin_conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("drop database if exists {} with (force)").format(name))


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def throwaway_stack(settings: StackSettings, name: str) -> Iterator[LocalStack]:
    """A cluster of its own beside the local stack's folder (`<stack root>/<name>`) on a free
    port, for one-off jobs (`lint-sql`, `gen-types`); stopped and deleted afterwards."""
    stack = LocalStack(
        settings.model_copy(
            update={"stack_dir": settings.stack_dir.parent / name, "port": free_port()}
        )
    )
    stack.down()
    shutil.rmtree(stack.settings.stack_dir, ignore_errors=True)
    try:
        yield stack
    finally:
        stack.down()
        shutil.rmtree(stack.settings.stack_dir, ignore_errors=True)
