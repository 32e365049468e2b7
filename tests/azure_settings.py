"""The app settings infra/modules/functionapp.bicep gives the Function App, as the worker would see them in Azure.

Read from the Bicep text itself (every `{ name: '…' value: … }` entry), with each Bicep expression replaced by a
value of the shape Azure produces. An expression this table does not know fails the test using it, so a setting added
to the Bicep is never silently left out. `WEBHOOK_SECRET` stays what the platform hands over while its Key Vault
reference is unresolved: the literal `@Microsoft.KeyVault(...)` text.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FUNCTION_APP_BICEP = ROOT / "infra" / "modules" / "functionapp.bicep"

CLIENT_ID = "6f1c2a3b-1111-4222-8333-944455556666"
EXPRESSIONS = {
    "identityClientId": CLIENT_ID,
    "blobEndpoint": "https://stabc123.blob.core.windows.net/",
    "queueEndpoint": "https://stabc123.queue.core.windows.net/",
    "tableEndpoint": "https://stabc123.table.core.windows.net/",
    # The shape App Insights hands out; the ingestion endpoint is a closed local port, so nothing is ever sent.
    "appInsightsConnectionString": "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                                   "IngestionEndpoint=https://127.0.0.1:9/",
    "openAiEndpoint": "https://oai-abc123.openai.azure.com/",
    "openAiDeploymentName": "gpt-realtime-1.5",
    "openAiModelName": "gpt-realtime-1.5",
    "openAiModelVersion": "2026-02-23",
    "openAiAnalysisDeploymentName": "gpt-4.1-mini",
    "string(requestBodySizeLimit)": "262144",
    "string(maxCallDurationSeconds)": "900",
    "string(historyRetentionDays)": "30",
    # Only set with durableBackend DurableTaskScheduler; host settings the Python worker never reads.
    "durableTaskHubName": "switchboard",
    "durableTaskSchedulerEndpoint": "https://dts-abc123.westus2.durabletask.io",
    "callRecordsQueueName": "call-records",
    "callTurnsTableName": "callturns",
    "rulesContainerName": "routing-rules",
    "keyVaultName": "kv-abc123",
    "webhookSecretName": "webhook-secret",
    "webhookSecretPreviousName": "webhook-secret-previous",
    # Only set when the operator console has an Entra app registration (consoleEntraClientId).
    "tenant().tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
    "consoleEntraClientId": "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f",
    "consoleOperatorRole": "Switchboard.Operator",
}
_ENTRY = re.compile(r"name:\s*'(?P<name>[A-Za-z_][A-Za-z0-9_]*)'\s*\n\s*value:\s*(?P<value>[^\n]+)")


def _evaluate(expression: str) -> str:
    expression = expression.strip()
    if expression.startswith("'") and expression.endswith("'"):
        return re.sub(r"\$\{([^}]+)\}", lambda m: _evaluate(m.group(1)), expression[1:-1])
    if expression not in EXPRESSIONS:
        raise KeyError(f"tests/azure_settings.py does not know the Bicep expression {expression!r}; add it")
    return EXPRESSIONS[expression]


def bicep_app_settings(previous_secret: bool = False) -> dict[str, str]:
    """{name: value} of the Function App's app settings; with `previous_secret`, the rotation setting too."""
    text = FUNCTION_APP_BICEP.read_text()
    settings = {m["name"]: _evaluate(m["value"]) for m in _ENTRY.finditer(text)}
    if not previous_secret:
        settings.pop("WEBHOOK_SECRET_PREVIOUS", None)
    return settings
