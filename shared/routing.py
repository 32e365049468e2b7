"""Routing rules (``routing.json``) and agent profiles: validated once at load, decided per call in microseconds.

The file format is the contract in docs/architecture.md ("Routing rules file"). Everything is checked at
load time, and a bad file fails start-up with an error naming the path of the field
(``profiles.reception.hours.timezone: unknown time zone 'Mars/Base'``), so that a typo never turns into a
rejected phone call at 3 a.m.

Opening hours are local wall-clock ranges in the profile's IANA time zone, so DST is handled by zoneinfo.
A range whose end is not after its start runs past midnight ("22:00-06:00" on "fri" is Friday 22:00 to
Saturday 06:00) and belongs to the day it starts on: a holiday closes the ranges that *start* on it.
"24:00" is allowed as an end ("00:00-24:00" is the whole day).
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .analysis import AnalysisSpecError, parse_spec
from .mcp import McpConfigError, parse_servers
from .phone import is_e164
from .settings import MAX_CALL_DURATION_CAP_SECONDS
from .tools import BUILT_IN

VOICES = ("alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DTMF = "0123456789*#ABCD"
DEFAULT_CALLER_REJECT_STATUS = 403  # Forbidden
DEFAULT_AFTER_HOURS_STATUS = 480  # Temporarily Unavailable
NO_ROUTE_STATUS = 404  # Not Found
BUSY_STATUS = 486  # Busy Here
MIN_DURATION_SECONDS = 10
MAX_TARGET_CHARS = 250  # after 'tel:'/'sip:'/'sips:', as shared.call_control checks before a refer

_PREFIX = re.compile(r"\+[0-9]{1,15}")
_NUMBER = re.compile(r"\+[1-9][0-9]{1,14}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,63}")
_TARGET = re.compile(r"(tel:\+?[0-9\-.()]{3,32}(;[^\s;]+)*|sips?:[^\s@]+@[^\s]+)", re.ASCII)
_RANGE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]|24):([0-5][0-9])")
_VOICE_ID = re.compile(r"voice_[A-Za-z0-9_\-]{1,128}")
_COUNTRY = re.compile(r"[A-Z]{2,3}")  # ISO 3166-1 alpha-2 (alpha-3 also accepted by the holidays package)
_SUBDIV = re.compile(r"[\w][\w .'\-]{0,39}")  # ISO 3166-2 codes ('NY'), and the package's few named ones
CALENDAR_YEARS = 7  # calendar holidays are expanded for the load year - 1 to + 5; the app restarts more often
# "$schema" lets editors find rules.schema.json (shared/rules_schema.py); the app ignores its value.
_ROOT_KEYS = {"$schema", "callers", "capacity", "numbers", "profiles"}
_HOURS_KEYS = {"timezone", "weekly", "holidays", "holiday_calendar", "after_hours"}
_CALENDAR_KEYS = {"country", "subdiv"}


log = logging.getLogger("switchboard.routing")


class RoutingRulesError(ValueError):
    """The rules file is invalid; the message starts with the path of the bad field."""


# --------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class TimeRange:
    start: int  # minutes after local midnight
    end: int  # 1..1440; end <= start: the range runs past midnight

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def covers_same_day(self, minute: int) -> bool:
        """Whether ``minute`` of the day the range starts on is inside it."""
        return minute >= self.start if self.overnight else self.start <= minute < self.end

    def covers_next_day(self, minute: int) -> bool:
        """Whether ``minute`` of the following day is inside it (the tail of an overnight range)."""
        return self.overnight and minute < self.end

    def text(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


@dataclass(frozen=True)
class AfterHours:
    action: Literal["reject", "refer"]
    status_code: int | None = None
    target_uri: str | None = None

    def to_json(self) -> dict[str, Any]:
        if self.action == "refer":
            return {"action": "refer", "target_uri": self.target_uri}
        return {"action": "reject", "status_code": self.status_code}


@dataclass(frozen=True)
class HolidayCalendar:
    """Public holidays of a country (and subdivision) from the ``holidays`` package, expanded at load time."""

    country: str
    subdiv: str | None
    dates: frozenset[date]  # CALENDAR_YEARS around the load year: a set lookup per call, no computation

    def to_json(self) -> dict[str, Any]:
        return {"country": self.country, **({"subdiv": self.subdiv} if self.subdiv else {})}


@dataclass(frozen=True)
class Hours:
    timezone: str
    weekly: tuple[tuple[TimeRange, ...], ...]  # index 0 = Monday ... 6 = Sunday
    holidays: frozenset[date]  # the explicit dates
    after_hours: AfterHours
    calendar: HolidayCalendar | None = None

    def closed_on(self, day: date) -> bool:
        return day in self.holidays or (self.calendar is not None and day in self.calendar.dates)

    def is_open(self, now: datetime) -> tuple[bool, str]:
        """(open, why) at an aware instant: why is 'open', 'holiday' or 'after_hours'."""
        local = now.astimezone(ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        today = local.date()
        weekday = local.weekday()
        # A holiday closes the ranges that start on it, so each day's holiday status gates its own ranges.
        if not self.closed_on(today) and any(r.covers_same_day(minute) for r in self.weekly[weekday]):
            return True, "open"
        yesterday = today - timedelta(days=1)
        if not self.closed_on(yesterday) and any(r.covers_next_day(minute) for r in self.weekly[(weekday - 1) % 7]):
            return True, "open"
        return False, "holiday" if self.closed_on(today) else "after_hours"

    def to_json(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone,
            "weekly": {WEEKDAYS[i]: [r.text() for r in ranges] for i, ranges in enumerate(self.weekly) if ranges},
            "holidays": sorted(d.isoformat() for d in self.holidays),
            **({"holiday_calendar": self.calendar.to_json()} if self.calendar is not None else {}),
            "after_hours": self.after_hours.to_json(),
        }


@dataclass(frozen=True)
class AgentProfile:
    """One agent persona. JSON round-trippable: it travels in the orchestration input.

    Nested configuration that is passed through to the platform or the engine (transcription,
    turn_detection, silence, digits) is kept as validated JSON objects.
    """

    instructions: str
    greeting: str
    voice: str | dict[str, str] | None = None
    transcription: dict[str, Any] | None = None
    turn_detection: dict[str, Any] | None = None
    tools: tuple[str, ...] = ()
    transfer_targets: dict[str, str] | None = None
    max_duration_seconds: int | None = None
    closing_seconds: int | None = None
    closing_line: str | None = None
    silence: dict[str, str] | None = None
    digits: dict[str, Any] | None = None
    hours: Hours | None = None
    analysis: dict[str, Any] | None = None  # post-call analysis (shared/analysis.py, docs/analysis.md)
    mcp_servers: tuple[dict[str, Any], ...] = ()  # remote MCP servers (shared/mcp.py, docs/mcp.md)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"instructions": self.instructions, "greeting": self.greeting}
        for key in ("voice", "transcription", "turn_detection", "transfer_targets", "max_duration_seconds",
                    "closing_seconds", "closing_line", "silence", "digits", "analysis"):
            value = getattr(self, key)
            if value is not None:
                out[key] = copy.deepcopy(value)
        if self.tools:
            out["tools"] = list(self.tools)
        if self.hours is not None:
            out["hours"] = self.hours.to_json()
        if self.mcp_servers:
            out["mcp_servers"] = copy.deepcopy(list(self.mcp_servers))
        return out

    @classmethod
    def from_json(cls, data: Any, *, tool_names: Iterable[str] | None = None,
                  max_call_duration_seconds: int = MAX_CALL_DURATION_CAP_SECONDS) -> AgentProfile:
        """Validate and build (raises RoutingRulesError). Tool names are checked only when given."""
        return _profile(data, "profile", None if tool_names is None else set(tool_names), max_call_duration_seconds)

    def accept_body(self, model: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
        """The GA `RealtimeSessionCreateRequest` for /accept. No audio formats: SIP negotiates them (SDP)."""
        body: dict[str, Any] = {"type": "realtime", "model": model, "instructions": self.instructions}
        audio_input: dict[str, Any] = {}
        if self.transcription is not None:
            audio_input["transcription"] = copy.deepcopy(self.transcription)
        if self.turn_detection is not None:
            audio_input["turn_detection"] = copy.deepcopy(self.turn_detection)
        audio: dict[str, Any] = {}
        if audio_input:
            audio["input"] = audio_input
        if self.voice is not None:
            audio["output"] = {"voice": copy.deepcopy(self.voice)}
        if audio:
            body["audio"] = audio
        body["tools"] = list(tools)
        body["tool_choice"] = "auto"
        return body


@dataclass(frozen=True)
class Decision:
    action: Literal["accept", "reject", "refer"]
    reason: str  # accepted | caller_denied | caller_not_allowed | no_route | holiday | after_hours | at_capacity
    profile_name: str | None = None
    profile: AgentProfile | None = None
    status_code: int | None = None  # SIP status for reject
    target_uri: str | None = None  # for refer


@dataclass(frozen=True)
class RoutingRules:
    profiles: Mapping[str, AgentProfile]
    numbers: Mapping[str, str]
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    caller_reject_status: int = DEFAULT_CALLER_REJECT_STATUS
    max_concurrent_calls: int | None = None

    @classmethod
    def load(cls, path: str | Path, *, tool_names: Iterable[str], max_call_duration_seconds: int) -> RoutingRules:
        return load_rules(path, tool_names=tool_names, max_call_duration_seconds=max_call_duration_seconds)

    @property
    def needs_live_calls(self) -> bool:
        return self.max_concurrent_calls is not None

    def decide(self, caller: str | None, dialed: str | None, now: datetime, live_calls: int | None) -> Decision:
        """Order: callers deny/allow -> dialed number -> profile -> hours -> capacity.

        Caller ids that are absent or not E.164 match no prefix: they pass a deny list and fail an allow list
        (caller ids are spoofable anyway; the lists are a courtesy filter, not authentication).
        """
        if now.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        known = caller if is_e164(caller) else None
        if known is not None and any(known.startswith(p) for p in self.deny):
            return Decision("reject", "caller_denied", status_code=self.caller_reject_status)
        if self.allow and (known is None or not any(known.startswith(p) for p in self.allow)):
            return Decision("reject", "caller_not_allowed", status_code=self.caller_reject_status)

        name = self.numbers.get(dialed) if dialed is not None else None
        if name is None:
            name = self.numbers.get("*")
        if name is None:
            return Decision("reject", "no_route", status_code=NO_ROUTE_STATUS)
        profile = self.profiles[name]

        if profile.hours is not None:
            is_open, why = profile.hours.is_open(now)
            if not is_open:
                after = profile.hours.after_hours
                if after.action == "refer":
                    return Decision("refer", why, name, profile, target_uri=after.target_uri)
                return Decision("reject", why, name, profile, status_code=after.status_code)

        if self.max_concurrent_calls is not None and live_calls is not None and live_calls >= self.max_concurrent_calls:
            return Decision("reject", "at_capacity", name, profile, status_code=BUSY_STATUS)
        return Decision("accept", "accepted", name, profile)


# ---------------------------------------------------------------------------------------------- load


def load_rules(path: str | Path, *, tool_names: Iterable[str], max_call_duration_seconds: int) -> RoutingRules:
    """Read and validate the rules file. ``max_call_duration_seconds`` (settings) caps every profile."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise RoutingRulesError(f"{path}: cannot read ({exc.strerror})") from None
    return parse_rules_text(text, str(path), tool_names=tool_names, max_call_duration_seconds=max_call_duration_seconds)


