"""The JSON Schema of the routing rules file (rules.schema.json), generated from the validator's own definitions.

The key sets, enums and patterns come from shared/routing.py itself (``_ROOT_KEYS``, ``_PROFILE_KEYS``,
``_SERVER_VAD``, ``VOICES``, ``WEEKDAYS``, ``DTMF``, the compiled regexes, the numeric caps), so the schema follows
the validator: a key added to one of the validator's key sets appears in the schema at the next generation.
tests/foundation/test_rules_schema.py regenerates the schema and compares it with the shipped file, checks that every
key the validator allows has a described shape here (``PROFILE_FIELDS``), and probes each text and number limit
written below against the validator, so neither side can drift silently.

The schema is for editors (validation and completion while typing, through ``"$schema"`` in routing.json). It checks
shape; the validator checks the rest (registered tool names, time zone names, cross-references such as a number's
profile or a menu's transfer target, holiday calendars). ``python -m shared.routing validate`` is the final word.

    python -m shared.rules_schema > rules.schema.json
"""

from __future__ import annotations

import json
import re
from typing import Any

from . import mcp
from . import routing as r
from .analysis import MAX_INSTRUCTIONS_CHARS
from .settings import MAX_CALL_DURATION_CAP_SECONDS
from .tools import BUILT_IN

SCHEMA_FILE = "rules.schema.json"

# Text limits the validator applies through its _text() calls (probed by the tests against the validator).
TEXT_LIMITS = {"instructions": 20_000, "greeting": 1_000, "closing_line": 1_000, "transcription": 2_000,
               "silence": 1_000, "menu_text": 2_000}


def _pattern(regex: re.Pattern[str] | str) -> str:
    """A Python regex used with fullmatch, as an anchored JSON Schema pattern."""
    source = regex.pattern if isinstance(regex, re.Pattern) else regex
    return f"^(?:{source})$"


