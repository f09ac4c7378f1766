"""Issue 25, item 7 (the smaller ones), from the attacker's side: conversation tokens are
limited per session, and the API's own description is not served unless switched on.
(A pairing without a push token: tests/integration/test_pairing_budgets.py.)"""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg

from python_worker.emulators.elevenlabs import ElevenLabsEmulator
from tests.support.api import Row, ServedApi, new_family, new_session, pair, settings_for

SqlConn = psycopg.Connection[Row]


def test_repeating_accepted_mints_at_most_the_limit_of_tokens_per_session(
    api: ServedApi, sql_conn: SqlConn, elevenlabs: ElevenLabsEmulator
) -> None:
    limit = api.settings.conversation_tokens_per_session
    assert limit == 5
    family = new_family(sql_conn)
    device = pair(api, sql_conn, family)
    session = new_session(sql_conn, family, device.id, "ringing")
    minted = len(elevenlabs.tokens)
    body = {"event": "accepted", "at": datetime.now(UTC).isoformat()}
    answers = [
        api.client.post(f"/v1/calls/{session}/events", json=body, headers=device.headers)
        for _ in range(limit + 3)
    ]
    assert [a.status_code for a in answers] == [200] * limit + [429] * 3
    assert len(elevenlabs.tokens) == minted + limit  # nothing asked of ElevenLabs beyond it
    refused = answers[-1]
    assert refused.json()["field"] == "conversation"
    assert 0 < int(refused.headers["Retry-After"]) <= 600
    # Another session of the same device is counted on its own.
    other = new_session(sql_conn, family, device.id, "ringing")
    fresh = api.client.post(f"/v1/calls/{other}/events", json=body, headers=device.headers)
    assert fresh.status_code == 200


def test_the_documentation_routes_are_off_by_default(api: ServedApi) -> None:
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        response = api.client.get(path)
        assert response.status_code == 404, path
        assert response.json() == {"error": f"path: no route {path}", "field": "path"}


def test_a_setting_turns_the_documentation_routes_on(api_database: str) -> None:
    served = ServedApi(settings_for(api_database, api_docs=True))
    try:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert served.client.get(path).status_code == 200, path
    finally:
        served.stop()
