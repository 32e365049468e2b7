"""One driver per call (issue 9): the call lease against real Azurite, the engine against the real emulator.

Each `converse` attempt gets its own lease store on its own table client (two workers), and its own auth, which
adds an `x-attempt` header to its sideband upgrade: the emulator's session then tells which attempt sent each
client event and opened each sideband.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest_asyncio

from call_workflow import agent_tools
from shared.auth import ApiKeyAuth
from shared.conversation import converse
from shared.lease import ENDED, ROW_KEY, CallLeases, GaveUp, Lease, LeaseTiming
from shared.tools import registry as global_registry
from shared.transcript import greeting_instructions
from shared.turns import TurnStore

from .helpers import FAST, KEY, PROFILE, Harness, profile, scenario

# Fast enough for a test, long enough for a loaded 2-core machine and a shared Azurite: a holder renews every
# 0.5 s and keeps the call through 2.5 s without a renewal (an event-loop stall, slow storage).
TIMING = LeaseTiming(ttl_seconds=3.0, renew_seconds=0.5, poll_seconds=0.2, margin_seconds=0.5)
# Where no takeover is expected, a TTL no stall of a loaded machine comes near.
STEADY = LeaseTiming(ttl_seconds=10.0, renew_seconds=1.0, poll_seconds=0.2, margin_seconds=1.0)
GREETING = greeting_instructions(PROFILE["greeting"])


class AttemptAuth(ApiKeyAuth):
    def __init__(self, name: str) -> None:
        super().__init__(KEY)
        self.name = name

    async def headers(self) -> dict[str, str]:
        return {**await super().headers(), "x-attempt": self.name}


class Seen:
    """What the emulator's session of one call received, attributed to attempts by their `x-attempt` header."""

    def __init__(self, h: Harness, call_id: str) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.attached: list[tuple[float, str]] = []
        session = h.emu.calls[call_id].session
        handle, attach = session.handle, session.attach

        async def spy_handle(sb: Any, raw: str) -> None:
            self.events.append((time.time(), sb.request.headers.get("x-attempt", "?"), json.loads(raw)))
            await handle(sb, raw)

        async def spy_attach(ws: Any, request: Any) -> Any:
            self.attached.append((time.time(), request.headers.get("x-attempt", "?")))
            return await attach(ws, request)

        session.handle, session.attach = spy_handle, spy_attach

    def senders(self) -> set[str]:
        return {who for _, who, _ in self.events}

    def of(self, who: str, etype: str | None = None) -> list[tuple[float, dict[str, Any]]]:
        return [(t, e) for t, w, e in self.events if w == who and (etype is None or e["type"] == etype)]

    def attach_time(self, who: str) -> float:
        return next(t for t, w in self.attached if w == who)


@pytest_asyncio.fixture
async def worker_leases(storage_connection_string: str, unique_name: str
                        ) -> AsyncIterator[Callable[[], CallLeases]]:
    """A lease store per simulated worker, each on its own table client, all on the test's turns table."""
    stores: list[TurnStore] = []

    def make(timing: LeaseTiming = TIMING) -> CallLeases:
        store = TurnStore.from_connection_string(storage_connection_string, unique_name)
        stores.append(store)
        return CallLeases(store.table, timing)

    yield make
    for store in stores:
        await store.aclose()


def attempt(h: Harness, call: dict[str, Any], name: str, leases: CallLeases) -> asyncio.Task:
    return asyncio.create_task(converse(
        call, endpoint=h.emu.http_url, auth=AttemptAuth(name), call_control=h.control, tools=h.registry,
        turns=h.turns, options=FAST, leases=leases), name=f"attempt-{name}")