def parse_rules_text(text: bytes | str, source: str, *, tool_names: Iterable[str],
                     max_call_duration_seconds: int) -> RoutingRules:
    """Decode, parse and validate rules from a file or a blob (``source`` names it in errors)."""
    try:
        data = json.loads(text.decode("utf-8") if isinstance(text, bytes) else text)
    except UnicodeDecodeError:
        raise RoutingRulesError(f"{source}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise RoutingRulesError(f"{source}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    except RecursionError:  # json.loads recurses per nesting level: "[[[[..." would otherwise escape as RecursionError
        raise RoutingRulesError(f"{source}: not JSON (nested too deeply)") from None
    return parse_rules(data, tool_names=tool_names, max_call_duration_seconds=max_call_duration_seconds)


def parse_rules(data: Any, *, tool_names: Iterable[str], max_call_duration_seconds: int) -> RoutingRules:
    names = set(tool_names)
    root = _object(data, "(root)", _ROOT_KEYS, required={"numbers", "profiles"})

    raw_profiles = _object(root["profiles"], "profiles")
    if not raw_profiles:
        _fail("profiles", "at least one profile is required")
    profiles: dict[str, AgentProfile] = {}
    for pname, raw in raw_profiles.items():
        if not _NAME.fullmatch(pname):
            _fail(f"profiles.{pname}", "profile names are letters, digits, '_' or '-'")
        profiles[pname] = _profile(raw, f"profiles.{pname}", names, max_call_duration_seconds)

    numbers = _object(root["numbers"], "numbers")
    if not numbers:
        _fail("numbers", "map at least one dialed number (or '*') to a profile")
    for number, pname in numbers.items():
        if number != "*" and not _NUMBER.fullmatch(number):
            _fail(f"numbers.{number}", "keys are E.164 numbers like '+18005551212', or '*'")
        if not isinstance(pname, str):
            _fail(f"numbers.{number}", f"expected a profile name, got {type(pname).__name__}")
        if pname not in profiles:
            _fail(f"numbers.{number}", f"unknown profile {pname!r} (profiles: {', '.join(sorted(profiles))})")

    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    reject_status = DEFAULT_CALLER_REJECT_STATUS
    if "callers" in root:
        callers = _object(root["callers"], "callers", {"allow", "deny", "reject_status_code"})
        allow = _prefixes(callers.get("allow", []), "callers.allow")
        deny = _prefixes(callers.get("deny", []), "callers.deny")
        if "reject_status_code" in callers:
            reject_status = _sip_status(callers["reject_status_code"], "callers.reject_status_code")

    max_calls = None
    if "capacity" in root:
        capacity = _object(root["capacity"], "capacity", {"max_concurrent_calls"}, required={"max_concurrent_calls"})
        max_calls = _int(capacity["max_concurrent_calls"], "capacity.max_concurrent_calls", 1, 100_000)

    return RoutingRules(profiles=profiles, numbers=dict(numbers), allow=allow, deny=deny,
                        caller_reject_status=reject_status, max_concurrent_calls=max_calls)


_PROFILE_KEYS = {"instructions", "voice", "greeting", "transcription", "turn_detection", "tools", "transfer_targets",
                 "max_duration_seconds", "closing_seconds", "closing_line", "silence", "digits", "hours", "analysis",
                 "mcp_servers"}
_SERVER_VAD = {"type", "threshold", "prefix_padding_ms", "silence_duration_ms", "idle_timeout_ms",
               "create_response", "interrupt_response"}
_SEMANTIC_VAD = {"type", "eagerness", "create_response", "interrupt_response"}


def _profile(raw: Any, path: str, tool_names: set[str] | None, max_duration: int) -> AgentProfile:
    p = _object(raw, path, _PROFILE_KEYS, required={"instructions", "greeting"})
    instructions = _text(p["instructions"], f"{path}.instructions", 20_000)
    greeting = _text(p["greeting"], f"{path}.greeting", 1_000)

    voice: str | dict[str, str] | None = None
    if "voice" in p:
        v = p["voice"]
        if isinstance(v, dict):
            _object(v, f"{path}.voice", {"id"}, required={"id"})
            if not isinstance(v["id"], str) or not _VOICE_ID.fullmatch(v["id"]):
                _fail(f"{path}.voice.id", "expected a custom voice id 'voice_...'")
            voice = {"id": v["id"]}
        elif v in VOICES:
            voice = v
        else:
            _fail(f"{path}.voice", f"unknown voice {v!r}; expected one of {', '.join(VOICES)} or {{'id': 'voice_...'}}")

    transcription = None
    if "transcription" in p and p["transcription"] is not None:
        t = _object(p["transcription"], f"{path}.transcription", {"model", "language", "prompt"}, required={"model"})
        for key in t:
            _text(t[key], f"{path}.transcription.{key}", 2_000)
        transcription = dict(t)

    turn_detection = None
    if "turn_detection" in p and p["turn_detection"] is not None:
        turn_detection = _turn_detection(p["turn_detection"], f"{path}.turn_detection")

    tools: tuple[str, ...] = ()
    if "tools" in p:
        tools = tuple(_list(p["tools"], f"{path}.tools"))
        for i, name in enumerate(tools):
            where = f"{path}.tools[{i}]"
            if not isinstance(name, str):
                _fail(where, "expected a tool name")
            if name in BUILT_IN:
                _fail(where, f"{name!r} is built in and always offered; do not list it")
            if tool_names is not None and name not in tool_names:
                known = ", ".join(sorted(tool_names)) or "none registered"
                _fail(where, f"unknown tool {name!r} (registered: {known})")
        if len(set(tools)) != len(tools):
            _fail(f"{path}.tools", "duplicate tool names")

    targets = None
    if "transfer_targets" in p:
        targets = {}
        for name, uri in _object(p["transfer_targets"], f"{path}.transfer_targets").items():
            if not _NAME.fullmatch(name):
                _fail(f"{path}.transfer_targets.{name}", "target names are letters, digits, '_' or '-'")
            targets[name] = _target(uri, f"{path}.transfer_targets.{name}")

    duration = None
    if "max_duration_seconds" in p:
        duration = _int(p["max_duration_seconds"], f"{path}.max_duration_seconds", MIN_DURATION_SECONDS, max_duration)

    closing_seconds = None
    if "closing_seconds" in p:
        limit = (duration or max_duration) - 1
        closing_seconds = _int(p["closing_seconds"], f"{path}.closing_seconds", 0, limit)
    closing_line = _text(p["closing_line"], f"{path}.closing_line", 1_000) if "closing_line" in p else None

    silence = None
    if "silence" in p:
        s = _object(p["silence"], f"{path}.silence", {"prompt", "goodbye"}, required={"prompt", "goodbye"})
        silence = {k: _text(s[k], f"{path}.silence.{k}", 1_000) for k in ("prompt", "goodbye")}

    digits = _digits(p["digits"], f"{path}.digits", targets or {}) if "digits" in p else None
    hours = _hours(p["hours"], f"{path}.hours") if "hours" in p else None
    analysis = _analysis(p["analysis"], f"{path}.analysis") if "analysis" in p else None
    mcp_servers = _mcp_servers(p["mcp_servers"], f"{path}.mcp_servers") if "mcp_servers" in p else ()

    return AgentProfile(instructions=instructions, greeting=greeting, voice=voice, transcription=transcription,
                        turn_detection=turn_detection, tools=tools, transfer_targets=targets,
                        max_duration_seconds=duration, closing_seconds=closing_seconds, closing_line=closing_line,
                        silence=silence, digits=digits, hours=hours, analysis=analysis, mcp_servers=mcp_servers)


def _analysis(raw: Any, path: str) -> dict[str, Any]:
    try:
        return parse_spec(raw, path)
    except AnalysisSpecError as exc:
        raise RoutingRulesError(str(exc)) from None


def _mcp_servers(raw: Any, path: str) -> tuple[dict[str, Any], ...]:
    try:
        return parse_servers(raw, path)
    except McpConfigError as exc:
        raise RoutingRulesError(str(exc)) from None


def _turn_detection(raw: Any, path: str) -> dict[str, Any]:
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "server_vad":
        td = _object(raw, path, _SERVER_VAD, required={"type"})
        if "threshold" in td:
            _number(td["threshold"], f"{path}.threshold", 0.0, 1.0)
        for key in ("prefix_padding_ms", "silence_duration_ms"):
            if key in td:
                _int(td[key], f"{path}.{key}", 0, 10_000)
        if "idle_timeout_ms" in td and td["idle_timeout_ms"] is not None:
            _int(td["idle_timeout_ms"], f"{path}.idle_timeout_ms", 1_000, 600_000)
    elif kind == "semantic_vad":
        td = _object(raw, path, _SEMANTIC_VAD, required={"type"})
        if "eagerness" in td and td["eagerness"] not in ("low", "medium", "high", "auto"):
            _fail(f"{path}.eagerness", "expected low, medium, high or auto")
    else:
        _fail(f"{path}.type", "expected 'server_vad' or 'semantic_vad'")
    for key in ("create_response", "interrupt_response"):
        if key in td and not isinstance(td[key], bool):
            _fail(f"{path}.{key}", "expected true or false")
    return dict(td)


def _digits(raw: Any, path: str, targets: Mapping[str, str]) -> dict[str, Any]:
    d = _object(raw, path, {"mode", "menu"}, required={"mode"})
    if d["mode"] not in ("model", "menu"):
        _fail(f"{path}.mode", "expected 'model' or 'menu'")
    if d["mode"] == "model":
        if "menu" in d:
            _fail(f"{path}.menu", "only used with mode 'menu'")
        return {"mode": "model"}
    menu = _object(d.get("menu"), f"{path}.menu")
    if not menu:
        _fail(f"{path}.menu", "mode 'menu' needs at least one entry")
    out: dict[str, Any] = {}
    for digit, item in menu.items():
        where = f"{path}.menu.{digit}"
        if len(digit) != 1 or digit not in DTMF:
            _fail(where, f"menu keys are single DTMF digits ({DTMF})")
        action = item.get("action") if isinstance(item, dict) else None
        # `text` is what the agent says first: required for `say`; for `transfer` and `end_call` optional (the
        # engine says "Transferring your call now." before a transfer without one, and nothing before hanging up).
        if action == "transfer":
            entry = _object(item, where, {"action", "target", "text"}, required={"target"})
            if not isinstance(entry["target"], str):
                _fail(f"{where}.target", f"expected a target name, got {type(entry['target']).__name__}")
            if entry["target"] not in targets:
                _fail(f"{where}.target", f"{entry['target']!r} is not in transfer_targets "
                                         f"({', '.join(sorted(targets)) or 'none defined'})")
        elif action == "say":
            entry = _object(item, where, {"action", "text"}, required={"text"})
        elif action == "end_call":
            entry = _object(item, where, {"action", "text"})
        else:
            _fail(f"{where}.action", "expected 'transfer', 'say' or 'end_call'")
        if "text" in entry:
            _text(entry["text"], f"{where}.text", 2_000)
        out[digit] = dict(entry)
    return {"mode": "menu", "menu": out}


def _hours(raw: Any, path: str) -> Hours:
    h = _object(raw, path, _HOURS_KEYS, required={"timezone", "weekly"})
    tz = h["timezone"]
    if not isinstance(tz, str):
        _fail(f"{path}.timezone", "expected an IANA time zone name like 'America/New_York'")
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        _fail(f"{path}.timezone", f"unknown time zone {tz!r}")

    weekly_raw = _object(h["weekly"], f"{path}.weekly", set(WEEKDAYS))
    if not weekly_raw:
        _fail(f"{path}.weekly", "at least one day with opening hours is required")
    weekly: list[tuple[TimeRange, ...]] = []
    for day in WEEKDAYS:
        ranges = []
        for i, text in enumerate(_list(weekly_raw.get(day, []), f"{path}.weekly.{day}")):
            ranges.append(_time_range(text, f"{path}.weekly.{day}[{i}]"))
        weekly.append(tuple(ranges))

    holidays: set[date] = set()
    for i, text in enumerate(_list(h.get("holidays", []), f"{path}.holidays")):
        if not isinstance(text, str) or not re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text):
            _fail(f"{path}.holidays[{i}]", f"expected an ISO date 'YYYY-MM-DD', got {text!r}")
        try:
            holidays.add(date.fromisoformat(text))
        except ValueError:
            _fail(f"{path}.holidays[{i}]", f"{text!r} is not a calendar date")

    calendar = _holiday_calendar(h["holiday_calendar"], f"{path}.holiday_calendar") if "holiday_calendar" in h else None

    after = AfterHours("reject", DEFAULT_AFTER_HOURS_STATUS)
    if "after_hours" in h:
        a = h["after_hours"]
        action = a.get("action") if isinstance(a, dict) else None
        where = f"{path}.after_hours"
        if action == "reject":
            a = _object(a, where, {"action", "status_code"})
            status = _sip_status(a["status_code"], f"{where}.status_code") if "status_code" in a else None
            after = AfterHours("reject", status or DEFAULT_AFTER_HOURS_STATUS)
        elif action == "refer":
            a = _object(a, where, {"action", "target_uri"}, required={"target_uri"})
            after = AfterHours("refer", target_uri=_target(a["target_uri"], f"{where}.target_uri"))
        else:
            _fail(f"{where}.action", "expected 'reject' or 'refer'")
    return Hours(tz, tuple(weekly), frozenset(holidays), after, calendar)


