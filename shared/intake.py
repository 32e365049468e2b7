"""The incoming-call webhook, framework-free: verify, parse, dedupe, decide, act, start the call workflow.

Status codes are what the platform's redelivery understands (docs/platform.md §3.3: any 2xx ends delivery, anything
else is retried for up to 72 h):
- 401 bad/missing signature or stale timestamp, 400 malformed body, 413 oversized body: nothing happened.
- 200 for every final outcome (accepted, rejected, referred, caller gone, duplicate, ignored event type).
- 502 when the platform's call-control API failed or timed out: the call is not remembered as handled,
  so the redelivery (or a concurrent duplicate) can try again while the phone still rings.
- 500 when the workflow could not be started after the call was accepted; the call is hung up first.

Deliveries are at-least-once and may arrive concurrently. Each call_id is handled under its own lock, and the
outcome is remembered (bounded LRU), so duplicates wait for the first delivery and get 200 ``duplicate``
without a second accept. ``call_exists`` (the Durable instance id is the call_id) catches duplicates that
reach another process or arrive after a restart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

from . import telemetry
from .admission import Admission
from .call_control import CallControlClient, CallControlError
from .drain import DrainState, DrainSwitch
from .mcp import McpConfigError, session_tools
from .payloads import CallInput
from .phone import mask
from .routing import DEFAULT_AFTER_HOURS_STATUS, AgentProfile, Decision, RoutingRules
from .rules_store import RulesHolder
from .tools import ToolRegistry
from .webhook import (
    INCOMING_CALL,
    IncomingCall,
    WebhookPayloadError,
    WebhookVerificationError,
    WebhookVerifier,
    parse_event,
    parse_incoming_call,
)

log = logging.getLogger("switchboard.intake")

BUSY_HERE = 486  # SIP: the callee is busy; the caller's carrier may try again or play a busy tone
MAX_BODY_BYTES = 256 * 1024  # a real event is ~1-2 KiB; anything near this is not from the platform
LIVE_COUNT_TIMEOUT_SECONDS = 1.5  # the capacity count's budget out of the webhook's few seconds
REMEMBERED = 10_000  # call ids kept for dedupe (a few hundred KiB at most)

StartCall = Callable[[str, CallInput], Awaitable[None]]
CallExists = Callable[[str], Awaitable[bool]]
LiveCalls = Callable[[], Awaitable[int]]
# Publishes the record of a call that was accepted but whose workflow never started: (orchestration input, reason).
RecordUnstarted = Callable[[CallInput, str], Awaitable[None]]


# The ring path's steps, timed per delivery (docs/performance.md): (step name, perf_counter at its end).
_marks: ContextVar[list[tuple[str, float]] | None] = ContextVar("intake_marks", default=None)


def _step(name: str) -> None:
    marks = _marks.get()
    if marks is not None:
        marks.append((name, time.perf_counter()))


def utc_now() -> datetime:
    return datetime.now(UTC)


class Declined(TypedDict):
    """A call that was rejected or referred, for its record (shared.records.decision_record). Numbers masked."""

    call_id: str
    outcome: str  # rejected | referred
    reason: str
    sip_status: int | None
    caller: str | None  # None when the platform did not say
    dialed: str | None
    profile_name: str | None
    decided_at: str


@dataclass(frozen=True)
class IntakeResult:
    status: int
    body: dict[str, Any]
    call_id: str | None = None
    action: str | None = None  # accept | reject | refer | hangup, when a call-control request was made
    webhook_id: str | None = None
    declined: Declined | None = None  # set when a reject or refer landed: the Functions layer publishes its record
    # Milliseconds spent in each step of this delivery, in order (verify, parse, durable_checks, decide, admit,
    # accept, start); the webhook returns them as a Server-Timing header.
    timings: dict[str, float] = field(default_factory=dict)


class _Lru:
    """Bounded map of id -> remembered outcome; the least recently used entry goes first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[str, str] = OrderedDict()

    def get(self, key: str) -> str | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: str) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)


