"""The operator blueprint on the runner, with a stand-in `call` orchestrator that records operator events.

The stand-in sets the custom status the real orchestrator keeps and ends on `hangup` or `transfer`,
returning what it received; on `ended` it says the call is over but keeps running until `published`.
The real orchestrator is exercised by the end-to-end tests.
"""

from __future__ import annotations

import azure.durable_functions as df
import azure.functions as func

from call_workflow import operator

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(operator.bp)


@app.orchestration_trigger(context_name="context", orchestration="call")
def call(context: df.DurableOrchestrationContext):
    data = context.get_input()
    context.set_custom_status({"state": "live", "caller": data["caller"], "profile": data["profile_name"],
                               "started_at": data["accepted_at"], "last_turn": None})
    hangup = context.wait_for_external_event("hangup")
    transfer = context.wait_for_external_event("transfer")
    ended = context.wait_for_external_event("ended")
    winner = yield context.task_any([hangup, transfer, ended])
    if winner == ended:
        # The call is over but the orchestration runs on, as while the real one retries publishing the record.
        context.set_custom_status({"state": "ended", "caller": data["caller"], "profile": data["profile_name"],
                                   "started_at": data["accepted_at"], "last_turn": None})
        yield context.wait_for_external_event("published")
        return {"event": "ended"}
    return {"event": "hangup" if winner == hangup else "transfer", "data": winner.result}
