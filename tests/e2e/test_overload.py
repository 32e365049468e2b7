"""Overload through the whole local stack: three times the instance's capacity rings at once.

MAX_CALLS_PER_INSTANCE=3 and nine calls placed together. The calls the instance takes on are driven like any call
(greeting, the agent's hangup, exactly one record); the others are refused at once with SIP 486, start no workflow
and leave one record each (outcome rejected, sip_status 486). Nobody is accepted and then left in silence.
"""

from __future__ import annotations

import collections
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from localrun.demo import every_call_record
from localrun.stack import Stack, StackConfig, http_json

CAPACITY = 3
# The caller listens to the greeting, waits, says goodbye; the model ends the call (end_call -> our /hangup).
SCENARIO = {
    "script": {"wait_for_greeting": True, "steps": [{"wait": 2.0}, {"say": "Thanks, goodbye!"}], "on_end": "stay"},
    "model": {"greeting": "Hello.", "default_reply": "Okay.",
              "rules": [{"match": "goodbye", "say": "Goodbye!",
                         "call": {"name": "end_call", "arguments": {"reason": "caller said goodbye"}}}]},
}


def count_records(connection_string: str, queue: str, outcomes: dict[str, str] | None = None) -> collections.Counter:
    """Every record on the queue, counted by call id (messages are hidden, not deleted); ``outcomes`` collects
    each record's outcome and SIP status."""
    counts: collections.Counter = collections.Counter()
    for record in every_call_record(connection_string, queue, visibility_timeout=120):
        counts[record.get("call_id")] += 1
        if outcomes is not None:
            outcomes[record.get("call_id")] = f"{record.get('outcome')} {record.get('sip_status')}"
    return counts


@pytest.fixture(scope="module")
def small_stack(tmp_path_factory, azurite_connection_string) -> Stack:
    tmp = tmp_path_factory.mktemp("overload")
    config = StackConfig(app_port=0, emulator_http_port=0, sip_port=0, start_azurite=False,
                         storage_connection_string=azurite_connection_string, use_func=False, echo=False,
                         log_dir=tmp / "logs", emulator_options={"speech_seconds_per_char": 0.005},
                         app_env={"MAX_CALLS_PER_INSTANCE": str(CAPACITY),
                                  "CALL_RECORDS_QUEUE": "overload" + secrets.token_hex(5),
                                  "CALL_TURNS_TABLE": "overload" + secrets.token_hex(5)})
    with Stack(config) as stack:
        yield stack


def test_three_times_capacity_refuses_the_excess_with_486_and_drives_every_accepted_call(small_stack: Stack):
    emu = small_stack.emulator_url

    def place(_: int) -> str:
        status, body = http_json("POST", f"{emu}/_emulator/calls", {"scenario": SCENARIO})
        assert status in (200, 201), body
        return body["call_id"]

    with ThreadPoolExecutor(CAPACITY * 3) as pool:
        ids = list(pool.map(place, range(CAPACITY * 3)))

    calls: dict[str, dict] = {}
    deadline = time.monotonic() + 60
    while len(calls) < len(ids) and time.monotonic() < deadline:
        for cid in ids:
            if cid not in calls:
                _, call = http_json("GET", f"{emu}/_emulator/calls/{cid}")
                if call["state"] in ("ended", "rejected", "expired"):
                    calls[cid] = call
        time.sleep(0.2)
    assert len(calls) == len(ids), [c for c in ids if c not in calls]

    accepted = [c for c in calls.values() if "accepted" in c["timestamps"]]
    refused = [c for c in calls.values() if c["state"] == "rejected"]
    assert len(accepted) == CAPACITY and len(refused) == 2 * CAPACITY, {
        c["call_id"]: c["state"] for c in calls.values()
    }
    assert all(c["reject_status"] == 486 for c in refused)
    for c in accepted:
        assert "first_response_create" in c["timestamps"], c["call_id"]  # greeted
        assert c["ended_reason"] == "hangup", (c["call_id"], c["ended_reason"])  # the agent hung up

    queue = small_stack.config.app_env["CALL_RECORDS_QUEUE"]
    answered = {c["call_id"] for c in accepted}
    wanted = set(ids)  # every decision has its record: the refused calls too (docs/observability.md)
    deadline = time.monotonic() + 30
    seen: collections.Counter = collections.Counter()
    outcomes: dict[str, str] = {}
    while time.monotonic() < deadline:
        seen.update(count_records(small_stack.storage_connection_string, queue, outcomes))
        if wanted <= set(seen):
            break
        time.sleep(0.3)
    time.sleep(1.5)  # a second record of any call would be on the queue by now
    seen.update(count_records(small_stack.storage_connection_string, queue, outcomes))
    assert dict(seen) == {cid: 1 for cid in wanted}  # exactly one record per call
    assert all(outcomes[c["call_id"]] == "rejected 486" for c in refused), outcomes
    assert all(not outcomes[cid].startswith("rejected") for cid in answered), outcomes
    status, body = http_json("GET", f"{small_stack.app_url}/runtime/webhooks/durabletask/instances/",
                             headers={"x-functions-key": small_stack.master_key})
    assert status == 200 and {i["instanceId"] for i in body} == answered  # no workflow for a refused call