@dataclass
class _CallLock:
    """One call id's lock, and how many deliveries hold or await it (the entry goes when none do)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class Intake:
    """The webhook handler of one process (one event loop): see the module docstring for the contract."""

    def __init__(
        self,
        *,
        secrets: tuple[str, ...],
        rules: RoutingRules | RulesHolder,
        call_control: CallControlClient,
        deployment: str,
        tools: ToolRegistry,
        max_call_duration_seconds: int,
        admission: Admission | None = None,
        clock: Callable[[], datetime] = utc_now,
        drain: DrainSwitch | None = None,
    ) -> None:
        self._clock = clock
        self._drain = drain
        # This process's own call count (shared/admission.py): None takes every call the rules accept.
        self._admission = admission
        self._verifier = WebhookVerifier(secrets, now=lambda: clock().timestamp())
        # The rules are read from the holder at each delivery: shared/rules_store.py swaps in reloaded rules there.
        self._rules = rules if isinstance(rules, RulesHolder) else RulesHolder(rules)
        self._cc = call_control
        self._max_duration = max_call_duration_seconds
        self._tools = tools
        self._deployment = deployment
        # Built once per profile of each rules version: the accept body is the same for every call of a profile.
        # Fails at start-up (KeyError -> ValueError) if a profile names a tool that is not registered.
        self._bodies_of: RoutingRules | None = None
        self._accept_bodies: dict[str, tuple[AgentProfile, dict[str, Any]]] = {}
        self._current_rules()
        self._calls = _Lru(REMEMBERED)
        self._locks: dict[str, _CallLock] = {}

    def _current_rules(self) -> RoutingRules:
        rules = self._rules.current
        if rules is not self._bodies_of:  # a reload swapped them: rebuild the accept bodies once
            self._accept_bodies = {name: (profile, self._accept_body(name, profile))
                                   for name, profile in rules.profiles.items()}
            self._bodies_of = rules
        return rules

    def _accept_body(self, name: str, profile: AgentProfile) -> dict[str, Any]:
        try:
            schemas = [t.schema() for t in self._tools.for_profile(profile.tools, profile.transfer_targets or {})]
        except KeyError as exc:
            raise ValueError(f"profiles.{name}.tools: tool {exc.args[0]!r} is not registered") from None
        # MCP servers go to the platform as `type: "mcp"` tools, header values read from settings now
        # (shared/mcp.py; McpConfigError while a Key Vault reference is unresolved). The accept bodies hold
        # those values: they are never logged.
        schemas += session_tools(profile.mcp_servers)
        return profile.accept_body(self._deployment, schemas)

    async def handle(
        self,
        body: bytes,
        headers: Mapping[str, str],
        *,
        start_call: StartCall,
        call_exists: CallExists,
        live_calls: LiveCalls | None,
        record_unstarted: RecordUnstarted | None = None,
    ) -> IntakeResult:
        """Answer one delivery. ``body`` must be the exact bytes received (the signature covers them).

        The callbacks are the Durable side: start the ``call`` workflow, whether it exists, how many calls are
        live (None: capacity is not checked), and the record of an accepted call whose workflow could not be
        started (it gets no other). Every outcome, failures included, is an :class:`IntakeResult`.
        """
        marks = [("", time.perf_counter())]
        token = _marks.set(marks)
        try:
            result = await self._handle(body, headers, start_call, call_exists, live_calls, record_unstarted)
        finally:
            _marks.reset(token)
        timings = {name: (t - marks[i][1]) * 1000 for i, (name, t) in enumerate(marks[1:])}
        return dataclasses.replace(result, timings=timings)

    async def _handle(self, body: bytes, headers: Mapping[str, str], start_call: StartCall, call_exists: CallExists,
                      live_calls: LiveCalls | None, record_unstarted: RecordUnstarted | None) -> IntakeResult:
        if len(body) > MAX_BODY_BYTES:
            log.warning("webhook rejected: body of %d bytes is over %d", len(body), MAX_BODY_BYTES)
            return IntakeResult(413, {"error": "payload_too_large"})
        try:
            with telemetry.span("webhook.verify"):
                webhook_id = self._verifier.verify(body, headers)
            _step("verify")
        except WebhookVerificationError as exc:
            log.warning("webhook rejected: %s", exc.reason)
            return IntakeResult(401, {"error": "invalid_signature"})
        try:
            event = parse_event(body, webhook_id)
            if event.type != INCOMING_CALL:
                log.info("webhook %s ignored: event type %s", webhook_id, event.type[:64])
                return IntakeResult(200, {"status": "ignored"}, webhook_id=webhook_id)
            call = parse_incoming_call(event)
            telemetry.bind_call(call.call_id)
            _step("parse")
        except WebhookPayloadError as exc:
            log.warning("webhook %s malformed: %s", webhook_id, exc)
            return IntakeResult(400, {"error": "malformed_event", "detail": str(exc)}, webhook_id=webhook_id)

        # The signature covers webhook-id and call_id together, so one call_id cache serves both kinds of duplicate.
        earlier = self._calls.get(call.call_id)
        if earlier is not None:
            log.info("call %s webhook %s duplicate (was %s)", call.call_id, webhook_id, earlier)
            return self._duplicate(call, earlier)
        async with self._serialized(call.call_id):
            try:
                return await self._handle_call(call, start_call, call_exists, live_calls, record_unstarted)
            except Exception:
                log.exception("call %s: unexpected error in intake", call.call_id)
                return IntakeResult(500, {"error": "internal"}, call.call_id, webhook_id=webhook_id)

    # ------------------------------------------------------------------------------------------- steps

    async def _handle_call(self, call: IncomingCall, start_call: StartCall, call_exists: CallExists,
                           live_calls: LiveCalls | None, record_unstarted: RecordUnstarted | None) -> IntakeResult:
        earlier = self._calls.get(call.call_id)
        if earlier is not None:
            log.info("call %s duplicate delivery (was %s)", call.call_id, earlier)
            return self._duplicate(call, earlier)
        # Two independent Durable queries while the phone rings: made together, not one after the other.
        # One rules version for the whole delivery, even if a reload swaps them while it awaits.
        try:
            rules = self._current_rules()
        except McpConfigError as exc:
            # Reloaded rules name an MCP header setting whose Key Vault reference has not resolved yet: nothing is
            # accepted with a header we cannot send; 503 makes the platform redeliver (as for the webhook secret).
            log.error("call %s: webhook answered 503: %s", call.call_id, exc)
            return IntakeResult(503, {"error": "webhook_unavailable", "setting": exc.setting})
        count = live_calls if rules.needs_live_calls else None
        exists, live = await asyncio.gather(self._exists(call, call_exists), self._live(call, count))
        _step("durable_checks")
        if exists:
            log.info("call %s duplicate delivery (workflow already exists)", call.call_id)
            self._remember(call, "accepted")
            return self._duplicate(call, "accepted")

        # Drain mode (shared/drain.py): checked before routing, so a draining app starts no call whatever the rules say.
        drained = await self._drained_state()
        if drained is not None:
            return await self._turn_away(call, drained)

        now = self._clock()
        with telemetry.span("call.route"):
            decision = rules.decide(call.caller, call.dialed, now, live)
            telemetry.call_decided(decision.action, decision.reason, decision.profile_name)
        _step("decide")
        # An accept is logged once, when it is done ("accepted, workflow started"); refusals are logged here.
        log.log(logging.DEBUG if decision.action == "accept" else logging.INFO,
                "call %s from %s to %s: %s (%s) profile=%s", call.call_id, mask(call.caller), mask(call.dialed),
                 decision.action, decision.reason, decision.profile_name)

        if decision.action == "reject":
            return await self._reject(call, decision, decision.status_code)
        if decision.action == "refer":
            return await self._refer(call, decision)
        if self._admission is not None and not self._admission.try_admit(call.call_id):
            # Full: refuse now, cleanly, rather than accept a call this process cannot drive (a silent caller).
            log.warning("call %s refused: this instance holds %d calls (MAX_CALLS_PER_INSTANCE=%s)",
                        call.call_id, self._admission.live, self._admission.max_calls)
            busy = Decision("reject", "instance_at_capacity", status_code=BUSY_HERE)
            return await self._reject(call, busy, BUSY_HERE)
        _step("admit")
        try:
            result = await self._accept(call, decision, now, start_call, record_unstarted)
        except BaseException:
            self._release(call)
            raise
        if result.body.get("status") != "accepted":
            self._release(call)  # no call to drive: caller gone, platform failure or failed start (hung up)
        return result

    @staticmethod
    async def _exists(call: IncomingCall, call_exists: CallExists) -> bool:
        try:
            return await call_exists(call.call_id)
        except Exception as exc:  # storage hiccup: answering the call matters more than a cross-process dedupe
            log.warning("call %s: call_exists failed (%s); continuing", call.call_id, type(exc).__name__)
            return False

    @staticmethod
    async def _live(call: IncomingCall, live_calls: LiveCalls | None) -> int | None:
        if live_calls is None:
            return None
        try:
            # Bounded: the platform wants the webhook answered within seconds while the phone rings, and a
            # slow count must cost the caller no more than this (then the call is routed without it).
            return await asyncio.wait_for(live_calls(), LIVE_COUNT_TIMEOUT_SECONDS)
        except TimeoutError:
            log.warning("call %s: live call count took over %.1f s; capacity not checked",
                        call.call_id, LIVE_COUNT_TIMEOUT_SECONDS)
            return None
        except Exception as exc:  # fail open: a capacity check must not drop every call
            log.warning("call %s: live call count failed (%s); capacity not checked",
                        call.call_id, type(exc).__name__)
            return None

    async def _drained_state(self) -> DrainState | None:
        if self._drain is None:
            return None
        state = await self._drain.state()  # cached, and fails open: see DrainSwitch
        return state if state.drained else None

    async def _turn_away(self, call: IncomingCall, state: DrainState) -> IntakeResult:
        assert self._drain is not None  # only called when draining
        d = self._drain.settings
        log.info("call %s: draining (%s): %s", call.call_id, state.source,
                 "refer" if d.refer_uri else f"reject {d.reject_status}")
        if d.refer_uri:
            decision = Decision("refer", "draining", target_uri=d.refer_uri)
            return await self._refer(call, decision, fallback_status=d.reject_status)
        return await self._reject(call, Decision("reject", "draining", status_code=d.reject_status), d.reject_status)

    async def _reject(self, call: IncomingCall, decision: Decision, status_code: int | None,
                      **extra: Any) -> IntakeResult:
        try:
            result = await self._cc.reject(call.call_id, status_code)
        except CallControlError as exc:
            return self._platform_failed(call, "reject", exc)
        if result.gone:
            return self._gone(call, "reject")
        self._remember(call, "rejected")
        return IntakeResult(200, {"status": "rejected", "reason": decision.reason, "sip_status": status_code, **extra},
                            call.call_id, "reject", call.webhook_id,
                            self._declined(call, decision, "rejected", status_code))

    async def _refer(self, call: IncomingCall, decision: Decision,
                     fallback_status: int = DEFAULT_AFTER_HOURS_STATUS) -> IntakeResult:
        # After-hours refer on a *ringing* call. The platform documents /refer for calls in progress
        # ("once the REFER is relayed"); SIP REFER is an in-dialog request, so whether the platform can
        # redirect a call that was never answered is unverified (the emulator answers 404). If the refer
        # is refused, reject with the after-hours status so the caller is not left ringing.
        assert decision.target_uri is not None
        try:
            result = await self._cc.refer(call.call_id, decision.target_uri)
        except CallControlError as exc:
            if exc.status is None or exc.status >= 500:
                return self._platform_failed(call, "refer", exc)
            log.warning("call %s: refer refused (%s); rejecting instead", call.call_id, exc.status)
        else:
            if not result.gone:
                self._remember(call, "referred")
                return IntakeResult(200, {"status": "referred", "reason": decision.reason}, call.call_id, "refer",
                                    call.webhook_id, self._declined(call, decision, "referred", None))
            log.warning("call %s: refer answered 404 on the ringing call; rejecting instead", call.call_id)
        return await self._reject(call, decision, fallback_status, refer_failed=True)

    async def _accept(self, call: IncomingCall, decision: Decision, now: datetime,
                      start_call: StartCall, record_unstarted: RecordUnstarted | None) -> IntakeResult:
        assert decision.profile is not None and decision.profile_name is not None
        try:
            built = self._accept_bodies.get(decision.profile_name)
            # The body of the profile decided on: a reload between the decision and here must not change it.
            body = built[1] if built is not None and built[0] is decision.profile else \
                self._accept_body(decision.profile_name, decision.profile)
            result = await self._cc.accept(call.call_id, body)
            _step("accept")
            if result.gone:
                return self._gone(call, "accept")
        except CallControlError as exc:
            if not exc.maybe_applied:
                return self._platform_failed(call, "accept", exc)
            # Sent, but no answer (read timeout, dropped connection): the accept may have landed, and then a caller
            # is on the line. Run the workflow as for an accepted call, so the call is driven, bounded by its
            # maximum duration and recorded; if it never landed, the sideband answers 404 and the workflow ends
            # at once. A redelivery finds the call known and does not accept again.
            log.warning("call %s: accept got no answer (%s); starting the workflow in case it landed",
                        call.call_id, exc.code or "no response")

        call_input = self._orchestration_input(call, decision.profile_name, decision.profile, now)
        try:
            await start_call(call.call_id, call_input)
            _step("start")
        except Exception:
            log.exception("call %s: accepted but the call workflow did not start; hanging up", call.call_id)
            await self._hangup_quietly(call.call_id)
            if record_unstarted is not None:
                await self._record_quietly(record_unstarted, call_input)
            # Remembered: a redelivery must not accept again a call we have just hung up.
            self._remember(call, "failed")
            return IntakeResult(500, {"error": "start_failed"}, call.call_id, "accept", call.webhook_id)
        self._remember(call, "accepted")
        log.info("call %s from %s to %s accepted, workflow started (profile=%s)", call.call_id, mask(call.caller),
                 mask(call.dialed), decision.profile_name)
        return IntakeResult(200, {"status": "accepted", "profile": decision.profile_name}, call.call_id, "accept",
                            call.webhook_id)

    def _orchestration_input(self, call: IncomingCall, name: str, profile: AgentProfile,
                             now: datetime) -> CallInput:
        # Numbers are masked here: nothing downstream (Durable history, records) ever sees a full number.
        limit = min(profile.max_duration_seconds or self._max_duration, self._max_duration)
        return {
            "call_id": call.call_id,
            "webhook_id": call.webhook_id,
            "accepted_at": now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "caller": mask(call.caller),
            "dialed": mask(call.dialed),
            "profile_name": name,
            "profile": profile.to_json(),
            "max_duration_seconds": limit,
        }

    def _declined(self, call: IncomingCall, decision: Decision, outcome: str, sip_status: int | None) -> Declined:
        return Declined(call_id=call.call_id, outcome=outcome, reason=decision.reason, sip_status=sip_status,
                        caller=mask(call.caller), dialed=mask(call.dialed), profile_name=decision.profile_name,
                        decided_at=self._clock().astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    async def _record_quietly(self, record_unstarted: RecordUnstarted, call_input: CallInput) -> None:
        # The caller heard the call connect, so it gets a record like any accepted call; without a workflow,
        # this is the only chance to publish one.
        try:
            await record_unstarted(call_input, "the call workflow could not be started; the call was hung up")
        except Exception as exc:
            log.error("call %s: the record of the unstarted call was not published either (%s)",
                      call_input["call_id"], type(exc).__name__)

    async def _hangup_quietly(self, call_id: str) -> None:
        try:
            await self._cc.hangup(call_id)
        except Exception as exc:
            log.error("call %s: hangup after failed start also failed (%s)", call_id, type(exc).__name__)

    # ----------------------------------------------------------------------------------------- outcomes

    def _platform_failed(self, call: IncomingCall, action: str, exc: CallControlError) -> IntakeResult:
        # Not remembered: the platform redelivers on 5xx and the next attempt may succeed.
        log.error("call %s: %s failed: status=%s code=%s", call.call_id, action, exc.status, exc.code)
        return IntakeResult(502, {"error": f"{action}_failed", "platform_status": exc.status}, call.call_id, action,
                            call.webhook_id)

    def _gone(self, call: IncomingCall, action: str) -> IntakeResult:
        self._remember(call, "caller_gone")
        log.info("call %s: caller gone before %s (404 call_id_not_found)", call.call_id, action)
        return IntakeResult(200, {"status": "caller_gone"}, call.call_id, action, call.webhook_id)

    def _duplicate(self, call: IncomingCall, earlier: str) -> IntakeResult:
        return IntakeResult(200, {"status": "duplicate", "outcome": earlier}, call.call_id, None, call.webhook_id)

    def _release(self, call: IncomingCall) -> None:
        if self._admission is not None:
            self._admission.release(call.call_id)

    def _remember(self, call: IncomingCall, outcome: str) -> None:
        self._calls.put(call.call_id, outcome)

    @asynccontextmanager
    async def _serialized(self, call_id: str) -> AsyncIterator[None]:
        entry = self._locks.setdefault(call_id, _CallLock())
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[call_id]
