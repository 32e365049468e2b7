"""Loading the routing rules: every setting is checked at load, and bad rules get a clear error that names the field
at fault (``profiles.desk.hours.after_hours.status_code: ...``) and change nothing. Values at the edges of every
limit load; one step past them is refused. Also the profile's JSON (it travels in the orchestration input) and the
start-up warning about explicit holidays that are all past."""

from __future__ import annotations

import copy
import json
import logging
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import pytest

from shared.routing import (
    AgentProfile,
    RoutingRules,
    RoutingRulesError,
    load_rules,
    parse_rules,
    parse_rules_text,
    warn_about_past_holidays,
)
from shared.tools import ToolRegistry

CAP = 900  # the app's cap on a call's duration (MAX_CALL_DURATION_SECONDS)
TOOLS = {"lookup_order"}
ALL_WEEK = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def full() -> dict[str, Any]:
    """Rules that use every setting there is, each in its canonical form."""
    return {
        "$schema": "./rules.schema.json",
        "callers": {"allow": ["+1", "+44"], "deny": ["+1900"], "reject_status_code": 603},
        "capacity": {"max_concurrent_calls": 20},
        "numbers": {"+18005551212": "desk", "+18005550100": "night", "*": "desk"},
        "profiles": {
            "desk": {
                "instructions": "You are Alex.",
                "greeting": "Hello!",
                "voice": "marin",
                "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en", "prompt": "Order numbers."},
                "turn_detection": {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                   "silence_duration_ms": 500, "idle_timeout_ms": 8000, "create_response": True,
                                   "interrupt_response": False},
                "tools": ["lookup_order"],
                "transfer_targets": {"sales": "tel:+14155550123", "support": "sips:support@example.com"},
                "max_duration_seconds": 600,
                "closing_seconds": 20,
                "closing_line": "Please wrap up.",
                "silence": {"prompt": "Still there?", "goodbye": "Bye!"},
                "digits": {"mode": "menu", "menu": {
                    "1": {"action": "transfer", "target": "sales", "text": "Putting you through."},
                    "2": {"action": "say", "text": "We open at nine."},
                    "0": {"action": "end_call", "text": "Goodbye."}}},
                "hours": {"timezone": "America/New_York",
                          "weekly": {"mon": ["09:30-17:00"], "fri": ["09:00-12:00", "13:00-17:00"]},
                          "holidays": ["2026-12-24", "2026-12-31"],
                          "holiday_calendar": {"country": "US", "subdiv": "NY"},
                          "after_hours": {"action": "reject", "status_code": 503}},
                "analysis": {"summary": "What the caller wanted.", "success": "The question was answered."},
                "mcp_servers": [{"label": "orders", "url": "https://mcp.example.com/mcp", "require_approval": "never"}],
            },
            "night": {
                "instructions": "Night desk.",
                "greeting": "Night desk.",
                "voice": {"id": "voice_night_1"},
                "turn_detection": {"type": "semantic_vad", "eagerness": "low", "create_response": True,
                                   "interrupt_response": True},
                "digits": {"mode": "model"},
                "hours": {"timezone": "Europe/London", "weekly": {"sat": ["22:00-06:00"]},
                          "holidays": [],
                          "after_hours": {"action": "refer", "target_uri": "sip:voicemail@example.com"}},
            },
        },
    }


def load(data: Any, *, tools: set[str] = TOOLS, cap: int = CAP) -> RoutingRules:
    return parse_rules(data, tool_names=tools, max_call_duration_seconds=cap)


