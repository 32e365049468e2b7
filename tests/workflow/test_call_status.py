"""Which `call` orchestrations hold a line: what the webhook counts against capacity and the operator lists."""
from __future__ import annotations

import pytest
from azure.durable_functions.models.DurableOrchestrationStatus import DurableOrchestrationStatus

from call_workflow.call_status import custom_status, input_of, is_live, runtime_status


def status(runtime: str, custom) -> DurableOrchestrationStatus:
    # As the SDK's client builds it from the Durable HTTP API's JSON.
    return DurableOrchestrationStatus.from_json({"name": "call", "instanceId": "rtc_1", "runtimeStatus": runtime,
                                                "customStatus": custom, "createdTime": "2026-11-25T12:00:00Z",
                                                "lastUpdatedTime": "2026-11-25T12:00:01Z"})


@pytest.mark.parametrize("runtime, custom, live", [
    ("Pending", None, True),                                  # started, not yet run: the call was just accepted
    ("Running", {"state": "live"}, True),
    ("Running", '{"state": "live"}', True),                   # custom status as a JSON string
    ("Running", {"state": "ended", "note": "record not published yet; retrying"}, False),
    ("Completed", {"state": "ended"}, False),
    ("Failed", {"state": "live"}, False),
    ("Terminated", None, False),
])
def test_is_live(runtime, custom, live):
    assert is_live(status(runtime, custom)) is live


def test_custom_and_runtime_status_tolerate_odd_values():
    assert runtime_status(status("Running", None)) == "Running"
    assert custom_status(status("Running", "not json")) == {"state": "not json"}
    assert custom_status(status("Running", [1, 2])) == {}


def test_input_of_reads_parsed_or_text_json():
    from types import SimpleNamespace

    assert input_of(SimpleNamespace(input_={"call_id": "rtc_1"})) == {"call_id": "rtc_1"}
    assert input_of(SimpleNamespace(input_='{"call_id": "rtc_1"}')) == {"call_id": "rtc_1"}
    assert input_of(SimpleNamespace(input_="not json")) == {}
    assert input_of(SimpleNamespace(input_=None)) == {}