async def until(predicate: Callable[[], Awaitable[bool] | bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while True:
        got = predicate()
        if isinstance(got, Awaitable):
            got = await got
        if got:
            return
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_two_attempts_at_once_only_one_drives_and_both_return_the_holders_summary(
    emulator_factory, turn_store: TurnStore, worker_leases
) -> None:
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu, turns=turn_store)
    try:
        sc = scenario([{"say": "question one"}, {"wait": 0.5}, {"say": "question two"}],
                      rules=[{"match": "one", "say": "Reply one."}, {"match": "two", "say": "Reply two."}])
        call = await h.start_call(sc)
        cid = call["call_id"]
        seen = Seen(h, cid)
        a, b = attempt(h, call, "a", worker_leases(STEADY)), attempt(h, call, "b", worker_leases(STEADY))
        first, second = await asyncio.wait_for(asyncio.gather(a, b), 60)
    finally:
        await h.aclose()
    # Exactly one attempt opened a sideband and sent client events; the greeting went out once.
    assert len(seen.senders()) == 1 and len(seen.attached) == 1, (seen.senders(), seen.attached)
    [driver] = seen.senders()
    assert [w for _, w in seen.attached] == [driver]
    assert h.instructions(cid).count(GREETING) == 1
    assert len(h.client_events(cid)) == len(seen.of(driver)) > 0
    # The attempt that waited returned when the call ended, with the driver's summary: the orchestrator gets the
    # same answer whichever result reaches it first.
    texts = [PROFILE["greeting"], "question one", "Reply one.", "question two", "Reply two."]
    for summary in (first, second):
        assert summary["outcome"] == "caller_hung_up"
        assert [t["text"] for t in summary["transcript"]] == texts
    assert first["ended_at"] == second["ended_at"]
    # The lease row sits in the call's partition of the turns table; loading the turns skips it.
    assert [r["seq"] for r in await turn_store.load(cid)] == [0, 1, 2, 3, 4]
    row = await turn_store.table.get_entity(cid, ROW_KEY)
    assert row["state"] == ENDED


async def test_a_killed_holder_is_replaced_within_the_ttl_without_a_second_greeting_or_lost_turns(
    emulator_factory, turn_store: TurnStore, worker_leases
) -> None:
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu, registry=global_registry, turns=turn_store)
    try:
        sc = scenario(
            [{"say": "question one"}, {"wait": 8.0}, {"say": "Where is order 1234?"}, {"wait": 1.0}],
            rules=[{"match": "one", "say": "Reply one."},
                   {"match": r"order (?P<id>\d+)", "regex": True,
                    "call": {"name": "lookup_order", "arguments": {"order_id": "{id}"}}}],
            after_function={"lookup_order": "Your order is {status}."},
        )
        call = await h.start_call(sc, profile(tools=["lookup_order"]))
        cid = call["call_id"]
        seen = Seen(h, cid)
        leases_a = worker_leases()
        a = attempt(h, call, "a", leases_a)
        await until(lambda: seen.attached, 10, "attempt a to open its sideband")
        b = attempt(h, call, "b", worker_leases())
        await until(lambda: _rows(turn_store, cid, 3), 10, "the first exchange to be stored")

        # The worker running `a` dies: its storage calls go nowhere (no release, no renewal) and its task ends.
        async def dead(*args: Any, **kwargs: Any) -> str:
            raise ConnectionError("worker is gone")

        leases_a.write = dead  # type: ignore[method-assign]
        killed_at = time.time()
        a.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await a
        summary = await asyncio.wait_for(b, 60)
    finally:
        await h.aclose()
    took_over_after = seen.attach_time("b") - killed_at
    # b kept off the call while a lived, and took it within the TTL (+2 s) of a's death.
    assert 0 < took_over_after <= TIMING.ttl_seconds + 2.0, took_over_after
    # b drove the rest of the call (it answered the tool) and did not greet again; a never came back. On a loaded
    # machine one of b's renewals can outlast its 0.5 s request limit: b then stops sending, takes the lease again
    # and re-attaches, which is the lease working, so b may attach more than once.
    attached = [w for _, w in seen.attached]
    assert attached[0] == "a" and set(attached[1:]) == {"b"}, attached
    assert not seen.of("b", "response.create") or all(
        (e.get("response") or {}).get("instructions") != GREETING for _, e in seen.of("b", "response.create"))
    assert h.instructions(cid).count(GREETING) == 1
    expected = await agent_tools.lookup_order("1234")
    outputs = [e["item"] for _, e in seen.of("b", "conversation.item.create")
               if e["item"]["type"] == "function_call_output"]
    assert [json.loads(o["output"]) for o in outputs] == [expected]
    assert all(t < seen.attach_time("b") for t, _ in seen.of("a"))
    # No finalised turn lost: a's turns and b's, numbered on from where a stopped.
    texts = [PROFILE["greeting"], "question one", "Reply one.", "Where is order 1234?",
             f"Your order is {expected['status']}."]
    rows = await turn_store.load(cid)
    assert [r["text"] for r in rows] == texts and [r["seq"] for r in rows] == list(range(len(texts)))
    assert [t["text"] for t in summary["transcript"]] == texts


