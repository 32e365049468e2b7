"""Fixtures: the real ``call`` orchestrator and activities blueprints in a small DFApp,
run by the in-memory durable engine on a virtual clock, with fake activities."""
from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

import azure.durable_functions as df
import pytest

from call_workflow import activities, orchestrator
from localrun.durable import DurableEngine, FunctionIndex, VirtualClock

UTC = dt.UTC
T0 = dt.datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)

PROFILE = {
    "instructions": "You are Alex.",
    "voice": "marin",
    "transfer_targets": {"sales": "tel:+14155550123", "support": "sip:support@example.com"},
    "max_duration_seconds": 600,
}


def call_input(call_id: str = "rtc_1", max_duration: int = 600) -> dict:
    return {"call_id": call_id, "webhook_id": "wh_1", "accepted_at": "2026-11-25T12:00:00.000000Z",
            "caller": "+1425***1212", "dialed": "+1800***1212", "profile_name": "reception",
            "profile": copy.deepcopy(PROFILE), "max_duration_seconds": max_duration}


def summary_for(call: dict, outcome: str = "completed", text: str = "Goodbye!", **facts: bool) -> dict:
    """A converse summary. ``facts``: what the platform confirmed about the end of the call (hangup_confirmed,
    call_gone, refer_accepted; False unless given)."""
    return {"call_id": call["call_id"], "outcome": outcome, "reason": None,
            "started_at": call["accepted_at"], "ended_at": "2026-11-25T12:01:00.000000Z",
            "duration_seconds": 60.0,
            "transcript": [{"role": "caller", "text": "Hi", "at": "2026-11-25T12:00:05Z"},
                           {"role": "agent", "text": text, "at": "2026-11-25T12:00:59Z"}],
            "tools": [], "digits": "", "usage": {"input_tokens": 1, "output_tokens": 1, "total_tokens": 2},
            "transfer_target": None,
            "hangup_confirmed": facts.get("hangup_confirmed", False), "call_gone": facts.get("call_gone", False),
            "refer_accepted": facts.get("refer_accepted", False)}


_APP = None


def call_app() -> df.DFApp:
    """One DFApp per test session: ``get_functions()`` may run only once per app."""
    global _APP
    if _APP is None:
        app = df.DFApp()
        app.register_functions(orchestrator.bp)
        app.register_functions(activities.bp)
        _APP = app
    return _APP


class FakeTelephony:
    """Fake activities recording their calls. ``converse`` blocks until the test (or a
    hangup/refer) ends the call, or fails on demand."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.calls: list[tuple[str, Any, dt.datetime]] = []
        self.ended: dict[str, asyncio.Event] = {}
        self.converse_failures: int = 0      # fail this many converse attempts first
        self.converse_duration: float | None = None  # end by itself after N virtual seconds
        self.hangup_gone = False
        self.hangup_failures = 0
        self.publish_failures = 0             # fail this many publish attempts first
        self.end_on_control = True           # hangup/refer make converse return
        # How converse's own ending went when it ends by itself (converse_duration): by default its /hangup was
        # confirmed. Calls ended by the orchestrator's hangup/refer only see the socket close (no facts).
        self.summary_facts: dict[str, bool] = {"hangup_confirmed": True}
        self.summary_outcome = "completed"

    def _event(self, call_id: str) -> asyncio.Event:
        return self.ended.setdefault(call_id, asyncio.Event())

    def names(self) -> list[str]:
        return [name for name, _, _ in self.calls]

    def inputs(self, name: str) -> list[Any]:
        return [payload for n, payload, _ in self.calls if n == name]

    def times(self, name: str) -> list[dt.datetime]:
        return [when for n, _, when in self.calls if n == name]

    async def converse(self, call: dict) -> dict:
        self.calls.append(("converse", call, self.clock.now()))
        if self.converse_failures > 0:
            self.converse_failures -= 1
            raise ConnectionError("sideband websocket dropped")
        ended = self._event(call["call_id"])
        if self.converse_duration is not None:
            sleeper = asyncio.ensure_future(
                self.clock.sleep_until(self.clock.now() + dt.timedelta(seconds=self.converse_duration)))
            waiter = asyncio.ensure_future(ended.wait())
            done, pending = await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
            for p in pending:
                p.cancel()
            if sleeper in done:  # ended by itself
                return summary_for(call, self.summary_outcome, **self.summary_facts)
        else:
            await ended.wait()
        return summary_for(call)

    async def hangup_call(self, payload: dict) -> dict:
        self.calls.append(("hangup_call", payload, self.clock.now()))
        if self.hangup_failures > 0:
            self.hangup_failures -= 1
            raise RuntimeError("call control 503")
        if self.end_on_control:
            self._event(payload["call_id"]).set()
        return {"call_id": payload["call_id"], "gone": self.hangup_gone}

    async def refer_call(self, payload: dict) -> dict:
        self.calls.append(("refer_call", payload, self.clock.now()))
        if self.end_on_control:
            self._event(payload["call_id"]).set()
        return {"call_id": payload["call_id"], "gone": False}

    async def publish_call_record(self, payload: dict) -> dict:
        self.calls.append(("publish_call_record", payload, self.clock.now()))
        if self.publish_failures > 0:
            self.publish_failures -= 1
            raise RuntimeError("queue 403: AuthorizationPermissionMismatch")
        return {"record_id": payload["call"]["call_id"]}

    def overrides(self) -> dict:
        return {"converse": self.converse, "hangup_call": self.hangup_call,
                "refer_call": self.refer_call, "publish_call_record": self.publish_call_record}


@pytest.fixture
def clock():
    c = VirtualClock(T0)
    yield c
    c.close()


@pytest.fixture
def fake(clock):
    return FakeTelephony(clock)


@pytest.fixture
async def engine(clock, fake):
    eng = DurableEngine(FunctionIndex.from_app(call_app()), clock=clock,
                        activity_overrides=fake.overrides())
    yield eng
    await eng.aclose()
