"""FCM HTTP v1 sender: Android incoming calls as high-priority data messages.

- Credentials: a Google service account via google-auth. Its `token_uri` is honoured, so a
  service-account file whose `token_uri` points at the emulator makes the emulator stand in
  for Google. The access token is cached; from REFRESH_MARGIN_S before expiry it is refreshed
  in the background while sends go on with the current one. google-auth is blocking, so the
  refresh runs in a thread: the event loop never waits on the token endpoint unless the token
  is about to expire (under MIN_VALIDITY_S left) or was rejected. A fetch is bounded
  (TOKEN_TIMEOUT_S, on the socket and on the wait) and runs in a daemon thread of its own,
  not the event loop's default executor: `asyncio.run` joins that executor's threads at
  exit, so a token endpoint that accepts and never answers held a stopping worker for the
  120 s of google-auth's default timeout (issue 22, found with py-spy).
- Transport: one shared HTTP/2 client (`python_worker.push.http2`) with bounded concurrency.
- Every answer is classified per the FCM table of PROTOCOLS.md into a `SendResult`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import google.auth.exceptions
import google.auth.transport.requests
import requests
from google.oauth2 import service_account

from python_worker.push.http2 import (
    H2Client,
    H2Error,
    Response,
    client_ssl_context,
)
from python_worker.push.outcomes import Outcome, SendResult, unreachable
from python_worker.push.payloads import IncomingCall, check_fcm_data, fcm_call_message
from python_worker.push.retry import RetryPolicy, parse_retry_after
from python_worker.push.settings import FcmSettings

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_BASE_URL = "https://fcm.googleapis.com"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
# google-auth itself refreshes 3 min 45 s early; we start 5 minutes early, in the background.
REFRESH_MARGIN_S = 300.0
# Below this much validity a token is not worth sending with: wait for the new one.
MIN_VALIDITY_S = 30.0
# Streams we keep in flight per connection (FCM advertises its own limit, about 100, in
# SETTINGS; the lower of the two applies). More sends wait in a fair queue.
DEFAULT_MAX_IN_FLIGHT = 1000
DEFAULT_TIMEOUT_S = 10.0
#: The token endpoint's answer, at most (socket timeout and the wait for the fetch alike).
TOKEN_TIMEOUT_S = 10.0

T = TypeVar("T")


class _TimedRequest(google.auth.transport.requests.Request):
    """google-auth's transport with our timeout instead of its default of 120 s."""

    def __init__(self, session: requests.Session, timeout_s: float) -> None:
        super().__init__(session)
        self._timeout_s = timeout_s

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: float | None = None, **kwargs: Any) -> Any:  # fmt: skip
        return super().__call__(  # type: ignore[no-untyped-call]
            url, method, body, headers, timeout=timeout or self._timeout_s, **kwargs
        )