async def test_a_holder_whose_renewals_fail_stops_sending_and_the_other_takes_over(
    emulator_factory, turn_store: TurnStore, worker_leases
) -> None:
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu, registry=global_registry, turns=turn_store)
    try:
        sc = scenario(
            [{"say": "question one"}, {"wait": 8.0}, {"say": "Where is order 1234?"}, {"wait": 1.0}],
            rules=[{"match": "one", "say": "Reply one."},
                   {"match": r"order (?P<id>\d+)", "regex": True,
                    "call": {"name": "lookup_order", "arguments": {"order_id": "{id}"}}}],
            after_function={"lookup_order": "Your order is {status}."},
        )
        call = await h.start_call(sc, profile(tools=["lookup_order"]))
        cid = call["call_id"]
        seen = Seen(h, cid)
        leases_a = worker_leases()
        a = attempt(h, call, "a", leases_a)
        await until(lambda: seen.attached, 10, "attempt a to open its sideband")
        b = attempt(h, call, "b", worker_leases())
        await until(lambda: _rows(turn_store, cid, 3), 10, "the first exchange to be stored")

        # a stays alive, but from now on every lease write it makes fails (its storage path is broken).
        real_write = leases_a.write
        failing_since = time.time()

        async def failing(*args: Any, **kwargs: Any) -> str:
            raise ConnectionError("storage unreachable from this worker")

        leases_a.write = failing  # type: ignore[method-assign]
        await until(lambda: len(seen.attached) == 2, TIMING.ttl_seconds + 5, "attempt b to take over")
        leases_a.write = real_write  # type: ignore[method-assign]  # a's storage heals: it must not come back
        summary_a, summary_b = await asyncio.wait_for(asyncio.gather(a, b), 60)
    finally:
        await h.aclose()
    # a sent nothing once its lease could no longer be renewed; it stopped before b could take over.
    a_times = [t for t, _ in seen.of("a")]
    assert a_times and max(a_times) < failing_since + TIMING.ttl_seconds
    assert max(a_times) < seen.attach_time("b")
    assert [w for _, w in seen.attached] == ["a", "b"]  # a never reopened a sideband
    # b answered the tool call; a did not.
    assert not [e for _, e in seen.of("a", "conversation.item.create") if e["item"]["type"] == "function_call_output"]
    assert len([e for _, e in seen.of("b", "conversation.item.create")
                if e["item"]["type"] == "function_call_output"]) == 1
    assert h.instructions(cid).count(GREETING) == 1
    # a waited as a standby and returned b's summary once b ended the call.
    assert summary_a["outcome"] == summary_b["outcome"] == "caller_hung_up"
    assert [t["text"] for t in summary_a["transcript"]] == [t["text"] for t in summary_b["transcript"]]
    assert summary_b["tools"] and summary_a["tools"] == summary_b["tools"]


async def test_a_cancelled_holder_hands_the_call_over_at_once(
    emulator_factory, turn_store: TurnStore, storage_connection_string: str, unique_name: str
) -> None:
    # A long TTL: only the release on cancellation can make the takeover this quick.
    slow = LeaseTiming(ttl_seconds=30, renew_seconds=5, poll_seconds=0.1, margin_seconds=2)
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu, turns=turn_store)
    stores = [TurnStore.from_connection_string(storage_connection_string, unique_name) for _ in range(2)]
    try:
        # The caller stays on long enough for the first exchange to ride on a's next renewal (every 5 s) and for b
        # to take over before the caller hangs up.
        sc = scenario([{"say": "question one"}, {"wait": 9.0}],
                      rules=[{"match": "one", "say": "Reply one."}])
        call = await h.start_call(sc)
        seen = Seen(h, call["call_id"])
        a = attempt(h, call, "a", CallLeases(stores[0].table, slow))
        await until(lambda: seen.attached, 10, "attempt a to open its sideband")
        b = attempt(h, call, "b", CallLeases(stores[1].table, slow))
        await until(lambda: _rows(turn_store, call["call_id"], 3), 10, "the first exchange to be stored")
        cancelled_at = time.time()
        a.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await a
        summary = await asyncio.wait_for(b, 60)
    finally:
        await h.aclose()
        for store in stores:
            await store.aclose()
    assert 0 < seen.attach_time("b") - cancelled_at < 5
    assert h.instructions(call["call_id"]).count(GREETING) == 1
    assert summary["outcome"] == "caller_hung_up"


