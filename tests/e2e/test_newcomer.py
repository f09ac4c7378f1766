"""What a newcomer needs to make one call ring by hand: each step one command (issue 12)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
from dotenv import dotenv_values

from python_worker.stack.cluster import LocalStack
from tests.support.api import ServedApi
from tests.support.db import free_port, stack_env
from tests.support.whole_call import clean_env, stop_process, wait_ready

PROJECT_DIR = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "python_worker", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=PROJECT_DIR,
        timeout=timeout,
        check=False,
    )


def test_a_worker_without_a_push_provider_refuses_to_start(tmp_path: Path) -> None:
    url = f"postgresql://postgres:postgres@127.0.0.1:{free_port()}/postgres"
    result = cli("worker", env=clean_env(CALLPANION_WORKER_DATABASE_URL=url), timeout=30)
    assert result.returncode == 1
    assert result.stderr.startswith("error: no push provider is configured: ")
    assert "FCM_SERVICE_ACCOUNT_FILE" in result.stderr
    assert "APNS_KEY_FILE" in result.stderr


def test_a_missing_settings_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.env"
    result = cli("--env-file", str(missing), "worker", env=clean_env())
    assert result.returncode == 1
    assert result.stderr == f"error: --env-file: no such file: {missing} (are the emulators " \
        "running? `callpanion emulators` writes it)\n"  # fmt: skip


def test_the_emulators_take_every_port_and_write_a_settings_file(tmp_path: Path) -> None:
    fcm, apns, elevenlabs = free_port(), free_port(), free_port()
    settings = tmp_path / "settings.env"
    log = (tmp_path / "emulators.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable, "-m", "python_worker", "emulators", "--dir", str(tmp_path),
            "--fcm-port", str(fcm), "--apns-port", str(apns),
            "--elevenlabs-port", str(elevenlabs), "--env-file", str(settings),
            "--webhook-url", "http://127.0.0.1:9/v1/webhooks/elevenlabs",
        ],
        stdout=log, stderr=subprocess.STDOUT, env=clean_env(), cwd=tmp_path,
    )  # fmt: skip
    log.close()
    try:
        wait_ready("the emulators", settings.is_file, process)
        values = dotenv_values(settings)
        assert values["FCM_BASE_URL"] == f"https://localhost:{fcm}"
        assert values["APNS_PORT"] == str(apns)
        assert values["ELEVENLABS_BASE_URL"] == f"http://127.0.0.1:{elevenlabs}"
        assert values["ELEVENLABS_WEBHOOK_SECRET"]
        assert Path(str(values["FCM_SERVICE_ACCOUNT_FILE"])).is_file()
        assert settings.stat().st_mode & 0o077 == 0  # it holds secrets
    finally:
        stop_process(process)
    assert process.returncode == 0


def test_the_webhook_command_sends_a_signed_sample_the_api_takes(
    api: ServedApi, webhook_secret: str
) -> None:
    session = uuid.uuid4()
    result = cli(
        "webhook",
        "--url",
        f"{api.url}/v1/webhooks/elevenlabs",
        "--session-id",
        str(session),
        env=clean_env(ELEVENLABS_WEBHOOK_SECRET=webhook_secret),
    )
    assert result.returncode == 0, result.stderr
    # Signed and well formed: stored, and kept as unmatched since no such session exists.
    assert '"status":"unmatched"' in result.stdout
    unsigned = cli("webhook", "--url", f"{api.url}/v1/webhooks/elevenlabs", env=clean_env())
    assert unsigned.returncode == 1
    assert "ELEVENLABS_WEBHOOK_SECRET" in unsigned.stderr


def test_sql_as_a_member_acts_under_row_level_security(pg_stack: LocalStack) -> None:
    member, stranger = uuid.uuid4(), uuid.uuid4()
    with psycopg.connect(pg_stack.settings.database_url, autocommit=True) as conn:
        for user in (member, stranger):
            conn.execute(
                "insert into auth.users (id, email) values (%s, %s)", [user, f"{user}@example.com"]
            )
        household = conn.execute(
            "insert into households (name, created_by) values ('Seen', %s) returning id", [member]
        ).fetchone()
        assert household is not None
        conn.execute(
            "insert into household_members (household_id, user_id, role) values (%s, %s, 'member')",
            [household[0], member],
        )
    try:
        env = clean_env(**stack_env(pg_stack))
        query = "select auth.uid() as me, current_user as role, (select count(*) from households)"
        seen = cli("sql", "--as", f"{member}@example.com", query, env=env)
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout.splitlines() == ["me\trole\tcount", f"{member}\tauthenticated\t1"]
        hidden = cli("sql", "--as", str(stranger), query, env=env)
        assert hidden.stdout.splitlines()[1] == f"{stranger}\tauthenticated\t0"
        nobody = cli("sql", "--as", "nobody@example.com", "select 1", env=env)
        assert nobody.returncode == 1
        assert nobody.stderr.startswith("error: --as: no user 'nobody@example.com'")
    finally:
        with psycopg.connect(pg_stack.settings.database_url, autocommit=True) as conn:
            conn.execute("delete from households where id = %s", [household[0]])
            conn.execute("delete from auth.users where id = any(%s)", [[member, stranger]])
