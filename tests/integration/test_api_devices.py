"""Device authentication from the attacker's side, push-token refresh and the heartbeat."""

from __future__ import annotations

import secrets
import uuid

import psycopg
import pytest

from python_worker.api.db import ApiDatabase
from tests.support.api import Row, ServedApi, bearer, fetch, new_family, pair, settings_for
from tests.support.db import free_port
from tests.support.world import apns_token, fcm_token

SqlConn = psycopg.Connection[Row]
INVALID = {"error": "authorization: invalid device credentials", "field": "authorization"}


def test_requests_without_valid_credentials_get_401(api: ServedApi, sql_conn: SqlConn) -> None:
    device = pair(api, sql_conn, new_family(sql_conn))
    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-device"},
        {"Authorization": f"Bearer {device.id}"},
        {"Authorization": f"Bearer {device.id}."},
        bearer(device.id, device.secret[:-1]),
        bearer(device.id, secrets.token_urlsafe(32)),
        bearer(uuid.uuid4(), device.secret),
    ]
    for headers in attempts:
        response = api.client.post("/v1/devices/me/heartbeat", json={}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["field"] == "authorization"
    # An unknown device and a wrong secret are told apart by nothing.
    wrong_secret = api.client.post(
        "/v1/devices/me/heartbeat", json={}, headers=bearer(device.id, "x" * 43)
    )
    unknown = api.client.post(
        "/v1/devices/me/heartbeat", json={}, headers=bearer(uuid.uuid4(), "x" * 43)
    )
    assert wrong_secret.json() == unknown.json() == INVALID
    assert fetch(sql_conn, "select last_seen_at is not null as seen, notification_permission"
                 " from device_pairs where id = %s", [device.id])["notification_permission"] is None  # fmt: skip


def test_a_revoked_device_gets_401_even_with_its_secret(api: ServedApi, sql_conn: SqlConn) -> None:
    device = pair(api, sql_conn, new_family(sql_conn))
    sql_conn.execute(
        "update device_pairs set status = 'revoked', revoked_at = now() where id = %s", [device.id]
    )
    response = api.client.post("/v1/devices/me/heartbeat", json={}, headers=device.headers)
    assert response.status_code == 401
    assert response.json()["error"] == "authorization: this device has been revoked; pair again"


def test_refreshed_tokens_replace_the_old_ones_and_are_valid_again(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    device = pair(api, sql_conn, new_family(sql_conn))
    sql_conn.execute(
        """update device_pairs set fcm_token_invalidated_at = now(), fcm_token_invalid_reason = 'UNREGISTERED',
                  voip_token_invalidated_at = now(), voip_token_invalid_reason = 'BadDeviceToken'
           where id = %s""",
        [device.id],
    )
    before = fetch(sql_conn, "select * from device_pairs where id = %s", [device.id])
    new_fcm = fcm_token()
    response = api.client.put(
        "/v1/devices/me/tokens", json={"fcm_token": new_fcm}, headers=device.headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "fcm_token_valid": True,
        "voip_token_valid": False,
        "apns_token_valid": True,
    }
    after = fetch(sql_conn, "select * from device_pairs where id = %s", [device.id])
    assert after["fcm_token"] == new_fcm
    assert after["fcm_token_invalidated_at"] is None
    assert after["fcm_token_invalid_reason"] is None
    # Not sent: kept as it was, still invalid.
    assert after["voip_token"] == before["voip_token"]
    assert after["voip_token_invalid_reason"] == "BadDeviceToken"
    # The same VoIP token sent again is the current one: valid again.
    again = api.client.put(
        "/v1/devices/me/tokens", json={"voip_token": before["voip_token"]}, headers=device.headers
    )
    assert again.json()["voip_token_valid"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"apns_token": "12"}, "apns_token"),
        ({"fcm_token": "bad token with spaces" * 3}, "fcm_token"),
    ],
)
def test_bad_token_refresh_is_refused_and_changes_nothing(
    api: ServedApi, sql_conn: SqlConn, body: dict[str, str], field: str
) -> None:
    device = pair(api, sql_conn, new_family(sql_conn))
    before = fetch(
        sql_conn,
        "select fcm_token, voip_token, apns_token from device_pairs where id = %s",
        [device.id],
    )
    response = api.client.put("/v1/devices/me/tokens", json=body, headers=device.headers)
    assert response.status_code == 422
    assert response.json()["field"] == field
    assert (
        fetch(
            sql_conn,
            "select fcm_token, voip_token, apns_token from device_pairs where id = %s",
            [device.id],
        )
        == before
    )


def test_heartbeat_records_last_seen_version_and_permissions(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    device = pair(api, sql_conn, new_family(sql_conn))
    sql_conn.execute(
        "update device_pairs set last_seen_at = now() - interval '1 day' where id = %s", [device.id]
    )
    body = {
        "app_version": "2.4.1",
        "notification_permission": True,
        "full_screen_intent_permission": False,
    }
    response = api.client.post("/v1/devices/me/heartbeat", json=body, headers=device.headers)
    assert response.status_code == 200
    row = fetch(
        sql_conn,
        "select *, now() - last_seen_at < interval '1 minute' as fresh from device_pairs where id = %s",
        [device.id],
    )
    assert row["fresh"] is True
    assert (
        row["app_version"],
        row["notification_permission"],
        row["full_screen_intent_permission"],
    ) == ("2.4.1", True, False)
    # A value not sent is kept.
    api.client.post(
        "/v1/devices/me/heartbeat", json={"notification_permission": False}, headers=device.headers
    )
    row = fetch(sql_conn, "select * from device_pairs where id = %s", [device.id])
    assert (
        row["app_version"],
        row["notification_permission"],
        row["full_screen_intent_permission"],
    ) == ("2.4.1", False, False)


def test_oversize_device_body_is_refused_with_413(api: ServedApi, sql_conn: SqlConn) -> None:
    device = pair(api, sql_conn, new_family(sql_conn))
    response = api.client.put(
        "/v1/devices/me/tokens",
        json={"fcm_token": "a" * 70_000, "apns_token": apns_token()},
        headers=device.headers,
    )
    assert response.status_code == 413
    assert response.json()["field"] == "body"


def test_healthz_reports_the_database(api: ServedApi) -> None:
    response = api.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_without_a_database_healthz_and_routes_answer_503() -> None:
    url = f"postgresql://postgres:postgres@127.0.0.1:{free_port()}/postgres"
    served = ServedApi(settings_for(url), database=ApiDatabase(url, "service_role", timeout=1.0))
    try:
        health = served.client.get("/healthz")
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "database": "unavailable"}
        refused = served.client.post(
            "/v1/devices/me/heartbeat", json={}, headers=bearer(uuid.uuid4(), "x" * 43)
        )
        assert refused.status_code == 503
        # The README's error format: the field (here the database) and the reason.
        assert refused.json() == {
            "error": "database: unavailable; try again shortly",
            "field": "database",
        }
    finally:
        served.stop()
