"""Tool registry (shared/tools.py): what may be registered, and what a profile offers the model."""

from __future__ import annotations

import pytest

from shared.tools import END_CALL, TRANSFER_CALL, ToolRegistry

OBJECT = {"type": "object", "properties": {}}


@pytest.mark.parametrize("name", ["", "café", "look up", "lookup.order", "١٢٣", "a" * 65, END_CALL, TRANSFER_CALL])
def test_names_the_platform_would_refuse_are_refused_at_registration(name):
    # Function names are [A-Za-z0-9_-]{1,64} for the Realtime API; anything else would fail every accept.
    with pytest.raises(ValueError):
        ToolRegistry().register(name, description="x", parameters=OBJECT)


@pytest.mark.parametrize("name", ["lookup_order", "look-up", "A1", "a" * 64])
def test_valid_names_register(name):
    reg = ToolRegistry()

    @reg.register(name, description="x", parameters=OBJECT)
    async def handler() -> None:
        return None

    assert reg.names() == {name} and reg.get(name).handler is handler


def test_parameters_must_be_an_object_schema():
    with pytest.raises(ValueError, match="type 'object'"):
        ToolRegistry().register("t", description="x", parameters={"type": "string"})


def test_for_profile_adds_end_call_and_transfer_only_with_targets():
    reg = ToolRegistry()
    reg.register("lookup_order", description="x", parameters=OBJECT)(lambda: None)
    assert [t.name for t in reg.for_profile(["lookup_order"], [])] == ["lookup_order", END_CALL]
    tools = reg.for_profile([], ["support", "sales"])
    assert [t.name for t in tools] == [END_CALL, TRANSFER_CALL]
    assert tools[1].schema()["parameters"]["properties"]["target"]["enum"] == ["sales", "support"]
    with pytest.raises(KeyError):
        reg.for_profile(["missing"], [])
