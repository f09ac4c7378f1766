"""Issue 25, item 4, from the attacker's side: a webhook body is bounded, and an unsigned one
is refused without being read.

Raw sockets to the running API, so the test controls exactly which bytes were sent when the
answer came back.
"""

from __future__ import annotations

import json
import socket
import time
import uuid

import psycopg

from python_worker.api.app import SPOOL_MEMORY_BYTES, WEBHOOK_PATH
from python_worker.emulators.elevenlabs import audio_payload, sign
from tests.support.api import Row, ServedApi, fetch, settings_for

SqlConn = psycopg.Connection[Row]


def _rejections(conn: SqlConn, reason: str) -> int:
    rows = conn.execute(
        "select count from private.webhook_rejections where reason = %s", [reason]
    ).fetchall()
    return int(rows[0]["count"]) if rows else 0


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    """The status line's code and the rest, as far as the server sent it before closing or
    finishing its (small) JSON answer."""
    sock.settimeout(30)
    data = b""
    while b"\r\n\r\n" not in data:
        part = sock.recv(65536)
        if not part:
            break
        data += part
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)  # fmt: skip
    while len(rest) < length:
        part = sock.recv(65536)
        if not part:
            break
        rest += part
    return int(head.split(b" ")[1]), rest


def _connect(api: ServedApi) -> socket.socket:
    return socket.create_connection(("127.0.0.1", api.port), timeout=30)


def test_a_stale_signature_is_refused_before_a_byte_of_the_body_is_sent(
    api: ServedApi, sql_conn: SqlConn
) -> None:
    counted = _rejections(sql_conn, "stale_signature")
    header = f"t={int(time.time()) - 3600},v0={'0' * 64}"
    with _connect(api) as sock:
        # Announces 200 KiB (under the test cap of 256 KiB) and never sends it.
        sock.sendall(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"ElevenLabs-Signature: {header}\r\nContent-Length: {200 * 1024}\r\n\r\n".encode()
        )
        status, body = _answer(sock)
    assert status == 401
    assert b"more than 30 minutes old" in body
    assert _rejections(sql_conn, "stale_signature") == counted + 1


def test_a_malformed_v0_is_refused_before_the_body_is_sent(api: ServedApi) -> None:
    header = f"t={int(time.time())},v0=not-a-signature"
    with _connect(api) as sock:
        sock.sendall(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\n"
            f"ElevenLabs-Signature: {header}\r\nContent-Length: 100000\r\n\r\n".encode()
        )
        status, body = _answer(sock)
    assert status == 401
    assert b"v0 must be 64 hexadecimal characters" in body


def test_a_chunked_body_over_the_cap_is_cut_off_with_413(api: ServedApi, sql_conn: SqlConn) -> None:
    cap = api.settings.webhook_max_bytes
    counted = _rejections(sql_conn, "too_large")
    header = f"t={int(time.time())},v0={'0' * 64}"  # a fresh, well-formed (wrong) signature
    with _connect(api) as sock:
        sock.sendall(
            f"POST {WEBHOOK_PATH} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"ElevenLabs-Signature: {header}\r\n\r\n".encode()
        )
        chunk = b"x" * 65536
        sent = 0
        try:  # no declared length: the route counts as it reads, and stops past the cap
            while sent <= cap + len(chunk):
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                sent += len(chunk)
        except OSError:
            pass  # the server stopped reading and closed: what a cut-off looks like
        status, body = _answer(sock)
    assert status == 413
    assert f"larger than the limit of {cap} bytes".encode() in body
    assert _rejections(sql_conn, "too_large") == counted + 1


def test_a_signed_body_spooled_past_memory_is_verified_and_stored(
    api_database: str, sql_conn: SqlConn, webhook_secret: str
) -> None:
    # Twice what is kept in memory: the HMAC and the stored bytes come through the file.
    served = ServedApi(
        settings_for(
            api_database, webhook_max_bytes=4 * SPOOL_MEMORY_BYTES,
            elevenlabs_webhook_secret=webhook_secret,
        )
    )  # fmt: skip
    try:
        body = json.dumps(
            audio_payload(f"conv_spooled_{uuid.uuid4().hex}", b"\xff" * 2 * SPOOL_MEMORY_BYTES)
        ).encode()
        assert len(body) > 2 * SPOOL_MEMORY_BYTES
        response = served.client.post(
            WEBHOOK_PATH,
            content=body,
            headers={"ElevenLabs-Signature": sign(webhook_secret, body, int(time.time()))},
        )
        assert response.status_code == 200, response.text
        stored = fetch(
            sql_conn,
            "select payload_bytes, payload -> 'data' ? 'full_audio' as audio"
            " from webhook_events where id = %s",
            [response.json()["event_id"]],
        )
        assert stored == {"payload_bytes": len(body), "audio": False}
        # One flipped byte past the in-memory part: refused.
        tampered = body[:-10] + (b"A" if body[-10:-9] != b"A" else b"B") + body[-9:]
        refused = served.client.post(
            WEBHOOK_PATH,
            content=tampered,
            headers={"ElevenLabs-Signature": sign(webhook_secret, body, int(time.time()))},
        )
        assert refused.status_code == 401
    finally:
        served.stop()
