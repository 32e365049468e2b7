"""rules.schema.json is generated from the validator (shared/rules_schema.py) and agrees with it: the shipped file is
what the generator makes now, every key the validator allows is described, the schema accepts routing.json and
rejects what the validator rejects for a set of samples, and each limit written in the generator is the validator's."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shared import routing
from shared.routing import RoutingRulesError, parse_rules
from shared.rules_schema import PROFILE_FIELDS, SCHEMA_FILE, TEXT_LIMITS, render, schema
from shared.settings import MAX_CALL_DURATION_CAP_SECONDS

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = json.loads((ROOT / "routing.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())


def validator_accepts(rules: Any) -> bool:
    try:
        parse_rules(rules, tool_names={"lookup_order"}, max_call_duration_seconds=MAX_CALL_DURATION_CAP_SECONDS)
    except RoutingRulesError:
        return False
    return True


def schema_accepts(rules: Any) -> bool:
    return VALIDATOR.is_valid(rules)


def test_the_shipped_schema_is_the_generated_one():
    shipped = (ROOT / SCHEMA_FILE).read_text()
    assert shipped == render(), "rules.schema.json is stale: run `python -m shared.rules_schema > rules.schema.json`"


def test_routing_json_points_at_the_schema_and_passes_it():
    jsonschema.Draft202012Validator.check_schema(schema())
    assert SHIPPED["$schema"] == f"./{SCHEMA_FILE}"
    VALIDATOR.validate(SHIPPED)


def test_every_key_the_validator_allows_is_in_the_schema_with_a_shape():
    s = schema()
    assert set(s["properties"]) == routing._ROOT_KEYS
    assert set(s["$defs"]["profile"]["properties"]) == routing._PROFILE_KEYS
    hours = s["$defs"]["profile"]["properties"]["hours"]
    assert set(hours["properties"]) == routing._HOURS_KEYS
    undescribed = sorted(routing._PROFILE_KEYS - set(PROFILE_FIELDS))
    assert undescribed == [], f"add the shape of {undescribed} to shared/rules_schema.py PROFILE_FIELDS"


def mutate(path: str, value: Any) -> dict:
    """routing.json with the value at a dotted path set (or deleted when value is DELETE)."""
    rules = copy.deepcopy(SHIPPED)
    *parents, last = path.split("/")
    node = rules
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return rules


DELETE = object()
R = "profiles/reception"
H = "profiles/after_hours_demo/hours"

REJECTED = [
    ("unknown root key", mutate("routes", {})),
    ("no numbers", mutate("numbers", DELETE)),
    ("empty profiles", {"numbers": {"*": "p"}, "profiles": {}}),
    ("bad number key", mutate("numbers/18005551212", "reception")),
    ("bad profile name", {"numbers": {"*": "p"}, "profiles": {"bad name": SHIPPED["profiles"]["reception"]}}),
    ("unknown profile key", mutate(f"{R}/colour", "blue")),
    ("no greeting", mutate(f"{R}/greeting", DELETE)),
    ("blank greeting", mutate(f"{R}/greeting", "   ")),
    ("long greeting", mutate(f"{R}/greeting", "x" * (TEXT_LIMITS["greeting"] + 1))),
    ("unknown voice", mutate(f"{R}/voice", "robot")),
    ("bad custom voice", mutate(f"{R}/voice", {"id": "robot"})),
    ("transcription without model", mutate(f"{R}/transcription", {"language": "en"})),
    ("unknown vad", mutate(f"{R}/turn_detection", {"type": "push_to_talk"})),
    ("vad threshold", mutate(f"{R}/turn_detection", {"type": "server_vad", "threshold": 2})),
    ("semantic vad key", mutate(f"{R}/turn_detection", {"type": "semantic_vad", "threshold": 0.5})),
    ("eagerness", mutate(f"{R}/turn_detection", {"type": "semantic_vad", "eagerness": "eager"})),
    ("built-in tool listed", mutate(f"{R}/tools", ["lookup_order", "end_call"])),
    ("duplicate tools", mutate(f"{R}/tools", ["lookup_order", "lookup_order"])),
    ("bad target", mutate(f"{R}/transfer_targets/sales", "http://example.com")),
    ("too short", mutate(f"{R}/max_duration_seconds", 5)),
    ("too long", mutate(f"{R}/max_duration_seconds", MAX_CALL_DURATION_CAP_SECONDS + 1)),
    ("duration as text", mutate(f"{R}/max_duration_seconds", "600")),
    ("silence half", mutate(f"{R}/silence", {"prompt": "Hello?"})),
    ("menu key", mutate(f"{R}/digits/menu/X", {"action": "end_call"})),
    ("menu action", mutate(f"{R}/digits/menu/1", {"action": "dance"})),
    ("digits mode", mutate(f"{R}/digits", {"mode": "keypad"})),
    ("weekday", mutate(f"{H}/weekly/monday", ["09:00-17:00"])),
    ("no weekly days", mutate(f"{H}/weekly", {})),
    ("range", mutate(f"{H}/weekly/mon", ["9-5"])),
    ("holiday format", mutate(f"{H}/holidays", ["25/12/2026"])),
    ("calendar country", mutate(f"{H}/holiday_calendar", {"country": "usa"})),
    ("calendar without country", mutate(f"{H}/holiday_calendar", {"subdiv": "NY"})),
    ("after-hours action", mutate(f"{H}/after_hours", {"action": "voicemail"})),
    ("after-hours status", mutate(f"{H}/after_hours", {"action": "reject", "status_code": 200})),
    ("refer without target", mutate(f"{H}/after_hours", {"action": "refer"})),
    ("caller prefix", mutate("callers", {"deny": ["1900"]})),
    ("capacity", mutate("capacity", {"max_concurrent_calls": 0})),
]

ACCEPTED = [
    ("custom voice", mutate(f"{R}/voice", {"id": "voice_abc123"})),
    ("null transcription", mutate(f"{R}/transcription", None)),
    ("model digits", mutate(f"{R}/digits", {"mode": "model"})),
    ("explicit holidays too", mutate(f"{H}/holidays", ["2026-12-24"])),
    ("calendar without subdivision", mutate(f"{H}/holiday_calendar", {"country": "GB"})),
    ("refer after hours", mutate(f"{H}/after_hours", {"action": "refer", "target_uri": "tel:+14155550123"})),
    ("callers and capacity", mutate("capacity", {"max_concurrent_calls": 10}) | {
        "callers": {"allow": ["+1"], "deny": ["+1900"], "reject_status_code": 603}}),
    ("longest greeting", mutate(f"{R}/greeting", "x" * TEXT_LIMITS["greeting"])),
]


@pytest.mark.parametrize(("case", "rules"), REJECTED, ids=[c for c, _ in REJECTED])
def test_the_schema_rejects_what_the_validator_rejects(case, rules):
    assert not validator_accepts(rules), case
    assert not schema_accepts(rules), case


@pytest.mark.parametrize(("case", "rules"), ACCEPTED, ids=[c for c, _ in ACCEPTED])
def test_the_schema_accepts_what_the_validator_accepts(case, rules):
    assert validator_accepts(rules), case
    assert schema_accepts(rules), case


def _profile_with(key: str, value: Any) -> dict:
    profile: dict[str, Any] = {"instructions": "x", "greeting": "y"}
    if key == "transcription":
        value = {"model": value}
    elif key == "silence":
        value = {"prompt": value, "goodbye": "bye"}
    elif key == "menu_text":
        key, value = "digits", {"mode": "menu", "menu": {"1": {"action": "say", "text": value}}}
    profile[key] = value
    return {"numbers": {"*": "p"}, "profiles": {"p": profile}}


@pytest.mark.parametrize("field", sorted(TEXT_LIMITS))
def test_each_text_limit_is_the_validators(field):
    limit = TEXT_LIMITS[field]
    assert validator_accepts(_profile_with(field, "x" * limit))
    assert not validator_accepts(_profile_with(field, "x" * (limit + 1)))
    assert schema_accepts(_profile_with(field, "x" * limit))
    assert not schema_accepts(_profile_with(field, "x" * (limit + 1)))


@pytest.mark.parametrize("field", ["max_duration_seconds", "closing_seconds"])
def test_each_integer_bound_is_the_validators(field):
    shape = PROFILE_FIELDS[field]
    for value, ok in ((shape["minimum"], True), (shape["minimum"] - 1, False), (shape["maximum"], True),
                      (shape["maximum"] + 1, False)):
        rules = _profile_with(field, value)
        assert validator_accepts(rules) is ok, (field, value)
        assert schema_accepts(rules) is ok, (field, value)
