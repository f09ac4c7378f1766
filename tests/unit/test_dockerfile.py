"""The container image's contract, checked on the Dockerfile and .dockerignore as text.

Docker is not run here (no daemon on the test machines); what can be checked without it is:
the base image, the non-root user, the entry point and probe (parsed by the real CLI), the
environment, that no secret is baked in, and that the build context holds exactly what the
Dockerfile copies and none of the keys or `.env` files a checkout may hold.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

from python_worker import cli
from python_worker.cli import healthcheck, serve
from python_worker.worker.settings import DEFAULT_WORKER_HTTP_PORT

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
#: An official slim Python 3.11 image, optionally pinned further (patch release, digest).
BASE_IMAGE = re.compile(r"python:3\.11(\.\d+)?-slim(-[a-z]+)?(@sha256:[0-9a-f]{64})?")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), " ".join(args.split())))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return found


def stages(text: str) -> list[list[Instruction]]:
    """One list per FROM, each starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            result.append([])
        assert result, f"{instruction.keyword} before the first FROM"
        result[-1].append(instruction)
    return result


@cache
def final_stage() -> list[Instruction]:
    return stages(DOCKERFILE.read_text())[-1]


def last(keyword: str, stage: list[Instruction]) -> Instruction:
    matching = [i for i in stage if i.keyword == keyword]
    assert matching, f"no {keyword} in the final stage"
    return matching[-1]


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list; the shell form would put `sh -c` in between."""
    value = json.loads(args)
    assert isinstance(value, list), args
    assert all(isinstance(part, str) for part in value), args
    return value


def env_of(stage: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for pair in shlex.split(instruction.args):
                key, sep, value = pair.partition("=")
                assert sep, f"ENV {pair!r}: use the KEY=value form"
                env[key] = value
    return env


# -- .dockerignore ------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's pattern syntax as far as .dockerignore uses it: `**`, `*`, `?`."""
    assert "[" not in pattern, f"{pattern!r}: character classes are not checked here"
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


@cache
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules: list[tuple[bool, re.Pattern[str]]] = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = line.removeprefix("!").strip().strip("/")
        rules.append((negated, _pattern_regex(pattern)))
    return rules


