"""The conversation engine: one phone call, driven over its sideband WebSocket (issue #4).

With SIP the audio never passes through us. The engine only steers: it greets, answers tool calls, acts on keypad
digits and caller silence, says the closing line near the time limit, and hangs up or transfers through the REST
call-control API. It keeps the live state (transcript, tools, digits, token usage) and returns the call summary
(docs/architecture.md) when the call is over.

Shape of the code:
- One reader (``_pump``) turns server events into state changes; handlers never block it. Anything that waits
  (a tool, a goodbye that must finish playing, a transfer) runs as its own task.
- One writer (``_sender``) sends client events in order and survives a reconnect: an event queued while the
  socket is being re-opened goes out on the new socket.
- ``response.create`` goes through a small queue (:class:`shared.responses.ResponseQueue`): the service refuses a
  second response while one is active ("conversation_already_has_active_response"), so our lines wait for the
  current ``response.done``.
- What ended the call and the one-ending-at-a-time claim live in :class:`shared.call_ending.CallEnding`; the
  pressed digits and the profile's digit menu in :class:`shared.keypad.Keypad`. The engine sequences both.
- With a lease store, :func:`converse` first takes the call's lease (:mod:`shared.lease`): an attempt that finds
  another live one waits instead of opening the sideband, and a holder that loses the lease stops acting at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

from websockets.exceptions import ConnectionClosed

from . import telemetry
from .call_ending import CallEnding
from .keypad import Keypad, digits_message
from .lease import CallEnded, CallLeases, GaveUp, Lease
from .mcp_calls import McpCallLog
from .payloads import CallInput, CallSummary, Turn
from .responses import ResponseQueue
from .sideband import AuthProvider, CallGone, Sideband, SidebandError, close_info
from .tools import END_CALL, TRANSFER_CALL, Tool, ToolError, ToolRegistry
from .transcript import Usage, greeting_instructions, iso, parse_iso, say_exactly, utc_now
from .turns import LINGER_SECONDS, CarriedTurns, TurnStore, TurnWriter

log = logging.getLogger("switchboard.conversation")

DEFAULT_SILENCE_PROMPT = "Are you still there?"
DEFAULT_SILENCE_GOODBYE = "I haven't heard from you, so I'll hang up now. Goodbye!"


class CallControlResult(Protocol):
    @property  # read-only, so the frozen ``call_control.CallResult`` satisfies it
    def gone(self) -> bool: ...


class CallControl(Protocol):
    """``shared/call_control.py``: REST hangup/refer. A 404 is ``gone=True``, not an exception."""

    async def hangup(self, call_id: str) -> CallControlResult: ...
    async def refer(self, call_id: str, target_uri: str) -> CallControlResult: ...


@dataclass(frozen=True)
class EngineOptions:
    # Longest wait for a goodbye (or a handoff line) to finish playing before we hang up / refer anyway.
    goodbye_timeout_seconds: float = 10.0
    # When a goodbye is expected but nothing plays yet, how long to wait for it to start.
    speech_start_grace_seconds: float = 2.0
    # After our hangup, how long the server gets to close the sideband before we close it ourselves.
    close_wait_seconds: float = 5.0
    # After a REFER, how long the call gets to leave. If the sideband is still open then, the transfer silently
    # failed (docs/platform.md §2.3: /refer answers 200 even when no REFER reached the carrier); the call goes on.
    transfer_settle_seconds: float = 10.0
    # Reconnect schedule after an unexpected drop (the first attempt is immediate: a 404 then means the caller
    # hung up, which is the common case for a 1006).
    reconnect_delays: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0, 2.0)
    open_timeout_seconds: float = 10.0
    # Unmapped keypad digits go to the model once none has come for this long, so "1234#" is one message.
    digit_batch_seconds: float = 1.0
    # A queued response.create is sent anyway if the active response has not finished in this time.
    response_queue_timeout_seconds: float = 8.0
    default_closing_seconds: float = 20.0
    # On a caller-silence timeout, server VAD with create_response lets the model answer by itself; cancel that
    # response so the caller hears the profile's prompt once instead of two voices.
    cancel_auto_response_on_silence: bool = True
    # Said before a keypad-menu transfer (the model is not involved, so nobody else would announce it).
    menu_transfer_line: str = "Transferring your call now."
    turn_flush_seconds: float = 5.0
    # An attempt waiting for another one's lease stops waiting this long after the call's time limit: by then the
    # orchestrator's durable deadline has hung the call up, so the holder is stuck, not busy.
    standby_grace_seconds: float = 60.0
    # Without a lease, turns are stored a few seconds' worth per request (shared/turns.py); 0 writes each turn at
    # once. Under a lease they ride on its renewals instead.
    turn_linger_seconds: float = LINGER_SECONDS


class ConversationEngine:
    """The state and behaviour of one call. Use :func:`converse`; the class is public for subclassing in bench."""

    def __init__(
        self,
        call: CallInput,
        *,
        endpoint: str,
        auth: AuthProvider,
        call_control: CallControl,
        tools: ToolRegistry,
        turns: TurnStore | None,
        clock: Callable[[], datetime] = utc_now,
        options: EngineOptions = EngineOptions(),
        lease: Lease | None = None,
    ) -> None:
        self.call = call
        self.call_id: str = call["call_id"]
        self.profile: dict[str, Any] = call.get("profile") or {}
        self.endpoint = endpoint
        self.auth = auth
        self.call_control = call_control
        self.registry = tools
        self.turn_store = turns
        self.clock = clock
        self.opt = options
        # None: nobody else can drive this call (tests, bench). Otherwise nothing is sent unless it is valid.
        self.lease = lease
        self.lease_lost = False

        self.accepted_at = parse_iso(call["accepted_at"]) if call.get("accepted_at") else clock()
        self.timing = telemetry.CallTiming(self.accepted_at, call.get("profile_name"))
        self.targets: dict[str, str] = dict(self.profile.get("transfer_targets") or {})
        self.user_tools: dict[str, Tool] = {}
        for name in self.profile.get("tools") or []:
            tool = tools.get(name)
            if tool is None:
                # The accept body is built from the same profile, so this is a deployment mistake; the model may
                # still call it, and gets an error output instead of a dead call.
                log.error("call %s: profile tool %r is not registered", self.call_id, name)
            else:
                self.user_tools[name] = tool

        # Results.
        self.transcript: list[dict[str, Any]] = []
        self.tool_log: list[dict[str, Any]] = []
        # The platform calls the profile's MCP servers; their calls reach the tool log from the events.
        self.mcp = McpCallLog.for_profile(self.profile, self.tool_log, clock, time.monotonic)
        self.keypad = Keypad(self.profile, self.opt.digit_batch_seconds)  # shared/keypad.py
        self.usage = Usage()
        # The outcome, the ending claim and the platform's facts about the end (shared/call_ending.py).
        self.ending = CallEnding(self.call_id)

        # Live state.
        self._seq = 0
        # Under a lease, the newest turns ride on the lease's renewals (shared/turns.py): one write, not two.
        self._writer: TurnWriter | CarriedTurns = (
            CarriedTurns(turns, self.call_id, lease) if lease is not None and turns is not None
            else TurnWriter(turns, self.call_id, linger=self.opt.turn_linger_seconds))
        if lease is not None:
            lease.carry(lambda: self._writer.carried())
        self._sb: Sideband | None = None
        self._gen = 0  # bumped on each (re)connect
        self._connected = asyncio.Event()
        self._outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ids = itertools.count(1)
        self._changed = asyncio.Event()
        self.speaking = False
        self.speech_starts = 0
        self._responses = ResponseQueue(self._send, self._touch)
        self._seen_function_calls: set[str] = set()
        self._silences = 0
        self._tasks: set[asyncio.Task] = set()
        self._closed = asyncio.Event()

    # ------------------------------------------------------------------ the whole call

    async def run(self) -> CallSummary:
        # The caller hears silence until the greeting: read the stored turns (is this a retry?) while the
        # sideband opens, not before it. Nothing reads the transcript until both are done. An attempt that created
        # the call's lease row is the call's first: there is nothing stored to read (shared/lease.py), and a
        # table query per call set-up is saved.
        first_attempt = self.lease is not None and self.lease.created
        loading = asyncio.create_task(self._no_turns() if first_attempt else self._load_turns(),
                                      name=f"load-turns:{self.call_id}")
        sender = asyncio.create_task(self._sender(), name=f"sender:{self.call_id}")
        try:
            try:
                await self._open(first=True)
            except CallGone:
                await loading
                self.ending.call_gone = True
                self._finish("caller_hung_up", "the call was gone when the sideband connected (404)")
                return self.summary()
            await loading
            if not self.transcript:
                self._greet()
            else:
                # A retried converse (worker crash): the caller has already been greeted.
                log.info("call %s: resuming after %d stored turns; not greeting again", self.call_id,
                         len(self.transcript))
            self._spawn(self._time_limit(), "time-limit")
            self._spawn(self._queue_watchdog(), "queue-watchdog")
            await self._main_loop()
            return self.summary()
        finally:
            leftovers = [*self._tasks, sender, loading]
            for task in leftovers:
                task.cancel()
            # Let them unwind (a cancelled tool, the sender) so nothing outlives the call; bounded, never stuck.
            await asyncio.wait(leftovers, timeout=1.0)
            if self._sb is not None:
                await self._sb.close()
            await self._writer.flush(self.opt.turn_flush_seconds)

    async def _main_loop(self) -> None:
        while True:
            code, reason = await self._pump()
            if self.lease_lost:
                return  # another attempt drives the call now; converse() decides what this one does
            if self.ending.leaving:
                # We hung up or referred; let that request finish (it may still be in flight).
                if self.ending.task is not None:
                    with contextlib.suppress(TimeoutError, Exception):
                        await asyncio.wait_for(asyncio.shield(self.ending.task), self.opt.close_wait_seconds)
                if self.ending.outcome is not None:
                    return
            if code == 1000:
                self._finish("completed", f"the platform closed the sideband (1000{': ' + reason if reason else ''})")
                return
            if code == 1001:
                self._finish("timed_out", f"the platform ended the session (1001{': ' + reason if reason else ''})")
                return
            # 1006 (no close frame) is how a caller hang-up looks, and also how a network drop looks. Reconnecting
            # tells them apart: a 404 means the call is gone; a socket means it was a drop.
            # DEBUG: this is how every caller hang-up looks; the outcome line that follows says what it was.
            log.debug("call %s: sideband closed %s; reconnecting to see whether the call is still up",
                      self.call_id, code)
            try:
                await self._open(first=False)
            except CallGone:
                self.ending.call_gone = True
                self._finish(
                    "caller_hung_up" if code == 1006 else "completed",
                    f"the sideband closed ({code}) and the call is gone (404 on reconnect)",
                )
                return
            except SidebandError as exc:
                self._finish("failed", f"the sideband closed ({code}) and could not be reopened: {exc}")
                return

    async def _open(self, *, first: bool) -> None:
        """Connect with the bounded backoff; CallGone (404) is never retried: the call does not exist."""
        last: SidebandError | None = None
        for attempt, delay in enumerate(self.opt.reconnect_delays):
            if delay:
                await asyncio.sleep(delay)
            if not self._may_act():
                self.on_lease_lost()
                raise SidebandError(f"call {self.call_id}: this attempt no longer holds the call's lease")
            try:
                with telemetry.span("sideband.connect" if first else "sideband.reconnect", attempt=attempt + 1):
                    sb = await Sideband.connect(
                        self.endpoint, self.call_id, self.auth, open_timeout=self.opt.open_timeout_seconds
                    )
            except CallGone:
                raise
            except SidebandError as exc:
                last = exc
                log.warning("call %s: sideband connect attempt %d failed: %s", self.call_id, attempt + 1, exc)
                continue
            self._sb = sb
            self._gen += 1
            self._closed.clear()
            # State tied to the old socket is stale: events may have been lost in the drop.
            self.speaking = False
            self._responses.reset()
            self._connected.set()
            self._touch()
            log.log(logging.DEBUG if first else logging.INFO, "call %s: sideband %s", self.call_id,
                    "connected" if first else "reconnected")
            if not first:
                self._responses.pump()
            return
        assert last is not None
        raise last

    async def _pump(self) -> tuple[int, str]:
        """Read server events until the socket closes; returns (close code, reason)."""
        sb = self._sb
        assert sb is not None
        try:
            while True:
                event = await sb.recv()
                if self.lease_lost:
                    return 1000, "lease lost"
                try:
                    self._dispatch(event)
                except Exception:  # a handler bug must not end the phone call
                    log.exception("call %s: handling %s failed", self.call_id, event.get("type"))
                self._touch()
        except ConnectionClosed as exc:
            return close_info(exc)
        finally:
            self._connected.clear()
            self._closed.set()
            self._touch()

    # ------------------------------------------------------------------ sending

    def _event_id(self) -> str:
        return f"evt_sw_{next(self._ids)}"

    def _send(self, event: dict[str, Any]) -> str:
        event.setdefault("event_id", self._event_id())
        self._outbox.put_nowait(event)
        return event["event_id"]

    async def _sender(self) -> None:
        while True:
            event = await self._outbox.get()
            while True:
                await self._connected.wait()
                sb, gen = self._sb, self._gen
                assert sb is not None
                if not self._may_act():
                    # Checked right before every send, not only when the renewal task says so: a starved event
                    # loop may run this before that task notices the lease ran out.
                    self.on_lease_lost()
                    return
                try:
                    await sb.send(event)
                    log.debug("call %s: sent %s", self.call_id, event["type"])
                    break
                except ConnectionClosed:
                    # Resend on the next socket; if there is none, the call is over and this task is cancelled.
                    await self._wait_until(functools.partial(self._reconnected_since, gen), None)

    def _reconnected_since(self, gen: int) -> bool:
        return self._gen != gen and self._connected.is_set()

    def _may_act(self) -> bool:
        return self.lease is None or self.lease.valid()

    def on_lease_lost(self) -> None:
        """Another attempt may drive the call now: send nothing more, stop reading, close our sideband."""
        if self.lease_lost:
            return
        self.lease_lost = True
        self._connected.clear()
        if self._sb is not None:
            self._spawn(self._sb.close(), "close-after-lease-loss")
        self._touch()

    def _respond(self, instructions: str | None = None, *, coalesce: bool = False) -> None:
        """Queue a ``response.create`` (sent at once when no response is active)."""
        self._responses.request(instructions, coalesce=coalesce)

    def _say(self, text: str) -> None:
        self._respond(say_exactly(text))

    async def _queue_watchdog(self) -> None:
        # If a response.done never comes (lost in a drop, a server hiccup), don't hold our lines forever. Checked
        # eight times per timeout (once a second by default): a poll every 0.25 s was 4,000 wake-ups a second at
        # a thousand calls.
        period = max(0.05, self.opt.response_queue_timeout_seconds / 8)
        while True:
            await asyncio.sleep(period)
            if self._responses.overdue(self.opt.response_queue_timeout_seconds):
                log.warning("call %s: no response.done in time; sending the queued response.create", self.call_id)
                self._responses.force()

    # ------------------------------------------------------------------ state-change waits

    def _touch(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # The timeout is part of the answer (False when it ran out), so it is a parameter, not asyncio.timeout.
    async def _wait_until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        end = None if timeout is None else loop.time() + timeout
        while not predicate():
            remaining = None if end is None else end - loop.time()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True

    async def _wait_for_speech_to_end(self, *, expect_speech: bool) -> None:
        """Wait (bounded) until what the caller should hear has played: the goodbye before a hangup, the handoff
        line before a transfer. ``output_audio_buffer.stopped`` comes when the audio has drained, after
        ``response.done``."""
        loop = asyncio.get_running_loop()
        end = loop.time() + self.opt.goodbye_timeout_seconds
        # Our goodbye may still wait for its response (the service's own answer to a silence, cancelled, can be
        # playing or draining): speech before our line is answered is not the goodbye.
        await self._wait_until(lambda: not self._responses.unanswered, max(0.0, end - loop.time()))
        starts = self.speech_starts

        def left() -> float:
            return max(0.0, end - loop.time())

        if not self.speaking:
            # Speech may still be on its way: the rest of the current response, or a line of ours in the queue.
            await self._wait_until(
                lambda: self.speaking or self.speech_starts > starts
                or not (self._responses.busy or self._responses.waiting),
                left(),
            )
            if expect_speech and not self.speaking and self.speech_starts == starts:
                await self._wait_until(
                    lambda: self.speaking or self.speech_starts > starts,
                    min(self.opt.speech_start_grace_seconds, left()),
                )
        if not await self._wait_until(lambda: not self.speaking, left()):
            log.warning("call %s: speech still playing after %.1fs; going ahead", self.call_id,
                        self.opt.goodbye_timeout_seconds)

    # ------------------------------------------------------------------ events

    def _dispatch(self, event: dict[str, Any]) -> None:
        etype = event["type"]
        if "mcp" in etype or etype.endswith(("item.added", "item.done")):
            answer = self.mcp.on_event(event)  # MCP calls and approval requests (shared/mcp_calls.py)
            if answer is not None and self._may_act():
                self._send(answer)
        if etype == "session.created":
            log.debug("call %s: session.created", self.call_id)
        elif etype == "error":
            self._on_error(event.get("error") or {})
        elif etype == "response.created":
            response = event.get("response") or {}
            self._responses.created(response.get("id"), response.get("metadata"))
        elif etype == "response.done":
            self._on_response_done(event.get("response") or {})
        elif etype == "output_audio_buffer.started":
            self.timing.audio_started(self.clock())
            self.speaking = True
            self.speech_starts += 1
        elif etype in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
            self.speaking = False
        elif etype == "input_audio_buffer.speech_started":
            self._silences = 0  # the caller is there
        elif etype == "conversation.item.input_audio_transcription.completed":
            self._silences = 0
            self._add_turn("caller", event.get("transcript") or "")
        elif etype in ("response.output_audio_transcript.done", "response.output_text.done"):
            self._add_turn("agent", event.get("transcript") or event.get("text") or "")
        elif etype == "response.function_call_arguments.done":
            self._on_function_call(event.get("call_id"), event.get("name"), event.get("arguments"))
        elif etype == "input_audio_buffer.dtmf_event_received":
            self._on_digit(str(event.get("event") or ""))
        elif etype == "input_audio_buffer.timeout_triggered":
            self._on_silence()
        else:
            log.debug("call %s: %s", self.call_id, etype)

    def _on_error(self, error: dict[str, Any]) -> None:
        # "Most errors are recoverable and the session will stay open" (docs/platform.md §4.3): log and go on.
        log.warning("call %s: error event code=%s message=%s", self.call_id, error.get("code"),
                    str(error.get("message"))[:200])
        self._responses.error(error)

    def _on_response_done(self, response: dict[str, Any]) -> None:
        # First, so a queued line goes out even if something below fails (the handlers only spawn tasks).
        self._responses.done(response.get("id"))
        self.usage.add(response.get("usage"))
        # Function calls also appear here; one whose arguments.done we missed (e.g. across a reconnect) is
        # handled now, the others are deduplicated by call_id.
        for item in response.get("output") or []:
            if isinstance(item, dict) and item.get("type") == "function_call" and item.get("status") == "completed":
                self._on_function_call(item.get("call_id"), item.get("name"), item.get("arguments"))

    def _add_turn(self, role: str, text: str) -> None:
        text = text.strip()
        if not text:
            return
        turn = {"role": role, "text": text, "at": iso(self.clock())}
        self.transcript.append(turn)
        self._writer.put(self._seq, turn)
        self._seq += 1
        # Per-event lines are DEBUG: at a thousand live calls, INFO lines per turn cost more than the turn itself.
        log.debug("call %s: %s turn %d", self.call_id, role, self._seq - 1)
        log.debug("call %s: %s: %s", self.call_id, role, text)

    # ------------------------------------------------------------------ greeting, silence, time limit

    def _greet(self) -> None:
        greeting = self.profile.get("greeting")
        if not greeting:
            return
        # Sent as soon as the socket is open, before session.created: until the first response the caller
        # hears silence, and session.created only tells us what we configured on accept.
        self._respond(greeting_instructions(greeting))
        self.timing.greeting_sent()

    def _on_silence(self) -> None:
        if self.ending.claimed:
            return
        self._silences += 1
        silence = self.profile.get("silence") or {}
        log.info("call %s: caller silence #%d", self.call_id, self._silences)
        if self.opt.cancel_auto_response_on_silence:
            # With server VAD create_response the service answers the timeout itself; cancel that so only the
            # profile's line is spoken. With nothing active the service answers an `error`, which is harmless.
            self._send({"type": "response.cancel"})
        if self._silences == 1:
            self._say(silence.get("prompt") or DEFAULT_SILENCE_PROMPT)
        else:
            self._say(silence.get("goodbye") or DEFAULT_SILENCE_GOODBYE)
            self._end("idle", "the caller stayed silent after the prompt", expect_speech=True)

    async def _time_limit(self) -> None:
        limit = self.call.get("max_duration_seconds") or self.profile.get("max_duration_seconds")
        if not limit:
            return
        limit = float(limit)
        closing_seconds = float(self.profile.get("closing_seconds") or self.opt.default_closing_seconds)
        closing_seconds = min(closing_seconds, limit / 2)
        closing_line = self.profile.get("closing_line")

        def until(offset: float) -> float:
            return (self.accepted_at.timestamp() + offset) - self.clock().timestamp()

        if closing_line and until(limit) > 0:
            await asyncio.sleep(max(0.0, until(limit - closing_seconds)))
            if not self.ending.claimed:
                log.info("call %s: closing line (%.0fs left)", self.call_id, until(limit))
                self._say(closing_line)
        await asyncio.sleep(max(0.0, until(limit)))
        # The deadline is a hard limit: no waiting for speech. A transfer may hold the ending right now; if it
        # fails, the call comes back (the claim is released) and the deadline still applies.
        while not self._end("timed_out", f"the maximum duration of {limit:g}s was reached",
                            expect_speech=False, wait=False):
            await self._wait_until(lambda: not self.ending.claimed, None)

    # ------------------------------------------------------------------ ending and transfer

    def _end(self, outcome: str, reason: str, *, expect_speech: bool, wait: bool = True) -> bool:
        """Start hanging up, unless an ending (hangup or transfer) is already under way. True if this one won."""
        if not self.ending.claim():
            return False
        self.ending.task = self._spawn(self._hangup(outcome, reason, expect_speech, wait), "hangup")
        return True

    async def _hangup(self, outcome: str, reason: str, expect_speech: bool, wait: bool) -> None:
        if wait:
            await self._wait_for_speech_to_end(expect_speech=expect_speech)
        if not self._may_act():
            return  # the attempt that holds the call now decides when it ends
        log.info("call %s: hanging up (%s)", self.call_id, outcome)
        self.ending.leaving = True
        self._finish(outcome, reason)
        try:
            result = await self.call_control.hangup(self.call_id)
        except Exception as exc:
            # The orchestrator owns the guarantee: the summary says the hangup is unconfirmed, and it hangs up
            # again (retrying while the call could be up). The platform will not close a socket for a hangup it
            # refused, so return now instead of waiting close_wait_seconds: every second here is a second the
            # caller stays on a line nobody drives.
            log.warning("call %s: hangup request failed: %s", self.call_id, type(exc).__name__)
            self.ending.reason += f" (hangup request failed: {type(exc).__name__})"
            await self._close_after(0)
            return
        self.ending.hangup_confirmed = True
        if result.gone:
            self.ending.call_gone = True
            log.info("call %s: hangup found the call already gone", self.call_id)
        await self._close_after(self.opt.close_wait_seconds)

    async def _close_after(self, seconds: float) -> bool:
        """Wait for the platform to close the sideband; close it ourselves after ``seconds``. True if it closed."""
        closed = await self._wait_until(self._closed.is_set, seconds)
        if not closed and self._sb is not None:
            await self._sb.close()
        return closed

    async def _transfer(self, name: str, *, announce: str | None) -> None:
        uri = self.targets[name]
        if announce:
            self._say(announce)
        await self._wait_for_speech_to_end(expect_speech=bool(announce))
        if not self._may_act():
            return
        log.info("call %s: transferring to target %r", self.call_id, name)
        self.ending.leaving = True
        self.ending.transfer_target = name
        try:
            result = await self.call_control.refer(self.call_id, uri)
        except Exception as exc:
            log.warning("call %s: refer failed: %s", self.call_id, type(exc).__name__)
            self._transfer_failed(name)
            return
        if result.gone:
            self.ending.call_gone = True
            self._finish("caller_hung_up", "the call was gone when the transfer was requested")
            await self._close_after(0)
            return
        self._finish("transferred", f"transferred to {name}")
        if await self._wait_until(self._closed.is_set, self.opt.transfer_settle_seconds):
            self.ending.refer_accepted = True
            return
        # Still here: the REFER went nowhere (docs/platform.md §2.3). Take the call back instead of leaving dead air.
        log.warning("call %s: the call did not leave after the transfer; resuming", self.call_id)
        self._transfer_failed(name)

    def _transfer_failed(self, name: str) -> None:
        self.ending.transfer_failed()
        self._touch()  # a deadline that passed during the transfer waits for the claim to be released
        self._send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "system",
            "content": [{"type": "input_text", "text": f"The transfer to {name} did not go through. Apologise to "
                                                       "the caller and offer to help another way."}]}})
        self._respond()

    def _finish(self, outcome: str, reason: str) -> None:
        self.ending.finish(outcome, reason)

    # ------------------------------------------------------------------ tools

    def _on_function_call(self, call_id: Any, name: Any, arguments: Any) -> None:
        if not call_id or call_id in self._seen_function_calls:
            return
        self._seen_function_calls.add(call_id)
        log.debug("call %s: tool call %s", self.call_id, name)
        self._spawn(self._run_tool(str(call_id), str(name), arguments if isinstance(arguments, str) else "{}"),
                    f"tool:{name}")

    def _answer(self, fc_call_id: str, output: Any, *, respond: bool = True) -> None:
        self._send({"type": "conversation.item.create", "item": {
            "type": "function_call_output", "call_id": fc_call_id,
            "output": json.dumps(output, default=str, separators=(",", ":"))}})
        if respond:
            # The model speaks again only when asked (docs/platform.md §4.2).
            self._respond(coalesce=True)

    @telemetry.traced_tool
    async def _run_tool(self, fc_call_id: str, name: str, raw_arguments: str) -> None:
        at = iso(self.clock())
        entry: dict[str, Any] = {"name": name, "arguments": raw_arguments, "ok": False, "at": at}
        self.tool_log.append(entry)
        try:
            args = json.loads(raw_arguments or "{}")
            if not isinstance(args, dict):
                raise ValueError("not an object")
        except ValueError:
            self._answer(fc_call_id, {"error": "the arguments are not a JSON object"})
            return
        entry["arguments"] = args

        if name == END_CALL:
            entry["ok"] = True
            # The output is recorded for the conversation's sake; no response.create: the call is ending.
            self._answer(fc_call_id, {"ok": True, "status": "ending the call"}, respond=False)
            self._end("agent_ended", f"the agent ended the call ({args.get('reason') or 'end_call'})",
                      expect_speech=True)
            return

        if name == TRANSFER_CALL:
            target = args.get("target")
            if not isinstance(target, str) or target not in self.targets:
                # The model only ever sees target names; a raw number or unknown name is refused.
                self._answer(fc_call_id, {"error": f"unknown transfer target {target!r}",
                                          "available_targets": sorted(self.targets)})
                return
            if self.ending.claimed:
                self._answer(fc_call_id, {"error": "the call is already ending"})
                return
            entry["ok"] = True
            self.ending.claimed = True
            self._answer(fc_call_id, {"ok": True, "status": f"transferring to {target}"}, respond=False)
            self.ending.task = asyncio.current_task()
            await self._transfer(target, announce=None)
            return

        tool = self.user_tools.get(name)
        if tool is None or tool.handler is None:
            self._answer(fc_call_id, {"error": f"unknown tool {name!r}"})
            return
        try:
            result = await asyncio.wait_for(tool.handler(**args), tool.timeout_seconds)
        except ToolError as exc:
            output: Any = {"error": str(exc)}
        except TimeoutError:
            log.warning("call %s: tool %s timed out after %ss", self.call_id, name, tool.timeout_seconds)
            output = {"error": f"the tool did not answer within {tool.timeout_seconds:g} seconds"}
        except TypeError as exc:
            log.warning("call %s: tool %s rejected its arguments: %s", self.call_id, name, exc)
            output = {"error": "the tool rejected these arguments"}
        except Exception as exc:
            # The message may carry internals (connection strings, keys): the model gets a generic text, the
            # warning names the exception type and where it was raised, and the full traceback is DEBUG only.
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.warning("call %s: tool %s raised %s at %s:%d", self.call_id, name, type(exc).__name__,
                        os.path.basename(frame.filename), frame.lineno)
            log.debug("call %s: tool %s traceback", self.call_id, name, exc_info=True)
            output = {"error": "the tool failed"}
        else:
            entry["ok"] = True
            output = result
        self._answer(fc_call_id, output)

    # ------------------------------------------------------------------ keypad digits

    def _on_digit(self, digit: str) -> None:
        if not digit:
            return
        entry = self.keypad.press(digit)
        log.debug("call %s: keypad digit", self.call_id)
        if entry and self._menu_action(entry):
            return
        if self.keypad.hold(digit):
            self.keypad.flush_task = self._spawn(self._flush_digits(), "digits")

    def _menu_action(self, entry: dict[str, Any]) -> bool:
        if self.ending.claimed:
            return True  # the call is ending; a late key press changes nothing
        action = self.keypad.action(entry, self.targets)
        if action is None:
            log.warning("call %s: keypad menu entry %r is not usable; passing the digit to the model", self.call_id,
                        entry.get("action"))
            return False
        if action.kind == "say" and action.text:
            self._say(action.text)
        elif action.kind == "end_call":
            if action.text:
                self._say(action.text)
            self._end("agent_ended", "the caller chose to end the call on the keypad", expect_speech=bool(action.text))
        elif action.kind == "transfer" and action.target is not None:
            self.ending.claimed = True
            self.ending.task = self._spawn(
                self._transfer(action.target, announce=action.text or self.opt.menu_transfer_line),
                "menu-transfer",
            )
        return True

    async def _flush_digits(self) -> None:
        digits = await self.keypad.pause()
        if not digits or self.ending.claimed:
            return
        # The model does not act on DTMF by itself (docs/platform.md §4.6): tell it in words.
        self._send(digits_message(digits))
        self._respond(coalesce=True)

    # ------------------------------------------------------------------ bookkeeping

    def _spawn(self, coro: Any, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"{self.call_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s: task %s failed", self.call_id, task.get_name(), exc_info=task.exception())

    async def _no_turns(self) -> None:
        """The first attempt's stand-in for :meth:`_load_turns`: nothing stored, numbering from 0."""

    async def _load_turns(self) -> None:
        if self.turn_store is None:
            return
        for attempt in range(3):
            try:
                stored = await self.turn_store.load(self.call_id)
                break
            except Exception as exc:
                log.warning("call %s: could not load stored turns (attempt %d): %s",
                            self.call_id, attempt + 1, type(exc).__name__)
                await asyncio.sleep(0.2 * (attempt + 1))
        else:
            # Numbering from 0 would overwrite an earlier attempt's rows: better to write none this time.
            log.error("call %s: stored turns unreadable; this attempt's turns are not stored", self.call_id)
            self._writer = TurnWriter(None, self.call_id)
            return
        self.transcript = [{"role": t["role"], "text": t["text"], "at": t["at"]} for t in stored]
        self._seq = (stored[-1]["seq"] + 1) if stored else 0

    def summary(self) -> CallSummary:
        ended = self.clock()
        end = self.ending.summary_fields()
        return {
            "call_id": self.call_id,
            "outcome": end["outcome"],
            "reason": end["reason"],
            "started_at": iso(self.accepted_at),
            "ended_at": iso(ended),
            "duration_seconds": round(max(0.0, (ended - self.accepted_at).total_seconds()), 3),
            "transcript": cast("list[Turn]", list(self.transcript)),  # turns are built as Turn in _add_turn
            "tools": list(self.tool_log),
            "digits": self.keypad.pressed,
            "usage": self.usage.as_dict(),
            "transfer_target": end["transfer_target"],
            "hangup_confirmed": end["hangup_confirmed"],
            "call_gone": end["call_gone"],
            "refer_accepted": end["refer_accepted"],
            "greeting_ms": self.timing.greeting_ms,
        }


