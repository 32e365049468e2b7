"""The Functions app: assembles the blueprints of call_workflow/ and nothing else."""

import azure.durable_functions as df
import azure.functions as func

from call_workflow import (
    activities,
    console,
    drain_api,
    incoming,
    maintenance,
    operator,
    orchestrator,
    runtime,
    telemetry_setup,
)

# Exporters first (Azure Monitor when APPLICATIONINSIGHTS_CONNECTION_STRING is set), so start-up logs are seen.
telemetry_setup.configure()
# Fail at start-up, naming the setting, rather than on the first phone call. The webhook's secrets are checked by
# the webhook alone (shared.settings.WEBHOOK_ONLY), so an unresolved Key Vault reference stops no other function.
runtime.load()

# Function-key auth by default: the operator endpoints need a key. The webhook opts out explicitly
# (anonymous, but always signature-checked) because the platform cannot send a key.
app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in (incoming.bp, orchestrator.bp, activities.bp, operator.bp, maintenance.bp):
    app.register_functions(blueprint)
app.register_functions(drain_api.bp)
app.register_functions(console.bp)  # the operator console (docs/console.md)
