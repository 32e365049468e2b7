"""The call's sideband WebSocket: JSON events in and out, nothing else.

With SIP the audio never passes through us (docs/platform.md §1): the sideband carries only control events. This module
knows how to open it (URL, auth headers, the 404 that means "this call no longer exists") and how to frame events;
the conversation logic lives in :mod:`shared.conversation`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from shared.tls import client_context

log = logging.getLogger("switchboard.sideband")

# Server events are small JSON documents, but session.created/updated echo the instructions and tool schemas;
# 4 MiB leaves plenty of room without letting a broken peer make us buffer without bound.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024


class AuthProvider(Protocol):
    """Anything with ``async headers()`` returning the auth headers for one request (``shared/auth.py``)."""

    async def headers(self) -> dict[str, str]: ...


class SidebandError(Exception):
    """The sideband could not be opened (network error, 5xx, auth failure). Usually worth a retry."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CallGone(SidebandError):
    """The upgrade was answered 404: the call no longer exists (caller hung up, or it was never accepted)."""


def sideband_url(endpoint: str, call_id: str) -> str:
    """``https://res.openai.azure.com`` -> ``wss://res.openai.azure.com/openai/v1/realtime?call_id=...``."""
    parts = urlsplit(endpoint.rstrip("/"))
    scheme = {"https": "wss", "http": "ws", "wss": "wss", "ws": "ws"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"endpoint must be an http(s) URL, got {endpoint!r}")
    # Tolerate an endpoint that already ends in /openai/v1 (settings strip it, tests may not).
    path = parts.path.rstrip("/").removesuffix("/openai/v1")
    return f"{scheme}://{parts.netloc}{path}/openai/v1/realtime?call_id={quote(call_id, safe='')}"


class Sideband:
    """One open sideband connection. Create it with :meth:`connect`."""

    def __init__(self, ws: ClientConnection, call_id: str) -> None:
        self._ws = ws
        self.call_id = call_id
        # Client event ids let us match an `error` event (error.event_id) to the request that caused it.
        self._ids = itertools.count(1)
        self._prefix = f"evt_sb{id(self) % 100000:05d}_"

    @classmethod
    async def connect(
        cls,
        endpoint: str,
        call_id: str,
        auth: AuthProvider,
        *,
        open_timeout: float = 10.0,
        max_size: int = MAX_MESSAGE_BYTES,
    ) -> Sideband:
        url = sideband_url(endpoint, call_id)
        headers: Mapping[str, str] = await auth.headers()
        # No `OpenAI-Beta` header: it would switch the session to the beta event names (docs/platform.md §4.1).
        try:
            ws = await connect(
                url,
                ssl=client_context() if url.startswith("wss://") else None,
                additional_headers=dict(headers),
                open_timeout=open_timeout,
                max_size=max_size,
                # The server closes the socket on a caller hang-up without a close frame; don't linger.
                close_timeout=2.0,
                # No permessage-deflate: the platform does not ask for it (docs/performance.md), and compressing
                # a few hundred bytes of JSON per event cost more CPU than it saved on the wire.
                compression=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 404:
                raise CallGone(f"sideband for {call_id}: 404, the call no longer exists", status) from None
            raise SidebandError(f"sideband for {call_id}: upgrade answered {status}", status) from None
        except (OSError, TimeoutError) as exc:
            raise SidebandError(f"sideband for {call_id}: {type(exc).__name__}: {exc}") from None
        except Exception as exc:  # websockets.InvalidHandshake, InvalidURI, ...
            raise SidebandError(f"sideband for {call_id}: {type(exc).__name__}: {exc}") from None
        return cls(ws, call_id)

    def next_event_id(self) -> str:
        return f"{self._prefix}{next(self._ids)}"

    async def send(self, event: dict[str, Any]) -> str:
        """Send a client event; adds an ``event_id`` if it has none and returns it."""
        if "event_id" not in event:
            event = {**event, "event_id": self.next_event_id()}
        await self._ws.send(json.dumps(event, separators=(",", ":")))
        return event["event_id"]

    async def update_session(self, session: dict[str, Any]) -> str:
        """``session.update`` done right for SIP: always ``type: realtime``, never an audio ``format``.

        The server rejects a session.update without ``session.type`` (docs/platform.md §4.2), and on a SIP call the
        audio formats were negotiated by SDP; touching them has been reported to turn the audio into static.
        """
        audio = session.get("audio") or {}
        if any("format" in (audio.get(side) or {}) for side in ("input", "output")):
            raise ValueError("session.update must not set audio formats on a SIP call")
        return await self.send({"type": "session.update", "session": {**session, "type": "realtime"}})

    async def recv(self) -> dict[str, Any]:
        """The next server event. Raises ``websockets.ConnectionClosed`` when the socket ends.

        Frames that are not JSON objects are logged and skipped: one bad frame must not end a phone call.
        """
        while True:
            raw = await self._ws.recv()
            try:
                event = json.loads(raw)
            except (TypeError, ValueError):
                log.warning("call %s: skipped a sideband frame that is not JSON", self.call_id)
                continue
            if isinstance(event, dict) and isinstance(event.get("type"), str):
                return event
            log.warning("call %s: skipped a sideband frame without a type", self.call_id)

    async def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a dead socket is not an error worth surfacing
            await self._ws.close()


def close_info(exc: ConnectionClosed) -> tuple[int, str]:
    """(code, reason) of a closed connection; 1006 when the peer vanished without a close frame."""
    frame = exc.rcvd
    if frame is None:
        return 1006, ""
    return frame.code, frame.reason
