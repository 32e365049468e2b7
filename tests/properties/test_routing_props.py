"""Properties of the routing rules loader (shared/routing.py): any mutation of the shipped routing.json (a value
replaced by arbitrary JSON, a key deleted, an unknown key added, a list emptied) is either loaded or refused with a
RoutingRulesError whose message starts with the field path at fault, never another exception; and rules that load
decide any call without raising."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st

from shared.routing import Decision, RoutingRules, RoutingRulesError, parse_rules, parse_rules_text

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = json.loads((ROOT / "routing.json").read_text())
TOOLS = {"lookup_order"}
CAP = 900

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["+18005551212", "tel:+14155550123", "sip:a@b", "09:00-17:00", "2026-12-25", "reception",
                       "server_vad", "menu", "America/New_York", "US", "*", "+1"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


def _containers(node: Any, path: tuple) -> list[tuple]:
    """Paths of every dict and list in the document (the root included)."""
    found = [path] if isinstance(node, (dict, list)) else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found += _containers(child, path + (key,))
    return found


CONTAINERS = _containers(SHIPPED, ())


@st.composite
def mutated_rules(draw: st.DrawFn) -> Any:
    doc = copy.deepcopy(SHIPPED)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(CONTAINERS))
        node: Any = doc
        try:
            for key in path:
                node = node[key]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this part
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "empty"]))
        if isinstance(node, dict):
            keys = sorted(node)
            if op == "add" or not keys:
                node[draw(st.text(max_size=10))] = draw(JSON)
            elif op == "empty":
                node.clear()
            else:
                key = draw(st.sampled_from(keys))
                if op == "delete":
                    del node[key]
                else:
                    node[key] = draw(JSON)
        elif isinstance(node, list):
            if op == "add" or not node:
                node.append(draw(JSON))
            elif op == "empty":
                node.clear()
            else:
                i = draw(st.integers(0, len(node) - 1))
                if op == "delete":
                    del node[i]
                else:
                    node[i] = draw(JSON)
    return doc


def assert_names_a_field(exc: RoutingRulesError, doc: Any) -> None:
    message = str(exc)
    path, sep, reason = message.partition(": ")
    assert sep and reason, message
    # The path starts at a top-level key of the document ("profiles.reception.voice", "callers.allow[0]"), or is
    # "(root)" when the document itself is not an object.
    roots = {"(root)", "profiles", "numbers", "callers", "capacity", "$schema"}
    if isinstance(doc, dict):
        roots |= set(doc)
    assert any(message.startswith(root) and message[len(root):][:1] in (".", "[", ":") for root in roots), message


@given(mutated_rules())
@example(SHIPPED)
@example({**SHIPPED, "numbers": {"+18005551212": "nobody"}})
@example({**SHIPPED, "capacity": {"max_concurrent_calls": True}})
def test_a_mutated_rules_file_loads_or_is_refused_naming_the_field(doc: Any) -> None:
    try:
        rules = parse_rules(doc, tool_names=TOOLS, max_call_duration_seconds=CAP)
    except RoutingRulesError as exc:
        event("refused")
        assert_names_a_field(exc, doc)
        return
    event("loaded")
    assert isinstance(rules, RoutingRules) and rules.profiles
    # Loaded rules decide any call (numbers known or not, any hour, capacity known or not) without raising.
    for caller, dialed in (("+14255551212", "+18005551212"), (None, None), ("4255551212", "+18005550100")):
        for hours in (0, 13, 23):
            decision = rules.decide(caller, dialed, datetime(2026, 3, 4, tzinfo=UTC) + timedelta(hours=hours), 3)
            assert isinstance(decision, Decision) and decision.action in ("accept", "reject", "refer")


@given(JSON)
def test_any_json_document_loads_or_is_refused_naming_the_field(doc: Any) -> None:
    try:
        parse_rules(doc, tool_names=TOOLS, max_call_duration_seconds=CAP)
    except RoutingRulesError as exc:
        assert_names_a_field(exc, doc)


@given(st.binary(max_size=300) | mutated_rules().map(lambda d: json.dumps(d).encode()))
@example(b"\xff\xfe")
@example(b"[" * 100_000)  # raised RecursionError before the fix
def test_any_bytes_load_or_are_refused(text: bytes) -> None:
    try:
        parse_rules_text(text, "rules.json", tool_names=TOOLS, max_call_duration_seconds=CAP)
    except RoutingRulesError as exc:
        assert str(exc)


def test_the_shipped_rules_load() -> None:
    # The seed every mutation starts from must itself be valid, or the mutations above test nothing.
    parse_rules(SHIPPED, tool_names=TOOLS, max_call_duration_seconds=CAP)
    with pytest.raises(RoutingRulesError, match=r"^profiles\.reception\.voice: "):
        parse_rules({**SHIPPED, "profiles": {**SHIPPED["profiles"], "reception": {
            **SHIPPED["profiles"]["reception"], "voice": 7}}}, tool_names=TOOLS, max_call_duration_seconds=CAP)