def _holiday_calendar(raw: Any, path: str) -> HolidayCalendar:
    c = _object(raw, path, _CALENDAR_KEYS, required={"country"})
    country = c["country"]
    if not isinstance(country, str) or not _COUNTRY.fullmatch(country):
        _fail(f"{path}.country", f"expected an ISO 3166-1 country code like 'US', got {country!r}")
    subdiv = c.get("subdiv")
    if subdiv is not None and (not isinstance(subdiv, str) or not _SUBDIV.fullmatch(subdiv)):
        _fail(f"{path}.subdiv", f"expected a subdivision code like 'NY', got {subdiv!r}")
    # Lazy: the holidays package costs ~50 ms to import cold and ~50 ms more for a country's first expansion, paid at
    # load only by rules that use a calendar.
    import holidays

    try:
        dates = _calendar_dates(country, subdiv, date.today().year - 1)
    except NotImplementedError:
        if country not in holidays.list_supported_countries():
            _fail(f"{path}.country", f"{country!r} has no holiday calendar in the holidays package")
        known = ", ".join(sorted(holidays.list_supported_countries()[country])) or "none"
        _fail(f"{path}.subdiv", f"{country} has no subdivision {subdiv!r} (known: {known})")
    return HolidayCalendar(country, subdiv, dates)


