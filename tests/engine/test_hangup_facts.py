"""What converse's summary proves about the end of the call (issue 9, part 1), against the emulator over real
sockets: the orchestrator hangs up unless ``shared.outcomes.platform_ended`` says the platform already ended it."""

from __future__ import annotations

import time

import pytest

from shared.outcomes import platform_ended

from .helpers import FAST, Harness, profile, scenario

GOODBYE_RULE = {"match": "bye", "say": "Goodbye!", "call": {"name": "end_call"}}


@pytest.fixture
async def harness(emulator_factory):
    emu = await emulator_factory(speech_seconds_per_char=0.002)
    h = Harness(emu)
    yield h
    await h.aclose()


def facts(summary: dict) -> dict:
    return {k: summary[k] for k in ("hangup_confirmed", "call_gone", "refer_accepted")}


async def test_a_confirmed_hangup_is_proof(harness: Harness) -> None:
    call = await harness.start_call(scenario([{"say": "bye"}], rules=[GOODBYE_RULE], on_end="stay"))
    summary = await harness.converse(call)
    assert summary["outcome"] == "agent_ended"
    assert facts(summary) == {"hangup_confirmed": True, "call_gone": False, "refer_accepted": False}
    assert platform_ended(summary)


async def test_a_failed_hangup_is_not_proof_and_converse_returns_at_once(harness: Harness) -> None:
    # Three 500s: every attempt the call-control client makes inside one hangup().
    sc = {**scenario([{"say": "bye"}], rules=[GOODBYE_RULE], on_end="stay"),
          "faults": {"hangup": {"status": 500, "times": 3}}}
    call = await harness.start_call(sc)
    summary = await harness.converse(call)
    returned = time.time()
    cid = call["call_id"]
    assert summary["outcome"] == "agent_ended" and "hangup request failed" in summary["reason"]
    assert facts(summary) == {"hangup_confirmed": False, "call_gone": False, "refer_accepted": False}
    assert not platform_ended(summary)
    assert [s for _, s in harness.emu.calls[cid].hangup_requests] == [500, 500, 500]
    assert harness.emu.calls[cid].state == "accepted"  # the caller is still on the line: the orchestrator's job
    # No waiting close_wait_seconds for a close that a refused hangup never brings.
    assert returned - harness.control.requests[-1][0] < FAST.close_wait_seconds


async def test_a_failed_hangup_at_the_time_limit_is_not_proof(harness: Harness) -> None:
    prof = profile(closing_seconds=1, closing_line="We are nearly out of time.")
    sc = {**scenario([], on_end="stay"), "faults": {"hangup": {"status": 503, "times": 3}}}
    call = await harness.start_call(sc, prof, max_duration_seconds=2)
    summary = await harness.converse(call)
    assert summary["outcome"] == "timed_out" and not platform_ended(summary)
    assert summary["duration_seconds"] < 2 + FAST.close_wait_seconds


async def test_the_caller_hanging_up_is_proof(harness: Harness) -> None:
    call = await harness.start_call(scenario([{"say": "hello"}, {"hangup": True}]))
    summary = await harness.converse(call)
    assert summary["outcome"] == "caller_hung_up"
    assert facts(summary) == {"hangup_confirmed": False, "call_gone": True, "refer_accepted": False}
    assert platform_ended(summary) and harness.control.requests == []


async def test_a_hangup_answered_404_is_proof(harness: Harness) -> None:
    call = await harness.start_call(scenario([{"say": "bye"}], rules=[GOODBYE_RULE], on_end="stay"))
    real_hangup = harness.control.inner.hangup

    async def caller_leaves_first(call_id: str):  # noqa: ANN202
        await harness.emu.caller_hangup(call_id)  # the caller hangs up just before our request lands
        return await real_hangup(call_id)

    harness.control.inner.hangup = caller_leaves_first  # type: ignore[method-assign]
    summary = await harness.converse(call)
    assert summary["hangup_confirmed"] is True and summary["call_gone"] is True
    assert [s for _, s in harness.emu.calls[call["call_id"]].hangup_requests] == [404]


async def test_an_accepted_refer_is_proof(harness: Harness) -> None:
    sc = scenario([{"say": "sales please"}], on_end="stay",
                  rules=[{"match": "sales", "call": {"name": "transfer_call", "arguments": {"target": "sales"}}}])
    call = await harness.start_call(sc)
    summary = await harness.converse(call)
    assert summary["outcome"] == "transferred"
    assert facts(summary) == {"hangup_confirmed": False, "call_gone": False, "refer_accepted": True}
    assert platform_ended(summary)


async def test_a_refer_that_goes_nowhere_is_not_proof(emulator_factory) -> None:
    # /refer answers 200 but the call never leaves: the engine takes the call back after transfer_settle_seconds.
    emu = await emulator_factory(speech_seconds_per_char=0.002, refer_end_delay_s=60)
    h = Harness(emu)
    try:
        sc = scenario([{"say": "sales please"}, {"wait": 2.5}],
                      rules=[{"match": "sales", "call": {"name": "transfer_call", "arguments": {"target": "sales"}}}])
        call = await h.start_call(sc)
        summary = await h.converse(call)
    finally:
        await h.aclose()
    assert summary["refer_accepted"] is False
    assert summary["outcome"] == "caller_hung_up" and summary["call_gone"] is True  # the script then hung up
