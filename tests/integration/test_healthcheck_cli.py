"""`callpanion healthcheck`: the container's HEALTHCHECK, against a real HTTP server on loopback
and against a real worker.

Exit 0 on 200 and 1 on anything else (an error status, nobody listening, no answer in time),
with one line of output either way.
"""

from __future__ import annotations

import http.server
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from python_worker import cli
from python_worker.cli import healthcheck
from python_worker.worker.healthcheck import default_healthz_url
from tests.support.worker import Workers

#: What the container listens on; the probe must turn it into loopback.
WILDCARD = "0.0.0.0"  # noqa: S104 - a value under test, nothing binds it


class _Healthz(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        body = b'{"status": "ok"}' if self.status == 200 else b'{"status": "unhealthy"}'
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def healthz_server(status: int) -> Iterator[int]:
    """A /healthz answering `status` on 127.0.0.1, in a thread; yields its port."""
    handler = type("Handler", (_Healthz,), {"status": status})
    server = http.server.HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def closed_port() -> Iterator[int]:
    """A loopback port held bound but not listening: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _run(url: str) -> int:
    return cli.main(["healthcheck", "--url", url])


def test_healthy_worker_exits_0_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with healthz_server(200) as port:
        assert _run(f"http://127.0.0.1:{port}/healthz") == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith(f"healthy: http://127.0.0.1:{port}/healthz: HTTP 200")


def test_unhealthy_worker_503_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with healthz_server(503) as port:
        assert _run(f"http://127.0.0.1:{port}/healthz") == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz: HTTP 503")


def test_nobody_listening_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with closed_port() as port:
        assert _run(f"http://127.0.0.1:{port}/healthz") == 1
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith(f"unhealthy: http://127.0.0.1:{port}/healthz: ")


def test_no_answer_in_time_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(healthcheck, "HEALTHCHECK_TIMEOUT_S", 0.2)
    with socket.socket() as sock:  # the kernel accepts the connection; nobody ever answers
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert _run(f"http://127.0.0.1:{sock.getsockname()[1]}/healthz") == 1
    assert "timed out" in capsys.readouterr().out


def test_default_url_is_the_worker_settings_with_loopback_for_0_0_0_0(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with healthz_server(200) as port:
        monkeypatch.setenv("CALLPANION_WORKER_HTTP_HOST", WILDCARD)
        monkeypatch.setenv("CALLPANION_WORKER_HTTP_PORT", str(port))
        assert cli.main(["healthcheck"]) == 0
    assert f"http://127.0.0.1:{port}/healthz" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("host", "url"),
    [
        (WILDCARD, "http://127.0.0.1:9108/healthz"),
        ("127.0.0.1", "http://127.0.0.1:9108/healthz"),
        ("::", "http://[::1]:9108/healthz"),
        ("worker.internal", "http://worker.internal:9108/healthz"),
    ],
)
def test_default_url_per_listen_host(host: str, url: str) -> None:
    assert default_healthz_url(host, 9108) == url


def test_proxy_settings_do_not_divert_the_loopback_probe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with closed_port() as proxy_port, healthz_server(200) as port:
        monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy_port}")
        monkeypatch.setenv("no_proxy", "")
        assert _run(f"http://127.0.0.1:{port}/healthz") == 0


def test_exit_status_of_the_process() -> None:
    """What Docker sees: the process's exit status, not main()'s return value."""
    with healthz_server(200) as up, healthz_server(503) as down:
        for port, expected in ((up, 0), (down, 1)):
            url = f"http://127.0.0.1:{port}/healthz"
            done = subprocess.run(
                [sys.executable, "-m", "python_worker", "healthcheck", "--url", url],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            assert done.returncode == expected, done.stdout + done.stderr
            assert len(done.stdout.splitlines()) == 1


def test_the_container_probe_against_a_real_worker(workers: Workers) -> None:
    """The image's contract: worker and probe share one environment, the worker listening on
    0.0.0.0; the probe passes while it runs and fails once it has stopped."""
    worker = workers.start(CALLPANION_WORKER_HTTP_HOST=WILDCARD)
    env = workers.env(worker.worker_id, worker.http_port, CALLPANION_WORKER_HTTP_HOST=WILDCARD)

    def probe() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "python_worker", "healthcheck"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    running = probe()
    assert running.returncode == 0, running.stdout + running.stderr
    assert '"status": "ok"' in running.stdout
    worker.signal(signal.SIGTERM)
    assert worker.wait(15) == 0
    stopped = probe()
    assert stopped.returncode == 1
    assert stopped.stdout.startswith(f"unhealthy: http://127.0.0.1:{worker.http_port}/healthz: ")
