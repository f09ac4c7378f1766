"""docs/APP_MIGRATION.md names only routes, fields and statuses that exist, with that shape.

The guide ends with a fenced `contract` table (route | part | name:type ...). Each line is
checked against the checked-in openapi.json: the route and method exist; a `body` field is a
property of the request body's schema, a `query` field a query parameter, a status's fields
properties of that answer's schema, each with the type named. Every route and every
"HTTP nnn" the prose names must be in the table, so the table is the whole of what the
guide relies on.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = (ROOT / "docs" / "APP_MIGRATION.md").read_text()
OPENAPI: dict[str, Any] = json.loads((ROOT / "openapi.json").read_text())
#: Statuses the prose may name that no route declares, and why (the guide says so too).
FRAMEWORK_STATUSES = {"405"}  # a method the route does not take: the framework's answer
TYPES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "string": lambda s: s.get("type") == "string" and "format" not in s,
    "uuid": lambda s: s.get("type") == "string" and s.get("format") == "uuid",
    "datetime": lambda s: s.get("type") == "string" and s.get("format") == "date-time",
    "boolean": lambda s: s.get("type") == "boolean",
    "integer": lambda s: s.get("type") == "integer",
    "object": lambda s: s.get("type") == "object",
}


def contract() -> list[tuple[str, str, str, list[str]]]:
    """(method, path, part, fields) per line of the guide's contract block."""
    block = re.search(r"```contract\n(.*?)```", GUIDE, re.S)
    assert block, "the guide has no ```contract block"
    lines = []
    for line in block[1].strip().splitlines():
        route, part, fields = (cell.strip() for cell in line.split("|"))
        method, path = route.split()
        lines.append((method, path, part, fields.split()))
    return lines


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = OPENAPI["components"]["schemas"][name]
    return schema


def _variants(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """A schema's non-null alternatives (pydantic writes `X | None` as anyOf [X, null])."""
    schema = _resolve(schema)
    options = schema.get("anyOf") or schema.get("oneOf") or [schema]
    return [_resolve(o) for o in options if o.get("type") != "null"]


def _field(schema: dict[str, Any], dotted: str) -> list[dict[str, Any]]:
    """The schemas at `a.b` / `a[].b` under `schema` (empty: no such field)."""
    current = _variants(schema)
    for step in dotted.split("."):
        name, items = (step[:-2], True) if step.endswith("[]") else (step, False)
        found = []
        for option in current:
            prop = option.get("properties", {}).get(name)
            if prop is None:
                continue
            for variant in _variants(prop):
                if items:
                    found.extend(_variants(variant.get("items", {})))
                else:
                    found.append(variant)
        current = found
    return current


def _operation(method: str, path: str) -> dict[str, Any]:
    operation: dict[str, Any] | None = OPENAPI["paths"].get(path, {}).get(method.lower())
    assert operation is not None, f"{method} {path} is not in openapi.json"
    return operation


@pytest.mark.parametrize(("method", "path", "part", "fields"), contract())
def test_each_contract_line_exists_in_openapi_with_that_shape(
    method: str, path: str, part: str, fields: list[str]
) -> None:
    operation = _operation(method, path)
    for field in fields:
        name, _, kind = field.partition(":")
        assert kind in TYPES, f"{field}: unknown type"
        if part == "query":
            params = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "query"}
            assert name in params, f"{method} {path}: no query parameter {name}"
            schemas = _variants(params[name]["schema"])
        elif part == "body":
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            schemas = _field(body, name)
        else:
            schemas = []
            for status in part.split():
                answer = operation["responses"].get(status)
                assert answer is not None, f"{method} {path}: no {status} answer"
                found = _field(answer["content"]["application/json"]["schema"], name)
                assert found, f"{method} {path} {status}: no field {name}"
                schemas.extend(found)
        assert schemas, f"{method} {path} {part}: no field {name}"
        assert all(TYPES[kind](s) for s in schemas), f"{method} {path} {part}: {name} is {schemas}"


def _prose() -> str:
    # The contract block itself does not count as a mention.
    return re.sub(r"```contract\n.*?```", "", GUIDE, flags=re.S)


def test_every_route_the_guide_names_is_in_the_contract() -> None:
    listed = {(m, p) for m, p, _, _ in contract()}
    named = set(re.findall(r"\b(GET|POST|PUT|DELETE|PATCH) (/v1/[\w/{}.-]*\w[}]?)", _prose()))
    assert named, "the guide names no route?"
    assert named <= listed, named - listed
    # Routes built in code (`/v1/...` after a base URL) count too.
    in_code = set(re.findall(r"/v1/[a-z/]+(?:\$sessionId[a-z/]*)?", _prose()))
    paths = {p.replace("{session_id}", "$sessionId") for _, p in listed}
    assert {p.rstrip("/") for p in in_code} <= paths, in_code - paths


def test_every_status_the_guide_names_is_in_the_contract() -> None:
    statuses = {s for _, _, part, _ in contract() if part[0].isdigit() for s in part.split()}
    named = set(re.findall(r"HTTP (\d{3})", _prose()))
    assert named, "the guide names no status?"
    assert named - FRAMEWORK_STATUSES <= statuses, named - FRAMEWORK_STATUSES - statuses


def test_the_guide_cites_the_app_at_its_commit_and_lines() -> None:
    assert "217646d" in GUIDE
    for needed in (
        "api_service.dart:247",
        "pairing_screen.dart:89",
        "pairing_screen.dart:51-55",
        "main_screen.dart:477-482",
        "fcm_service.dart:380-383",
        "elevenlabs_call_service.dart:603-618",
        "AppDelegate.swift:94-104",
        "main.dart:43",
        "main_screen.dart:639-677",
        "callkit_service.dart:113",
        "AppDelegate.swift:112-131",
    ):
        assert needed in GUIDE, needed
