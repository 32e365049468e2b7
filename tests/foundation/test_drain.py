"""Drain mode (shared/drain.py): the flag row in real Azurite, the webhook's cached view of it, and the intake's
drain step against the stand-in call-control server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from shared.drain import NOT_DRAINED, DrainFlagStore, DrainState, DrainSwitch
from shared.settings import DrainSettings, StorageSettings

from .conftest import incoming_body, signed_headers
from .harness import Workflow, make_intake
from .standin import NOT_FOUND

CALL = "rtc_u1_9c6574da8b8a41a18da9308f4ad974ce"


def drain_settings(always: bool = False, status: int = 503, refer: str | None = None) -> DrainSettings:
    return DrainSettings(always=always, reject_status=status, refer_uri=refer, flag_table="unused")


@pytest.fixture
async def store(azurite, unique_name):
    storage = StorageSettings(connection_string=azurite, queue_uri=None, table_uri=None, records_queue="q",
                              turns_table="t")
    s = DrainFlagStore.from_settings(storage, unique_name)
    yield s
    await s.aclose()


# ------------------------------------------------------------------------------------ the flag in Azurite


async def test_flag_round_trip_in_table_storage(store):
    assert await store.read() == NOT_DRAINED  # no table yet
    state = await store.write(True, reason="deploy", expires_in=timedelta(minutes=30))
    assert state.drained and state.source == "flag" and state.reason == "deploy" and state.expires_at
    assert await store.read() == state
    assert await store.write(False) == NOT_DRAINED
    assert await store.read() == NOT_DRAINED


async def test_an_expired_flag_no_longer_drains(store, azurite, unique_name):
    await store.write(True, expires_in=timedelta(minutes=1))
    later = DrainFlagStore(store._table, now=lambda: datetime.now(UTC) + timedelta(minutes=2))
    assert (await store.read()).drained
    assert await later.read() == NOT_DRAINED  # a forgotten drain ends by itself


# ------------------------------------------------------------------------------- the webhook's cached view


class CountingStore:
    def __init__(self, state: DrainState = NOT_DRAINED, error: Exception | None = None, delay: float = 0.0):
        self.state, self.error, self.delay, self.reads = state, error, delay, 0

    async def read(self) -> DrainState:
        self.reads += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        return self.state

    async def aclose(self) -> None:
        pass


async def test_the_flag_is_read_at_most_once_per_cache_period():
    now = [0.0]
    flagged = CountingStore(DrainState(True, "flag"))
    switch = DrainSwitch(drain_settings(), flagged, ttl=5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    states = await asyncio.gather(*(switch.state() for _ in range(20)))
    assert all(s.drained for s in states) and flagged.reads == 1  # 20 webhooks at once: one table read
    now[0] = 4.9
    await switch.state()
    assert flagged.reads == 1
    flagged.state = NOT_DRAINED
    now[0] = 5.1
    assert not (await switch.state()).drained and flagged.reads == 2


async def test_an_unreadable_or_slow_flag_fails_open():
    broken = DrainSwitch(drain_settings(), CountingStore(error=ConnectionError("azurite down")))  # type: ignore[arg-type]
    assert await broken.state() == NOT_DRAINED
    slow = DrainSwitch(drain_settings(), CountingStore(DrainState(True, "flag"), delay=5), timeout=0.05)  # type: ignore[arg-type]
    assert await asyncio.wait_for(slow.state(), 2) == NOT_DRAINED  # the ringing call is not held for the table


async def test_the_setting_drains_without_reading_the_table():
    flagged = CountingStore()
    switch = DrainSwitch(drain_settings(always=True), flagged)  # type: ignore[arg-type]
    state = await switch.state()
    assert state.drained and state.source == "setting" and flagged.reads == 0


# ---------------------------------------------------------------------------------- the intake's drain step


async def drained_intake(standin, secret, settings: DrainSettings, drained: bool = True):
    intake = make_intake(standin.url, (secret,))
    intake._drain = DrainSwitch(settings, CountingStore(DrainState(drained, "flag" if drained else "none")))  # type: ignore[arg-type]
    return intake


async def deliver(intake, secret, wf: Workflow, msg_id: str = "wh_1"):
    body = incoming_body(CALL)
    return await intake.handle(body, signed_headers(secret, body, msg_id=msg_id), **wf.kwargs())


async def test_a_drained_intake_rejects_with_the_drain_status_and_starts_nothing(standin, secret):
    intake = await drained_intake(standin, secret, drain_settings(status=480))
    wf = Workflow()
    try:
        result = await deliver(intake, secret, wf)
        again = await deliver(intake, secret, wf, msg_id="wh_2")  # a redelivery is a duplicate, not a second reject
    finally:
        await intake._cc.aclose()
    assert (result.status, result.body) == (200, {"status": "rejected", "reason": "draining", "sip_status": 480})
    assert [(r.action, r.json()) for r in standin.requests] == [("reject", {"status_code": 480})]
    assert wf.started == [] and wf.live_queries == 0
    assert again.body == {"status": "duplicate", "outcome": "rejected"}


async def test_a_drained_intake_refers_to_the_overflow_target(standin, secret):
    intake = await drained_intake(standin, secret, drain_settings(refer="tel:+14155550123"))
    wf = Workflow()
    try:
        result = await deliver(intake, secret, wf)
    finally:
        await intake._cc.aclose()
    assert (result.status, result.body) == (200, {"status": "referred", "reason": "draining"})
    assert [(r.action, r.json()) for r in standin.requests] == [("refer", {"target_uri": "tel:+14155550123"})]
    assert wf.started == []


async def test_a_refused_overflow_refer_falls_back_to_the_drain_reject(standin, secret):
    standin.script = {"refer": [NOT_FOUND]}
    intake = await drained_intake(standin, secret, drain_settings(status=503, refer="sip:overflow@pbx.example.com"))
    try:
        result = await deliver(intake, secret, Workflow())
    finally:
        await intake._cc.aclose()
    assert result.body == {"status": "rejected", "reason": "draining", "sip_status": 503, "refer_failed": True}
    assert [r.action for r in standin.requests] == ["refer", "reject"]


async def test_an_undrained_intake_accepts_as_usual(standin, secret):
    intake = await drained_intake(standin, secret, drain_settings(), drained=False)
    wf = Workflow()
    try:
        result = await deliver(intake, secret, wf)
    finally:
        await intake._cc.aclose()
    assert result.body["status"] == "accepted" and [c for c, _ in wf.started] == [CALL]


async def test_a_call_already_started_elsewhere_is_a_duplicate_even_while_draining(standin, secret):
    intake = await drained_intake(standin, secret, drain_settings())
    wf = Workflow(existing={CALL})
    try:
        result = await deliver(intake, secret, wf)
    finally:
        await intake._cc.aclose()
    assert result.body == {"status": "duplicate", "outcome": "accepted"} and standin.requests == []