async def test_a_waiting_attempt_stops_waiting_after_the_calls_time_limit(
    turn_store: TurnStore, worker_leases
) -> None:
    holder = await worker_leases().acquire("rtc_stuck")
    try:
        holder.start(lambda: None)  # alive and renewing, but never ending the call
        call = {"call_id": "rtc_stuck", "accepted_at": "2026-01-01T00:00:00.000000Z", "max_duration_seconds": 10,
                "profile": PROFILE}
        # The call's limit passed long ago: the standby looks once, sees a live holder and gives up at once.
        summary = await asyncio.wait_for(converse(
            call, endpoint="http://127.0.0.1:9", auth=ApiKeyAuth(KEY), call_control=None, tools=None,
            turns=turn_store, options=FAST, leases=worker_leases()), 10)
    finally:
        await holder.stop()
    assert summary["outcome"] == "failed" and holder.attempt in summary["reason"]
    assert holder.valid()


def test_lease_timing_refuses_a_renewal_slower_than_the_ttl() -> None:
    import pytest

    with pytest.raises(ValueError, match="renew_seconds"):
        LeaseTiming(ttl_seconds=5, renew_seconds=4, margin_seconds=2)


async def _rows(store: TurnStore, call_id: str, n: int) -> bool:
    return len(await store.load(call_id)) >= n


async def test_a_holder_whose_process_is_gone_is_replaced_at_once_and_a_live_one_is_not(
    storage_connection_string: str, unique_name: str
) -> None:
    """The shortcut after a crash on the same machine (a restarted worker or runner): the row names a process the
    kernel no longer has, so the waiter need not wait out the TTL. A live process keeps the call."""
    import sys

    from azure.data.tables import UpdateMode

    slow = LeaseTiming(ttl_seconds=30, renew_seconds=5, poll_seconds=0.1, margin_seconds=2)
    store = TurnStore.from_connection_string(storage_connection_string, unique_name)
    try:
        leases = CallLeases(store.table, slow)
        child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
        await child.wait()
        holders = {}
        for call_id, pid in (("rtc_dead", child.pid), ("rtc_alive", os.getppid())):
            holders[call_id] = await leases.acquire(call_id)
            row = await store.table.get_entity(call_id, ROW_KEY)
            await store.table.update_entity({**row, "pid": pid}, mode=UpdateMode.REPLACE)  # the holder's process

        loop = asyncio.get_running_loop()
        started = loop.time()
        taken = await leases.acquire("rtc_dead", give_up_at=loop.time() + 5)
        assert isinstance(taken, Lease) and taken.previous == holders["rtc_dead"].attempt
        assert loop.time() - started < 2
        still = await leases.acquire("rtc_alive", give_up_at=loop.time() + 1)
        assert isinstance(still, GaveUp) and still.holder == holders["rtc_alive"].attempt
    finally:
        await store.aclose()


async def test_ending_after_a_renewal_was_cut_off_still_marks_the_call_ended(
    turn_store: TurnStore, worker_leases
) -> None:
    """Stopping the renewals may cut off a write that landed anyway: the holder's ETag is then stale, but the row is
    still its own, so ``end`` still marks the call ended (a waiter must not take over a finished call)."""
    leases = worker_leases()
    lease = await leases.acquire("rtc_cut")
    # A renewal the service applied but whose answer never came back.
    row = await turn_store.table.get_entity("rtc_cut", ROW_KEY)
    await leases.write("rtc_cut", {**row, "renewals": 1}, row.metadata["etag"], 5)
    assert await lease.end({"call_id": "rtc_cut", "outcome": "completed", "transcript": [{"text": "x"}]})
    stored = await turn_store.table.get_entity("rtc_cut", ROW_KEY)
    assert stored["state"] == ENDED and json.loads(stored["summary"]) == {"call_id": "rtc_cut", "outcome": "completed"}
    # Someone else's row is never overwritten: a lease that was taken over cannot end the call.
    other = await worker_leases().acquire("rtc_taken")
    row = await turn_store.table.get_entity("rtc_taken", ROW_KEY)
    await leases.write("rtc_taken", {**row, "owner": "someone-else"}, row.metadata["etag"], 5)
    assert not await other.end({"call_id": "rtc_taken", "outcome": "completed"})
    assert (await turn_store.table.get_entity("rtc_taken", ROW_KEY))["owner"] == "someone-else"