def edit(path: str, value: Any = None, *, delete: bool = False) -> Callable[[dict[str, Any]], None]:
    """A change to the rules at a '/'-separated path ("profiles/desk/hours/weekly/mon/0")."""
    def apply(data: dict[str, Any]) -> None:
        *parents, last = path.split("/")
        node: Any = data
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        if delete:
            del node[int(last) if isinstance(node, list) else last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return apply


D = "profiles/desk"
TD = f"{D}/turn_detection"
H = f"{D}/hours"
M = f"{D}/digits/menu"
AH = f"{H}/after_hours"

# (change, the field the error must name, a word the explanation must contain)
BAD: list[tuple[Callable[[dict[str, Any]], None], str, str]] = [
    # the file's top level
    (edit("profiles", delete=True), "profiles", "required"),
    (edit("profiles", ["desk"]), "profiles", "list"),
    (edit("profiles", {}), "profiles", "at least one"),
    (edit("profiles/front desk", {"instructions": "x", "greeting": "y"}), "profiles.front desk", "letters"),
    (edit("profiles/_desk", {"instructions": "x", "greeting": "y"}), "profiles._desk", "letters"),
    (edit("profiles/" + "p" * 65, {"instructions": "x", "greeting": "y"}), "profiles." + "p" * 65, "letters"),
    (edit("numbers", ["+18005551212"]), "numbers", "list"),
    (edit("numbers", {}), "numbers", "at least one"),
    (edit("numbers/+1", "desk"), "numbers.+1", "E.164"),
    (edit("numbers/+08005551212", "desk"), "numbers.+08005551212", "E.164"),
    (edit("numbers/+1234567890123456", "desk"), "numbers.+1234567890123456", "E.164"),
    (edit("numbers/+1800555121\u0662", "desk"), "numbers.+1800555121\u0662", "E.164"),
    (edit("numbers/*", 7), "numbers.*", "profile name"),
    (edit("numbers/*", "ghost"), "numbers.*", "ghost"),
    (edit("callers", ["+1"]), "callers", "object"),
    (edit("callers/block", ["+1"]), "callers.block", "unknown key"),
    (edit("callers/allow", "+1"), "callers.allow", "got str"),
    (edit("callers/deny", ["+1900", 1900]), "callers.deny[1]", "prefix"),
    (edit("callers/allow", ["+"]), "callers.allow[0]", "prefix"),
    (edit("callers/allow", ["1"]), "callers.allow[0]", "prefix"),
    (edit("callers/allow", ["+1234567890123456"]), "callers.allow[0]", "prefix"),
    (edit("callers/allow", ["+4\u0664"]), "callers.allow[0]", "prefix"),
    (edit("callers/reject_status_code", 299), "callers.reject_status_code", "299"),
    (edit("callers/reject_status_code", 700), "callers.reject_status_code", "700"),
    (edit("callers/reject_status_code", "403"), "callers.reject_status_code", "integer"),
    (edit("capacity", 20), "capacity", "object"),
    (edit("capacity/max_calls", 20), "capacity.max_calls", "unknown key"),
    (edit("capacity/max_concurrent_calls", delete=True), "capacity.max_concurrent_calls", "required"),
    (edit("capacity/max_concurrent_calls", 0), "capacity.max_concurrent_calls", "outside"),
    (edit("capacity/max_concurrent_calls", 100_001), "capacity.max_concurrent_calls", "outside"),
    (edit("capacity/max_concurrent_calls", 2.5), "capacity.max_concurrent_calls", "integer"),
    # a profile
    (edit(D, "You are Alex."), "profiles.desk", "object"),
    (edit(f"{D}/voicee", "marin"), "profiles.desk.voicee", "unknown key"),
    (edit(f"{D}/instructions", delete=True), "profiles.desk.instructions", "required"),
    (edit(f"{D}/greeting", delete=True), "profiles.desk.greeting", "required"),
    (edit(f"{D}/instructions", 5), "profiles.desk.instructions", "string"),
    (edit(f"{D}/instructions", "x" * 20_001), "profiles.desk.instructions", "longer"),
    (edit(f"{D}/greeting", "\n"), "profiles.desk.greeting", "non-empty"),
    (edit(f"{D}/greeting", "x" * 1_001), "profiles.desk.greeting", "longer"),
    (edit(f"{D}/voice", "robot"), "profiles.desk.voice", "robot"),
    (edit(f"{D}/voice", 5), "profiles.desk.voice", "unknown voice"),
    (edit(f"{D}/voice", {}), "profiles.desk.voice.id", "required"),
    (edit(f"{D}/voice", {"id": "voice_1", "name": "Ann"}), "profiles.desk.voice.name", "unknown key"),
    (edit(f"{D}/voice", {"id": "abc"}), "profiles.desk.voice.id", "voice_"),
    (edit(f"{D}/voice", {"id": 5}), "profiles.desk.voice.id", "voice_"),
    (edit(f"{D}/voice", {"id": "voice_" + "a" * 129}), "profiles.desk.voice.id", "voice_"),
    (edit(f"{D}/transcription", "gpt-4o-mini-transcribe"), "profiles.desk.transcription", "object"),
    (edit(f"{D}/transcription/model", delete=True), "profiles.desk.transcription.model", "required"),
    (edit(f"{D}/transcription/lang", "en"), "profiles.desk.transcription.lang", "unknown key"),
    (edit(f"{D}/transcription/language", ""), "profiles.desk.transcription.language", "non-empty"),
    (edit(f"{D}/transcription/prompt", "x" * 2_001), "profiles.desk.transcription.prompt", "longer"),
    (edit(f"{D}/tools", "lookup_order"), "profiles.desk.tools", "list"),
    (edit(f"{D}/tools", [5]), "profiles.desk.tools[0]", "tool name"),
    (edit(f"{D}/tools", ["nope"]), "profiles.desk.tools[0]", "nope"),
    (edit(f"{D}/tools", ["lookup_order", "transfer_call"]), "profiles.desk.tools[1]", "built in"),
    (edit(f"{D}/tools", ["lookup_order", "lookup_order"]), "profiles.desk.tools", "duplicate"),
    (edit(f"{D}/transfer_targets", ["tel:+14155550123"]), "profiles.desk.transfer_targets", "object"),
    (edit(f"{D}/transfer_targets/to sales", "tel:+14155550123"), "profiles.desk.transfer_targets.to sales", "letters"),
    (edit(f"{D}/transfer_targets/sales", 14155550123), "profiles.desk.transfer_targets.sales", "URI"),
    (edit(f"{D}/max_duration_seconds", 9), "profiles.desk.max_duration_seconds", "outside"),
    (edit(f"{D}/max_duration_seconds", CAP + 1), "profiles.desk.max_duration_seconds", "outside"),
    (edit(f"{D}/max_duration_seconds", 60.0), "profiles.desk.max_duration_seconds", "integer"),
    (edit(f"{D}/closing_seconds", -1), "profiles.desk.closing_seconds", "outside"),
    (edit(f"{D}/closing_seconds", 600), "profiles.desk.closing_seconds", "outside"),  # as long as the call
    (edit(f"{D}/closing_line", ""), "profiles.desk.closing_line", "non-empty"),
    (edit(f"{D}/closing_line", "x" * 1_001), "profiles.desk.closing_line", "longer"),
    (edit(f"{D}/silence", "Still there?"), "profiles.desk.silence", "object"),
    (edit(f"{D}/silence/prompt", delete=True), "profiles.desk.silence.prompt", "required"),
    (edit(f"{D}/silence/after_seconds", 5), "profiles.desk.silence.after_seconds", "unknown key"),
    (edit(f"{D}/silence/goodbye", " "), "profiles.desk.silence.goodbye", "non-empty"),
    (edit(f"{D}/silence/prompt", "x" * 1_001), "profiles.desk.silence.prompt", "longer"),
    (edit(f"{D}/analysis", "summarise"), "profiles.desk.analysis", "object"),
    (edit(f"{D}/analysis/summary", " "), "profiles.desk.analysis.summary", "non-empty"),
    (edit(f"{D}/mcp_servers", {"label": "orders"}), "profiles.desk.mcp_servers", "list"),
    (edit(f"{D}/mcp_servers/0/url", "http://mcp.example.com/mcp"), "profiles.desk.mcp_servers[0].url", "https"),
    # turn detection
    (edit(TD, "server_vad"), "profiles.desk.turn_detection.type", "server_vad"),
    (edit(TD, {"type": "magic"}), "profiles.desk.turn_detection.type", "semantic_vad"),
    (edit(f"{TD}/eagerness", "low"), "profiles.desk.turn_detection.eagerness", "unknown key"),
    (edit(f"{TD}/threshold", -0.1), "profiles.desk.turn_detection.threshold", "0.0 to 1.0"),
    (edit(f"{TD}/threshold", 1.01), "profiles.desk.turn_detection.threshold", "0.0 to 1.0"),
    (edit(f"{TD}/threshold", True), "profiles.desk.turn_detection.threshold", "0.0 to 1.0"),
    (edit(f"{TD}/threshold", "0.5"), "profiles.desk.turn_detection.threshold", "0.0 to 1.0"),
    (edit(f"{TD}/prefix_padding_ms", -1), "profiles.desk.turn_detection.prefix_padding_ms", "outside"),
    (edit(f"{TD}/prefix_padding_ms", 10_001), "profiles.desk.turn_detection.prefix_padding_ms", "outside"),
    (edit(f"{TD}/silence_duration_ms", -1), "profiles.desk.turn_detection.silence_duration_ms", "outside"),
    (edit(f"{TD}/silence_duration_ms", 10_001), "profiles.desk.turn_detection.silence_duration_ms", "outside"),
    (edit(f"{TD}/silence_duration_ms", "500"), "profiles.desk.turn_detection.silence_duration_ms", "integer"),
    (edit(f"{TD}/idle_timeout_ms", 999), "profiles.desk.turn_detection.idle_timeout_ms", "outside"),
    (edit(f"{TD}/idle_timeout_ms", 600_001), "profiles.desk.turn_detection.idle_timeout_ms", "outside"),
    (edit(f"{TD}/create_response", "yes"), "profiles.desk.turn_detection.create_response", "true or false"),
    (edit(f"{TD}/interrupt_response", 0), "profiles.desk.turn_detection.interrupt_response", "true or false"),
    (edit("profiles/night/turn_detection/eagerness", "urgent"), "profiles.night.turn_detection.eagerness", "medium"),
    (edit("profiles/night/turn_detection/threshold", 0.5), "profiles.night.turn_detection.threshold", "unknown key"),
    (edit("profiles/night/turn_detection/interrupt_response", None), "profiles.night.turn_detection.interrupt_response",
     "true or false"),
    # the keypad
    (edit(f"{D}/digits", "menu"), "profiles.desk.digits", "object"),
    (edit(f"{D}/digits/mode", delete=True), "profiles.desk.digits.mode", "required"),
    (edit(f"{D}/digits/timeout", 5), "profiles.desk.digits.timeout", "unknown key"),
    (edit(f"{D}/digits/mode", "tones"), "profiles.desk.digits.mode", "menu"),
    (edit("profiles/night/digits/menu", {"1": {"action": "end_call"}}), "profiles.night.digits.menu", "only"),
    (edit(f"{D}/digits/menu", delete=True), "profiles.desk.digits.menu", "object"),
    (edit(f"{D}/digits/menu", {}), "profiles.desk.digits.menu", "at least one"),
    (edit(f"{M}/12", {"action": "end_call"}), "profiles.desk.digits.menu.12", "DTMF"),
    (edit(f"{M}/E", {"action": "end_call"}), "profiles.desk.digits.menu.E", "DTMF"),
    (edit(f"{M}/", {"action": "end_call"}), "profiles.desk.digits.menu.", "DTMF"),
    (edit(f"{M}/1", "sales"), "profiles.desk.digits.menu.1.action", "transfer"),
    (edit(f"{M}/1", {"target": "sales"}), "profiles.desk.digits.menu.1.action", "say"),
    (edit(f"{M}/1/action", "dial"), "profiles.desk.digits.menu.1.action", "end_call"),
    (edit(f"{M}/1/target", delete=True), "profiles.desk.digits.menu.1.target", "required"),
    (edit(f"{M}/1/number", "+14155550123"), "profiles.desk.digits.menu.1.number", "unknown key"),
    (edit(f"{M}/1/target", "billing"), "profiles.desk.digits.menu.1.target", "billing"),
    (edit(f"{M}/1/target", None), "profiles.desk.digits.menu.1.target", "target name"),
    (edit(f"{M}/2/text", delete=True), "profiles.desk.digits.menu.2.text", "required"),
    (edit(f"{M}/2/target", "sales"), "profiles.desk.digits.menu.2.target", "unknown key"),
    (edit(f"{M}/2/text", "x" * 2_001), "profiles.desk.digits.menu.2.text", "longer"),
    (edit(f"{M}/0/target", "sales"), "profiles.desk.digits.menu.0.target", "unknown key"),
    (edit(f"{M}/0/text", ""), "profiles.desk.digits.menu.0.text", "non-empty"),
    (edit(f"{M}/1/text", 5), "profiles.desk.digits.menu.1.text", "non-empty"),
    # opening hours
    (edit(H, "09:00-17:00"), "profiles.desk.hours", "object"),
    (edit(f"{H}/timezone", delete=True), "profiles.desk.hours.timezone", "required"),
    (edit(f"{H}/weekly", delete=True), "profiles.desk.hours.weekly", "required"),
    (edit(f"{H}/closed", ["2026-12-25"]), "profiles.desk.hours.closed", "unknown key"),
    (edit(f"{H}/timezone", -5), "profiles.desk.hours.timezone", "IANA"),
    (edit(f"{H}/timezone", "EST+5"), "profiles.desk.hours.timezone", "EST+5"),
    (edit(f"{H}/timezone", "../etc/passwd"), "profiles.desk.hours.timezone", "unknown time zone"),
    (edit(f"{H}/weekly", ["09:00-17:00"]), "profiles.desk.hours.weekly", "object"),
    (edit(f"{H}/weekly", {}), "profiles.desk.hours.weekly", "at least one"),
    (edit(f"{H}/weekly/mon", "09:00-17:00"), "profiles.desk.hours.weekly.mon", "got str"),
    (edit(f"{H}/weekly/monday", ["09:00-17:00"]), "profiles.desk.hours.weekly.monday", "unknown key"),
    (edit(f"{H}/weekly/fri/1", "13:00-17:60"), "profiles.desk.hours.weekly.fri[1]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", 930), "profiles.desk.hours.weekly.mon[0]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", "9:30-17:00"), "profiles.desk.hours.weekly.mon[0]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", "09:30-17:00\n"), "profiles.desk.hours.weekly.mon[0]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", "09:30 - 17:00"), "profiles.desk.hours.weekly.mon[0]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", "09:60-17:00"), "profiles.desk.hours.weekly.mon[0]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", "24:00-06:00"), "profiles.desk.hours.weekly.mon[0]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", "29:00-06:00"), "profiles.desk.hours.weekly.mon[0]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", "09:00-25:00"), "profiles.desk.hours.weekly.mon[0]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", "09:00-19:61"), "profiles.desk.hours.weekly.mon[0]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", "\u0660\u0669:00-17:00"), "profiles.desk.hours.weekly.mon[0]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", "0\u0669:00-17:00"), "profiles.desk.hours.weekly.mon[0]", "HH:MM"),
    (edit(f"{H}/weekly/mon/0", "22:00-24:01"), "profiles.desk.hours.weekly.mon[0]", "after 24:00"),
    (edit(f"{H}/weekly/mon/0", "22:00-24:59"), "profiles.desk.hours.weekly.mon[0]", "after 24:00"),
    (edit(f"{H}/weekly/mon/0", "09:30-09:30"), "profiles.desk.hours.weekly.mon[0]", "empty"),
    (edit(f"{H}/holidays", "2026-12-24"), "profiles.desk.hours.holidays", "got str"),
    (edit(f"{H}/holidays/1", 20261231), "profiles.desk.hours.holidays[1]", "ISO date"),
    (edit(f"{H}/holidays/1", "2026-12-1"), "profiles.desk.hours.holidays[1]", "ISO date"),
    (edit(f"{H}/holidays/1", "2026-12-31T00:00"), "profiles.desk.hours.holidays[1]", "ISO date"),
    (edit(f"{H}/holidays/1", "\u0662\u0660\u0662\u0666-12-31"), "profiles.desk.hours.holidays[1]", "ISO date"),
    (edit(f"{H}/holidays/1", "2026-13-01"), "profiles.desk.hours.holidays[1]", "calendar date"),
    (edit(f"{H}/holiday_calendar", "US"), "profiles.desk.hours.holiday_calendar", "object"),
    (edit(f"{H}/holiday_calendar/region", "NY"), "profiles.desk.hours.holiday_calendar.region", "unknown key"),
    (edit(f"{H}/holiday_calendar/country", delete=True), "profiles.desk.hours.holiday_calendar.country", "required"),
    (edit(f"{H}/holiday_calendar/country", 840), "profiles.desk.hours.holiday_calendar.country", "country code"),
    (edit(f"{H}/holiday_calendar/country", "U"), "profiles.desk.hours.holiday_calendar.country", "country code"),
    (edit(f"{H}/holiday_calendar/country", "UNSA"), "profiles.desk.hours.holiday_calendar.country", "country code"),
    (edit(f"{H}/holiday_calendar/country", "XX"), "profiles.desk.hours.holiday_calendar.country",
     "no holiday calendar"),
    (edit(f"{H}/holiday_calendar/subdiv", 36), "profiles.desk.hours.holiday_calendar.subdiv",
     "subdivision code"),
    (edit(f"{H}/holiday_calendar/subdiv", ""), "profiles.desk.hours.holiday_calendar.subdiv",
     "subdivision code"),
    (edit(f"{H}/holiday_calendar/subdiv", "-NY"), "profiles.desk.hours.holiday_calendar.subdiv",
     "subdivision code"),
    (edit(f"{H}/holiday_calendar/subdiv", "N" * 41), "profiles.desk.hours.holiday_calendar.subdiv",
     "subdivision code"),
    (edit(f"{H}/holiday_calendar/subdiv", "ZZ"), "profiles.desk.hours.holiday_calendar.subdiv", "ZZ"),
    # the after-hours answer
    (edit(AH, "reject"), "profiles.desk.hours.after_hours.action", "refer"),
    (edit(AH, {}), "profiles.desk.hours.after_hours.action", "reject"),
    (edit(f"{AH}/action", "voicemail"), "profiles.desk.hours.after_hours.action", "refer"),
    (edit(f"{AH}/target_uri", "tel:+14155550123"), "profiles.desk.hours.after_hours.target_uri", "unknown key"),
    (edit(f"{AH}/status_code", 299), "profiles.desk.hours.after_hours.status_code", "outside"),
    (edit(f"{AH}/status_code", 700), "profiles.desk.hours.after_hours.status_code", "outside"),
    (edit(f"{AH}/status_code", "503"), "profiles.desk.hours.after_hours.status_code", "integer"),
    (edit(f"{AH}/status_code", None), "profiles.desk.hours.after_hours.status_code", "integer"),
    (edit("profiles/night/hours/after_hours/target_uri", delete=True), "profiles.night.hours.after_hours.target_uri",
     "required"),
    (edit("profiles/night/hours/after_hours/status_code", 480), "profiles.night.hours.after_hours.status_code",
     "unknown key"),
    (edit("profiles/night/hours/after_hours/target_uri", "voicemail"), "profiles.night.hours.after_hours.target_uri",
     "URI"),
]

