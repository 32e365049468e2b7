"""Remote MCP servers of a profile (``mcp_servers``): validated at load, passed to the Realtime session as
``type: "mcp"`` tools, so the platform itself lists and calls the server's tools (docs/mcp.md).

Header values are never in routing.json: a header names a setting (an app setting, which in Azure may be a Key
Vault reference the platform resolves), read when the accept body is built. A name that is not set is a start-up
error naming the profile, and so is a URL that is not https (plain http only for localhost, for local servers).
The app's own secrets (shared/settings.py ``SETTINGS``) can never be sent to an MCP server.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

MAX_SERVERS = 10
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TOOL = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_HEADER = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}")  # an HTTP token (RFC 9110)
_SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_LOCAL = ("localhost", "127.0.0.1", "::1")
# Headers the HTTP client owns; a profile setting them would break the request or smuggle another.
_RESERVED = {"host", "content-length", "content-type", "transfer-encoding", "connection", "accept"}
_APPROVAL_FILTER = {"tool_names", "read_only"}
_KEY_VAULT_REFERENCE_PREFIX = "@Microsoft.KeyVault("


class McpConfigError(ValueError):
    """The ``mcp_servers`` block is invalid; the message starts with the path of the bad field. ``setting``: the
    setting at fault, when one is (an unresolved header value)."""

    def __init__(self, message: str, setting: str | None = None) -> None:
        super().__init__(message)
        self.setting = setting


def _fail(path: str, message: str) -> Any:
    raise McpConfigError(f"{path}: {message}")


def _own_settings() -> frozenset[str]:
    from .settings import SETTINGS

    return frozenset(s.name for s in SETTINGS)


def parse_servers(raw: Any, path: str, environ: Mapping[str, str] | None = None) -> tuple[dict[str, Any], ...]:
    """Validate a profile's ``mcp_servers``; returns JSON-able server entries (raises McpConfigError).
    ``environ`` (default: the process environment) must hold every setting a header names."""
    env = os.environ if environ is None else environ
    if not isinstance(raw, list):
        _fail(path, f"expected a list of servers, got {type(raw).__name__}")
    if len(raw) > MAX_SERVERS:
        _fail(path, f"at most {MAX_SERVERS} servers")
    out: list[dict[str, Any]] = []
    labels: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(entry, dict):
            _fail(where, f"expected an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - {"label", "url", "description", "allowed_tools", "headers", "require_approval"})
        if unknown:
            _fail(f"{where}.{unknown[0]}", "unknown key (allowed: allowed_tools, description, headers, label, "
                                           "require_approval, url)")
        for key in ("label", "url"):
            if key not in entry:
                _fail(f"{where}.{key}", "is required")
        label = entry["label"]
        if not isinstance(label, str) or not _LABEL.fullmatch(label):
            _fail(f"{where}.label", "1-64 letters, digits, '_' or '-'")
        if label in labels:
            _fail(f"{where}.label", f"duplicate label {label!r}")
        labels.add(label)
        server: dict[str, Any] = {"label": label, "url": _url(entry["url"], f"{where}.url")}
        if "description" in entry:
            if not isinstance(entry["description"], str) or not 0 < len(entry["description"]) <= 1000:
                _fail(f"{where}.description", "expected a string of 1-1000 characters")
            server["description"] = entry["description"]
        if "allowed_tools" in entry:
            server["allowed_tools"] = _tool_names(entry["allowed_tools"], f"{where}.allowed_tools", allow_empty=False)
        if "headers" in entry:
            server["headers"] = _headers(entry["headers"], f"{where}.headers", env)
        server["require_approval"] = _approval(entry.get("require_approval", "never"), f"{where}.require_approval")
        out.append(server)
    return tuple(out)


def _url(value: Any, path: str) -> str:
    if not isinstance(value, str) or len(value) > 2000:
        _fail(path, "expected an https URL")
    # urlsplit skips leading spaces and drops tabs and newlines, but the platform gets the URL as written.
    if not value.isprintable() or " " in value:
        _fail(path, "no spaces or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        _fail(path, "not a valid URL")
    if parts.username or parts.password or parts.fragment:
        _fail(path, "no user info or fragment (put credentials in headers, from settings)")
    if not parts.hostname:
        _fail(path, "expected an https URL with a host")
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in _LOCAL):
        _fail(path, f"must be https (plain http only for localhost), got {parts.scheme or 'no'} scheme")
    return value


def _tool_names(value: Any, path: str, *, allow_empty: bool) -> list[str]:
    if not isinstance(value, list) or (not value and not allow_empty):
        _fail(path, "expected a non-empty list of tool names")
    for j, name in enumerate(value):
        if not isinstance(name, str) or not _TOOL.fullmatch(name):
            _fail(f"{path}[{j}]", "expected a tool name (letters, digits, '_', '-', '.')")
    if len(set(value)) != len(value):
        _fail(path, "duplicate tool names")
    return list(value)


def _headers(value: Any, path: str, env: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(value, dict) or not value:
        _fail(path, "expected an object of header name -> setting name")
    own = _own_settings()
    out: dict[str, str] = {}
    for header, setting in value.items():
        where = f"{path}.{header}"
        if not _HEADER.fullmatch(header) or header.lower() in _RESERVED:
            _fail(where, "not a header name a profile may set")
        if not isinstance(setting, str) or not _SETTING.fullmatch(setting):
            _fail(where, "expected the name of a setting that holds the header's value")
        if setting in own:
            _fail(where, f"{setting} is one of Switchboard's own settings; it is never sent to an MCP server")
        if not env.get(setting, "").strip():
            _fail(where, f"names setting {setting!r}, which is not set")
        out[header] = setting
    return out


def _approval(value: Any, path: str) -> Any:
    if value in ("never", "always"):
        return value
    if not isinstance(value, dict) or not value or set(value) - {"always", "never"}:
        _fail(path, "expected 'never', 'always' or "
                    "{\"always\"|\"never\": {\"tool_names\": [...], \"read_only\": bool}}")
    out: dict[str, Any] = {}
    for key, flt in value.items():
        where = f"{path}.{key}"
        if not isinstance(flt, dict) or not flt or set(flt) - _APPROVAL_FILTER:
            _fail(where, "expected {\"tool_names\": [...]} and/or {\"read_only\": true|false}")
        entry: dict[str, Any] = {}
        if "tool_names" in flt:
            entry["tool_names"] = _tool_names(flt["tool_names"], f"{where}.tool_names", allow_empty=False)
        if "read_only" in flt:
            if not isinstance(flt["read_only"], bool):
                _fail(f"{where}.read_only", "expected true or false")
            entry["read_only"] = flt["read_only"]
        out[key] = entry
    return out


def session_tools(servers: tuple[dict[str, Any], ...] | list[dict[str, Any]],
                  environ: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The ``type: "mcp"`` tools of the Realtime session config (GA ``RealtimeToolsConfigUnion`` Mcp), with the
    header values read from the settings now. Raises McpConfigError if a setting went missing or is a Key Vault
    reference the platform has not resolved yet (the value would be the reference text, not the secret)."""
    env = os.environ if environ is None else environ
    tools: list[dict[str, Any]] = []
    for server in servers:
        tool: dict[str, Any] = {"type": "mcp", "server_label": server["label"], "server_url": server["url"],
                                "require_approval": copy.deepcopy(server.get("require_approval", "never"))}
        if "description" in server:
            tool["server_description"] = server["description"]
        if "allowed_tools" in server:
            tool["allowed_tools"] = list(server["allowed_tools"])
        if server.get("headers"):
            headers: dict[str, str] = {}
            for header, setting in server["headers"].items():
                value = env.get(setting, "").strip()
                if not value or value.startswith(_KEY_VAULT_REFERENCE_PREFIX):
                    raise McpConfigError(f"mcp server {server['label']}: setting {setting} for header {header} is "
                                         "not set or not resolved yet", setting)
                headers[header] = value
            tool["headers"] = headers
        tools.append(tool)
    return tools
