"""Routing rules: load-time validation (errors name the field), decisions, hours across zones, DST and holidays."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from openai.types.realtime import RealtimeSessionCreateRequest

from shared.routing import AgentProfile, RoutingRules, RoutingRulesError, load_rules, parse_rules
from shared.tools import ToolRegistry

ROOT = Path(__file__).resolve().parents[2]
TOOLS = {"lookup_order"}
CAP = 900


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def base_rules() -> dict:
    return {
        "callers": {"allow": ["+1", "+44"], "deny": ["+1900"]},
        "capacity": {"max_concurrent_calls": 50},
        "numbers": {"+18005551212": "reception", "+18005550100": "night", "*": "reception"},
        "profiles": {
            "reception": {
                "instructions": "You are Alex.",
                "voice": "marin",
                "greeting": "Hello!",
                "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"},
                "turn_detection": {"type": "server_vad", "idle_timeout_ms": 8000},
                "tools": ["lookup_order"],
                "transfer_targets": {"sales": "tel:+14155550123", "support": "sip:support@example.com"},
                "max_duration_seconds": 600,
                "closing_seconds": 20,
                "closing_line": "Please wrap up.",
                "silence": {"prompt": "Still there?", "goodbye": "Bye!"},
                "digits": {"mode": "menu", "menu": {"1": {"action": "transfer", "target": "sales"},
                                                    "2": {"action": "say", "text": "Nine to five."},
                                                    "0": {"action": "end_call"}}},
                "hours": {"timezone": "America/New_York",
                          "weekly": {d: ["09:00-17:00"] for d in ("mon", "tue", "wed", "thu")}
                          | {"fri": ["09:00-12:00", "13:00-17:00"]},
                          "holidays": ["2026-12-25"],
                          "after_hours": {"action": "reject", "status_code": 480}},
            },
            "night": {
                "instructions": "Night desk.",
                "greeting": "Night desk.",
                "hours": {"timezone": "Europe/London",
                          "weekly": {"fri": ["22:00-06:00"], "sat": ["22:00-06:00"]},
                          "holidays": ["2026-06-12"],
                          "after_hours": {"action": "refer", "target_uri": "sip:voicemail@example.com"}},
            },
        },
    }


def rules(data: dict | None = None) -> RoutingRules:
    return parse_rules(base_rules() if data is None else data, tool_names=TOOLS, max_call_duration_seconds=CAP)


def registry() -> ToolRegistry:
    reg = ToolRegistry()

    @reg.register("lookup_order", description="Look up an order", parameters={
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]})
    async def lookup_order(order_id: str) -> dict:
        return {"order_id": order_id}

    return reg


# ------------------------------------------------------------------------------------------ default file


def test_default_routing_json_loads_and_routes():
    r = load_rules(ROOT / "routing.json", tool_names=TOOLS, max_call_duration_seconds=CAP)
    assert set(r.profiles) == {"reception", "after_hours_demo"}
    reception = r.profiles["reception"]
    assert reception.hours is None and reception.max_duration_seconds == 600
    assert set(reception.transfer_targets or {}) == {"sales", "support"}
    assert reception.tools == ("lookup_order",)
    # 24/7 reception: any time, any number not otherwise mapped
    for now in (utc(2026, 12, 25, 3), utc(2026, 7, 4, 15), utc(2027, 1, 3, 23, 59)):
        d = r.decide("+14255551212", "+18005551212", now, None)
        assert (d.action, d.profile_name) == ("accept", "reception")
    assert r.decide(None, "+15555550000", utc(2026, 1, 1), None).profile_name == "reception"
    # the second number closes after hours (Saturday in New York)
    d = r.decide("+14255551212", "+18005550100", utc(2026, 11, 28, 15), None)
    assert (d.action, d.status_code, d.profile_name) == ("reject", 480, "after_hours_demo")
    d = r.decide("+14255551212", "+18005550100", utc(2026, 11, 30, 15), None)  # Monday 10:00 EST
    assert d.action == "accept"


def test_default_routing_json_needs_the_lookup_order_tool():
    with pytest.raises(RoutingRulesError, match=r"profiles\.\w+\.tools\[0\]: unknown tool 'lookup_order'"):
        load_rules(ROOT / "routing.json", tool_names=set(), max_call_duration_seconds=CAP)


def test_a_menu_transfer_or_end_call_may_say_a_text_first():
    data = base_rules()
    data["profiles"]["reception"]["digits"]["menu"] |= {
        "0": {"action": "end_call", "text": "Thanks for calling. Goodbye!"},
        "1": {"action": "transfer", "target": "sales", "text": "Putting you through to sales."}}
    menu = (rules(data).profiles["reception"].digits or {})["menu"]
    assert menu["0"] == {"action": "end_call", "text": "Thanks for calling. Goodbye!"}
    assert menu["1"] == {"action": "transfer", "target": "sales", "text": "Putting you through to sales."}


def test_classmethod_load_matches_load_rules():
    r = RoutingRules.load(ROOT / "routing.json", tool_names=TOOLS, max_call_duration_seconds=CAP)
    assert set(r.profiles) == {"reception", "after_hours_demo"}


# -------------------------------------------------------------------------------------- profile and body


def test_profile_json_round_trip():
    r = rules()
    for profile in r.profiles.values():
        data = json.loads(json.dumps(profile.to_json()))
        assert AgentProfile.from_json(data) == profile
        assert AgentProfile.from_json(data).to_json() == data


def test_accept_body_is_ga_schema_without_audio_formats():
    reg = registry()
    profile = rules().profiles["reception"]
    tools = [t.schema() for t in reg.for_profile(profile.tools, profile.transfer_targets or {})]
    body = profile.accept_body("my-deployment", tools)
    RealtimeSessionCreateRequest.model_validate(body)
    assert body["type"] == "realtime" and body["model"] == "my-deployment" and body["tool_choice"] == "auto"
    assert body["audio"]["output"] == {"voice": "marin"}
    assert body["audio"]["input"]["turn_detection"] == {"type": "server_vad", "idle_timeout_ms": 8000}
    assert [t["name"] for t in body["tools"]] == ["lookup_order", "end_call", "transfer_call"]
    text = json.dumps(body)
    for beta_or_format in ('"format"', "input_audio_format", "input_audio_transcription", '"modalities"'):
        assert beta_or_format not in text
    assert set(body) == {"type", "model", "instructions", "audio", "tools", "tool_choice"}


def test_accept_body_minimal_and_custom_voice():
    p = AgentProfile.from_json({"instructions": "x", "greeting": "y", "voice": {"id": "voice_abc123"}})
    body = p.accept_body("d", [])
    RealtimeSessionCreateRequest.model_validate(body)
    assert body["audio"] == {"output": {"voice": {"id": "voice_abc123"}}}
    bare = AgentProfile.from_json({"instructions": "x", "greeting": "y"}).accept_body("d", [])
    RealtimeSessionCreateRequest.model_validate(bare)
    assert "audio" not in bare


# -------------------------------------------------------------------------------------------- decisions


MON_10_NY = utc(2026, 11, 30, 15)  # Monday 10:00 EST


@pytest.mark.parametrize(
    "caller, action, reason",
    [
        ("+14255551212", "accept", "accepted"),
        ("+442071234567", "accept", "accepted"),
        ("+19005551212", "reject", "caller_denied"),  # deny wins over allow "+1"
        ("+33123456789", "reject", "caller_not_allowed"),
        (None, "reject", "caller_not_allowed"),  # unknown caller fails an allow list
        ("4255551212", "reject", "caller_not_allowed"),  # not E.164: matches no prefix
    ],
)
def test_caller_lists(caller, action, reason):
    d = rules().decide(caller, "+18005551212", MON_10_NY, 0)
    assert (d.action, d.reason) == (action, reason)
    if action == "reject":
        assert d.status_code == 403 and d.profile is None


def test_unknown_caller_allowed_without_allow_list():
    data = base_rules()
    data["callers"] = {"deny": ["+1900"], "reject_status_code": 603}
    r = rules(data)
    assert r.decide(None, "+18005551212", MON_10_NY, 0).action == "accept"
    assert r.decide("19005551212", "+18005551212", MON_10_NY, 0).action == "accept"  # not E.164: no match
    d = r.decide("+19005551212", "+18005551212", MON_10_NY, 0)
    assert (d.action, d.status_code) == ("reject", 603)


def test_dialed_number_selects_profile_with_fallback_and_no_route():
    r = rules()
    assert r.decide("+14255551212", "+18005551212", MON_10_NY, 0).profile_name == "reception"
    assert r.decide("+14255551212", "+18009999999", MON_10_NY, 0).profile_name == "reception"  # "*"
    assert r.decide("+14255551212", None, MON_10_NY, 0).profile_name == "reception"
    data = base_rules()
    del data["numbers"]["*"]
    d = rules(data).decide("+14255551212", "+18009999999", MON_10_NY, 0)
    assert (d.action, d.reason, d.status_code) == ("reject", "no_route", 404)


def test_capacity_rejects_busy_at_or_over_the_limit():
    r = rules()
    assert r.needs_live_calls
    assert r.decide("+14255551212", "+18005551212", MON_10_NY, 49).action == "accept"
    d = r.decide("+14255551212", "+18005551212", MON_10_NY, 50)
    assert (d.action, d.reason, d.status_code) == ("reject", "at_capacity", 486)
    assert r.decide("+14255551212", "+18005551212", MON_10_NY, None).action == "accept"
    data = base_rules()
    del data["capacity"]
    assert not rules(data).needs_live_calls
    assert rules(data).decide("+14255551212", "+18005551212", MON_10_NY, 10_000).action == "accept"


def test_after_hours_wins_over_capacity():
    d = rules().decide("+14255551212", "+18005551212", utc(2026, 11, 28, 15), 999)  # Saturday
    assert (d.action, d.reason, d.status_code) == ("reject", "after_hours", 480)


def test_naive_now_is_refused():
    with pytest.raises(ValueError):
        rules().decide(None, None, datetime(2026, 1, 1), 0)


# ------------------------------------------------------------------------------------ hours, DST, holidays


def reception_open(now: datetime) -> bool:
    return rules().decide("+14255551212", "+18005551212", now, 0).action == "accept"


def test_us_dst_start_moves_opening_in_utc():
    # 13:30 UTC is 08:30 EST on Friday 6 March (closed) but 09:30 EDT on Monday 9 March (open).
    assert not reception_open(utc(2026, 3, 6, 13, 30))
    assert reception_open(utc(2026, 3, 9, 13, 30))
    assert not reception_open(utc(2026, 3, 9, 12, 59))  # 08:59 EDT


def test_us_dst_end_moves_opening_in_utc():
    # Monday 2 November 2026, after the fall-back: 13:30 UTC is 08:30 EST (closed); 14:00 UTC opens.
    assert not reception_open(utc(2026, 11, 2, 13, 30))
    assert reception_open(utc(2026, 11, 2, 14, 0))
    assert reception_open(utc(2026, 11, 2, 21, 59))  # 16:59 EST
    assert not reception_open(utc(2026, 11, 2, 22, 0))  # 17:00 EST


def test_lunch_break_and_boundaries():
    # Friday 4 December 2026 (EST = UTC-5): 09:00-12:00, 13:00-17:00
    assert reception_open(utc(2026, 12, 4, 14, 0))  # 09:00 inclusive
    assert not reception_open(utc(2026, 12, 4, 17, 30))  # 12:30 lunch
    assert reception_open(utc(2026, 12, 4, 18, 0))  # 13:00
    assert not reception_open(utc(2026, 12, 4, 22, 0))  # 17:00 exclusive


def test_holiday_is_closed_with_reason():
    d = rules().decide("+14255551212", "+18005551212", utc(2026, 12, 25, 15), 0)  # Friday 10:00 EST
    assert (d.action, d.reason, d.status_code) == ("reject", "holiday", 480)
    assert reception_open(utc(2026, 12, 24, 15))


def test_holiday_is_a_local_date_not_a_utc_date():
    data = base_rules()
    data["profiles"]["reception"]["hours"] = {
        "timezone": "Pacific/Auckland",  # UTC+13 in December (NZDT)
        "weekly": {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")},
        "holidays": ["2026-12-25"],
    }
    r = rules(data)
    # 12:00 UTC on 24 Dec is 01:00 on 25 Dec in Auckland: a local holiday although UTC says the 24th.
    d = r.decide("+14255551212", "+18005551212", utc(2026, 12, 24, 12), 0)
    assert (d.action, d.reason, d.status_code) == ("reject", "holiday", 480)  # default after-hours status
    # 12:00 UTC on 25 Dec is already 26 Dec in Auckland: open, although it is the 25th in UTC.
    assert r.decide("+14255551212", "+18005551212", utc(2026, 12, 25, 12), 0).action == "accept"


def night(now: datetime):
    return rules().decide("+14255551212", "+18005550100", now, 0)


def test_overnight_range_spans_midnight():
    # Europe/London in June is BST (UTC+1). "fri": 22:00-06:00 -> Friday 22:00 to Saturday 06:00.
    assert night(utc(2026, 6, 5, 21, 0)).action == "accept"  # Fri 22:00 local
    assert night(utc(2026, 6, 6, 1, 30)).action == "accept"  # Sat 02:30 local
    assert night(utc(2026, 6, 6, 4, 59)).action == "accept"  # Sat 05:59 local
    closed = night(utc(2026, 6, 6, 5, 0))  # Sat 06:00 local
    assert (closed.action, closed.reason, closed.target_uri) == ("refer", "after_hours", "sip:voicemail@example.com")
    assert night(utc(2026, 6, 5, 20, 59)).action == "refer"  # Fri 21:59 local
    assert night(utc(2026, 6, 4, 22, 0)).action == "refer"  # Thu 23:00: no Thursday range
    assert night(utc(2026, 6, 7, 4, 0)).action == "accept"  # Sun 05:00, tail of Saturday's range
    assert night(utc(2026, 6, 8, 4, 0)).action == "refer"  # Mon 05:00: Sunday has no range


def test_overnight_range_belongs_to_its_start_day_for_holidays():
    # 2026-06-12 is a Friday holiday: Friday night's range is closed, including its Saturday-morning tail.
    assert night(utc(2026, 6, 12, 22, 0)).reason == "holiday"  # Fri 23:00 local
    tail = night(utc(2026, 6, 13, 2, 0))  # Sat 03:00 local: belongs to the holiday Friday
    assert (tail.action, tail.reason) == ("refer", "after_hours")
    assert night(utc(2026, 6, 13, 22, 0)).action == "accept"  # Saturday night opens as usual


def test_overnight_range_across_spring_forward():
    # Sunday 29 March 2026 London jumps 01:00 GMT -> 02:00 BST. 05:30 UTC is 06:30 BST: closed, although
    # a UTC-naive check ("before 06:00") would call it open.
    assert night(utc(2026, 3, 29, 4, 59)).action == "accept"  # 05:59 BST
    assert night(utc(2026, 3, 29, 5, 30)).action == "refer"
    assert night(utc(2026, 3, 28, 22, 0)).action == "accept"  # Sat 22:00 GMT


# -------------------------------------------------------------------------------------------- load errors


def mutate(path: str, value=None, *, delete: bool = False):
    def apply(data: dict) -> None:
        keys = path.split("/")
        target = data
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        if delete:
            del target[keys[-1]]
        elif isinstance(target, list):
            target[int(keys[-1])] = value
        else:
            target[keys[-1]] = value
    return apply


R = "profiles/reception"
BAD = [
    (mutate(f"{R}/hours/timezone", "Mars/Base"), "profiles.reception.hours.timezone: unknown time zone 'Mars/Base'"),
    (mutate("extra", 1), "extra: unknown key"),
    (mutate(f"{R}/voicee", "marin"), "profiles.reception.voicee: unknown key"),
    (mutate(f"{R}/instructions", delete=True), "profiles.reception.instructions: is required"),
    (mutate(f"{R}/greeting", "  "), "profiles.reception.greeting: expected a non-empty string"),
    (mutate(f"{R}/voice", "robot"), "profiles.reception.voice: unknown voice 'robot'"),
    (mutate(f"{R}/voice", {"id": "abc"}), "profiles.reception.voice.id:"),
    (mutate("callers/allow", ["1425"]), "callers.allow[0]: expected an E.164 prefix"),
    (mutate("callers/deny", ["+1-900"]), "callers.deny[0]:"),
    (mutate("callers/reject_status_code", 200), "callers.reject_status_code: 200 is outside 300..699"),
    (mutate(f"{R}/hours/after_hours/status_code", 700), "profiles.reception.hours.after_hours.status_code: 700"),
    (mutate(f"{R}/hours/after_hours", {"action": "voicemail"}), "profiles.reception.hours.after_hours.action:"),
    (
        mutate(f"{R}/hours/after_hours", {"action": "refer", "target_uri": "mailto:x@y"}),
        "profiles.reception.hours.after_hours.target_uri:",
    ),
    (mutate(f"{R}/transfer_targets/sales", "http://example.com"), "profiles.reception.transfer_targets.sales:"),
    (mutate(f"{R}/hours/weekly/mon", ["9:00-17:00"]), "profiles.reception.hours.weekly.mon[0]: expected 'HH:MM-HH:MM'"),
    (mutate(f"{R}/hours/weekly/mon", ["09:00-25:00"]), "profiles.reception.hours.weekly.mon[0]:"),
    (
        mutate(f"{R}/hours/weekly/mon", ["09:00-24:30"]),
        "profiles.reception.hours.weekly.mon[0]: '09:00-24:30' ends after",
    ),
    (
        mutate(f"{R}/hours/weekly/mon", ["09:00-09:00"]),
        "profiles.reception.hours.weekly.mon[0]: '09:00-09:00' is empty",
    ),
    (mutate(f"{R}/hours/weekly/mon", "09:00-17:00"), "profiles.reception.hours.weekly.mon: expected a list"),
    (mutate(f"{R}/hours/weekly/monday", ["09:00-17:00"]), "profiles.reception.hours.weekly.monday: unknown key"),
    (
        mutate(f"{R}/hours/holidays", ["2026-02-30"]),
        "profiles.reception.hours.holidays[0]: '2026-02-30' is not a calendar date",
    ),
    (mutate(f"{R}/hours/holidays", ["25/12/2026"]), "profiles.reception.hours.holidays[0]: expected an ISO date"),
    (mutate(f"{R}/hours/weekly", {}), "profiles.reception.hours.weekly: at least one day"),
    (mutate(f"{R}/tools", ["nope"]), "profiles.reception.tools[0]: unknown tool 'nope'"),
    (mutate(f"{R}/tools", ["end_call"]), "profiles.reception.tools[0]: 'end_call' is built in"),
    (mutate(f"{R}/tools", ["lookup_order", "lookup_order"]), "profiles.reception.tools: duplicate"),
    (
        mutate(f"{R}/digits/menu/1/target", "billing"),
        "profiles.reception.digits.menu.1.target: 'billing' is not in transfer_targets",
    ),
    (mutate(f"{R}/digits/menu/12", {"action": "end_call"}), "profiles.reception.digits.menu.12: menu keys"),
    (mutate(f"{R}/digits/menu/2", {"action": "say"}), "profiles.reception.digits.menu.2.text: is required"),
    (
        mutate(f"{R}/digits/menu/0", {"action": "end_call", "text": " "}),
        "profiles.reception.digits.menu.0.text: expected a non-empty string",
    ),
    (
        mutate(f"{R}/digits/menu/1", {"action": "transfer", "target": "sales", "text": "x" * 2001}),
        "profiles.reception.digits.menu.1.text: longer than 2000 characters",
    ),
    (
        mutate(f"{R}/digits/menu/0", {"action": "end_call", "say": "Bye"}),
        "profiles.reception.digits.menu.0.say: unknown key",
    ),
    (mutate(f"{R}/digits/mode", "tones"), "profiles.reception.digits.mode:"),
    (mutate(f"{R}/turn_detection", {"type": "magic"}), "profiles.reception.turn_detection.type:"),
    (
        mutate(f"{R}/turn_detection", {"type": "server_vad", "threshold": 2}),
        "profiles.reception.turn_detection.threshold:",
    ),
    (
        mutate(f"{R}/turn_detection", {"type": "semantic_vad", "idle_timeout_ms": 5000}),
        "profiles.reception.turn_detection.idle_timeout_ms: unknown key",
    ),
    (mutate(f"{R}/transcription", {"language": "en"}), "profiles.reception.transcription.model: is required"),
    (mutate(f"{R}/max_duration_seconds", 1200), "profiles.reception.max_duration_seconds: 1200 is outside 10..900"),
    (mutate(f"{R}/max_duration_seconds", "600"), "profiles.reception.max_duration_seconds: expected an integer"),
    (mutate(f"{R}/max_duration_seconds", True), "profiles.reception.max_duration_seconds: expected an integer"),
    (mutate(f"{R}/closing_seconds", 600), "profiles.reception.closing_seconds: 600 is outside 0..599"),
    (mutate(f"{R}/silence", {"prompt": "x"}), "profiles.reception.silence.goodbye: is required"),
    (mutate("numbers/+18005551212", "ghost"), "numbers.+18005551212: unknown profile 'ghost'"),
    (mutate("numbers/18005551212", "reception"), "numbers.18005551212: keys are E.164"),
    (mutate("numbers", {}), "numbers: map at least one"),
    (mutate("numbers", delete=True), "numbers: is required"),
    (mutate("profiles", {}), "profiles: at least one profile"),
    (mutate("capacity/max_concurrent_calls", 0), "capacity.max_concurrent_calls: 0 is outside"),
    (mutate("capacity/extra", 1), "capacity.extra: unknown key"),
]


@pytest.mark.parametrize("change, message", BAD, ids=[m.split(":")[0] + "|" + m.split(":", 1)[1][:20] for _, m in BAD])
def test_bad_rules_name_the_field(change, message):
    data = base_rules()
    change(data)
    before = copy.deepcopy(data)
    with pytest.raises(RoutingRulesError) as info:
        rules(data)
    assert str(info.value).startswith(message), str(info.value)
    assert data == before  # loading never mutates the input


def test_unreadable_or_invalid_json_file(tmp_path):
    with pytest.raises(RoutingRulesError, match="cannot read"):
        load_rules(tmp_path / "missing.json", tool_names=TOOLS, max_call_duration_seconds=CAP)
    bad = tmp_path / "bad.json"
    bad.write_text('{"numbers": {,}}')
    with pytest.raises(RoutingRulesError, match=r"bad\.json: not JSON \(line 1, column 14"):
        load_rules(bad, tool_names=TOOLS, max_call_duration_seconds=CAP)
    with pytest.raises(RoutingRulesError, match=r"\(root\): expected an object"):
        parse_rules([], tool_names=TOOLS, max_call_duration_seconds=CAP)


def test_profile_from_json_validates_too():
    with pytest.raises(RoutingRulesError, match="profile.greeting: is required"):
        AgentProfile.from_json({"instructions": "x"})


# A name that is a JSON list or object used to escape as "TypeError: unhashable type" without a path.
UNHASHABLE = [
    (mutate("numbers/*", ["reception"]), "numbers.*: expected a profile name"),
    (mutate("numbers/*", {"profile": "reception"}), "numbers.*: expected a profile name"),
    (mutate(f"{R}/digits/menu/1/target", ["sales"]), "profiles.reception.digits.menu.1.target: expected a target name"),
]


@pytest.mark.parametrize("change, message", UNHASHABLE, ids=[m for _, m in UNHASHABLE])
def test_names_of_the_wrong_type_are_load_errors_naming_the_field(change, message):
    data = base_rules()
    change(data)
    with pytest.raises(RoutingRulesError) as info:
        rules(data)
    assert str(info.value).startswith(message), str(info.value)


def test_targets_longer_than_call_control_accepts_are_load_errors():
    # Otherwise the file loads and every refer to the target fails at call time (ValueError in the client).
    from shared.call_control import _TARGET as CALL_CONTROL_TARGET

    longest = "sip:" + "a" * (250 - len("@example.com")) + "@example.com"
    assert CALL_CONTROL_TARGET.fullmatch(longest)
    data = base_rules()
    data["profiles"]["reception"]["transfer_targets"]["sales"] = longest
    rules(data)
    for where, path in (("transfer_targets.sales", f"{R}/transfer_targets/sales"),
                        ("hours.after_hours.target_uri", "profiles/night/hours/after_hours/target_uri")):
        data = base_rules()
        mutate(path, "sip:a" + longest.removeprefix("sip:"))(data)
        assert not CALL_CONTROL_TARGET.fullmatch("sip:a" + longest.removeprefix("sip:"))
        with pytest.raises(RoutingRulesError, match=rf"\.{where}: .*longer than 250"):
            rules(data)
