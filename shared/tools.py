"""The tool registry: plain async Python functions the model may call, each with a JSON schema.

Two tools are built in and owned by the conversation engine, because they act on the call itself:
``end_call`` (hang up once the goodbye has played) and ``transfer_call`` (refer to a target the profile
names). Everything else is a user tool registered with :meth:`ToolRegistry.register`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

ToolHandler = Callable[..., Awaitable[Any]]

END_CALL = "end_call"
TRANSFER_CALL = "transfer_call"
BUILT_IN = (END_CALL, TRANSFER_CALL)
# The function names the API accepts. str.isalnum() would also pass "café" or "١٢٣", and the accept
# carrying such a tool would then fail for every call of the profile.
_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}", re.ASCII)


class ToolError(Exception):
    """Raised by a tool to return a clean error message to the model."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]
    handler: ToolHandler | None  # None for the built-ins, which the engine handles
    timeout_seconds: float = 10.0

    def schema(self) -> dict[str, Any]:
        return {"type": "function", "name": self.name, "description": self.description, "parameters": self.parameters}


def _end_call_tool() -> Tool:
    return Tool(
        name=END_CALL,
        description="End the phone call. Say a short goodbye first; the line is closed once it has played.",
        parameters={"type": "object", "properties": {"reason": {"type": "string"}}, "additionalProperties": False},
        handler=None,
    )


def _transfer_tool(targets: Iterable[str]) -> Tool:
    names = sorted(targets)
    return Tool(
        name=TRANSFER_CALL,
        description="Transfer the caller to a person or department. Only the listed targets exist.",
        parameters={
            "type": "object",
            "properties": {"target": {"type": "string", "enum": names, "description": "Where to transfer the call."}},
            "required": ["target"],
            "additionalProperties": False,
        },
        handler=None,
    )


@dataclass
class ToolRegistry:
    _tools: dict[str, Tool] = field(default_factory=dict)

    def register(
        self,
        name: str,
        *,
        description: str,
        parameters: dict[str, Any],
        timeout_seconds: float = 10.0,
    ) -> Callable[[ToolHandler], ToolHandler]:
        """Decorator: ``@registry.register("lookup_order", description=..., parameters={...})``."""
        if name in BUILT_IN:
            raise ValueError(f"{name!r} is a built-in tool and cannot be replaced")
        if not _TOOL_NAME.fullmatch(name):
            raise ValueError(f"tool name {name!r} must be 1 to 64 ASCII letters, digits, '_' or '-'")
        if parameters.get("type") != "object":
            raise ValueError(f"tool {name!r}: parameters must be a JSON schema with type 'object'")

        def decorator(fn: ToolHandler) -> ToolHandler:
            self._tools[name] = Tool(name, description, parameters, fn, timeout_seconds)
            return fn

        return decorator

    def names(self) -> set[str]:
        return set(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def for_profile(self, tool_names: Iterable[str], transfer_targets: Iterable[str]) -> list[Tool]:
        """The tools a profile offers the model: its user tools, end_call, and transfer_call when it has targets."""
        chosen = []
        for name in tool_names:
            tool = self._tools.get(name)
            if tool is None:
                raise KeyError(name)
            chosen.append(tool)
        chosen.append(_end_call_tool())
        targets = list(transfer_targets)
        if targets:
            chosen.append(_transfer_tool(targets))
        return chosen


# The process-wide registry that user code (call_workflow/agent_tools.py) registers into.
registry = ToolRegistry()