# Transfer and refer targets: what the call-control client will send (shared/call_control.py).
BAD_TARGETS = ["http://example.com", "tel:12", "tel:+" + "1" * 33, "tel:+1 415 555 0123", "tel:+14155550123;",
               "tel:+14155550123;ext=1 2", "sip:alice", "sip:@example.com", "sip:alice@", "sip:al ice@example.com",
               "sipx:alice@example.com", "SIP:alice@example.com", " tel:+14155550123", "tel:+14155550123\n"]
GOOD_TARGETS = ["tel:+14155550123", "tel:123", "tel:" + "1" * 32, "tel:4155550123", "tel:(415)555-0123",
                "tel:+1.415.555.0123", "tel:+14155550123;ext=12", "tel:+14155550123;ext=12;isub=3",
                "sip:alice@example.com", "sips:alice@example.com:5061;transport=tls", "sip:+14155550123@pstn.example"]


def _id(text: str) -> str:
    # Test ids in plain ASCII: mutmut selects tests by node id, and pytest's escaped ids of non-ASCII text do not
    # select anything when given back on the command line.
    return re.sub(r"[^ -~]", "?", text)


def refused(data: Any, *, tools: set[str] = TOOLS, cap: int = CAP) -> str:
    before = copy.deepcopy(data)
    with pytest.raises(RoutingRulesError) as info:
        load(data, tools=tools, cap=cap)
    assert data == before  # loading never changes the document it was given
    return str(info.value)


