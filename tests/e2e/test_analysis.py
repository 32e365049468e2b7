"""Post-call analysis end to end: sipp -> emulator -> app (webhook, orchestrator, activities) -> record queue.

The emulator's chat completions endpoint answers with a value generated from the schema it was sent, so the
record's analysis proves the schema travelled from routing.json through the orchestration to the request."""

from __future__ import annotations

import json

from jsonschema import Draft202012Validator

from localrun.stack import http_json
from tests.e2e.conftest import ANALYSED, ANALYSIS


def test_a_call_with_analysis_publishes_it_in_the_record(phone, stack):
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_agent_ends", dialed=ANALYSED,
                                  caller="+14255550123")
    assert sipp.wait(60) == 0, sipp.log()
    record = phone.record(call_id, timeout=40)
    assert record["profile_name"] == "analysed" and record["outcome"] == "agent_ended"
    analysis = record["analysis"]
    assert "analysis_error" not in record, record
    Draft202012Validator(ANALYSIS["data"]).validate(analysis["data"])
    assert analysis["data"] == {"order_number": "emulated order_number", "follow_up": True}
    assert analysis["success"] == {"value": True, "reason": "emulated reason"}
    assert analysis["model"] == "gpt-4.1-mini" and analysis["ms"] >= 0

    status, body = http_json("GET", f"{stack.emulator_url}/_emulator/chat")
    assert status == 200
    mine = [r for r in body["requests"] if '"profile": "analysed"' in r["messages"][1]["content"]]
    assert mine, body
    request = mine[-1]
    assert request["response_format"]["json_schema"]["schema"]["properties"]["data"] == ANALYSIS["data"]
    prompt = json.dumps(request["messages"])
    assert "where is my order 1234" in prompt  # the transcript went in
    assert "4255550123" not in prompt and "+1425***0123" in prompt  # only the masked caller did
    phone.assert_no_other_record(call_id)