def in_build_context(path: str) -> bool:
    """Whether `docker build` sends `path` (relative, with /): the last matching rule decides,
    and a rule matching a parent folder matches everything in it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    sent = True
    for negated, regex in ignore_rules():
        if any(regex.fullmatch(candidate) for candidate in candidates):
            sent = negated
    return sent


def copied_sources() -> list[str]:
    """The build-context paths the Dockerfile COPYs or ADDs (not those copied from a stage)."""
    sources: list[str] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword not in ("COPY", "ADD"):
            continue
        words = instruction.args.split()
        if any(word.startswith("--from=") for word in words):
            continue
        paths = [word for word in words if not word.startswith("--")]
        assert len(paths) >= 2, instruction
        sources.extend(paths[:-1])
    return sources


def checkout_files(source: str) -> list[str]:
    """The files of the checkout a COPY source names (caches left out)."""
    path = ROOT / source
    if path.is_file():
        return [source.strip("/")]
    return sorted(
        p.relative_to(ROOT).as_posix()
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


# -- the tests ----------------------------------------------------------------------------


def test_every_stage_is_the_same_slim_python_3_11_image() -> None:
    all_stages = stages(DOCKERFILE.read_text())
    assert len(all_stages) >= 2, "a builder stage and a runtime stage"
    names: set[str] = set()
    images: set[str] = set()
    for stage in all_stages:
        words = stage[0].args.split()
        image = words[0]
        if image not in names:
            assert BASE_IMAGE.fullmatch(image), f"FROM {image}: not a slim python 3.11 tag"
            images.add(image)
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])
    # The virtualenv copied from the builder links to the builder's interpreter.
    assert len(images) == 1, images


def test_final_stage_runs_as_a_fixed_non_root_uid() -> None:
    user = last("USER", final_stage()).args
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), f"USER {user}: a numeric uid (Kubernetes runAsNonRoot checks it)"
    assert int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0), user
    later = final_stage()[final_stage().index(last("USER", final_stage())) :]
    assert not [i for i in later if i.keyword == "RUN"], "nothing runs as root after USER"


def test_entrypoint_is_the_worker_in_exec_form() -> None:
    entrypoint = exec_form(last("ENTRYPOINT", final_stage()).args)
    assert entrypoint == ["callpanion", "worker"]
    assert cli.build_parser().parse_args(entrypoint[1:]).func is serve.cmd_worker
    assert not [i for i in final_stage() if i.keyword == "CMD"], "no CMD to append to it"


def test_healthcheck_runs_callpanion_healthcheck_within_its_timeout() -> None:
    args = last("HEALTHCHECK", final_stage()).args
    options, _, command = args.partition("CMD ")
    probe = exec_form(command)
    assert probe[:2] == ["callpanion", "healthcheck"]
    assert cli.build_parser().parse_args(probe[1:]).func is healthcheck.cmd_healthcheck
    timeout = re.search(r"--timeout=(\d+)s", options)
    assert timeout, "HEALTHCHECK --timeout=<n>s"
    assert int(timeout[1]) > healthcheck.HEALTHCHECK_TIMEOUT_S, (
        "the probe gives up before Docker does"
    )


def test_environment_port_and_stop_signal() -> None:
    env = env_of(final_stage())
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["CALLPANION_WORKER_HTTP_HOST"] == "0.0.0.0"  # noqa: S104 - reachable from outside
    port = int(env.get("CALLPANION_WORKER_HTTP_PORT", DEFAULT_WORKER_HTTP_PORT))
    assert last("EXPOSE", final_stage()).args.split() == [str(port)]
    assert last("STOPSIGNAL", final_stage()).args == "SIGTERM"
    assert env["PATH"].startswith("/opt/venv/bin:"), "`callpanion` is the venv's console script"


def test_no_secret_is_baked_in() -> None:
    secret = re.compile(r"KEY|SECRET|PASSWORD|TOKEN|DATABASE_URL|CREDENTIAL", re.IGNORECASE)
    for stage in stages(DOCKERFILE.read_text()):
        for key in env_of(stage):
            assert not secret.search(key), f"ENV {key}: pass it at run time"
        for instruction in stage:
            if instruction.keyword == "ARG":
                assert not secret.search(instruction.args), f"ARG {instruction.args}"
    for source in copied_sources():
        for name in checkout_files(source):
            assert not re.search(r"(^|/)\.env|\.(p8|pem|key|json)$", name), name


def test_every_copied_path_exists_and_is_in_the_build_context() -> None:
    sources = copied_sources()
    assert {"pyproject.toml", "README.md", "python_worker/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such path in the repository"
        files = checkout_files(source)
        assert files, f"COPY {source}: empty"
        left_out = [name for name in files if not in_build_context(name)]
        assert not left_out, f"COPY {source}: .dockerignore leaves out {left_out}"


def test_the_migrations_are_where_callpanion_migrate_looks() -> None:
    env = env_of(final_stage())
    copies = [
        i.args.split()
        for i in final_stage()
        if i.keyword == "COPY" and i.args.startswith("supabase/migrations")
    ]
    assert copies == [["supabase/migrations/", "/app/supabase/migrations/"]]
    assert env["CALLPANION_PROJECT_DIR"] == "/app"
    assert any((ROOT / "supabase/migrations").glob("*.sql"))


@pytest.mark.parametrize(
    "path",
    [
        ".env",
        ".env.production",
        "python_worker/.env",
        ".venv/bin/python",
        ".git/config",
        ".callpanion/stack/pgdata/PG_VERSION",
        ".callpanion/emulators/apns-key.p8",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/cache.db",
        "AuthKey_ABC123DEFG.p8",
        "python_worker/AuthKey_ABC123DEFG.p8",
        "supabase/migrations/server.pem",
        "python_worker/emulators/ca.key",
        "service-account.json",
        "python_worker/firebase-adminsdk.json",
        "secrets/fcm.json",
        "credentials/apns.p8",
        "python_worker/keys/anything",
        "python_worker/__pycache__/cli.cpython-311.pyc",
        "tests/test_worker.py",
        "supabase/seed.sql",
        "sql/platform/roles.sql",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert not in_build_context(path)


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "README.md",
        "python_worker/worker.py",
        "python_worker/worker/queries.sql",
        "python_worker/emulators/suite.py",
        "supabase/migrations/20261124200100_dispatch.sql",
    ],
)
def test_dockerignore_sends(path: str) -> None:
    assert in_build_context(path)
