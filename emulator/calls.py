"""Call state machine.

    ringing -> accepted | rejected | expired      (expired: ring timeout or caller gave up while ringing)
    accepted -> ended                              (caller BYE, /hangup, REFER, session limit, script hang-up)

accept/reject only work on a ringing call; refer/hangup only on an accepted one. Anything else is answered
`404 call_id_not_found` by the REST layer, like production (docs/platform.md §2.3).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .scenario import Scenario
from .util import mask_number, now

if TYPE_CHECKING:
    from .model import RealtimeSession

log = logging.getLogger("emulator.calls")

RINGING, ACCEPTED, REJECTED, EXPIRED, ENDED = "ringing", "accepted", "rejected", "expired", "ended"
FINAL_STATES = {REJECTED, EXPIRED, ENDED}
TRANSITIONS = {
    RINGING: {ACCEPTED, REJECTED, EXPIRED},
    ACCEPTED: {ENDED},
}


class CallLeg(Protocol):
    """The caller's side of the call (the SIP front door implements it; control-API calls have none)."""

    async def on_accepted(self) -> None: ...
    async def on_rejected(self, status_code: int) -> None: ...
    async def on_expired(self, reason: str) -> None: ...
    async def on_refer(self, target_uri: str) -> None: ...
    async def on_platform_hangup(self, reason: str) -> None: ...


class StateError(Exception):
    pass


@dataclass
class Call:
    call_id: str
    scenario: Scenario
    caller: str
    dialed: str
    sip_headers: list[dict[str, str]]
    source: str = "control"  # "control" | "sip"
    state: str = RINGING
    ended_reason: str | None = None
    reject_status: int | None = None
    accept_body: dict[str, Any] | None = None
    refer_target: str | None = None
    created_at: float = field(default_factory=now)
    # (unix time, event dict) of every client event received on any sideband.
    client_events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    # (unix time, event dict) of every server event sent (fan-out counted once).
    server_events: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    webhook_attempts: list[dict[str, Any]] = field(default_factory=list)
    webhook_id: str | None = None
    webhook_body: bytes | None = None
    timestamps: dict[str, float] = field(default_factory=dict)
    state_history: list[tuple[float, str]] = field(default_factory=list)
    leg: CallLeg | None = None
    session: RealtimeSession | None = None
    accept_fault_count: int = 0
    hangup_fault_count: int = 0
    # (unix time, HTTP status answered) of every /hangup request for this call.
    hangup_requests: list[tuple[float, int]] = field(default_factory=list)
    tasks: set[asyncio.Task] = field(default_factory=set)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.state_history.append((self.created_at, self.state))
        self.timestamps.setdefault("created", self.created_at)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES

    def mark(self, name: str, first_only: bool = True) -> None:
        """Record a benchmark timestamp (unix seconds)."""
        if first_only and name in self.timestamps:
            return
        self.timestamps[name] = now()

    def transition(self, new: str, reason: str | None = None) -> None:
        if new not in TRANSITIONS.get(self.state, set()):
            raise StateError(f"{self.call_id}: cannot go from {self.state} to {new}")
        self.state = new
        t = now()
        self.state_history.append((t, new))
        self.timestamps[new] = t
        if reason:
            self.ended_reason = reason
        log.info("call %s %s%s", self.call_id, new, f" reason={reason}" if reason else "")
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for_state(self, states: set[str], timeout: float) -> str:  # noqa: ASYNC109 (tests' API)
        async def _wait() -> str:
            while self.state not in states:
                await self._changed.wait()
            return self.state

        return await asyncio.wait_for(_wait(), timeout)

    def spawn(self, coro: Any, name: str = "") -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"{self.call_id}:{name}")
        self.tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self.tasks.discard(task)
        # Nobody awaits these tasks: without this, a crash in one (e.g. a scripted response) would be silent.
        if not task.cancelled() and task.exception() is not None:
            log.error("call %s task %s failed", self.call_id, task.get_name(), exc_info=task.exception())

    def to_json(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "state": self.state,
            "ended_reason": self.ended_reason,
            "reject_status": self.reject_status,
            "source": self.source,
            "scenario": self.scenario.name,
            "caller": mask_number(self.caller),
            "dialed": mask_number(self.dialed),
            "accept_body": self.accept_body,
            "refer_target": self.refer_target,
            "hangup_requests": [{"t": t, "status": s} for t, s in self.hangup_requests],
            "client_events": [{"t": t, "event": e} for t, e in self.client_events],
            "server_events": [{"t": t, "event": e} for t, e in self.server_events],
            "webhook_attempts": list(self.webhook_attempts),
            "timestamps": dict(self.timestamps),
            "states": [{"t": t, "state": s} for t, s in self.state_history],
            "sidebands": len(self.session.sidebands) if self.session else 0,
        }
