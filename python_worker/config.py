"""Configuration read once from the environment (and an optional `.env`), passed in explicitly.

Every variable is documented in README.md ("Configuration"); defaults are named here once.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from dotenv import load_dotenv

from python_worker.errors import CallPanionError

#: The repository root: `supabase/` and `sql/` are found relative to it.
DEFAULT_PROJECT_DIR = Path(__file__).resolve().parent.parent
#: Supabase's local stack uses 54322 for Postgres; we keep the same so tools feel familiar.
DEFAULT_DB_PORT = 54322
#: Supabase's local default; the cluster listens on loopback only.
DEFAULT_DB_PASSWORD = "postgres"  # noqa: S105 - local loopback-only dev cluster
#: The database pg_cron runs in (`cron.database_name`), as on hosted Supabase.
DEFAULT_DB_NAME = "postgres"


@dataclass(frozen=True)
class StackSettings:
    """Where the private cluster lives and how to reach it."""

    project_dir: Path
    stack_dir: Path
    port: int
    password: str
    database: str
    pg_bindir: Path | None

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


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise CallPanionError(f"{name} must be an integer, got {raw!r}") from None
    return value


#: OS user that owns the cluster when the CLI runs as root (Postgres refuses to run as root).
SERVER_OS_USER = "postgres"


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


def load_env() -> None:
    """Load `.env` from the working directory without overriding the environment."""
    load_dotenv(override=False)


def stack_settings(env: Mapping[str, str] | None = None) -> StackSettings:
    """Build the local-stack settings from environment variables."""
    env = os.environ if env is None else env
    project_dir = Path(env.get("CALLPANION_PROJECT_DIR") or DEFAULT_PROJECT_DIR).resolve()
    explicit_dir = env.get("CALLPANION_STACK_DIR")
    stack_dir = Path(explicit_dir) if explicit_dir else default_stack_root(project_dir) / "stack"
    port = _int(env, "CALLPANION_DB_PORT", DEFAULT_DB_PORT)
    if not 1024 <= port <= 65535:
        raise CallPanionError(f"CALLPANION_DB_PORT must be between 1024 and 65535, got {port}")
    bindir = env.get("CALLPANION_PG_BINDIR")
    return StackSettings(
        project_dir=project_dir,
        stack_dir=stack_dir.resolve(),
        port=port,
        password=env.get("CALLPANION_DB_PASSWORD") or DEFAULT_DB_PASSWORD,
        database=DEFAULT_DB_NAME,
        pg_bindir=Path(bindir) if bindir else None,
    )


@dataclass(frozen=True)
class FcmSettings:
    """Where and as whom to send FCM v1 messages."""

    service_account_file: Path
    project_id: str | None
    base_url: str
    ca_file: str | None


@dataclass(frozen=True)
class ApnsSettings:
    """Where and as whom to send APNs pushes (token-based auth)."""

    key_file: Path
    key_id: str
    team_id: str
    bundle_id: str
    host: str
    port: int
    ca_file: str | None


#: FCM's endpoint; the emulators print another one.
DEFAULT_FCM_BASE_URL = "https://fcm.googleapis.com"
#: APNs production; `api.sandbox.push.apple.com` for development builds.
DEFAULT_APNS_HOST = "api.push.apple.com"


def fcm_settings(env: Mapping[str, str] | None = None) -> FcmSettings | None:
    """FCM settings, or None when FCM_SERVICE_ACCOUNT_FILE is not set (FCM disabled)."""
    env = os.environ if env is None else env
    account = env.get("FCM_SERVICE_ACCOUNT_FILE")
    if not account:
        return None
    path = Path(account)
    if not path.is_file():
        raise CallPanionError(f"FCM_SERVICE_ACCOUNT_FILE: no such file: {path}")
    return FcmSettings(
        service_account_file=path,
        project_id=env.get("FCM_PROJECT_ID") or None,
        base_url=env.get("FCM_BASE_URL") or DEFAULT_FCM_BASE_URL,
        ca_file=env.get("FCM_CA_FILE") or None,
    )


def apns_settings(env: Mapping[str, str] | None = None) -> ApnsSettings | None:
    """APNs settings, or None when APNS_KEY_FILE is not set (APNs disabled)."""
    env = os.environ if env is None else env
    key_file = env.get("APNS_KEY_FILE")
    if not key_file:
        return None
    path = Path(key_file)
    if not path.is_file():
        raise CallPanionError(f"APNS_KEY_FILE: no such file: {path}")
    missing = [n for n in ("APNS_KEY_ID", "APNS_TEAM_ID", "APNS_BUNDLE_ID") if not env.get(n)]
    if missing:
        raise CallPanionError(f"APNS_KEY_FILE is set, so {', '.join(missing)} must be set too")
    port = _int(env, "APNS_PORT", 443)
    if not 1 <= port <= 65535:
        raise CallPanionError(f"APNS_PORT must be a TCP port, got {port}")
    return ApnsSettings(
        key_file=path,
        key_id=env["APNS_KEY_ID"],
        team_id=env["APNS_TEAM_ID"],
        bundle_id=env["APNS_BUNDLE_ID"],
        host=env.get("APNS_HOST") or DEFAULT_APNS_HOST,
        port=port,
        ca_file=env.get("APNS_CA_FILE") or None,
    )


#: Where `callpanion api` listens unless told otherwise (loopback: put a proxy in front).
DEFAULT_API_HOST = "127.0.0.1"
DEFAULT_API_PORT = 8000
#: The database role the API acts as: it holds exactly the grants of the SQL functions it calls.
DEFAULT_API_DB_ROLE = "service_role"
#: ElevenLabs' public API; only tests and the demo point elsewhere (the emulator).
DEFAULT_ELEVENLABS_BASE_URL = "https://api.elevenlabs.io"
#: Data-collection or evaluation fields that flag a concern unless configured otherwise.
DEFAULT_CONCERN_FIELDS = ("wellbeing_concern", "safety_concern")
#: post_call_audio carries a base64 MP3 of the whole call: allow long calls, refuse the absurd.
DEFAULT_WEBHOOK_MAX_BYTES = 25 * 1024 * 1024
#: Pairing requests one client address may make per window (in-process, per API instance).
DEFAULT_PAIRING_RATE_LIMIT = 10
DEFAULT_PAIRING_RATE_WINDOW_SECS = 600


@dataclass(frozen=True)
class ApiSettings:
    """What `callpanion api` needs: where to listen, the database, ElevenLabs, limits."""

    host: str
    port: int
    database_url: str
    db_role: str | None
    elevenlabs_api_key: str | None
    elevenlabs_agent_id: str | None
    elevenlabs_base_url: str
    elevenlabs_webhook_secret: str | None
    concern_fields: tuple[str, ...]
    webhook_max_bytes: int
    pairing_rate_limit: int
    pairing_rate_window_secs: int


def api_settings(env: Mapping[str, str] | None = None) -> ApiSettings:
    """Build the API settings from environment variables (README, "Configuration")."""
    env = os.environ if env is None else env
    port = _int(env, "CALLPANION_API_PORT", DEFAULT_API_PORT)
    if not 1 <= port <= 65535:
        raise CallPanionError(f"CALLPANION_API_PORT must be between 1 and 65535, got {port}")
    database_url = (
        env.get("CALLPANION_API_DATABASE_URL")
        or env.get("DATABASE_URL")
        or stack_settings(env).database_url
    )
    role = env.get("CALLPANION_API_DB_ROLE", DEFAULT_API_DB_ROLE).strip()
    raw_fields = env.get("CALLPANION_CONCERN_FIELDS")
    fields = (
        DEFAULT_CONCERN_FIELDS
        if raw_fields is None
        else tuple(f.strip() for f in raw_fields.split(",") if f.strip())
    )
    limits = {
        "CALLPANION_WEBHOOK_MAX_BYTES": _int(
            env, "CALLPANION_WEBHOOK_MAX_BYTES", DEFAULT_WEBHOOK_MAX_BYTES
        ),
        "CALLPANION_PAIRING_RATE_LIMIT": _int(
            env, "CALLPANION_PAIRING_RATE_LIMIT", DEFAULT_PAIRING_RATE_LIMIT
        ),
        "CALLPANION_PAIRING_RATE_WINDOW_SECS": _int(
            env, "CALLPANION_PAIRING_RATE_WINDOW_SECS", DEFAULT_PAIRING_RATE_WINDOW_SECS
        ),
    }
    for name, value in limits.items():
        if value < 1:
            raise CallPanionError(f"{name} must be a positive integer, got {value}")
    return ApiSettings(
        host=env.get("CALLPANION_API_HOST") or DEFAULT_API_HOST,
        port=port,
        database_url=database_url,
        db_role=role or None,
        elevenlabs_api_key=env.get("ELEVENLABS_API_KEY") or None,
        elevenlabs_agent_id=env.get("ELEVENLABS_AGENT_ID") or None,
        elevenlabs_base_url=(env.get("ELEVENLABS_BASE_URL") or DEFAULT_ELEVENLABS_BASE_URL).rstrip(
            "/"
        ),
        elevenlabs_webhook_secret=env.get("ELEVENLABS_WEBHOOK_SECRET") or None,
        concern_fields=fields,
        webhook_max_bytes=limits["CALLPANION_WEBHOOK_MAX_BYTES"],
        pairing_rate_limit=limits["CALLPANION_PAIRING_RATE_LIMIT"],
        pairing_rate_window_secs=limits["CALLPANION_PAIRING_RATE_WINDOW_SECS"],
    )


# -- the worker ---------------------------------------------------------------------------

#: How the worker learns of queued rows besides its timer and poll (README "Worker").
WAKEUP_MODES = ("notify", "realtime", "poll")
#: The backstop poll: a worker that misses every signal still sends within this long.
DEFAULT_POLL_INTERVAL_SECS = 5.0
#: Rows per claim: one statement, one round trip; a burst of 10,000 is 10 claims.
DEFAULT_BATCH_SIZE = 1000
#: A claimed row's lease. Well above a send's timeout (10 s) and renewed while sends run, so
#: only a dead or hung worker loses it; short enough that its rows ring within the grace.
DEFAULT_LEASE_SECS = 30
#: Claim rows this far ahead of their send_at, so the database work is done when the minute
#: comes and each push goes out at its send_at exactly.
DEFAULT_CLAIM_AHEAD_MS = 1000
#: Pushes in flight at once per worker (rows claimed and not yet recorded).
DEFAULT_MAX_IN_FLIGHT = 20000
#: On SIGTERM: stop claiming, finish sends for at most this long, give back the rest.
DEFAULT_SHUTDOWN_GRACE_SECS = 10.0
#: /healthz and /metrics (loopback by default; the container listens on all interfaces).
DEFAULT_WORKER_HTTP_HOST = "127.0.0.1"
DEFAULT_WORKER_HTTP_PORT = 9108
#: What the relative's phone shows as the caller.
DEFAULT_CALLER_NAME = "CallPanion"
#: Where the app reports call events (the HTTP routes, `callpanion api`).
DEFAULT_PUBLIC_API_URL = "http://127.0.0.1:8000"


def _float(env: Mapping[str, str], name: str, default: float, low: float, high: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise CallPanionError(f"{name} must be a number, got {raw!r}") from None
    if not low <= value <= high:
        raise CallPanionError(f"{name} must be between {low:g} and {high:g}, got {raw}")
    return value


def _bounded_int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    value = _int(env, name, default)
    if not low <= value <= high:
        raise CallPanionError(f"{name} must be between {low} and {high}, got {value}")
    return value


@dataclass(frozen=True)
class WorkerSettings:
    """What `callpanion worker` needs besides the FCM_* / APNS_* provider settings."""

    database_url: str
    db_role: str | None
    worker_id: str
    wakeup: str
    supabase_url: str | None
    supabase_service_key: str | None
    poll_interval_s: float
    batch_size: int
    lease_s: int
    claim_ahead_s: float
    max_in_flight: int
    shutdown_grace_s: float
    http_host: str
    http_port: int
    caller_name: str
    public_api_url: str
    log_level: str


def worker_settings(env: Mapping[str, str] | None = None) -> WorkerSettings:
    """Build the worker settings from environment variables (README, "Configuration")."""
    env = os.environ if env is None else env
    wakeup = (env.get("CALLPANION_WAKEUP") or "notify").strip().lower()
    if wakeup not in WAKEUP_MODES:
        raise CallPanionError(
            f"CALLPANION_WAKEUP must be one of {', '.join(WAKEUP_MODES)}, got {wakeup!r}"
        )
    supabase_url = env.get("SUPABASE_URL") or None
    service_key = env.get("SUPABASE_SERVICE_ROLE_KEY") or None
    if wakeup == "realtime" and not (supabase_url and service_key):
        raise CallPanionError(
            "CALLPANION_WAKEUP=realtime needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"
        )
    database_url = (
        env.get("CALLPANION_WORKER_DATABASE_URL")
        or env.get("DATABASE_URL")
        or stack_settings(env).database_url
    )
    worker_id = (env.get("CALLPANION_WORKER_ID") or f"{os.uname().nodename}-{os.getpid()}").strip()
    if not 1 <= len(worker_id) <= 200:
        raise CallPanionError("CALLPANION_WORKER_ID must be 1 to 200 characters")
    level = (env.get("CALLPANION_LOG_LEVEL") or "INFO").strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise CallPanionError(
            f"CALLPANION_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}"
        )
    role = env.get("CALLPANION_WORKER_DB_ROLE", DEFAULT_API_DB_ROLE).strip()
    return WorkerSettings(
        database_url=database_url,
        db_role=role or None,
        worker_id=worker_id,
        wakeup=wakeup,
        supabase_url=supabase_url.rstrip("/") if supabase_url else None,
        supabase_service_key=service_key,
        poll_interval_s=_float(
            env, "CALLPANION_POLL_INTERVAL_SECS", DEFAULT_POLL_INTERVAL_SECS, 0.05, 3600
        ),
        batch_size=_bounded_int(env, "CALLPANION_BATCH_SIZE", DEFAULT_BATCH_SIZE, 1, 10000),
        lease_s=_bounded_int(env, "CALLPANION_LEASE_SECS", DEFAULT_LEASE_SECS, 5, 3600),
        claim_ahead_s=_bounded_int(
            env, "CALLPANION_CLAIM_AHEAD_MS", DEFAULT_CLAIM_AHEAD_MS, 0, 60000
        )
        / 1000,
        max_in_flight=_bounded_int(
            env, "CALLPANION_MAX_IN_FLIGHT", DEFAULT_MAX_IN_FLIGHT, 1, 1_000_000
        ),
        shutdown_grace_s=_float(
            env, "CALLPANION_SHUTDOWN_GRACE_SECS", DEFAULT_SHUTDOWN_GRACE_SECS, 0, 600
        ),
        http_host=env.get("CALLPANION_WORKER_HTTP_HOST") or DEFAULT_WORKER_HTTP_HOST,
        http_port=_bounded_int(
            env, "CALLPANION_WORKER_HTTP_PORT", DEFAULT_WORKER_HTTP_PORT, 0, 65535
        ),
        caller_name=env.get("CALLPANION_CALLER_NAME") or DEFAULT_CALLER_NAME,
        public_api_url=(env.get("CALLPANION_PUBLIC_API_URL") or DEFAULT_PUBLIC_API_URL).rstrip("/"),
        log_level=level,
    )
