"""Every refusal has the README's shape: `{"error": "<field>: <reason>", "field": "<field>"}`,
also the answers the framework gives for a route or a method that does not exist."""

from __future__ import annotations

from tests.support.api import ServedApi


def test_an_unknown_route_is_refused_naming_the_path(api: ServedApi) -> None:
    response = api.client.get("/v1/nowhere")
    assert response.status_code == 404
    assert response.json() == {"error": "path: no route /v1/nowhere", "field": "path"}


def test_a_wrong_method_is_refused_naming_the_method(api: ServedApi) -> None:
    response = api.client.delete("/v1/devices/pair")
    assert response.status_code == 405
    assert response.json() == {
        "error": "method: DELETE is not allowed on /v1/devices/pair (allowed: POST)",
        "field": "method",
    }
    assert response.headers["allow"] == "POST"


def test_text_the_database_cannot_hold_is_refused_naming_the_body(api: ServedApi) -> None:
    response = api.client.post(
        "/v1/devices/pair",
        content=b'{"code": "123456", "platform": "ios", "app_version": "1\\ud800", "label": "x"}',
        headers={"content-type": "application/json"},
    )
    body = response.json()
    assert response.status_code == 422
    assert body["error"].startswith(f"{body['field']}: ")
