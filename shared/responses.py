"""The engine's own ``response.create`` events, one at a time.

The service refuses a ``response.create`` while a response is active ("conversation_already_has_active_response"),
so our lines (greeting, prompts, closing line, tool follow-ups) wait in a queue until the current
``response.done``. A line refused because a server-created response (server VAD) got in first goes back to the
front of the queue, once. The engine's watchdog calls :meth:`ResponseQueue.overdue` / :meth:`force` so a
``response.done`` lost in a drop does not hold our lines forever.

Each of our ``response.create`` events carries ``response.metadata.switchboard_request``, which the GA schema
echoes on the response. Once the service has echoed one, a ``response.created`` without our tag is known to be
the service's own (server VAD answering the caller or a silence) and does not count as the answer to our
pending line; before that, the oldest pending line is taken as answered, since nothing better is known.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

# How many sent response.create events are remembered for a possible re-queue after a refusal.
_RECENT_CREATES = 16
TAG = "switchboard_request"


class ResponseQueue:
    def __init__(self, send: Callable[[dict[str, Any]], str], on_sent: Callable[[], None]) -> None:
        """``send`` queues a client event and returns its event id; ``on_sent`` is called after each send."""
        self._send = send
        self._on_sent = on_sent
        self._active: set[str] = set()  # response ids between response.created and response.done
        self._pending: dict[str, float] = {}  # our response.create event ids not yet answered by response.created
        self._recent: dict[str, dict[str, Any]] = {}  # recent response.create events, for one re-queue
        self._queue: deque[dict[str, Any]] = deque()
        self._since = 0.0  # loop time the head of the queue started waiting (or the last send)
        self._tags: dict[str, str] = {}  # metadata tag -> event id of our pending response.create
        self._serial = 0
        self._service_echoes_tags = False
        # A refusal proves a response is active even when we never saw it start (e.g. after a reconnect or a
        # forced send); then the next response.done, whichever id it carries, is the one we wait for.
        self._unseen_active = False

    @property
    def busy(self) -> bool:
        """A response is active, or one of ours was sent and not yet answered."""
        return bool(self._active or self._pending or self._unseen_active)

    @property
    def unanswered(self) -> bool:
        """Lines of ours are queued, or sent and not yet answered by a response of their own."""
        return bool(self._queue or self._pending)

    @property
    def waiting(self) -> bool:
        """Lines of ours are queued."""
        return bool(self._queue)

    def request(self, instructions: str | None = None, *, coalesce: bool = False) -> None:
        """Queue a ``response.create`` (sent at once when no response is active).

        ``coalesce``: a plain ``response.create`` already waiting covers this one too (several tool outputs or
        keypad messages need one response, not one each).
        """
        event: dict[str, Any] = {"type": "response.create"}
        if instructions is not None:
            event["response"] = {"instructions": instructions}
        if coalesce and any("instructions" not in e.get("response", {}) for e in self._queue):
            return
        if not self._queue:
            self._since = asyncio.get_running_loop().time()
        self._queue.append(event)
        self.pump()

    def pump(self, *, force: bool = False) -> None:
        """Send the next queued line if nothing is active (or ``force``)."""
        if not self._queue or (self.busy and not force):
            return
        event = self._queue.popleft()
        now = asyncio.get_running_loop().time()
        self._since = now
        requeued = bool(event.pop("_requeued", False))  # internal flag, never sent
        self._serial += 1
        tag = f"sb{self._serial}"
        event["response"] = {**event.get("response", {}), "metadata": {TAG: tag}}
        event_id = self._send(event)
        self._pending[event_id] = now
        self._tags[tag] = event_id
        self._recent[event_id] = {**event, "_requeued": requeued}
        if len(self._recent) > _RECENT_CREATES:
            self._recent.pop(next(iter(self._recent)))
        self._on_sent()

    def created(self, response_id: str | None, metadata: dict[str, Any] | None = None) -> None:
        """``response.created``: ours (it echoes our tag) or the server's own (server VAD)."""
        if response_id:
            self._active.add(response_id)
        tag = (metadata or {}).get(TAG) if isinstance(metadata, dict) else None
        if tag in self._tags:
            self._service_echoes_tags = True
            self._pending.pop(self._tags.pop(tag), None)
        elif self._pending and not self._service_echoes_tags:
            # No echo seen yet: the service does not say which request a response answers; take the oldest.
            oldest = next(iter(self._pending))
            self._pending.pop(oldest)
            self._tags = {t: e for t, e in self._tags.items() if e != oldest}

    def done(self, response_id: str | None) -> None:
        """``response.done``: the response is over; the next line may go."""
        if response_id:
            self._active.discard(response_id)
        self._unseen_active = False
        self.pump()

    def error(self, error: dict[str, Any]) -> None:
        """An ``error`` event: if it refused one of our creates because a response was active, re-queue it once."""
        event_id = error.get("event_id")
        refused = None
        if isinstance(event_id, str):
            self._pending.pop(event_id, None)
            self._tags = {t: e for t, e in self._tags.items() if e != event_id}
            refused = self._recent.pop(event_id, None)
        if refused is not None and error.get("code") == "conversation_already_has_active_response":
            # A server-created response got in first; our line goes out after it, once.
            self._unseen_active = not self._active
            if not refused.get("_requeued"):
                retry = {k: v for k, v in refused.items() if k != "event_id"}
                retry["_requeued"] = True
                self._queue.appendleft(retry)
        self.pump()

    def reset(self) -> None:
        """A new socket: what we knew about active and pending responses died with the old one."""
        self._active.clear()
        self._pending.clear()
        self._tags.clear()
        self._unseen_active = False

    def overdue(self, timeout: float) -> bool:
        """Lines have waited longer than ``timeout`` since the last send (a ``response.done`` never came)."""
        return bool(self._queue) and asyncio.get_running_loop().time() - self._since > timeout

    def force(self) -> None:
        """Forget the responses we believe active and send the next line anyway."""
        self.reset()
        self.pump(force=True)