def test_the_full_rules_load():
    rules = load(full())
    assert set(rules.profiles) == {"desk", "night"}
    assert (rules.allow, rules.deny, rules.caller_reject_status, rules.max_concurrent_calls) == \
           (("+1", "+44"), ("+1900",), 603, 20)


@pytest.mark.parametrize(("change", "field", "hint"), BAD, ids=[_id(f"{f[:60]}|{h}") for _, f, h in BAD])
def test_bad_rules_get_an_error_naming_the_field(change, field, hint):
    data = full()
    change(data)
    message = refused(data)
    assert message.startswith(f"{field}: "), message
    # The explanation, not its exact wording: what was expected or what was wrong.
    assert hint.lower() in message.removeprefix(f"{field}: ").lower(), message


@pytest.mark.parametrize("target", BAD_TARGETS, ids=[_id(t) for t in BAD_TARGETS])
def test_a_target_the_call_control_client_would_refuse_is_refused_at_load(target):
    for path, field in ((f"{D}/transfer_targets/sales", "profiles.desk.transfer_targets.sales"),
                        ("profiles/night/hours/after_hours/target_uri", "profiles.night.hours.after_hours.target_uri")):
        data = full()
        edit(path, target)(data)
        message = refused(data)
        assert message.startswith(f"{field}: ") and "URI" in message, message