async def test_a_holder_whose_storage_heals_before_anyone_takes_over_rejoins_without_greeting(
    emulator_factory, turn_store: TurnStore, worker_leases
) -> None:
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu, registry=global_registry, turns=turn_store)
    try:
        sc = scenario(
            [{"say": "Where is order 1234?"}, {"wait": 6.0}, {"say": "And order 5678?"}, {"wait": 1.0}],
            rules=[{"match": r"order (?P<id>\d+)", "regex": True,
                    "call": {"name": "lookup_order", "arguments": {"order_id": "{id}"}}}],
            after_function={"lookup_order": "Your order is {status}."},
        )
        call = await h.start_call(sc, profile(tools=["lookup_order"]))
        cid = call["call_id"]
        seen = Seen(h, cid)
        leases = worker_leases()
        a = attempt(h, call, "a", leases)
        await until(lambda: len(h.function_outputs(cid)) == 1, 10, "the first tool answer")
        real_write = leases.write

        async def failing(*args: Any, **kwargs: Any) -> str:
            raise ConnectionError("storage unreachable for a moment")

        leases.write = failing  # type: ignore[method-assign]
        # Its renewals fail, so within the TTL it lets go: it closes its sideband and waits.
        await until(lambda: emu.calls[cid].session.sidebands == [], TIMING.ttl_seconds + 5, "a to let go of the call")
        leases.write = real_write  # type: ignore[method-assign]
        summary = await asyncio.wait_for(a, 60)
    finally:
        await h.aclose()
    # a let go, took its own row back and rejoined on a second sideband; it did not greet again, and answered the
    # second question there.
    assert [w for _, w in seen.attached] == ["a", "a"]
    assert h.instructions(cid).count(GREETING) == 1
    assert len(h.function_outputs(cid)) == 2
    assert [t["name"] for t in summary["tools"]] == ["lookup_order", "lookup_order"]  # the first engine's log kept
    rows = await turn_store.load(cid)
    assert [r["seq"] for r in rows] == list(range(len(rows)))
    assert [t["text"] for t in summary["transcript"]] == [r["text"] for r in rows]
    assert summary["outcome"] == "caller_hung_up"


async def test_the_first_attempt_greets_without_reading_stored_turns_and_a_retry_still_gets_them(
    emulator_factory, turn_store: TurnStore, worker_leases
) -> None:
    """The first attempt of a call creates its lease row, so it knows nothing can be stored yet and greets without
    querying the turns table (one storage request less per call set-up). An attempt that comes after it finds the
    row and reads the turns: it does not greet again, and its summary has the first attempt's transcript."""
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu, turns=turn_store)
    loads: list[str] = []
    real_load = turn_store.load

    async def counted_load(call_id: str) -> list[dict[str, Any]]:
        loads.append(call_id)
        return await real_load(call_id)

    turn_store.load = counted_load  # type: ignore[method-assign]
    try:
        sc = scenario([{"say": "question one"}], rules=[{"match": "one", "say": "Reply one."}])
        call = await h.start_call(sc)
        cid = call["call_id"]
        first = await asyncio.wait_for(attempt(h, call, "a", worker_leases(STEADY)), 30)
        loads_by_first = list(loads)
        retry = await asyncio.wait_for(attempt(h, call, "b", worker_leases(STEADY)), 30)
    finally:
        await h.aclose()
    texts = [PROFILE["greeting"], "question one", "Reply one."]
    assert [t["text"] for t in first["transcript"]] == texts
    assert loads_by_first == []
    assert h.instructions(cid).count(GREETING) == 1
    assert loads == [cid]  # the retry read the table
    assert [t["text"] for t in retry["transcript"]] == texts
    assert retry["outcome"] == first["outcome"]