@functools.lru_cache(maxsize=64)
def _calendar_dates(country: str, subdiv: str | None, first_year: int) -> frozenset[date]:
    """Cached: a reload of rules whose calendars did not change costs no holiday computation (about 1 ms each)."""
    import holidays

    return frozenset(holidays.country_holidays(country, subdiv=subdiv,
                                               years=range(first_year, first_year + CALENDAR_YEARS)))


def warn_about_past_holidays(rules: RoutingRules, today: date) -> list[str]:
    """A WARNING per profile whose explicit holiday dates are all before ``today`` (the list needs a new year).

    Returns the profile names warned about.
    """
    stale = [name for name, p in rules.profiles.items()
             if p.hours is not None and p.hours.holidays and max(p.hours.holidays) < today]
    for name in stale:
        hours = rules.profiles[name].hours
        assert hours is not None
        log.warning("routing rules: every holiday of profiles.%s.hours.holidays is past (the last is %s)%s; "
                    "add this year's dates, or use a holiday_calendar", name, max(hours.holidays).isoformat(),
                    "; its holiday_calendar still applies" if hours.calendar is not None else "")
    return stale


def _time_range(text: Any, path: str) -> TimeRange:
    m = _RANGE.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        _fail(path, f"expected 'HH:MM-HH:MM' (24-hour; end may be 24:00), got {text!r}")
    start = int(m[1]) * 60 + int(m[2])
    end = int(m[3]) * 60 + int(m[4])
    if end > 24 * 60:
        _fail(path, f"{text!r} ends after 24:00")
    if end == start:
        _fail(path, f"{text!r} is empty; use '00:00-24:00' for the whole day")
    return TimeRange(start, end)


