"""The lease row carries a call's newest turns (shared/turns.py, shared/lease.py), against real Azurite.

A live call's lease is renewed every few seconds anyway; its newest transcript turns ride on those writes, so a call
costs one storage write per renewal instead of a renewal plus a turn write every few seconds (docs/performance.md).
What must still hold: the first turn is stored at once, nothing is lost when the tail becomes a turn row, when
another attempt takes the call over, or when a turn write fails, and a fault in the tail never costs the lease.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest_asyncio

from shared.conversation import converse
from shared.lease import ROW_KEY, CallLeases, Lease, LeaseTiming
from shared.turns import MAX_CHUNK_CHARS, SPILL_TURNS, TAIL, TAIL_FIRST, CarriedTurns, TurnStore, tail_fields

from .helpers import FAST, PROFILE, Harness, scenario

# Renewals every 0.5 s (each request may take as long): a test sees a turn carried within a second or two on a
# loaded machine; the TTL is far from any stall.
QUICK = LeaseTiming(ttl_seconds=10.0, renew_seconds=0.5, poll_seconds=0.1, margin_seconds=1.0)
# Renewals every 30 s: only the first turn's own request for a renewal can store it within the test.
SLOW = LeaseTiming(ttl_seconds=60.0, renew_seconds=30.0, poll_seconds=0.1, margin_seconds=5.0)


def _turn(i: int, text: str | None = None) -> dict[str, Any]:
    return {"role": "caller" if i % 2 else "agent", "text": text or f"turn {i}",
            "at": f"2026-11-30T12:00:{i % 60:02d}Z"}


class Counted:
    """The turn store's table requests, by method, through azure-core's request hook."""

    def __init__(self) -> None:
        self.requests: list[str] = []

    def __call__(self, request: Any) -> None:
        self.requests.append(f"{request.http_request.method} {request.http_request.url.split('?')[0]}")

    def turn_row_puts(self) -> list[str]:
        return [r for r in self.requests if r.startswith("PUT") and f"RowKey='{ROW_KEY}'" not in r]

    def puts(self, row: str) -> int:
        return sum(1 for r in self.requests if r.startswith("PUT") and f"RowKey='{row}'" in r)


@pytest_asyncio.fixture
async def counted(storage_connection_string: str, unique_name: str) -> AsyncIterator[tuple[TurnStore, Counted]]:
    hook = Counted()
    store = TurnStore.from_connection_string(storage_connection_string, unique_name, raw_request_hook=hook)
    yield store, hook
    await store.aclose()


async def _held(store: TurnStore, call_id: str, timing: LeaseTiming = QUICK) -> Lease:
    lease = await CallLeases(store.table, timing).acquire(call_id)
    assert isinstance(lease, Lease)
    return lease


def _carried_by(lease: Lease, writer: CarriedTurns) -> None:
    lease.carry(writer.carried)
    lease.start(lambda: None)


async def _carrying(store: TurnStore, call_id: str, timing: LeaseTiming = QUICK, **writer_options: Any
                    ) -> tuple[Lease, CarriedTurns]:
    """A held, renewing lease whose writes carry a fresh writer's turns, as converse sets them up."""
    lease = await _held(store, call_id, timing)
    writer = CarriedTurns(store, call_id, lease, **writer_options)
    _carried_by(lease, writer)
    return lease, writer


async def _until(predicate: Callable[[], Any], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await predicate():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.05)


async def _texts(store: TurnStore, call_id: str) -> list[str]:
    return [t["text"] for t in await store.load(call_id)]


async def test_the_first_turn_is_stored_at_once_though_the_next_renewal_is_far_off(counted) -> None:
    # A retried converse must know the caller was greeted: the greeting's turn cannot wait for the next renewal.
    store, hook = counted
    lease, writer = await _carrying(store, "rtc_first", SLOW)
    try:
        writer.put(0, _turn(0))
        await _until(lambda: _has(store, "rtc_first", 1), timeout=5)  # the regular renewal is 30 s away
        writer.put(1, _turn(1))  # later turns wait for the next renewal
        await asyncio.sleep(0.5)
        assert await _texts(store, "rtc_first") == ["turn 0"]
        assert hook.puts(ROW_KEY) == 1 and writer.requests == 0
    finally:
        await lease.stop()


async def test_later_turns_ride_on_the_renewals_and_the_ending_write_of_the_lease_row(counted) -> None:
    store, hook = counted
    lease, writer = await _carrying(store, "rtc_carry")
    try:
        for i in range(6):
            writer.put(i, _turn(i))
        await _until(lambda: _has(store, "rtc_carry", 6))
        assert await _texts(store, "rtc_carry") == [f"turn {i}" for i in range(6)]
        # No turn row was written: the six turns are in the lease row, whose writes were renewals anyway.
        assert writer.requests == 0
        assert hook.turn_row_puts() == []
        row = await store.table.get_entity("rtc_carry", ROW_KEY)
        assert row[TAIL_FIRST] == 0 and [t[1] for t in json.loads(row[TAIL])] == [f"turn {i}" for i in range(6)]
        # The end of the call: the flush writes nothing while the lease is held; the ending write carries the tail.
        writer.put(6, _turn(6))
        await writer.flush(timeout=10)
        assert writer.requests == 0
        assert await lease.end({"outcome": "completed"})
        row = await store.table.get_entity("rtc_carry", ROW_KEY)
        assert row["state"] == "ended" and len(json.loads(row[TAIL])) == 7
        assert await _texts(store, "rtc_carry") == [f"turn {i}" for i in range(7)]
        assert hook.turn_row_puts() == []
    finally:
        await lease.stop()


