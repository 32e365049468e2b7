"""The orchestrator owns the guarantee that a call is hung up (issue 9, part 1), through the real SDK replay engine
(localrun.durable, strict determinism checks) on a virtual clock, with fake activities.

converse may end the call itself and its /hangup may fail; unless its summary proves the platform ended the call,
the orchestrator hangs up before publishing, retrying with back-off while the call could still be up."""
from __future__ import annotations

import datetime as dt

import pytest
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

from call_workflow.call_status import is_live
from call_workflow.orchestrator import HANGUP_PAUSES, STATE_ENDING, hangup_give_up_at
from localrun.durable import DurableEngine, FunctionIndex

from .conftest import T0, call_app, call_input

S = dt.timedelta(seconds=1)


async def run_call(engine: DurableEngine, call: dict | None = None, timeout: float = 20) -> dict:
    call = call or call_input()
    await engine.start_new("call", call["call_id"], call)
    return await engine.wait_for_completion(call["call_id"], timeout)


def live(status: dict) -> bool:
    """What the webhook's capacity count and the operator API go by (409 for a call that is not live)."""
    return is_live(DurableOrchestrationStatus.from_json({"name": "call", **status}))


async def test_converse_hangup_failed_so_the_orchestrator_hangs_up_before_publishing(engine, fake):
    # The agent said goodbye (end_call) but converse's /hangup failed: three 500s inside the client.
    fake.converse_duration = 60
    fake.summary_outcome = "agent_ended"
    fake.summary_facts = {}
    status = await run_call(engine)
    assert status["runtimeStatus"] == "Completed"
    assert fake.names() == ["converse", "hangup_call", "publish_call_record"]
    assert fake.inputs("hangup_call") == [{"call_id": "rtc_1", "reason": "call_ended"}]
    assert fake.times("hangup_call") == [T0 + 60 * S]       # at once, not at the max-duration backstop
    (published,) = fake.inputs("publish_call_record")
    assert published["hangup_confirmed"] is True
    assert published["hung_up_at"] == "2026-11-25T12:01:00.000000Z"
    assert published["summary"]["outcome"] == "agent_ended" and published["ended_by"] == "call_ended"
    assert status["output"]["hangup_confirmed"] is True and status["output"]["control_error"] is None
    assert status["customStatus"]["state"] == "ended" and status["customStatus"]["hangup_confirmed"] is True


@pytest.mark.parametrize("outcome, facts, hangs_up", [
    ("agent_ended", {"hangup_confirmed": True}, False),       # converse's /hangup answered 2xx
    ("caller_hung_up", {"call_gone": True}, False),           # 1006, then 404 on the sideband reconnect
    ("agent_ended", {"hangup_confirmed": True, "call_gone": True}, False),  # /hangup answered 404
    ("transferred", {"refer_accepted": True}, False),         # REFER answered 200 and the call left
    ("completed", {}, True),                                  # the socket closed (1000): not proof
    ("timed_out", {}, True),                                  # 1001 session cap: not proof either (404 costs 1 request)
    ("idle", {"hangup_confirmed": False}, True),              # silence goodbye, /hangup failed
])
async def test_only_a_summary_that_proves_the_call_is_over_spares_the_hangup(engine, fake, outcome, facts, hangs_up):
    fake.converse_duration = 45
    fake.summary_outcome = outcome
    fake.summary_facts = facts
    status = await run_call(engine)
    assert status["runtimeStatus"] == "Completed"
    expected = ["converse", "hangup_call", "publish_call_record"] if hangs_up else ["converse", "publish_call_record"]
    assert fake.names() == expected
    (published,) = fake.inputs("publish_call_record")
    assert published["hangup_confirmed"] is True
    assert (published["hung_up_at"] is not None) is hangs_up


async def test_a_summary_from_older_code_without_the_facts_is_not_proof(engine, fake):
    """A converse that started under the previous release returns a summary without the new fields."""
    async def old_converse(call: dict) -> dict:
        fake.calls.append(("converse", call, fake.clock.now()))
        return {"call_id": call["call_id"], "outcome": "agent_ended", "reason": "the agent ended the call",
                "transcript": [], "tools": [], "digits": "", "usage": {}}

    engine.activity_overrides["converse"] = old_converse
    status = await run_call(engine)
    assert fake.names() == ["converse", "hangup_call", "publish_call_record"]
    assert status["output"]["hangup_confirmed"] is True


async def test_caller_hung_up_then_the_hangup_answers_404_and_that_counts_as_done(engine, fake):
    fake.converse_duration = 30
    fake.summary_facts = {}
    fake.hangup_gone = True            # the platform says call_id_not_found
    status = await run_call(engine)
    assert fake.names() == ["converse", "hangup_call", "publish_call_record"]
    assert status["output"]["hangup_confirmed"] is True