# --------------------------------------------------------------------------------------------- helpers


def _fail(path: str, message: str) -> NoReturn:
    raise RoutingRulesError(f"{path}: {message}")


def _object(value: Any, path: str, allowed: set[str] | None = None, *,
            required: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(path, f"expected an object, got {type(value).__name__}")
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            _fail(f"{path}.{unknown[0]}" if path != "(root)" else unknown[0],
                  f"unknown key (allowed: {', '.join(sorted(allowed))})")
    for key in sorted(required):
        if key not in value:
            _fail(f"{path}.{key}" if path != "(root)" else key, "is required")
    return value


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        _fail(path, f"expected a list, got {type(value).__name__}")
    return value


def _text(value: Any, path: str, max_len: int) -> str:
    if not isinstance(value, str) or not value.strip():
        _fail(path, "expected a non-empty string")
    if len(value) > max_len:
        _fail(path, f"longer than {max_len} characters")
    return value


def _int(value: Any, path: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        _fail(path, f"expected an integer, got {value!r}")
    if not lo <= value <= hi:
        _fail(path, f"{value} is outside {lo}..{hi}")
    return value


def _number(value: Any, path: str, lo: float, hi: float) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not lo <= value <= hi:
        _fail(path, f"expected a number from {lo} to {hi}, got {value!r}")
    return float(value)


def _sip_status(value: Any, path: str) -> int:
    return _int(value, path, 300, 699)


def _target(value: Any, path: str) -> str:
    if not isinstance(value, str) or not _TARGET.fullmatch(value):
        _fail(path, f"expected a 'tel:+...' or 'sip:user@host' URI, got {value!r}")
    # The call-control client refuses longer targets; better to find out at load than on a transfer.
    if len(value.partition(":")[2]) > MAX_TARGET_CHARS:
        _fail(path, f"longer than {MAX_TARGET_CHARS} characters after the scheme")
    return value


def _prefixes(value: Any, path: str) -> tuple[str, ...]:
    out = []
    for i, prefix in enumerate(_list(value, path)):
        if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
            _fail(f"{path}[{i}]", f"expected an E.164 prefix like '+1' or '+1900', got {prefix!r}")
        out.append(prefix)
    return tuple(out)


if __name__ == "__main__":  # python -m shared.routing validate FILE (shared/rules_cli.py)
    from shared.rules_cli import main

    raise SystemExit(main())
