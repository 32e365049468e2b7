"""A Functions app with one orchestrator that does nothing, for bench/setup_floor.py: the Durable HTTP API's
``start_new`` and ``get_status`` are measured against the local runner without the call workflow behind them.
Not deployed, not imported by the app."""

from __future__ import annotations

import azure.durable_functions as df

app = df.DFApp()


@app.orchestration_trigger(context_name="context")
def noop(context: df.DurableOrchestrationContext):
    return None
    yield  # a generator, as the SDK requires of an orchestrator