@pytest.mark.parametrize("target", GOOD_TARGETS, ids=[_id(t) for t in GOOD_TARGETS])
def test_tel_and_sip_targets_load(target):
    data = full()
    edit(f"{D}/transfer_targets/sales", target)(data)
    edit("profiles/night/hours/after_hours/target_uri", target)(data)
    rules = load(data)
    assert (rules.profiles["desk"].transfer_targets or {})["sales"] == target
    night = rules.profiles["night"].hours
    assert night is not None and night.after_hours.target_uri == target


# Every object with a fixed set of keys, with a key that is not one of them.
NESTED = ["callers", "capacity", D, f"{D}/transcription", TD, "profiles/night/turn_detection", f"{D}/silence",
          f"{D}/digits", "profiles/night/digits", f"{M}/1", f"{M}/2", f"{M}/0", H, f"{H}/weekly",
          f"{H}/holiday_calendar", AH, "profiles/night/hours/after_hours", "profiles/night/voice", f"{D}/analysis",
          f"{D}/mcp_servers/0"]


@pytest.mark.parametrize("where", NESTED)
def test_an_unknown_key_in_any_nested_object_is_an_error_naming_it(where):
    data = full()
    edit(f"{where}/colour", "blue")(data)
    field = where.replace("/", ".").replace(".mcp_servers.0", ".mcp_servers[0]") + ".colour"
    message = refused(data)
    assert message.startswith(f"{field}: unknown key"), message


