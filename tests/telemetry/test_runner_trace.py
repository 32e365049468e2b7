"""The local runner carries the caller's trace context as the Durable host does with distributed tracing V2:
from ``start_new`` into every activity invocation (``context.trace_context``, spelt as the Python worker spells
it), and across a runner restart through the task hub folder."""

from __future__ import annotations

import asyncio
import shutil

import azure.durable_functions as df
import azure.functions as func

from localrun.durable import DurableEngine, FunctionIndex, RealClock, TaskHubStore
from localrun.telemetry import memory

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE}-00f067aa0ba902b7-01"

seen: list[str] = []
release = asyncio.Event()

bp = df.Blueprint()


@bp.orchestration_trigger(context_name="context")
def traced_orchestrator(context: df.DurableOrchestrationContext):
    return (yield context.call_activity("traced_activity", "x"))


@bp.activity_trigger(input_name="payload")
async def traced_activity(payload: str, context: func.Context) -> str:
    seen.append(context.trace_context.Traceparent)
    await release.wait()
    return payload


_INDEX = None


def _index() -> FunctionIndex:
    global _INDEX
    if _INDEX is None:
        app = df.DFApp()
        app.register_functions(bp)
        _INDEX = FunctionIndex.from_app(app)
    return _INDEX


async def _wait(predicate, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


async def test_activities_get_the_start_new_trace_even_after_a_restart(tmp_path) -> None:
    mem = memory()
    seen.clear()
    release.clear()
    first = DurableEngine(_index(), clock=RealClock(), store=TaskHubStore(tmp_path / "hub"))
    await first.start_new("traced_orchestrator", "inst_1", None, trace_parent=PARENT)
    await _wait(lambda: len(seen) == 1)
    shutil.copytree(tmp_path / "hub", tmp_path / "hub2")  # the runner dies here, mid-activity
    await first.aclose()

    second = DurableEngine(_index(), clock=RealClock(), store=TaskHubStore(tmp_path / "hub2"))
    try:
        assert await second.resume() == ["inst_1"]
        await _wait(lambda: len(seen) == 2)  # the activity runs again (at-least-once)
        release.set()
        result = await second.wait_for_completion("inst_1", timeout=10)
        assert result["runtimeStatus"] == "Completed"
    finally:
        await second.aclose()

    # Both invocations are in the caller's trace, under the orchestration span the first runner opened.
    assert [p.split("-")[1] for p in seen] == [TRACE, TRACE]
    orchestration = next(s for s in mem.spans() if s.name == "orchestration:traced_orchestrator"
                         and f"{s.context.trace_id:032x}" == TRACE)
    assert f"{orchestration.parent.span_id:016x}" == "00f067aa0ba902b7"
    activities = [s for s in mem.spans() if s.name == "activity:traced_activity"
                  and f"{s.context.trace_id:032x}" == TRACE]
    assert activities and all(s.parent.span_id == orchestration.context.span_id for s in activities)
    assert seen[0].split("-")[2] == f"{activities[0].context.span_id:016x}"
