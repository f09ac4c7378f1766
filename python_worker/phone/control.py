"""The HTTP client of a running phone simulator's control server (loopback only).

`callpanion phone answer|decline|state` and the demo use it to act for the person holding
the phone and to read what it rang for.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from python_worker.errors import CallPanionError


def control_request(address: str, method: str = "GET", path: str = "/state") -> dict[str, Any]:
    """One request to a phone simulator's control server; its JSON answer (also on an error)."""
    # No proxies: an HTTP_PROXY meant for the providers must not carry a loopback call away.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(f"http://{address}{path}", method=method)
    try:
        with opener.open(request, timeout=5) as response:
            answer: dict[str, Any] = json.loads(response.read())
    except urllib.error.HTTPError as error:
        with error:
            answer = json.loads(error.read() or b"{}")
    return answer


def running_phones(state_dir: Path, name: str | None = None) -> list[dict[str, Any]]:
    """The state files of the running simulators (only `name`'s when given); none is an error."""
    states = [json.loads(p.read_text()) for p in sorted(state_dir.glob("*.json"))]
    if name:
        states = [s for s in states if s.get("name") == name]
    if not states:
        raise CallPanionError(
            f"no phone simulator is running (none in {state_dir}); `make demo` starts two"
        )
    return states


def act_for_person(states: list[dict[str, Any]], action: str) -> tuple[str, str]:
    """Answer or decline the first call ringing on one of these phones: (phone, call id)."""
    for state in states:
        answer = control_request(state["control"], "POST", f"/{action}")
        if answer.get("call_id"):
            return str(state["name"]), str(answer["call_id"])
    raise CallPanionError("no simulated phone is ringing for a person right now")
