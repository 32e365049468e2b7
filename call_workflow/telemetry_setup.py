"""Start-up configuration of telemetry: Azure Monitor when ``APPLICATIONINSIGHTS_CONNECTION_STRING`` is set.

``azure-monitor-opentelemetry`` is imported here and only here, lazily: it costs ~0.3 s of imports (measured in
docs/observability.md), paid once while the instance starts, never on the webhook's path and never when the
connection string is absent (tests, the local runner, which installs its own exporters first).

Keyless: the exporter reads ``APPLICATIONINSIGHTS_AUTHENTICATION_STRING`` (``ClientId=<uami>;Authorization=AAD``,
set by infra) and authenticates with that managed identity; infra disables local (key) auth on the component.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from shared import telemetry

log = logging.getLogger("switchboard.telemetry")

CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"
# With this set to "true", the Python worker configures Azure Monitor itself; configuring it twice would export
# everything twice (docs/observability.md).
WORKER_TELEMETRY = "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"

_configured: str | None = None


def _configure_azure_monitor(env: Mapping[str, str]) -> None:
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor(
        connection_string=env[CONNECTION_STRING],
        # Our own logs go to App Insights as traces with their call_id; the SDKs' INFO chatter (HTTP
        # request lines of every storage call) stays out.
        logger_name="",
    )
    for noisy in ("azure", "urllib3", "httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # DEBUG lines may carry transcript text (the engine logs each turn's words at DEBUG): whatever level
    # a logger is set to, nothing below INFO leaves the process.
    for handler in logging.getLogger().handlers:
        if type(handler).__module__.startswith("opentelemetry"):
            handler.setLevel(logging.INFO)


def configure(environ: Mapping[str, str] | None = None) -> str:
    """Configure exporters once per process; returns what was done: ``azure-monitor``, ``worker`` (the Functions
    worker exports) or ``none`` (no connection string: the OpenTelemetry API stays a no-op unless a host, such
    as the local runner, installed providers). The call id log filter is installed in every case."""
    global _configured
    env = os.environ if environ is None else environ
    if _configured is None:
        if not env.get(CONNECTION_STRING):
            _configured = "none"
        elif env.get(WORKER_TELEMETRY, "").lower() == "true":
            _configured = "worker"
        else:
            try:
                _configure_azure_monitor(env)
            except Exception as exc:  # noqa: BLE001 - telemetry must never take the calls down with it
                # A malformed connection string (no region, a typo) raises here, at import: the app would index
                # no function at all. Calls matter more than their telemetry: one clear line, then go on without.
                _configured = "failed"
                # Only the exception's type: its text may quote the connection string.
                log.error("telemetry: %s is unusable (%s; expected InstrumentationKey=...;IngestionEndpoint=...); "
                          "running without Azure Monitor export", CONNECTION_STRING, type(exc).__name__)
            else:
                _configured = "azure-monitor"
                log.info("telemetry: exporting to Azure Monitor")
    telemetry.install_log_filter()
    return _configured
