"""The maintenance blueprint (the daily purge timer) on the runner, next to a stand-in `call` orchestrator and a
timer that ticks every second (to see the runner's scheduler fire on its own)."""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from call_workflow import maintenance

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(maintenance.bp)
ticks: list[func.TimerRequest] = []


@app.orchestration_trigger(context_name="context", orchestration="call")
def call(context: df.DurableOrchestrationContext):
    yield context.wait_for_external_event("hangup")
    return "ended"


@app.timer_trigger(schedule="* * * * * *", arg_name="tick", run_on_startup=True)
def every_second(tick: func.TimerRequest) -> None:
    ticks.append(tick)