def test_an_unknown_key_in_the_file_names_just_the_key():
    data = full()
    data["routes"] = {}
    assert refused(data).startswith("routes: unknown key")
    data = full()
    del data["numbers"]
    assert refused(data).startswith("numbers: is required")
    assert refused(["numbers"]).startswith("(root): expected an object")


def test_names_of_tools_are_checked_against_the_registered_tools():
    data = full()
    message = refused(data, tools=set())
    assert message.startswith("profiles.desk.tools[0]: ") and "lookup_order" in message
    assert load(data, tools={"lookup_order", "book_visit"}).profiles["desk"].tools == ("lookup_order",)


def test_the_call_cap_setting_caps_every_profile():
    data = full()
    assert refused(data, cap=599).startswith("profiles.desk.max_duration_seconds: ")
    assert load(data, cap=600).profiles["desk"].max_duration_seconds == 600
    # Without a duration of its own, a profile's closing warning must still come before the cap.
    del data["profiles"]["desk"]["max_duration_seconds"]
    data["profiles"]["desk"]["closing_seconds"] = CAP
    assert refused(data).startswith("profiles.desk.closing_seconds: ")
    data["profiles"]["desk"]["closing_seconds"] = CAP - 1
    assert load(data).profiles["desk"].closing_seconds == CAP - 1


# ------------------------------------------------------------------------------------ the edges that load


