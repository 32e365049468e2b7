"""Post-call analysis in the ``call`` orchestrator, through the real SDK replay engine on a virtual clock: it runs
between the end of the call and the publish, and no outcome of it (failure, a stuck worker, analysis off) keeps
the record from being published."""

from __future__ import annotations

import datetime as dt

import pytest

from call_workflow.orchestrator import ANALYSIS_BUDGET
from localrun.durable import DurableEngine, FunctionIndex

from .conftest import T0, call_app, call_input

S = dt.timedelta(seconds=1)
SPEC = {"summary": "One sentence.", "success": "Answered."}
ANALYSIS = {"summary": "The caller asked about an order.", "data": {}, "success": {"value": True, "reason": "ok"},
            "model": "gpt-4.1-mini", "ms": 812}


def analysed_call() -> dict:
    call = call_input()
    call["profile"]["analysis"] = SPEC
    return call


class Analyst:
    def __init__(self, fake, clock) -> None:
        self.fake, self.clock = fake, clock
        self.failures = 0
        self.hang_for: float | None = None  # virtual seconds before answering (a stuck attempt)
        self.result: dict = {"analysis": ANALYSIS}

    async def analyze_call(self, payload: dict) -> dict:
        self.fake.calls.append(("analyze_call", payload, self.clock.now()))
        if self.hang_for is not None:
            await self.clock.sleep_until(self.clock.now() + dt.timedelta(seconds=self.hang_for))
        if self.failures > 0:
            self.failures -= 1
            raise RuntimeError("AnalysisError: HTTP 500 after 3 attempts")
        return self.result


@pytest.fixture
async def setup(clock, fake):
    analyst = Analyst(fake, clock)
    engine = DurableEngine(FunctionIndex.from_app(call_app()), clock=clock,
                           activity_overrides={**fake.overrides(), "analyze_call": analyst.analyze_call})
    yield engine, fake, analyst
    await engine.aclose()


async def run(engine, call) -> dict:
    await engine.start_new("call", call["call_id"], call)
    return await engine.wait_for_completion(call["call_id"], 10)


async def test_analysis_runs_after_the_call_and_goes_into_the_record(setup):
    engine, fake, analyst = setup
    fake.converse_duration = 60
    status = await run(engine, analysed_call())
    assert status["runtimeStatus"] == "Completed"
    assert fake.names() == ["converse", "analyze_call", "publish_call_record"]
    (asked,) = fake.inputs("analyze_call")
    assert asked["summary"]["transcript"][-1]["text"] == "Goodbye!" and asked["call"]["profile"]["analysis"] == SPEC
    (published,) = fake.inputs("publish_call_record")
    assert published["analysis"] == ANALYSIS and "analysis_error" not in published
    # The record says when the call ended, not when the analysis was done.
    assert published["ended_at"] == "2026-11-25T12:01:00.000000Z"


async def test_a_failed_analysis_publishes_with_analysis_error(setup):
    engine, fake, analyst = setup
    fake.converse_duration = 60
    analyst.failures = 2  # both attempts
    status = await run(engine, analysed_call())
    assert status["runtimeStatus"] == "Completed"
    assert fake.names() == ["converse", "analyze_call", "analyze_call", "publish_call_record"]
    (published,) = fake.inputs("publish_call_record")
    assert "analysis" not in published
    assert "HTTP 500 after 3 attempts" in published["analysis_error"]


async def test_one_failed_attempt_is_retried(setup):
    engine, fake, analyst = setup
    fake.converse_duration = 60
    analyst.failures = 1
    await run(engine, analysed_call())
    (published,) = fake.inputs("publish_call_record")
    assert published["analysis"] == ANALYSIS


async def test_a_stuck_analysis_does_not_hold_the_record_past_the_budget(setup):
    engine, fake, analyst = setup
    fake.converse_duration = 60
    analyst.hang_for = 3600
    status = await run(engine, analysed_call())
    assert status["runtimeStatus"] == "Completed"
    (published,) = fake.inputs("publish_call_record")
    assert published["analysis_error"] == f"analysis not done within {int(ANALYSIS_BUDGET.total_seconds())} s"
    assert fake.times("publish_call_record") == [T0 + 60 * S + ANALYSIS_BUDGET]
    assert published["ended_at"] == "2026-11-25T12:01:00.000000Z"  # the call's end, not the publish's


async def test_analysis_off_publishes_without_the_keys(setup):
    engine, fake, analyst = setup
    fake.converse_duration = 60
    analyst.result = {"analysis": None, "skipped": "AZURE_OPENAI_ANALYSIS_DEPLOYMENT is empty"}
    await run(engine, analysed_call())
    (published,) = fake.inputs("publish_call_record")
    assert "analysis" not in published and "analysis_error" not in published


async def test_a_profile_without_analysis_never_schedules_it(setup):
    engine, fake, _ = setup
    fake.converse_duration = 60
    await run(engine, call_input())
    assert fake.names() == ["converse", "publish_call_record"]


async def test_failed_converse_still_gets_analysed_from_the_turns(setup):
    engine, fake, analyst = setup
    fake.converse_failures = 3
    status = await run(engine, analysed_call())
    assert status["runtimeStatus"] == "Completed"
    (asked,) = fake.inputs("analyze_call")
    assert asked["summary"] is None  # the activity then reads the turns table
