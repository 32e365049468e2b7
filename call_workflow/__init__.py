"""The thin Azure Functions layer: triggers, the call orchestrator and activities, wiring shared/ together."""
