"""Configuration declared as pydantic-settings classes, read once and passed in explicitly.

Each program declares its own settings class in its own package (`api/settings.py`,
`worker/settings.py`, `push/settings.py`, `stack/settings.py`, `phone/settings.py`,
`cli/settings.py`); this module holds what they
share: the base class, the reader that turns a validation failure into one sentence naming
the variable, the value and the rule, and `.env` loading. Every variable is documented in
README.md ("Configuration"); `tests/unit/test_settings.py` checks that the table and the classes
agree.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from dotenv import load_dotenv
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, SettingsConfigDict

from python_worker.errors import CallPanionError

#: The repository root: `supabase/` and `sql/` are found relative to it.
DEFAULT_PROJECT_DIR = Path(__file__).resolve().parent.parent


class EnvSettings(BaseSettings):
    """Base of every settings class: one field per environment variable (its alias).

    An empty variable counts as unset, as it always has here; unknown variables are ignored.
    """

    model_config = SettingsConfigDict(
        env_ignore_empty=True,
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        validate_default=False,
    )


S = TypeVar("S", bound=EnvSettings)

#: ElevenLabs' public API, for the API (tokens) and the worker (erasure's deletions); only
#: tests and the demo point elsewhere (the emulator).
DEFAULT_ELEVENLABS_BASE_URL = "https://api.elevenlabs.io"

#: `json_schema_extra` of a field whose empty value means something (an empty database role:
#: act as the connecting user), so it is not taken as unset.
KEEP_EMPTY: dict[str, Any] = {"keep_empty": True}


def load_env() -> None:
    """Load `.env` from the working directory without overriding the environment.

    Loaded into the process environment (not only into the settings classes) so the
    processes the CLI starts (benchmark workers, the emulators) see the same values.
    """
    load_dotenv(Path.cwd() / ".env", override=False)


def read_settings(
    cls: type[S], env: Mapping[str, str] | None = None, defaults: Mapping[str, Any] | None = None
) -> S:
    """`cls` built from `env` (default: the process environment). `defaults` are defaults
    computed at read time (for fields the environment leaves unset). A bad value raises
    CallPanionError naming the variable, the value and the rule."""
    source = os.environ if env is None else env
    values: dict[str, Any] = dict(defaults or {})
    for name, field in cls.model_fields.items():
        variable = env_name(name, field)
        raw = source.get(variable) if variable else None
        if raw is None:
            continue
        if raw != "" or _keeps_empty(field):
            values[name] = raw
    try:
        return cls.model_validate(values)
    except ValidationError as error:
        raise CallPanionError(_sentence(cls, error, values)) from None


def _keeps_empty(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("keep_empty"))


def env_name(name: str, field: FieldInfo) -> str | None:
    """The environment variable of a field (its alias), or None for a derived field."""
    return field.alias


def variables(*classes: type[EnvSettings]) -> Iterator[tuple[str, Any]]:
    """(variable, default) of every field read from the environment, in declaration order
    (default None: required, or computed when read)."""
    for cls in classes:
        for name, field in cls.model_fields.items():
            variable = env_name(name, field)
            if variable:
                computed = field.is_required() or field.default_factory is not None
                default = None if computed else field.default
                yield variable, default


def _sentence(cls: type[EnvSettings], error: ValidationError, values: Mapping[str, Any]) -> str:
    """The first validation failure, worded as the README's configuration table reads."""
    first = error.errors(include_url=False)[0]
    loc = first["loc"]
    field_name = str(loc[0]) if loc else None
    field = cls.model_fields.get(field_name) if field_name else None
    variable = (env_name(field_name, field) if field and field_name else None) or field_name
    raw = values.get(field_name) if field_name else None
    kind = first["type"]
    ctx = first.get("ctx") or {}
    if kind == "value_error":
        reason = str(ctx.get("error", first["msg"]))
        if not variable:
            return reason
        return f"{variable}{'' if reason.startswith(':') else ' '}{reason}"
    if kind in ("int_parsing", "int_from_float"):
        return f"{variable} must be an integer, got {raw!r}"
    if kind in ("float_parsing", "finite_number"):
        return f"{variable} must be a number, got {raw!r}"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        low, high = _bounds(field)
        if high is None:
            rule = "a positive integer" if low == 1 else f"at least {low:g}"
            return f"{variable} must be {rule}, got {raw}"
        return f"{variable} must be between {low:g} and {high:g}, got {raw}"
    if kind in ("string_too_short", "string_too_long"):
        return f"{variable} must be {_length_rule(field)}"
    return f"{variable}: {first['msg']}, got {raw!r}"


def _bounds(field: FieldInfo | None) -> tuple[float | None, float | None]:
    low = high = None
    for rule in field.metadata if field else ():
        low = getattr(rule, "ge", low)
        high = getattr(rule, "le", high)
    return low, high


def _length_rule(field: FieldInfo | None) -> str:
    low = high = None
    for rule in field.metadata if field else ():
        low = getattr(rule, "min_length", low)
        high = getattr(rule, "max_length", high)
    return f"{low} to {high} characters"