async def _has(store: TurnStore, call_id: str, n: int) -> bool:
    return len(await store.load(call_id)) >= n


async def test_a_holder_that_lost_its_lease_stores_its_tail_as_a_turn_row_at_flush(counted) -> None:
    # It can no longer write the lease row, so the turns only it has must go to a row of their own.
    store, hook = counted
    lease, writer = await _carrying(store, "rtc_lost")
    try:
        writer.put(0, _turn(0))
        await _until(lambda: _has(store, "rtc_lost", 1))
        await lease.stop()
        for i in range(1, 4):
            writer.put(i, _turn(i))
        lease.lost = True  # what the renewal loop sets when a renewal gets 412 or none lands within the TTL
        await writer.flush(timeout=10)
        assert writer.requests == 1
        assert await _texts(store, "rtc_lost") == [f"turn {i}" for i in range(4)]
        assert hook.puts("000000") == 1
    finally:
        await lease.stop()


async def test_a_tail_past_its_limit_becomes_a_turn_row_and_no_turn_is_lost_or_doubled(counted) -> None:
    store, _ = counted
    lease, writer = await _carrying(store, "rtc_spill")
    n = SPILL_TURNS * 2 + 7
    try:
        for i in range(n):
            writer.put(i, _turn(i))
            await asyncio.sleep(0)  # let a spill start and interleave with the puts
        await _until(lambda: _has(store, "rtc_spill", n))
        assert 1 <= writer.requests <= 3  # turn rows only for the spills, not per turn
        # Every turn once, in order, whether it sits in a turn row, in the lease row's tail, or (for a moment) both.
        assert await _texts(store, "rtc_spill") == [f"turn {i}" for i in range(n)]
        row = await store.table.get_entity("rtc_spill", ROW_KEY)
        assert len(json.loads(row.get(TAIL) or "[]")) < SPILL_TURNS
    finally:
        await lease.stop()


async def test_a_takeover_keeps_the_turns_the_old_holders_row_carried(
    storage_connection_string: str, unique_name: str
) -> None:
    stores = [TurnStore.from_connection_string(storage_connection_string, unique_name) for _ in range(2)]
    try:
        short = LeaseTiming(ttl_seconds=1.5, renew_seconds=0.3, poll_seconds=0.1, margin_seconds=0.3)
        a = await _held(stores[0], "rtc_take", short)
        writer = CarriedTurns(stores[0], "rtc_take", a)
        _carried_by(a, writer)
        for i in range(4):
            writer.put(i, _turn(i))
        await _until(lambda: _has(stores[1], "rtc_take", 4))
        await a.stop()  # a's worker dies: no flush, no release; its last four turns exist only in its lease row
        give_up_at = asyncio.get_running_loop().time() + 20
        b = await CallLeases(stores[1].table, short).acquire("rtc_take", give_up_at=give_up_at)
        assert isinstance(b, Lease) and b.previous == a.attempt
        # b replaced the row (no tail in it any more) after storing a's tail as a turn row of its own.
        row = await stores[1].table.get_entity("rtc_take", ROW_KEY)
        assert row["owner"] == b.attempt and TAIL not in row
        assert await _texts(stores[1], "rtc_take") == [f"turn {i}" for i in range(4)]
    finally:
        for store in stores:
            await store.aclose()


class FailingTurnRows(TurnStore):
    """A turn store whose turn-row writes fail (the lease row's writes, through the same table, still work)."""

    async def append_items(self, call_id: str, items: list[tuple[int, str]]) -> None:
        raise ConnectionError("storage blip")


async def test_a_failed_turn_row_write_loses_nothing_the_lease_row_keeps_carrying_the_turns(
    storage_connection_string: str, unique_name: str
) -> None:
    store = FailingTurnRows.from_connection_string(storage_connection_string, unique_name)
    try:
        lease, writer = await _carrying(store, "rtc_blip", retries=1)
        n = SPILL_TURNS + 3
        for i in range(n):
            writer.put(i, _turn(i))  # past the limit: a turn-row write, which fails; the turns stay in the tail
        await _until(lambda: _at_least(writer, 1))
        await writer.flush(timeout=5)
        await _until(lambda: _has(store, "rtc_blip", n))
        assert await lease.end({"outcome": "completed"})  # the ending write carries them too
        assert await _texts(store, "rtc_blip") == [f"turn {i}" for i in range(n)]
        assert lease.valid() is False  # ended: no longer ours to act on
    finally:
        await store.aclose()


