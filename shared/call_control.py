"""REST call control for Realtime SIP calls: accept, reject, refer, hang up.

One pooled ``httpx.AsyncClient`` per process: the accept sits inside the caller's ring time, and a
fresh TLS handshake to Azure per call would add tens of milliseconds for nothing.

Retry policy (docs/platform.md §2.3; the platform documents no idempotency for accept):
- A request that was never sent (connect error, connect timeout, pool timeout) is retried for every action.
- ``hangup`` is idempotent, so 5xx, read timeouts and dropped responses are retried too.
- ``accept``/``reject``/``refer`` are never re-sent once they may have reached the platform: a blind
  second accept after a timeout could set up a second session on the call. The webhook answers 502
  instead and the platform's own redelivery decides.
- Any other transport error (proxy, protocol) is reported as a ``CallControlError`` and never re-sent.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from .auth import AuthProvider
from .telemetry import traced_request
from .tls import client_context
from .webhook import CALL_ID

log = logging.getLogger("switchboard.call_control")

Action = Literal["accept", "reject", "refer", "hangup"]

_TARGET = re.compile(r"(tel|sip|sips):\S{1,250}", re.ASCII)

# Timeouts. The platform waits for the webhook answer while the phone rings; Azure asks for under 10 s and
# redelivers otherwise. Verification and routing take microseconds, so nearly all of that budget can go to
# accept: 2 s to connect, 7 s to read. A slow '404 call_id_not_found' has been seen at ~5.3 s, which must
# still come back as a clean "caller gone" instead of a timeout. The other actions run outside the ring path.
ACCEPT_TIMEOUT = httpx.Timeout(connect=2.0, read=7.0, write=2.0, pool=1.0)
DEFAULT_TIMEOUT = httpx.Timeout(connect=2.0, read=5.0, write=2.0, pool=1.0)
MAX_ATTEMPTS = 3
BACKOFF_SECONDS = (0.1, 0.3)

# Never sent: safe to retry whatever the action.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Possibly sent: only an idempotent action may be retried.
_MAYBE_SENT = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


@dataclass(frozen=True)
class CallResult:
    action: Action
    call_id: str
    status: int
    gone: bool  # 404 call_id_not_found: the call no longer exists (caller hung up, late redelivery)


class CallControlError(Exception):
    """The platform refused or failed. ``status`` is None when no HTTP response came back."""

    def __init__(self, action: str, call_id: str, status: int | None, code: str | None, message: str) -> None:
        super().__init__(f"{action} {call_id}: {status if status is not None else 'no response'}"
                         f"{f' {code}' if code else ''}: {message}")
        self.action = action
        self.call_id = call_id
        self.status = status
        self.code = code
        self.message = message

    @property
    def maybe_applied(self) -> bool:
        """The request was sent and no answer came back (read timeout, dropped connection): the platform may
        have acted on it. A refusal, an error status or a connection that never opened did not act."""
        return self.status is None and self.code in ("timeout", "no_response")


class CallControlClient:
    """accept/reject/refer/hangup for one Azure OpenAI endpoint, over a pooled client (``http``, or our own)."""

    def __init__(self, endpoint: str, auth: AuthProvider, *, http: httpx.AsyncClient | None = None,
                 accept_timeout: httpx.Timeout = ACCEPT_TIMEOUT, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 backoff: tuple[float, ...] = BACKOFF_SECONDS) -> None:
        self._base = endpoint.rstrip("/") + "/openai/v1/realtime/calls/"
        self._auth = auth
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(
            verify=client_context(),
            # Keep-alive for as many connections as may be open: httpcore closes an idle connection whenever the pool
            # holds more than max_keepalive_connections in all, so after a burst (100 accepts at once) a lower figure
            # would close idle connections on every request and open (in Azure: TLS-handshake) new ones.
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100, keepalive_expiry=60),
            timeout=timeout,
            follow_redirects=False,
        )
        self._backoff = backoff
        self._accept_timeout = accept_timeout
        self._timeout = timeout

    async def aclose(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def accept(self, call_id: str, body: dict[str, Any]) -> CallResult:
        if body.get("type") != "realtime":
            raise ValueError("accept body must have type 'realtime'")
        return await self._post("accept", call_id, body, self._accept_timeout)

    async def reject(self, call_id: str, status_code: int | None = None) -> CallResult:
        if status_code is not None and not 300 <= status_code <= 699:
            raise ValueError(f"SIP status {status_code} is not a final non-2xx response (300-699)")
        body = {} if status_code is None else {"status_code": status_code}
        # The ringing call's other answer: same budget as accept.
        return await self._post("reject", call_id, body, self._accept_timeout)

    async def refer(self, call_id: str, target_uri: str) -> CallResult:
        if not _TARGET.fullmatch(target_uri):
            raise ValueError("refer target must be a tel:, sip: or sips: URI")
        return await self._post("refer", call_id, {"target_uri": target_uri}, self._timeout)

    async def hangup(self, call_id: str) -> CallResult:
        return await self._post("hangup", call_id, None, self._timeout)

    @traced_request
    async def _post(self, action: Action, call_id: str, body: dict[str, Any] | None,
                    timeout: httpx.Timeout) -> CallResult:  # noqa: ASYNC109 (httpx's per-phase timeouts, not a deadline)
        if not CALL_ID.fullmatch(call_id):
            raise ValueError("call_id is not an opaque platform id")
        url = self._base + quote(call_id, safe="") + "/" + action
        content = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        idempotent = action == "hangup"
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                auth_headers = await self._auth.headers()
            except Exception as exc:  # e.g. azure.core ClientAuthenticationError; its text can be long, not secret
                raise CallControlError(action, call_id, None, "auth_failed", type(exc).__name__) from exc
            headers = {"Content-Type": "application/json", **auth_headers}
            try:
                response = await self._http.post(url, content=content, headers=headers, timeout=timeout)
            except _NOT_SENT as exc:
                if attempt < MAX_ATTEMPTS:
                    await self._pause(action, call_id, attempt, type(exc).__name__)
                    continue
                raise CallControlError(action, call_id, None, "connect_failed", type(exc).__name__) from None
            except _MAYBE_SENT as exc:
                if idempotent and attempt < MAX_ATTEMPTS:
                    await self._pause(action, call_id, attempt, type(exc).__name__)
                    continue
                lost = "timeout" if isinstance(exc, httpx.TimeoutException) else "no_response"
                raise CallControlError(action, call_id, None, lost, type(exc).__name__) from None
            except httpx.TransportError as exc:  # proxy, protocol, ...: unknown whether sent, and not transient
                raise CallControlError(action, call_id, None, "transport_error", type(exc).__name__) from None
            # `from None` above: httpx exceptions carry the request, and the request carries auth headers.

            status = response.status_code
            if 200 <= status < 300:
                return CallResult(action, call_id, status, gone=False)
            code, message = _error_envelope(response)
            if status == 404 and code == "call_id_not_found":
                log.info("%s %s: call is gone (404 call_id_not_found)", action, call_id)
                return CallResult(action, call_id, status, gone=True)
            if status >= 500 and idempotent and attempt < MAX_ATTEMPTS:
                await self._pause(action, call_id, attempt, f"HTTP {status}")
                continue
            raise CallControlError(action, call_id, status, code, message)
        raise AssertionError("unreachable")

    async def _pause(self, action: str, call_id: str, attempt: int, why: str) -> None:
        delay = self._backoff[min(attempt - 1, len(self._backoff) - 1)] if self._backoff else 0.0
        log.warning("%s %s: attempt %d failed (%s); retrying in %.1f s", action, call_id, attempt, why, delay)
        await asyncio.sleep(delay)


def _error_envelope(response: httpx.Response) -> tuple[str | None, str]:
    """(code, message) from the OpenAI error envelope; the body is truncated, headers never included."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
        return (code if isinstance(code, str) else None), (message[:300] if isinstance(message, str) else "")
    return None, response.text[:300] or response.reason_phrase
