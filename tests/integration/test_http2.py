"""The HTTP/2 transport and the emulators' HTTP server, over real TLS sockets."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from python_worker.emulators.faults import Fault
from python_worker.emulators.suite import Endpoints, ThreadedSuite
from python_worker.push.http2 import ConnectFailed, ConnectionLost, H2Client, client_ssl_context
from tests.support.push import apns_token, incoming_call, make_apns_sender, run
from tests.support.worker import wait_for


def client_for(endpoints: Endpoints) -> H2Client:
    return H2Client(
        endpoints.apns_host,
        endpoints.apns_port,
        ssl_context=client_ssl_context(str(endpoints.ca_file)),
    )


def test_bodies_larger_than_the_flow_control_window_arrive_whole(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    body = b"{" + b" " * (3 * 1024 * 1024) + b"}"  # 3 MiB: three times the stream window
    provider_token = make_apns_sender(endpoints).tokens.current()
    headers = [
        (b"authorization", f"bearer {provider_token}".encode()),
        (b"apns-topic", f"{endpoints.bundle_id}.voip".encode()),
        (b"apns-push-type", b"voip"),
    ]

    async def go() -> tuple[int, str]:
        client = client_for(endpoints)
        try:
            response = await client.request(
                b"POST", f"/3/device/{apns_token()}".encode(), headers, body
            )
            return response.status, json.loads(response.body)["reason"]
        finally:
            await client.aclose()

    # The emulator judges the size only once it has read the whole body through flow control.
    assert run(go()) == (413, "PayloadTooLarge")


def test_connection_refused_is_a_clear_connect_failure() -> None:
    async def go() -> None:
        client = H2Client("127.0.0.1", 9, ssl_context=client_ssl_context())
        await client.request(b"GET", b"/", [])

    with pytest.raises(ConnectFailed, match=r"cannot connect to 127\.0\.0\.1:9"):
        run(go())


def test_a_server_without_http2_is_refused(endpoints: Endpoints) -> None:
    # The emulator offers http/1.1 too; a client that insists on it must not get HTTP/2.
    async def go() -> None:
        context = client_ssl_context(str(endpoints.ca_file))
        context.set_alpn_protocols(["http/1.1"])
        client = H2Client(endpoints.apns_host, endpoints.apns_port, ssl_context=context)
        await client.request(b"GET", b"/", [])

    with pytest.raises(ConnectFailed, match="did not agree to HTTP/2"):
        run(go())


def test_requests_time_out_and_the_stream_is_cancelled(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    token = apns_token()
    emulators.suite.apns.faults.add(token, Fault(latency_s=2.0, times=1))

    async def go() -> tuple[str, int]:
        client = client_for(endpoints)
        try:
            with pytest.raises(ConnectionLost, match=r"no response within 0\.2 s") as info:
                await client.request(b"POST", f"/3/device/{token}".encode(), [], b"{}", timeout=0.2)
            connection = client._connections[0]
            return str(info.value), connection.in_flight
        finally:
            await client.aclose()

    message, in_flight = run(go())
    assert in_flight == 0
    assert "cancelled" in message


def test_emulator_speaks_http1_to_http1_clients(endpoints: Endpoints) -> None:
    response = httpx.get(
        f"{endpoints.fcm_base_url}/_emulator/deliveries",
        verify=ssl.create_default_context(cafile=str(endpoints.ca_file)),
    )
    assert response.http_version == "HTTP/1.1"
    assert response.json()["count"] == 0


def test_cli_emulators_serve_until_sigterm(tmp_path: Path) -> None:
    child = subprocess.Popen(
        [sys.executable, "-m", "python_worker", "emulators", "--json", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ},
    )
    try:
        assert child.stdout is not None
        env = json.loads(child.stdout.readline())
        assert Path(env["FCM_SERVICE_ACCOUNT_FILE"]).is_file()
        assert Path(env["APNS_KEY_FILE"]).name == f"AuthKey_{env['APNS_KEY_ID']}.p8"
        token = httpx.get(
            f"{env['ELEVENLABS_BASE_URL']}/v1/convai/conversation/token",
            params={"agent_id": env["ELEVENLABS_AGENT_ID"]},
            headers={"xi-api-key": env["ELEVENLABS_API_KEY"]},
        )
        assert token.status_code == 200
        assert token.json()["token"]
        endpoints = Endpoints(
            ca_file=Path(env["APNS_CA_FILE"]),
            fcm_base_url=env["FCM_BASE_URL"],
            token_uri="",
            project_id="",
            service_account_file=Path(env["FCM_SERVICE_ACCOUNT_FILE"]),
            apns_host=env["APNS_HOST"],
            apns_port=int(env["APNS_PORT"]),
            apns_key_file=Path(env["APNS_KEY_FILE"]),
            apns_key_id=env["APNS_KEY_ID"],
            apns_team_id=env["APNS_TEAM_ID"],
            bundle_id=env["APNS_BUNDLE_ID"],
        )

        async def send() -> bool:
            sender = make_apns_sender(endpoints)
            try:
                result = await sender.send_voip(
                    apns_token(), b'{"aps":{}}', apns_id=uuid.uuid4(), expiration=0
                )
                return result.delivered
            finally:
                await sender.aclose()

        assert run(send())
    finally:
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=15)
    assert code == 0


def test_emulator_delivers_a_fully_received_push_even_if_the_connection_drops(
    emulators: ThreadedSuite, endpoints: Endpoints
) -> None:
    # Real APNs and FCM deliver a request they have fully received whatever happens to the
    # client's connection afterwards; so duplicate counts after a crash tell the truth.
    token = apns_token()
    emulators.suite.apns.faults.add(token, Fault(latency_s=0.5, times=1))
    apns = emulators.suite.apns
    seen_before = emulators.suite.apns_server.requests_seen
    sender = make_apns_sender(endpoints)

    async def go() -> None:
        send = asyncio.ensure_future(sender.send_call(incoming_call(), token, apns_id=uuid.uuid4()))
        try:
            while emulators.suite.apns_server.requests_seen == seen_before:
                await asyncio.sleep(0.01)  # polling an observable condition
            emulators.call(emulators.suite.apns_server.drop_all)
            await send  # comes back as a retry: the answer was lost
        finally:
            await sender.aclose()

    run(go())
    wait_for(
        "the dropped request to be delivered",
        lambda: [d for d in apns.deliveries if d.token == token],
        timeout=5,
    )