async def test_a_fault_in_the_carried_turns_never_costs_the_lease(counted) -> None:
    store, _ = counted
    lease = await _held(store, "rtc_fault")

    def broken() -> dict[str, Any]:
        raise ValueError("bug")

    lease.carry(broken)
    lost: list[bool] = []
    lease.start(lambda: lost.append(True))
    try:
        first = (await store.table.get_entity("rtc_fault", ROW_KEY))["renewals"]
        await _until(lambda: _renewed_past(store, "rtc_fault", first + 2), timeout=15)
        assert lease.valid() and not lost
    finally:
        await lease.stop()


async def _at_least(writer: CarriedTurns, requests: int) -> bool:
    return writer.requests >= requests


async def _renewed_past(store: TurnStore, call_id: str, n: int) -> bool:
    return (await store.table.get_entity(call_id, ROW_KEY))["renewals"] >= n


def test_the_carried_tail_keeps_the_newest_turns_that_fit_one_table_property() -> None:
    # Turns whose writes kept failing pile up: the row carries the newest ones that fit, never more than a property.
    big = [(i, json.dumps(["agent", "x" * 1000, "t"])) for i in range(40)]
    fields = tail_fields(big)
    kept = json.loads(fields[TAIL])
    assert len(fields[TAIL]) <= MAX_CHUNK_CHARS
    assert fields[TAIL_FIRST] == 40 - len(kept) and len(kept) >= 10
    assert tail_fields([]) == {}


async def test_a_whole_call_under_a_lease_writes_its_turns_only_on_the_lease_rows_writes(
    emulator_factory, counted
) -> None:
    store, hook = counted
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu, turns=store)
    try:
        sc = scenario([{"say": "question one"}, {"wait": 1.0}, {"say": "question two"}, {"wait": 1.0}],
                      rules=[{"match": "one", "say": "Reply one."}, {"match": "two", "say": "Reply two."}])
        call = await h.start_call(sc)
        summary = await asyncio.wait_for(converse(
            call, endpoint=h.emu.http_url, auth=h.auth, call_control=h.control, tools=h.registry, turns=store,
            options=FAST, leases=CallLeases(store.table, QUICK)), 30)
    finally:
        await h.aclose()
    cid = call["call_id"]
    texts = [PROFILE["greeting"], "question one", "Reply one.", "question two", "Reply two."]
    assert [t["text"] for t in summary["transcript"]] == texts
    assert await _texts(store, cid) == texts
    # Five turns, several renewals, no turn row: every write was the lease row's, which the call needed anyway.
    turn_rows = hook.turn_row_puts()
    assert turn_rows == [], hook.requests
    assert hook.puts(ROW_KEY) >= 3  # the first turn's, at least one renewal, the end


async def test_a_damaged_tail_on_the_lease_row_neither_blocks_a_takeover_nor_breaks_reading_the_turns(
    turn_store: TurnStore,
) -> None:
    await turn_store.append_many("rtc_bad", [(0, _turn(0))])
    timing = LeaseTiming(ttl_seconds=1.0, renew_seconds=0.2, poll_seconds=0.1, margin_seconds=0.2)
    for tail in ("not json", '{"a": 1}', '[["agent", "only two"]]'):
        # A released row (as a stopped attempt leaves it) whose tail someone damaged.
        await turn_store.table.upsert_entity({"PartitionKey": "rtc_bad", "RowKey": ROW_KEY, "owner": "gone",
                                              "state": "released", "ttl_seconds": 1.0, TAIL_FIRST: 1, TAIL: tail})
        assert await _texts(turn_store, "rtc_bad") == ["turn 0"]
        give_up_at = asyncio.get_running_loop().time() + 5
        taken = await CallLeases(turn_store.table, timing).acquire("rtc_bad", give_up_at=give_up_at)
        assert isinstance(taken, Lease) and taken.previous == "gone", tail
        assert await _texts(turn_store, "rtc_bad") == ["turn 0"]


async def test_stopping_the_renewals_ends_even_when_a_renewal_swallows_the_cancellation(turn_store: TurnStore) -> None:
    # Python 3.11's asyncio.wait_for can swallow a cancellation that meets its timeout (cpython#86296): the renewal
    # loop then runs on, and stop() must still return instead of waiting for it forever.
    leases = CallLeases(turn_store.table, LeaseTiming(ttl_seconds=10.0, renew_seconds=0.05, poll_seconds=0.1,
                                                      margin_seconds=1.0))
    lease = await leases.acquire("rtc_swallow")
    assert isinstance(lease, Lease)
    swallowed: list[bool] = []
    real_write = leases.write

    async def write(*args: Any, **kwargs: Any) -> str:
        if not swallowed:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                swallowed.append(True)  # as the bug does: the cancellation is lost, the write "returns"
        return await real_write(*args, **kwargs)

    leases.write = write  # type: ignore[method-assign]
    lease.start(lambda: None)
    await asyncio.sleep(0.3)  # the loop is inside its first renewal
    stopping = asyncio.ensure_future(lease.stop())
    done, _ = await asyncio.wait({stopping}, timeout=8)  # (asyncio.wait does not cancel what is still running)
    if not done:
        stopping.cancel()
    assert stopping in done and swallowed == [True]