AT_THE_LIMITS: list[tuple[str, Any] | tuple[str, Any, str, Any]] = [
    (f"{D}/instructions", "x" * 20_000),
    (f"{D}/greeting", "x" * 1_000),
    (f"{D}/closing_line", "x" * 1_000),
    (f"{D}/silence/prompt", "x" * 1_000),
    (f"{D}/silence/goodbye", "x" * 1_000),
    (f"{D}/transcription/prompt", "x" * 2_000),
    (f"{M}/2/text", "x" * 2_000),
    (f"{D}/max_duration_seconds", 10, f"{D}/closing_seconds", 9),
    (f"{D}/max_duration_seconds", CAP),
    (f"{D}/closing_seconds", 0),
    (f"{D}/closing_seconds", 599),
    ("capacity/max_concurrent_calls", 1),
    ("capacity/max_concurrent_calls", 100_000),
    ("callers/reject_status_code", 300),
    ("callers/reject_status_code", 699),
    (f"{AH}/status_code", 300),
    (f"{AH}/status_code", 699),
    (f"{TD}/threshold", 0),
    (f"{TD}/threshold", 1.0),
    (f"{TD}/prefix_padding_ms", 0),
    (f"{TD}/prefix_padding_ms", 10_000),
    (f"{TD}/silence_duration_ms", 0),
    (f"{TD}/silence_duration_ms", 10_000),
    (f"{TD}/idle_timeout_ms", 1_000),
    (f"{TD}/idle_timeout_ms", 600_000),
    (f"{TD}/idle_timeout_ms", None),  # no idle timeout
    (f"{TD}/create_response", False),
    ("profiles/night/turn_detection/eagerness", "low"),
    ("profiles/night/turn_detection/eagerness", "medium"),
    ("profiles/night/turn_detection/eagerness", "high"),
    ("profiles/night/turn_detection/eagerness", "auto"),
    (f"{D}/voice", {"id": "voice_" + "a" * 128}),
    (f"{D}/voice", {"id": "voice_A-b_9"}),
    (f"{H}/weekly/mon/0", "00:00-24:00"),
    (f"{H}/weekly/mon/0", "23:59-00:00"),
    (f"{H}/weekly/mon/0", "19:59-20:00"),
    (f"{H}/holidays/0", "2028-02-29"),
    (f"{H}/holiday_calendar/country", "USA"),
    (f"{H}/holiday_calendar/subdiv", "São Paulo Capital", f"{H}/holiday_calendar/country", "BR"),  # a named one
    ("callers/allow/0", "+123456789012345"),
    ("callers/allow/0", "+0"),
]


@pytest.mark.parametrize("edits", AT_THE_LIMITS, ids=[_id(f"{e[0]}={str(e[1])[:20]}") for e in AT_THE_LIMITS])
def test_values_at_the_edge_of_every_limit_load(edits):
    data = full()
    for i in range(0, len(edits), 2):
        edit(edits[i], edits[i + 1])(data)
    load(data)


def test_names_and_numbers_at_their_longest_load():
    data = full()
    name = "P" + "a-b_" * 15 + "xyz"  # 64 characters
    longest = "+1" + "8" * 14  # 15 digits
    data["profiles"][name] = data["profiles"].pop("night")
    data["numbers"] = {longest: name, "+12": "desk"}
    data["profiles"]["desk"]["transfer_targets"]["T-2_b"] = "tel:+14155550123"
    rules = load(data)
    assert rules.decide("+14255551212", longest, datetime(2026, 12, 5, 23, tzinfo=UTC), 0).profile_name == name
    assert rules.decide("+14255551212", "+12", datetime(2026, 12, 7, 15, tzinfo=UTC), 0).profile_name == "desk"


def test_every_voice_of_the_realtime_api_loads():
    for voice in ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"):
        data = full()
        data["profiles"]["desk"]["voice"] = voice
        assert load(data).profiles["desk"].voice == voice


def test_every_keypad_key_may_have_a_menu_entry():
    data = full()
    data["profiles"]["desk"]["digits"]["menu"] = {k: {"action": "end_call"} for k in "0123456789*#ABCD"}
    menu = (load(data).profiles["desk"].digits or {})["menu"]
    assert sorted(menu) == sorted("0123456789*#ABCD")


def test_nulls_mean_not_set_where_the_format_allows_them():
    data = full()
    data["profiles"]["desk"]["transcription"] = None
    data["profiles"]["desk"]["turn_detection"] = None
    desk = load(data).profiles["desk"]
    assert desk.transcription is None and desk.turn_detection is None
    assert "input" not in desk.accept_body("d", [])["audio"]  # the platform's defaults apply


# ------------------------------------------------------------------------------------------ the rules file


def test_the_file_must_be_utf8_json(tmp_path):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(full()), encoding="utf-16")  # with a BOM, as some editors save
    with pytest.raises(RoutingRulesError) as info:
        load_rules(path, tool_names=TOOLS, max_call_duration_seconds=CAP)
    assert str(info.value).startswith(f"{path}: ") and "UTF-8" in str(info.value)
    path.write_bytes(b'{"numbers": "\xff"}')
    with pytest.raises(RoutingRulesError, match="UTF-8") as info:
        load_rules(path, tool_names=TOOLS, max_call_duration_seconds=CAP)
    assert str(info.value).startswith(f"{path}: ")


def test_rules_from_a_blob_are_bytes_or_text_and_errors_name_the_source():
    text = json.dumps(full())
    for blob in (text, text.encode()):
        rules = parse_rules_text(blob, "rules/v7.json", tool_names=TOOLS, max_call_duration_seconds=CAP)
        assert set(rules.profiles) == {"desk", "night"}
    for blob, says in (("[" * 100_000, "nested too deeply"), ('{"numbers": ', "not JSON"), (b"\xc3(", "UTF-8")):
        with pytest.raises(RoutingRulesError) as info:
            parse_rules_text(blob, "rules/v7.json", tool_names=TOOLS, max_call_duration_seconds=CAP)
        assert str(info.value).startswith("rules/v7.json: ") and says in str(info.value)


