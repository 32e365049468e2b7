"""host.json: timeouts sized for phone calls, Durable Functions tuned for long-lived `converse` activities."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import ROOT


@pytest.fixture(scope="module")
def host() -> dict:
    return json.loads((ROOT / "host.json").read_text())


def seconds(timespan: str) -> float:
    """'hh:mm:ss' or 'd.hh:mm:ss' (the .NET TimeSpan form host.json uses)."""
    m = re.fullmatch(r"(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)", timespan)
    assert m, f"not a timespan: {timespan!r}"
    days, h, mins, s = m.groups()
    return int(days or 0) * 86400 + int(h) * 3600 + int(mins) * 60 + float(s)


def test_function_timeout_outlasts_the_longest_call(host: dict) -> None:
    from shared.settings import FUNCTION_TIMEOUT_MARGIN_SECONDS, MAX_CALL_DURATION_CAP_SECONDS

    timeout = seconds(host["functionTimeout"])
    # The converse activity lives for the whole call plus accept/greeting/teardown; a timed-out invocation
    # restarts the worker and cuts every call on it, so the setting's cap keeps a 10-minute margin.
    assert FUNCTION_TIMEOUT_MARGIN_SECONDS >= 600
    assert timeout - FUNCTION_TIMEOUT_MARGIN_SECONDS >= MAX_CALL_DURATION_CAP_SECONDS
    # Flex gives running executions at most 60 min of grace on scale-in; far beyond the cap buys nothing.
    assert timeout <= 2 * 3600


def test_extension_bundle(host: dict) -> None:
    assert host["version"] == "2.0"
    assert host["extensionBundle"] == {"id": "Microsoft.Azure.Functions.ExtensionBundle", "version": "[4.*, 5.0.0)"}


def test_durable_concurrency_sized_for_long_activities(host: dict) -> None:
    durable = host["extensions"]["durableTask"]
    activities = durable["maxConcurrentActivityFunctions"]
    orchestrators = durable["maxConcurrentOrchestratorFunctions"]
    # Each call holds one activity slot for its whole duration; the default (10 per vCPU, 1 vCPU at
    # 2048 MB) would let ten calls starve hangup/refer/publish activities on that instance.
    assert activities > 10 and orchestrators > 10
    # hangup_call/refer_call/publish_call_record need free slots next to the running converse calls.
    assert activities >= orchestrators


def test_queue_polling_starts_converse_within_about_a_second(host: dict) -> None:
    provider = host["extensions"]["durableTask"].get("storageProvider", {})
    if provider.get("type") == "azureManaged":  # Durable Task Scheduler pushes work items; no polling
        return
    assert seconds(provider["maxQueuePollingInterval"]) <= 1.0


def test_a_call_whose_worker_died_is_driven_again_within_a_minute(host: dict) -> None:
    provider = host["extensions"]["durableTask"].get("storageProvider", {})
    if provider.get("type") == "azureManaged":  # the scheduler tracks work-item locks itself
        return
    # A dead worker's converse is redelivered after the work-item visibility timeout (default 5 min); the
    # running activity renews it, so short is safe, but not so short that a busy worker's renewal comes late.
    assert 30 <= seconds(provider["workItemQueueVisibilityTimeout"]) <= 60


def test_route_prefix_and_privacy(host: dict) -> None:
    # Empty: each HTTP function names its whole route (api/calls/..., api/drain, console/...), so the operator
    # console is served at /console while the webhook and the operator API stay under /api/ (docs/console.md).
    assert host["extensions"]["http"]["routePrefix"] == ""
    tracing = host["extensions"]["durableTask"]["tracing"]
    # Orchestration inputs/outputs hold transcripts and masked caller data: keep them out of telemetry.
    assert tracing["traceInputsAndOutputs"] is False


def test_logging_levels(host: dict) -> None:
    levels = host["logging"]["logLevel"]
    assert levels["default"] in ("Information", "Warning")
    # The Azure Storage backend logs every poll at Information; with 1 s polling that floods App Insights.
    assert levels["DurableTask.AzureStorage"] in ("Warning", "Error")


def test_orchestrations_carry_a_version_for_rolling_updates(host: dict) -> None:
    # With siteUpdateStrategy RollingUpdate old and new workers run side by side; the Flex docs ask for an explicit
    # orchestration version match strategy. CurrentOrOlder + Reject: a worker never replays a `call` started by newer
    # code, it leaves it for a newer worker (docs/deploy.md, "Deploying without dropping calls").
    durable = host["extensions"]["durableTask"]
    assert durable["versionMatchStrategy"] == "CurrentOrOlder"
    assert durable["versionFailureStrategy"] == "Reject"
    assert isinstance(durable["defaultVersion"], str) and durable["defaultVersion"].strip()
    # Versioning needs extension bundle 4.26.0 or later for Python: the bundle range must allow it.
    assert host["extensionBundle"]["version"].startswith("[4.")


def test_the_setting_refuses_a_call_length_inside_the_timeout_margin(host: dict) -> None:
    from shared.settings import MAX_CALL_DURATION_CAP_SECONDS, SettingsError, _duration

    timeout = seconds(host["functionTimeout"])
    assert _duration(str(MAX_CALL_DURATION_CAP_SECONDS)) == MAX_CALL_DURATION_CAP_SECONDS
    for inside_margin in (int(timeout) - 600 + 1, 3600):
        with pytest.raises(SettingsError, match="MAX_CALL_DURATION_SECONDS"):
            _duration(str(inside_margin))


def test_calls_per_instance_match_the_sizing_in_the_deploy_doc(host: dict) -> None:
    """docs/deploy.md derives the slots per instance from bench/converse_capacity.py; host.json must say the same."""
    doc = (ROOT / "docs" / "deploy.md").read_text()
    m = re.search(r"`maxConcurrentActivityFunctions` \*\*(\d+)\*\* \(host\.json\)", doc)
    assert m, "docs/deploy.md no longer states the sized maxConcurrentActivityFunctions"
    assert host["extensions"]["durableTask"]["maxConcurrentActivityFunctions"] == int(m.group(1))


def test_opentelemetry_and_durable_distributed_tracing_v2(host: dict) -> None:
    # The host exports through OpenTelemetry (as the Python app does), and Durable's V2 distributed tracing
    # carries the webhook's trace into the orchestration and each activity (docs/observability.md).
    assert host["telemetryMode"] == "OpenTelemetry"
    tracing = host["extensions"]["durableTask"]["tracing"]
    assert tracing["DistributedTracingEnabled"] is True and tracing["Version"] == "V2"
    # Inputs and outputs carry masked numbers and transcripts: never traced.
    assert tracing["traceInputsAndOutputs"] is False


def test_an_instance_refuses_calls_before_its_activity_slots_run_out(host: dict) -> None:
    # A converse that finds no free activity slot waits in the work-item queue while its caller hears silence, and
    # the hangup and publish activities of ending calls queue behind it: MAX_CALLS_PER_INSTANCE must leave room.
    from shared.settings import Settings

    slots = host["extensions"]["durableTask"]["maxConcurrentActivityFunctions"]
    assert Settings.__dataclass_fields__["max_calls_per_instance"].default <= slots - 10