def _text(limit: int, description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": limit, "pattern": r"\S"}
    if description:
        out["description"] = description
    return out


def _int(lo: int, hi: int, description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "integer", "minimum": lo, "maximum": hi}
    if description:
        out["description"] = description
    return out


def _closed(properties: dict[str, Any], keys: set[str], required: set[str] = frozenset(),  # type: ignore[assignment]
            description: str | None = None) -> dict[str, Any]:
    """An object with exactly the validator's key set: each key's shape, or any value when not described yet."""
    out: dict[str, Any] = {"type": "object", "additionalProperties": False,
                           "properties": {k: properties.get(k, {}) for k in sorted(keys)}}
    if required:
        out["required"] = sorted(required)
    if description:
        out["description"] = description
    return out


SIP_STATUS = _int(300, 699, "a SIP status code")
TARGET = {"type": "string", "pattern": _pattern(r._TARGET), "description": "a 'tel:+...' or 'sip:user@host' URI"}
NAME = {"type": "string", "pattern": _pattern(r._NAME)}
PREFIXES = {"type": "array", "items": {"type": "string", "pattern": _pattern(r._PREFIX)},
            "description": "E.164 prefixes like '+1' or '+1900'"}

_TURN_COMMON = {"create_response": {"type": "boolean"}, "interrupt_response": {"type": "boolean"}}
TURN_DETECTION = {"oneOf": [
    {"type": "null"},
    _closed({"type": {"const": "server_vad"}, "threshold": {"type": "number", "minimum": 0.0, "maximum": 1.0},
             "prefix_padding_ms": _int(0, 10_000), "silence_duration_ms": _int(0, 10_000),
             "idle_timeout_ms": {"oneOf": [{"type": "null"}, _int(1_000, 600_000)]}, **_TURN_COMMON},
            r._SERVER_VAD, {"type"}),
    _closed({"type": {"const": "semantic_vad"}, "eagerness": {"enum": ["low", "medium", "high", "auto"]},
             **_TURN_COMMON}, r._SEMANTIC_VAD, {"type"}),
]}

MENU_ENTRY = {"oneOf": [
    _closed({"action": {"const": "transfer"}, "target": {"type": "string",
                                                         "description": "a name in transfer_targets"}},
            {"action", "target"}, {"action", "target"}),
    _closed({"action": {"const": "say"}, "text": _text(TEXT_LIMITS["menu_text"])}, {"action", "text"},
            {"action", "text"}),
    _closed({"action": {"const": "end_call"}}, {"action"}, {"action"}),
]}
DIGITS = {"oneOf": [
    _closed({"mode": {"const": "model"}}, {"mode"}, {"mode"}, "the model hears the keypad digits"),
    _closed({"mode": {"const": "menu"}, "menu": {
        "type": "object", "minProperties": 1, "propertyNames": {"enum": list(r.DTMF)},
        "additionalProperties": MENU_ENTRY}}, {"mode", "menu"}, {"mode", "menu"}, "a fixed keypad menu"),
]}

HOURS = _closed({
    "timezone": {"type": "string", "description": "an IANA time zone like 'America/New_York'"},
    "weekly": {"type": "object", "minProperties": 1, "additionalProperties": False,
               "properties": {day: {"type": "array", "items": {"type": "string", "pattern": _pattern(r._RANGE)}}
                              for day in r.WEEKDAYS},
               "description": "local opening ranges 'HH:MM-HH:MM' per weekday (an end not after the start runs "
                              "past midnight; 24:00 ends the day)"},
    "holidays": {"type": "array", "items": {"type": "string", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
                 "description": "explicit closed dates 'YYYY-MM-DD'"},
    "holiday_calendar": _closed({"country": {"type": "string", "pattern": _pattern(r._COUNTRY)},
                                 "subdiv": {"type": "string", "pattern": _pattern(r._SUBDIV)}},
                                r._CALENDAR_KEYS, {"country"},
                                "public holidays from the holidays package, e.g. {'country': 'US', 'subdiv': 'NY'}"),
    "after_hours": {"oneOf": [
        _closed({"action": {"const": "reject"}, "status_code": SIP_STATUS}, {"action", "status_code"}, {"action"}),
        _closed({"action": {"const": "refer"}, "target_uri": TARGET}, {"action", "target_uri"},
                {"action", "target_uri"}),
    ]},
}, r._HOURS_KEYS, {"timezone", "weekly"})

# The shape of each key the profile validator allows (routing._PROFILE_KEYS). A key added there and not here
# still appears in the schema (any value), and the test_rules_schema completeness test names it.
PROFILE_FIELDS: dict[str, Any] = {
    "instructions": _text(TEXT_LIMITS["instructions"], "the agent's system instructions"),
    "greeting": _text(TEXT_LIMITS["greeting"], "what the agent says first"),
    "voice": {"oneOf": [{"enum": list(r.VOICES)},
                        _closed({"id": {"type": "string", "pattern": _pattern(r._VOICE_ID)}}, {"id"}, {"id"})]},
    "transcription": {"oneOf": [{"type": "null"}, _closed(
        {k: _text(TEXT_LIMITS["transcription"]) for k in ("model", "language", "prompt")},
        {"model", "language", "prompt"}, {"model"})]},
    "turn_detection": TURN_DETECTION,
    "tools": {"type": "array", "uniqueItems": True,
              "items": {"type": "string", "not": {"enum": sorted(BUILT_IN)}},
              "description": "registered tool names (the built-in ones are always offered; do not list them)"},
    "transfer_targets": {"type": "object", "propertyNames": NAME, "additionalProperties": TARGET},
    "max_duration_seconds": _int(r.MIN_DURATION_SECONDS, MAX_CALL_DURATION_CAP_SECONDS,
                                 "also capped by MAX_CALL_DURATION_SECONDS"),
    "closing_seconds": _int(0, MAX_CALL_DURATION_CAP_SECONDS - 1, "seconds before the end to say closing_line"),
    "closing_line": _text(TEXT_LIMITS["closing_line"]),
    "silence": _closed({"prompt": _text(TEXT_LIMITS["silence"]), "goodbye": _text(TEXT_LIMITS["silence"])},
                       {"prompt", "goodbye"}, {"prompt", "goodbye"}),
    "digits": DIGITS,
    "hours": HOURS,
    # Post-call analysis (shared/analysis.py): `data` is a strict structured-outputs JSON Schema, checked there.
    "analysis": _closed({"summary": _text(MAX_INSTRUCTIONS_CHARS, "instructions for a short summary"),
                         "success": _text(MAX_INSTRUCTIONS_CHARS, "a rubric for success: true|false"),
                         "data": {"type": "object", "description": "a JSON Schema of the fields to extract"}},
                        {"summary", "success", "data"}, {"summary", "success"}),
    # Remote MCP servers the platform calls during the call (shared/mcp.py).
    "mcp_servers": {"type": "array", "items": _closed(
        {"label": {"type": "string", "pattern": _pattern(mcp._LABEL)},
         "url": {"type": "string", "pattern": "^https?://", "description": "https (http only for localhost)"},
         "description": {"type": "string"},
         "allowed_tools": {"type": "array", "minItems": 1, "uniqueItems": True,
                           "items": {"type": "string", "pattern": _pattern(mcp._TOOL)}},
         "headers": {"type": "object", "propertyNames": {"pattern": _pattern(mcp._HEADER)},
                     "additionalProperties": {"type": "string", "pattern": _pattern(mcp._SETTING),
                                              "description": "the NAME of a setting holding the value"}},
         "require_approval": {"oneOf": [{"enum": ["never", "always"]}, {"type": "object"}]}},
        {"label", "url", "description", "allowed_tools", "headers", "require_approval"}, {"label", "url"})},
}


def schema() -> dict[str, Any]:
    root = {
        "$schema": {"type": "string", "description": "this schema, for editors; ignored by the app"},
        "numbers": {"type": "object", "minProperties": 1,
                    "propertyNames": {"anyOf": [{"const": "*"}, {"pattern": _pattern(r._NUMBER)}]},
                    "additionalProperties": {"type": "string", "description": "a profile name"},
                    "description": "dialed E.164 number (or '*') -> profile name"},
        "profiles": {"type": "object", "minProperties": 1, "propertyNames": NAME,
                     "additionalProperties": {"$ref": "#/$defs/profile"}},
        "callers": _closed({"allow": PREFIXES, "deny": PREFIXES, "reject_status_code": SIP_STATUS},
                           {"allow", "deny", "reject_status_code"}),
        "capacity": _closed({"max_concurrent_calls": _int(1, 100_000)}, {"max_concurrent_calls"},
                            {"max_concurrent_calls"}),
    }
    out = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Switchboard routing rules",
        "description": "Generated by `python -m shared.rules_schema` from shared/routing.py; do not edit. "
                       "`python -m shared.routing validate FILE` checks everything the app checks.",
        **_closed(root, r._ROOT_KEYS, {"numbers", "profiles"}),
        "$defs": {"profile": _closed(PROFILE_FIELDS, r._PROFILE_KEYS, {"instructions", "greeting"})},
    }
    return out


def render() -> str:
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    print(render(), end="")