async def converse(
    call: CallInput,
    *,
    endpoint: str,
    auth: AuthProvider,
    call_control: CallControl,
    tools: ToolRegistry,
    turns: TurnStore | None,
    clock: Callable[[], datetime] = utc_now,
    options: EngineOptions = EngineOptions(),
    leases: CallLeases | None = None,
) -> CallSummary:
    """Run one accepted call to its end and return the call summary (docs/architecture.md).

    With ``leases`` (what the ``converse`` activity passes), the attempt first takes the call's lease. If another
    live attempt holds it, this one waits without opening the sideband: it takes over when the holder's lease
    lapses (the holder died), and returns the holder's summary when the holder ends the call. An attempt that
    loses its lease mid-call stops acting at once and waits the same way.
    """

    def engine(lease: Lease | None) -> ConversationEngine:
        return ConversationEngine(call, endpoint=endpoint, auth=auth, call_control=call_control, tools=tools,
                                  turns=turns, clock=clock, options=options, lease=lease)

    if leases is None:
        return await engine(None).run()

    call_id = call["call_id"]
    limit = float(call.get("max_duration_seconds") or (call.get("profile") or {}).get("max_duration_seconds") or 3600)
    accepted = parse_iso(call["accepted_at"]) if call.get("accepted_at") else clock()
    wait_left = accepted.timestamp() + limit + options.standby_grace_seconds - clock().timestamp()
    give_up_at = asyncio.get_running_loop().time() + max(0.0, wait_left)
    attempt: str | None = None
    previous: ConversationEngine | None = None
    while True:
        got = await leases.acquire(call_id, attempt=attempt, give_up_at=give_up_at)
        if isinstance(got, CallEnded):
            return await _standby_summary(engine(None), got.summary)
        if isinstance(got, GaveUp):
            return await _standby_summary(engine(None), None, holder=got.holder)
        lease, attempt = got, got.attempt
        eng = engine(lease)
        if previous is not None:
            # This attempt drove the call before it lost the lease: the turns come back from the table, the tool
            # log, keypad digits and token usage only live here.
            eng.tool_log, eng.keypad.pressed, eng.usage = previous.tool_log, previous.keypad.pressed, previous.usage
        lease.start(eng.on_lease_lost)
        try:
            summary = await eng.run()
        except BaseException as exc:
            # Cancelled (the host stops this invocation) or the sideband never opened: hand the call over now
            # rather than make the next attempt wait out the TTL. Bounded by the lease's request timeout.
            await lease.release()
            if not eng.lease_lost or isinstance(exc, asyncio.CancelledError):
                raise  # (an error caused by losing the lease is not one: this attempt just waits, below)
        if eng.lease_lost:
            await lease.stop()
            previous = eng
            log.warning("call %s: attempt %s let go of the call; it waits as a standby", call_id, attempt)
            continue
        await lease.end(summary)
        return summary


async def _standby_summary(eng: ConversationEngine, stored: dict[str, Any] | None, holder: str = "") -> CallSummary:
    """The summary an attempt returns for a call another attempt drove: that attempt's summary (``stored``) with the
    transcript from the turns table, or, if the wait gave up, a ``failed`` summary of what the table holds."""
    await eng._load_turns()
    if stored is not None:
        # The holder's summary as it was stored (a CallSummary written by the same code), with the turns.
        return cast(CallSummary, {**eng.summary(), **stored, "transcript": eng.transcript})
    eng._finish("failed", f"another converse attempt ({holder}) still held the call after its time limit")
    return eng.summary()