async def test_a_hangup_that_keeps_failing_is_retried_with_back_off_until_the_session_cap(engine, fake):
    fake.converse_duration = 60
    fake.summary_facts = {}
    fake.hangup_failures = 10**6      # the platform never confirms
    status = await run_call(engine)
    assert status["runtimeStatus"] == "Completed"
    give_up_at = hangup_give_up_at(call_input())
    assert give_up_at == T0 + dt.timedelta(minutes=31)   # 30-minute session cap from accepted_at, plus the margin

    attempts = fake.times("hangup_call")
    assert attempts[0] == T0 + 60 * S
    assert attempts[-1] <= give_up_at
    # Rounds of two attempts 1 s apart (HANGUP_RETRY); the failure surfaces 1 s after the second attempt, then
    # the pause grows and stays at its last value.
    round_starts = attempts[::2]
    assert all(b - a == S for a, b in zip(attempts[::2], attempts[1::2], strict=False))
    pauses = [b - a - 2 * S for a, b in zip(round_starts, round_starts[1:], strict=False)]
    expected = list(HANGUP_PAUSES) + [HANGUP_PAUSES[-1]] * (len(pauses) - len(HANGUP_PAUSES))
    assert pauses == expected
    # It gave up only because one more pause would pass the point where the call can still be up.
    assert attempts[-1] + S + HANGUP_PAUSES[-1] > give_up_at

    # Exactly one record, after the last attempt, saying the hangup was never confirmed.
    (published,) = fake.inputs("publish_call_record")
    assert fake.times("publish_call_record")[0] >= attempts[-1]
    assert published["hangup_confirmed"] is False and published["hung_up_at"] is None
    assert status["output"]["hangup_confirmed"] is False
    assert status["output"]["control_error"] == "hangup_call failed"
    assert status["customStatus"]["state"] == "ended" and status["customStatus"]["hangup_confirmed"] is False


async def test_while_the_hangup_is_retried_the_call_stays_live_and_nothing_is_published(clock, fake):
    clock.auto_advance = False
    engine = DurableEngine(FunctionIndex.from_app(call_app()), clock=clock, activity_overrides=fake.overrides())
    try:
        fake.converse_duration = 60
        fake.summary_facts = {}
        fake.hangup_failures = 3      # round 1 (two attempts) and the first attempt of round 2 fail
        await engine.start_new("call", "rtc_1", call_input())
        await clock.advance(60)
        await clock.advance(2)        # round 1 failed; pausing
        status = engine.get_status("rtc_1")
        assert status["runtimeStatus"] == "Running"
        assert status["customStatus"]["state"] == STATE_ENDING
        assert status["customStatus"]["note"] == "hangup not confirmed yet; retrying"
        assert live(status)           # capacity counts it; an operator's hangup is not refused with 409
        assert fake.inputs("publish_call_record") == []
        await engine.raise_event("rtc_1", "hangup", {"by": "operator"})   # accepted, not InstanceNotRunning
        await clock.advance(HANGUP_PAUSES[0].total_seconds() + 1)        # round 2: attempt fails, 1 s, succeeds
        status = await engine.wait_for_completion("rtc_1", 5)
    finally:
        await engine.aclose()
    assert status["runtimeStatus"] == "Completed"
    assert fake.times("hangup_call") == [T0 + 60 * S, T0 + 61 * S, T0 + 64 * S, T0 + 65 * S]
    (published,) = fake.inputs("publish_call_record")
    assert fake.times("publish_call_record") == [T0 + 65 * S]
    assert published["hangup_confirmed"] is True and published["hung_up_at"] == "2026-11-25T12:01:05.000000Z"
    assert not live(status) and "note" not in status["customStatus"]


@pytest.mark.parametrize("event", ["deadline", "operator"])
async def test_the_orchestrators_own_hangups_are_retried_too(engine, fake, event):
    fake.end_on_control = True
    fake.hangup_failures = 4          # two whole rounds
    await engine.start_new("call", "rtc_1", call_input())
    if event == "operator":
        await engine.raise_event("rtc_1", "hangup", {"by": "operator"})
    status = await engine.wait_for_completion("rtc_1", 10)
    assert status["runtimeStatus"] == "Completed"
    assert len(fake.inputs("hangup_call")) == 5
    (published,) = fake.inputs("publish_call_record")
    assert published["hangup_confirmed"] is True
    assert fake.times("publish_call_record")[0] >= fake.times("hangup_call")[-1]
    assert status["output"]["ended_by"] == ("max_duration" if event == "deadline" else "operator_hangup")


async def test_converse_failing_on_every_attempt_and_an_unconfirmed_hangup_still_give_one_record(engine, fake,
                                                                                             monkeypatch):
    from call_workflow import orchestrator

    monkeypatch.setattr(orchestrator, "PLATFORM_SESSION_CAP", dt.timedelta(minutes=5))  # fewer rounds, same rule
    fake.converse_failures = 3
    fake.hangup_failures = 10**6
    status = await run_call(engine)
    assert status["runtimeStatus"] == "Completed"
    (published,) = fake.inputs("publish_call_record")
    assert published["ended_by"] == "failed" and published["hangup_confirmed"] is False
    # The call's own limit (600 s + grace) is longer than the patched cap: that bounds the retries.
    assert hangup_give_up_at(call_input()) == T0 + (600 + 15 + 60) * S
    assert fake.times("hangup_call")[-1] <= hangup_give_up_at(call_input())
    assert fake.times("publish_call_record")[0] >= fake.times("hangup_call")[-1]


async def test_a_caller_who_hangs_up_while_the_hangup_is_retried_ends_the_retries(engine, fake):
    """The operator's hangup keeps failing; then the caller hangs up and converse proves the call is gone."""
    fake.end_on_control = False
    fake.converse_duration = 100
    fake.summary_outcome = "caller_hung_up"
    fake.summary_facts = {"call_gone": True}
    fake.hangup_failures = 10**6
    await engine.start_new("call", "rtc_1", call_input())
    await engine.raise_event("rtc_1", "hangup", {"by": "operator"})
    status = await engine.wait_for_completion("rtc_1", 10)
    assert status["runtimeStatus"] == "Completed"
    assert all(t < T0 + 100 * S for t in fake.times("hangup_call"))
    assert fake.times("publish_call_record") == [T0 + 100 * S]   # as soon as converse returned, mid-pause
    (published,) = fake.inputs("publish_call_record")
    assert published["hangup_confirmed"] is True and published["summary"]["outcome"] == "caller_hung_up"
    assert status["output"]["ended_by"] == "operator_hangup" and status["output"]["control_error"] is None