# ------------------------------------------------------------------------------------------ profile JSON


def test_a_loaded_profiles_json_is_what_the_file_said():
    data = full()
    rules = load(data)
    for name, profile in rules.profiles.items():
        expected = data["profiles"][name]
        got = json.loads(json.dumps(profile.to_json()))
        assert got == expected, name
        assert AgentProfile.from_json(got, tool_names=TOOLS) == profile


def test_a_calendar_without_a_subdivision_round_trips():
    data = full()
    del data["profiles"]["desk"]["hours"]["holiday_calendar"]["subdiv"]
    profile = load(data).profiles["desk"]
    assert profile.to_json()["hours"]["holiday_calendar"] == {"country": "US"}
    assert AgentProfile.from_json(profile.to_json()) == profile


def test_changing_a_profiles_json_does_not_change_the_loaded_rules():
    rules = load(full())
    desk = rules.profiles["desk"]
    before = copy.deepcopy(desk.to_json())
    out = desk.to_json()
    out["digits"]["menu"]["2"]["text"] = "changed"
    out["analysis"]["summary"] = "changed"
    out["mcp_servers"][0]["url"] = "https://evil.example.com/mcp"
    out["hours"]["weekly"]["mon"].append("18:00-19:00")
    assert desk.to_json() == before


def test_a_profile_from_json_checks_its_tools_when_the_registered_tools_are_given():
    data = full()["profiles"]["desk"]
    assert AgentProfile.from_json(data).tools == ("lookup_order",)  # no registry at hand: names are not checked
    assert AgentProfile.from_json(data, tool_names=["lookup_order"]).tools == ("lookup_order",)
    with pytest.raises(RoutingRulesError, match=r"^profile\.tools\[0\]: .*lookup_order"):
        AgentProfile.from_json(data, tool_names=["book_visit"])
    with pytest.raises(RoutingRulesError, match=r"^profile\.max_duration_seconds: "):
        AgentProfile.from_json(data, max_call_duration_seconds=300)


def test_the_accept_body_carries_the_instructions_voice_and_audio_settings():
    desk = load(full()).profiles["desk"]
    body = desk.accept_body("gpt-realtime", [])
    assert body["instructions"] == "You are Alex."
    assert body["audio"]["input"]["transcription"] == full()["profiles"]["desk"]["transcription"]
    assert body["audio"]["input"]["turn_detection"] == full()["profiles"]["desk"]["turn_detection"]
    assert body["audio"]["output"] == {"voice": "marin"}
    body["audio"]["input"]["transcription"]["language"] = "fr"
    assert desk.accept_body("gpt-realtime", [])["audio"]["input"]["transcription"]["language"] == "en"


def test_a_profile_without_tools_offers_only_the_built_in_ones():
    night = load(full()).profiles["night"]
    assert [t.name for t in ToolRegistry().for_profile(night.tools, night.transfer_targets or {})] == ["end_call"]


# --------------------------------------------------------------------------------- start-up warning


def _rules_with_holidays(holidays: list[str], *, calendar: bool = False) -> RoutingRules:
    data = full()
    hours = data["profiles"]["desk"]["hours"]
    hours["holidays"] = holidays
    if not calendar:
        del hours["holiday_calendar"]
    del data["profiles"]["night"]["hours"]  # a profile without hours: nothing to warn about
    return load(data)


def test_a_warning_names_the_profile_whose_explicit_holidays_are_all_past(caplog):
    caplog.set_level(logging.WARNING, logger="switchboard.routing")
    assert warn_about_past_holidays(_rules_with_holidays(["2026-01-01", "2025-12-25"]), date(2026, 1, 2)) == ["desk"]
    [record] = caplog.records
    message = record.getMessage()
    assert "profiles.desk.hours.holidays" in message and "2026-01-01" in message
    assert "holiday_calendar still applies" not in message


def test_the_warning_says_when_a_calendar_still_applies(caplog):
    caplog.set_level(logging.WARNING, logger="switchboard.routing")
    assert warn_about_past_holidays(_rules_with_holidays(["2025-12-25"], calendar=True), date(2026, 6, 1)) == ["desk"]
    [record] = caplog.records
    assert "holiday_calendar still applies" in record.getMessage()


def test_no_warning_while_the_last_holiday_is_today_or_ahead(caplog):
    caplog.set_level(logging.WARNING, logger="switchboard.routing")
    rules = _rules_with_holidays(["2025-12-25", "2026-12-24"])
    assert warn_about_past_holidays(rules, date(2026, 12, 24)) == []
    assert warn_about_past_holidays(_rules_with_holidays([]), date(2030, 1, 1)) == []
    assert caplog.records == []
