"""The ``analysis`` block of a profile: validated when the rules load (shared/analysis.py, shared/routing.py)."""

from __future__ import annotations

import copy
import json
import re

import pytest

from shared.analysis import build_request, mask_digits
from shared.routing import RoutingRulesError, parse_rules

DATA = {
    "type": "object",
    "properties": {
        "reason": {"type": "string", "enum": ["order", "billing", "other"]},
        "order_number": {"type": ["string", "null"]},
        "follow_up": {"type": "boolean"},
        "items": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}},
                                             "required": ["sku"], "additionalProperties": False}},
    },
    "required": ["reason", "order_number", "follow_up", "items"],
    "additionalProperties": False,
}
ANALYSIS = {"summary": "Two sentences on what the caller wanted.", "data": DATA,
            "success": "Success when the caller's question was answered or a follow-up was booked."}


def rules(analysis) -> dict:
    return {"numbers": {"*": "reception"},
            "profiles": {"reception": {"instructions": "You are Alex.", "greeting": "Hello", "analysis": analysis}}}


def load(analysis):
    return parse_rules(rules(analysis), tool_names=[], max_call_duration_seconds=900)


def test_valid_block_is_kept_and_round_trips():
    profile = load(ANALYSIS).profiles["reception"]
    assert profile.analysis == ANALYSIS
    assert profile.to_json()["analysis"] == ANALYSIS
    # The orchestration input is JSON: what travels must come back the same.
    again = parse_rules(rules(json.loads(json.dumps(profile.to_json()["analysis"]))), tool_names=[],
                        max_call_duration_seconds=900)
    assert again.profiles["reception"].analysis == ANALYSIS


def test_data_is_optional():
    spec = {k: v for k, v in ANALYSIS.items() if k != "data"}
    assert load(spec).profiles["reception"].analysis == spec


def bad(mutate) -> str:
    spec = copy.deepcopy(ANALYSIS)
    mutate(spec)
    with pytest.raises(RoutingRulesError) as err:
        load(spec)
    return str(err.value)


@pytest.mark.parametrize(("mutate", "expected"), [
    (lambda s: s["data"]["properties"]["follow_up"].update(type="bool"),
     "profiles.reception.analysis.data.properties.follow_up.type: not a valid JSON Schema"),
    (lambda s: s["data"].pop("additionalProperties"),
     "profiles.reception.analysis.data.additionalProperties: must be false"),
    (lambda s: s["data"]["required"].remove("order_number"),
     "profiles.reception.analysis.data.required: must list every property (missing 'order_number')"),
    (lambda s: s["data"]["properties"]["items"]["items"].update(additionalProperties=True),
     "profiles.reception.analysis.data.properties.items.items.additionalProperties: must be false"),
    (lambda s: s.update(data={"type": "array", "items": {"type": "string"}}),
     "profiles.reception.analysis.data.type: the root of the data schema must be an object"),
    (lambda s: s["data"]["properties"].update(x={"oneOf": [{"type": "string"}, {"type": "integer"}]}) or
     s["data"]["required"].append("x"), "profiles.reception.analysis.data.properties.x: use anyOf"),
    (lambda s: s["data"]["properties"].update(x={"type": "string", "not": {"const": "a"}}) or
     s["data"]["required"].append("x"), "profiles.reception.analysis.data.properties.x.not: not supported"),
    (lambda s: s.pop("success"), "profiles.reception.analysis.success: is required"),
    (lambda s: s.update(summary="  "), "profiles.reception.analysis.summary: expected non-empty instructions"),
    (lambda s: s.update(extra=1), "profiles.reception.analysis.extra: unknown key"),
    (lambda s: s.update(data="not a schema"), "profiles.reception.analysis.data: expected a JSON Schema object"),
])
def test_bad_block_is_a_load_error_naming_the_profile(mutate, expected):
    assert bad(mutate).startswith(expected)


def test_deep_nesting_is_refused():
    node: dict = {"type": "string"}
    for _ in range(11):
        node = {"type": "object", "properties": {"n": node}, "required": ["n"], "additionalProperties": False}
    assert "nested deeper than 10 levels" in bad(lambda s: s.update(data=node))


def test_request_uses_strict_json_schema_with_the_profile_schema():
    call = {"call_id": "rtc_1", "caller": "+1425***1212", "dialed": "+1800***1212", "profile_name": "reception"}
    body = build_request("gpt-4.1-mini", call, [{"role": "caller", "text": "Hi"}], ANALYSIS)
    fmt = body["response_format"]
    assert body["model"] == "gpt-4.1-mini"
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    schema = fmt["json_schema"]["schema"]
    assert schema["properties"]["data"] == DATA
    assert schema["required"] == ["summary", "data", "success"]
    assert schema["properties"]["success"]["required"] == ["value", "reason"]
    system = body["messages"][0]["content"]
    assert ANALYSIS["summary"] in system and ANALYSIS["success"] in system


@pytest.mark.parametrize("spoken", ["+14255551212", "425-555-1212", "(425) 555 1212", "4 2 5 5 5 5 1 2 1 2"])
def test_no_full_number_reaches_the_prompt(spoken):
    # The call input carries masked numbers; what the caller said may hold a full one.
    call = {"call_id": "rtc_1", "caller": "+1425***1212", "dialed": "+18005550199", "profile_name": "reception"}
    turns = [{"role": "caller", "text": f"Call me back on {spoken}, order 7731."},
             {"role": "agent", "text": "Sure."}]
    prompt = json.dumps(build_request("d", call, turns, ANALYSIS)["messages"])
    squeezed = re.sub(r"[\s().\-]", "", prompt)  # however the digits were spaced
    assert "4255551212" not in squeezed and "5550199" not in squeezed
    assert "1212" in prompt  # the masked form keeps the last four: the model can still refer to the number
    assert "order 7731" in prompt  # a short number is not a phone number


def test_mask_digits_leaves_ordinary_text():
    assert mask_digits("two items, 15 minutes, order 12345") == "two items, 15 minutes, order 12345"
    assert mask_digits("+14255551212") == "+1425***1212"
