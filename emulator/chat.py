"""Chat completions (POST /openai/v1/chat/completions) with strict structured outputs, for post-call analysis.

The emulator checks the request as the service would (model, messages, a ``json_schema`` response format in
strict mode, a schema strict mode accepts) and answers with a deterministic JSON value generated from the schema
it was sent, so a test proves the request is right and the client handles the answer. ``Emulator.chat`` holds
what was asked (``requests``) and the faults to inject (``fail`` statuses answered in turn, ``delay_s``).
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .errors import EMULATOR, check_auth, error_response, read_json_object
from .util import hex_id

_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_ROLES = {"system", "developer", "user", "assistant"}


@dataclass
class ChatState:
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail: list[int] = field(default_factory=list)  # HTTP statuses to answer with, one per request, first first
    delay_s: float = 0.0  # before answering (a slow deployment)
    refuse: bool = False  # answer with a refusal instead of content


def _bad(message: str, param: str | None = None) -> web.Response:
    return error_response(400, message, code="invalid_request_error" if param is None else "invalid_value",
                          param=param)


def strict_schema_problem(node: Any, path: str = "schema") -> str | None:
    """Why strict structured outputs refuses the schema, or None. Every object: properties, all of them
    required, additionalProperties false."""
    if not isinstance(node, dict):
        return None
    kinds = node.get("type")
    if kinds == "object" or (isinstance(kinds, list) and "object" in kinds):
        props = node.get("properties") or {}
        if node.get("additionalProperties") is not False:
            return f"In context={path}, 'additionalProperties' is required to be supplied and to be false."
        missing = [k for k in props if k not in (node.get("required") or [])]
        if missing:
            return f"In context={path}, 'required' is required to include every key in properties. " \
                   f"Missing '{missing[0]}'."
        for key, sub in props.items():
            if (problem := strict_schema_problem(sub, f"{path}.properties.{key}")) is not None:
                return problem
    for key in ("items",):
        if key in node and (problem := strict_schema_problem(node[key], f"{path}.{key}")) is not None:
            return problem
    for i, sub in enumerate(node.get("anyOf") or []):
        if (problem := strict_schema_problem(sub, f"{path}.anyOf[{i}]")) is not None:
            return problem
    for name, sub in (node.get("$defs") or {}).items():
        if (problem := strict_schema_problem(sub, f"{path}.$defs.{name}")) is not None:
            return problem
    return None


def sample(schema: dict[str, Any], root: dict[str, Any], name: str = "value") -> Any:
    """A deterministic value of the schema: first enum value, first non-null type or anyOf branch, minimums."""
    if "$ref" in schema:
        ref = schema["$ref"]
        target: Any = root
        for part in ref.removeprefix("#/").split("/"):
            target = target[part]
        return sample(target, root, name)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][0]
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"] or schema["anyOf"]
        return sample(branches[0], root, name)
    kind = schema.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {k: sample(v, root, k) for k, v in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [sample(schema.get("items") or {}, root, name) for _ in range(max(1, schema.get("minItems", 1)))]
    if kind == "integer":
        return int(schema.get("minimum", 1))
    if kind == "number":
        return float(schema.get("minimum", 1.5))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2026-01-01T00:00:00Z"
    if fmt == "date":
        return "2026-01-01"
    return f"emulated {name}"


def _validate(body: dict[str, Any]) -> web.Response | dict[str, Any]:
    """The schema to answer, or the 400 the service would give."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        return _bad("Missing required parameter: 'model'.", "model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _bad("Missing required parameter: 'messages'.", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in _ROLES:
            return _bad(f"Invalid value for 'messages[{i}].role'.", f"messages[{i}].role")
        if not isinstance(m.get("content"), str):
            return _bad(f"Invalid type for 'messages[{i}].content': expected a string.", f"messages[{i}].content")
    fmt = body.get("response_format")
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        return _bad("This emulator answers structured outputs only: response_format.type must be 'json_schema'.",
                    "response_format.type")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not _NAME.fullmatch(spec["name"]):
        return _bad("Invalid 'response_format.json_schema.name'.", "response_format.json_schema.name")
    if spec.get("strict") is not True:
        return _bad("The emulator expects strict structured outputs (strict: true).", "response_format.json_schema")
    schema = spec.get("schema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return _bad("Invalid schema for response_format: the root must be an object.",
                    "response_format.json_schema.schema")
    problem = strict_schema_problem(schema)
    if problem is not None:
        return _bad(f"Invalid schema for response_format '{spec['name']}': {problem}", "response_format")
    return schema


async def chat_completions(request: web.Request) -> web.Response:
    if (denied := check_auth(request)) is not None:
        return denied
    state: ChatState = request.app[EMULATOR].chat
    body = await read_json_object(request)
    if isinstance(body, web.Response):
        return body
    state.requests.append(body)
    if state.delay_s:
        await asyncio.sleep(state.delay_s)
    if state.fail:
        status = state.fail.pop(0)
        return error_response(status, "The server had an error while processing your request.",
                              type_="server_error" if status >= 500 else "invalid_request_error")
    schema = _validate(body)
    if isinstance(schema, web.Response):
        return schema
    content = json.dumps(sample(schema, schema), separators=(",", ":"))
    prompt_tokens = sum(len(m["content"]) for m in body["messages"]) // 4
    message: dict[str, Any] = {"role": "assistant", "content": None if state.refuse else content,
                               "refusal": "I can't help with that." if state.refuse else None}
    return web.json_response({
        "id": hex_id("chatcmpl-", 12),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": len(content) // 4,
                  "total_tokens": prompt_tokens + len(content) // 4},
    })


def add_routes(app: web.Application, prefixes: list[str]) -> None:
    for p in prefixes:
        app.router.add_post(f"{p}/chat/completions", chat_completions)
