"""The probe of the worker's /healthz that `callpanion healthcheck` (the container's
HEALTHCHECK) runs: one GET, no proxies, one line of answer."""

from __future__ import annotations

import urllib.error
import urllib.request

from python_worker.errors import CallPanionError


def default_healthz_url(host: str, port: int) -> str:
    """The worker's /healthz as seen from its own host: a wildcard address means loopback."""
    if host in ("", "0.0.0.0"):  # noqa: S104 - we connect to it, we do not bind it
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def probe(url: str, timeout_s: float) -> tuple[bool, str]:
    """GET `url`: (healthy, the line to print). Healthy means HTTP 200."""
    if not url.startswith(("http://", "https://")):
        raise CallPanionError(f"--url must be an http(s) URL, got {url!r}")
    # No proxies: an HTTP_PROXY meant for the providers must not carry a loopback probe away.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s) as response:
            status, body = response.status, response.read(500)
    except urllib.error.HTTPError as error:
        with error:
            status, body = error.code, error.read(500)
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        return False, f"unhealthy: {url}: {reason}"
    detail = " ".join(body.decode(errors="replace").split())
    healthy = status == 200
    line = f"{'healthy' if healthy else 'unhealthy'}: {url}: HTTP {status} {detail}"
    return healthy, line.rstrip()
