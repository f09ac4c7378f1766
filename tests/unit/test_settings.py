"""The settings classes and the README's configuration table agree, and a bad value is named.

Every environment variable a program reads is a field of a settings class (`*/settings.py`);
the README's table lists each one with the same default.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from python_worker.api.settings import ApiSettings, api_settings
from python_worker.cli.settings import CliSettings
from python_worker.config import load_env, variables
from python_worker.errors import CallPanionError
from python_worker.notify.settings import SmtpSettings, TwilioSettings, WebPushSettings
from python_worker.phone.settings import PhoneSettings
from python_worker.push.settings import ApnsSettings, FcmSettings
from python_worker.stack.settings import StackSettings, stack_settings
from python_worker.worker.settings import WorkerSettings, worker_settings

README = Path(__file__).resolve().parents[2] / "README.md"
#: PhoneSettings first: it reads the emulators' endpoints with no defaults of its own, so the
#: providers' classes, later, give the defaults the table shows.
SETTINGS = (
    PhoneSettings,
    CliSettings,
    StackSettings,
    FcmSettings,
    ApnsSettings,
    ApiSettings,
    WorkerSettings,
    WebPushSettings,
    SmtpSettings,
    TwilioSettings,
)
#: Read by something other than a settings class: the Makefile and scripts.
NOT_SETTINGS = {
    "PYTHON",
    "CALLPANION_PG_MAJOR",
    "CALLPANION_APT_LOCK_TIMEOUT",
}


def readme_table() -> dict[str, str]:
    """variable -> its default cell, from the README's "Configuration" table."""
    text = README.read_text()
    section = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([A-Z0-9_]+)` \| ([^|]*) \|", section, re.M)
    assert rows, "no configuration table found"
    return {name: cell.strip() for name, cell in rows}


def shown(default: object) -> str | None:
    """How a scalar default is written in the table (None: described in words instead)."""
    if isinstance(default, bool) or default is None or default == "" or isinstance(default, Path):
        return None
    if isinstance(default, float):
        return f"`{default:g}`"
    if isinstance(default, tuple):
        return f"`{','.join(default)}`"
    return f"`{default}`"


def test_every_setting_is_in_the_readme_with_its_default() -> None:
    table = readme_table()
    declared = dict(variables(*SETTINGS))
    missing = sorted(set(declared) - set(table))
    assert not missing, f"not in the README's configuration table: {missing}"
    for name, default in declared.items():
        expected = shown(default)
        if expected is not None:
            assert table[name].startswith(expected), f"{name}: README says {table[name]!r}"


def test_every_readme_variable_is_read_somewhere() -> None:
    declared = {name for name, _ in variables(*SETTINGS)}
    unknown = sorted(set(readme_table()) - declared - NOT_SETTINGS)
    assert not unknown, f"in the README but read by no settings class: {unknown}"


@pytest.mark.parametrize(
    ("reader", "env", "message"),
    [
        (
            stack_settings,
            {"CALLPANION_DB_PORT": "80"},
            "CALLPANION_DB_PORT must be between 1024 and 65535, got 80",
        ),
        (
            stack_settings,
            {"CALLPANION_DB_PORT": "fifty"},
            "CALLPANION_DB_PORT must be an integer, got 'fifty'",
        ),
        (
            api_settings,
            {"CALLPANION_API_PORT": "70000"},
            "CALLPANION_API_PORT must be between 1 and 65535, got 70000",
        ),
        (
            api_settings,
            {"CALLPANION_WEBHOOK_MAX_BYTES": "0"},
            "CALLPANION_WEBHOOK_MAX_BYTES must be a positive integer, got 0",
        ),
        (
            worker_settings,
            {"CALLPANION_POLL_INTERVAL_SECS": "nan"},
            "CALLPANION_POLL_INTERVAL_SECS must be a number, got 'nan'",
        ),
        (
            worker_settings,
            {"CALLPANION_WAKEUP": "pigeon"},
            "CALLPANION_WAKEUP must be one of notify, realtime, poll, got 'pigeon'",
        ),
        (
            worker_settings,
            {"CALLPANION_WAKEUP": "realtime"},
            "CALLPANION_WAKEUP=realtime needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY",
        ),
    ],
)
def test_a_bad_value_names_the_variable_the_value_and_the_rule(
    reader: object, env: dict[str, str], message: str
) -> None:
    with pytest.raises(CallPanionError) as caught:
        reader(env)  # type: ignore[operator]
    assert str(caught.value) == message


def test_empty_means_unset_except_where_empty_means_something() -> None:
    env = {
        "CALLPANION_API_PORT": "",
        "CALLPANION_API_DB_ROLE": "",
        "DATABASE_URL": "postgresql://d",
    }
    settings = api_settings(env)
    assert settings.port == 8000
    assert settings.db_role is None  # empty role: act as the connecting user
    assert settings.database_url == "postgresql://d"
    assert api_settings({"DATABASE_URL": "postgresql://d"}).db_role == "service_role"


def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / ".env").write_text(
        "CALLPANION_BATCH_SIZE=77\nCALLPANION_LEASE_SECS=50\n"
        "CALLPANION_WORKER_DATABASE_URL=postgresql://e\n"
    )
    monkeypatch.chdir(tmp_path)
    for name in ("CALLPANION_BATCH_SIZE", "CALLPANION_WORKER_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CALLPANION_LEASE_SECS", "40")
    load_env()
    try:
        settings = worker_settings()
    finally:  # load_env wrote into the process environment: take it back out
        for name in ("CALLPANION_BATCH_SIZE", "CALLPANION_WORKER_DATABASE_URL"):
            os.environ.pop(name, None)
    assert (settings.batch_size, settings.lease_s, settings.database_url) == (
        77,
        40,
        "postgresql://e",
    )