async def in_daemon_thread(function: Callable[[], T]) -> T:
    """Run a blocking call in a daemon thread of its own and await its result.

    Unlike `asyncio.to_thread`, nothing waits for the thread when the event loop closes: a
    call stuck on a silent peer cannot keep the process from exiting.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return  # the caller gave up (cancelled or timed out)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result = function()
        except BaseException as error:  # handed to the awaiting task
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(settle, None, error)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=work, name="fcm-token", daemon=True).start()
    return await future


# errorCode -> outcome, per PROTOCOLS.md. INVALID_ARGUMENT is special-cased (token or not).
_OUTCOMES: dict[str, Outcome] = {
    "UNREGISTERED": Outcome.TOKEN_DEAD,
    "SENDER_ID_MISMATCH": Outcome.TOKEN_DEAD,
    "QUOTA_EXCEEDED": Outcome.RETRY,
    "UNAVAILABLE": Outcome.RETRY,
    "INTERNAL": Outcome.RETRY,
    "THIRD_PARTY_AUTH_ERROR": Outcome.CONFIG_FAULT,
}


class _RefreshAndRetry(Exception):
    """A 401 without FCM detail: the access token was refused."""


def classify(response: Response, attempt: int, policy: RetryPolicy) -> SendResult:
    """Turn an FCM v1 answer into a SendResult (raises _RefreshAndRetry on a bare 401)."""
    status = response.status
    # equivalent mutant: `status <= 200`: HTTP/2 has no final status below 200.
    if status == 200:
        name = None
        with contextlib.suppress(ValueError, AttributeError):
            name = json.loads(response.body).get("name")
        return SendResult("fcm", Outcome.DELIVERED, status, message_id=name)
    error: dict[str, object] = {}
    try:
        parsed = json.loads(response.body)
        if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
            error = parsed["error"]
    except ValueError:
        pass
    details = error.get("details")
    details = details if isinstance(details, list) else []
    code: str | None = None
    token_violation = False
    for item in details:
        if not isinstance(item, dict):
            continue
        if item.get("@type") == FCM_ERROR_TYPE and code is None:
            code = str(item.get("errorCode"))
        if item.get("@type") == BAD_REQUEST_TYPE:
            for violation in item.get("fieldViolations") or []:
                if isinstance(violation, dict) and violation.get("field") == "message.token":
                    token_violation = True
    message = str(error.get("message") or response.body[:200].decode(errors="replace"))
    retry_after = parse_retry_after(response.header("retry-after"))
    # An answer without FCM detail (Google's front end, a bare 400) is named by its status.
    reason = code or str(error.get("status") or status)
    if code is None and status == 401:
        raise _RefreshAndRetry(message)
    if code == "INVALID_ARGUMENT" or (code is None and status == 400):
        outcome = Outcome.TOKEN_DEAD if token_violation else Outcome.OUR_BUG
        return SendResult("fcm", outcome, status, reason, detail=message)
    outcome_for = _OUTCOMES.get(code or "")
    if outcome_for is None:
        # No FCM detail: a Google front-end answer. Wrong project / permissions are ours to
        # fix in configuration; other 4xx are our bug; 5xx and 429 are transient.
        if status == 429 or status >= 500:
            outcome_for = Outcome.RETRY
        elif status in (403, 404):
            outcome_for = Outcome.CONFIG_FAULT
        else:
            outcome_for = Outcome.OUR_BUG
    delay = policy.delay(attempt, retry_after) if outcome_for is Outcome.RETRY else None
    return SendResult("fcm", outcome_for, status, reason, retry_after_s=delay, detail=message)


class FcmSender:
    """Sends FCM v1 messages for one Firebase project over one shared HTTP/2 client."""

    def __init__(
        self,
        service_account_info: Mapping[str, str],
        *,
        project_id: str | None = None,
        base_url: str = DEFAULT_BASE_URL,
        ca_file: str | None = None,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        connections: int = 1,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
        policy: RetryPolicy | None = None,
    ) -> None:
        self._credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            dict(service_account_info), scopes=[FCM_SCOPE]
        )
        self.project_id = project_id or service_account_info.get("project_id") or ""
        if not self.project_id:
            raise ValueError("FCM needs a project id (project_id in the service-account file)")
        session = requests.Session()
        if ca_file:
            session.verify = ca_file
            # Otherwise requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override `verify`.
            session.trust_env = False
        self._auth_request = _TimedRequest(session, TOKEN_TIMEOUT_S)
        url = urllib.parse.urlsplit(base_url)
        if url.scheme != "https" or not url.hostname:
            raise ValueError(f"FCM base URL must be https://host[:port], got {base_url!r}")
        self._client = H2Client(
            url.hostname,
            url.port or 443,
            ssl_context=client_ssl_context(ca_file),
            max_connections=connections,
            max_streams=max_in_flight,
        )
        self._path = f"{url.path.rstrip('/')}/v1/projects/{self.project_id}/messages:send".encode()
        self._timeout_s = timeout_s
        self._clock = clock
        self._policy = policy or RetryPolicy()
        self._token: str | None = None
        self._expires_at = 0.0
        self._refreshing: asyncio.Future[None] | None = None
        self.token_fetches = 0

    @classmethod
    def from_file(cls, path: str | Path, **options: object) -> FcmSender:
        """Build from a service-account JSON file."""
        info = json.loads(Path(path).read_text())
        return cls(info, **options)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: FcmSettings, **options: object) -> FcmSender:
        """Build from the FCM_* environment settings (`config.fcm_settings`)."""
        return cls.from_file(
            settings.service_account_file,
            project_id=settings.project_id,
            base_url=settings.base_url,
            ca_file=settings.ca_file,
            **options,
        )

    # -- access token ---------------------------------------------------------------------
    async def access_token(self) -> str:
        """A valid access token, refreshing in the background when expiry nears."""
        remaining = self._expires_at - self._clock()
        if self._token is not None and remaining > REFRESH_MARGIN_S:
            return self._token
        if self._token is not None and remaining > MIN_VALIDITY_S:
            self._start_refresh()
            return self._token
        await self._refresh()
        assert self._token is not None
        return self._token

    def _start_refresh(self) -> asyncio.Future[None]:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._fetch())
            # A failed background refresh is retried by the next send; mark it as seen.
            self._refreshing.add_done_callback(lambda f: f.cancelled() or f.exception())
        return self._refreshing

    async def _refresh(self, stale: str | None = None) -> None:
        """Fetch a new token once, however many sends ask at the same time."""
        if stale is not None and self._token != stale:
            return  # someone already replaced the refused token
        try:
            async with asyncio.timeout(TOKEN_TIMEOUT_S):
                await asyncio.shield(self._start_refresh())
        except TimeoutError:
            raise google.auth.exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"no answer from the token endpoint within {TOKEN_TIMEOUT_S:g} s"
            ) from None

    async def _fetch(self) -> None:
        credentials, request = self._credentials, self._auth_request
        await in_daemon_thread(lambda: credentials.refresh(request))
        token = self._credentials.token
        expiry = self._credentials.expiry
        if not token or expiry is None:
            raise google.auth.exceptions.RefreshError(  # type: ignore[no-untyped-call]
                "token endpoint returned no token"
            )
        self._token = str(token)
        self._expires_at = expiry.replace(tzinfo=dt.UTC).timestamp()
        self.token_fetches += 1

    # -- sending --------------------------------------------------------------------------
    async def send_call(self, call: IncomingCall, token: str, attempt: int = 1) -> SendResult:
        """Ring an Android device: the incoming-call data message."""
        return await self.send(fcm_call_message(call, token), attempt=attempt)

    async def send(
        self, message: Mapping[str, object], *, attempt: int = 1, validate_only: bool = False
    ) -> SendResult:
        """Send one v1 message and classify the answer. Never raises for provider errors."""
        data = message.get("data")
        if isinstance(data, Mapping):
            check_fcm_data(data)
        envelope: dict[str, object] = {"message": message}
        if validate_only:
            envelope["validate_only"] = True
        body = json.dumps(envelope, separators=(",", ":")).encode()
        for try_number in (1, 2):
            try:
                token = await self.access_token()
            except google.auth.exceptions.RefreshError as error:
                return SendResult("fcm", Outcome.CONFIG_FAULT, 0, "oauth", detail=str(error))
            except google.auth.exceptions.TransportError as error:
                delay = self._policy.delay(attempt)
                return unreachable("fcm", error, delay, reason="oauth_unreachable")
            try:
                response = await self._client.request(
                    b"POST",
                    self._path,
                    [
                        (b"authorization", b"Bearer " + token.encode()),
                        (b"content-type", b"application/json; charset=UTF-8"),
                    ],
                    body,
                    self._timeout_s,
                )
            except H2Error as error:
                return unreachable("fcm", error, self._policy.delay(attempt))
            try:
                return classify(response, attempt, self._policy)
            except _RefreshAndRetry as refused:
                if try_number == 2:
                    return SendResult(
                        "fcm",
                        Outcome.CONFIG_FAULT,
                        401,
                        "UNAUTHENTICATED",
                        detail=f"access token refused twice: {refused}",
                    )
                try:
                    await self._refresh(stale=token)
                except google.auth.exceptions.GoogleAuthError as error:
                    return SendResult("fcm", Outcome.CONFIG_FAULT, 401, "oauth", detail=str(error))
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        await self._client.aclose()
        if self._refreshing is not None and not self._refreshing.done():
            self._refreshing.cancel()
