"""Scenario files: who calls, what the caller does, how the scripted model answers, which faults to inject.

Scenarios are YAML or JSON files (or inline dicts). They are validated with pydantic (`extra="forbid"`, so a
typo is an error, not a silently ignored key) and errors name the offending field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

BUILTIN_DIR = Path(__file__).parent / "scenarios"
DTMF_CHARS = set("0123456789*#ABCD")


class ScenarioError(ValueError):
    """A scenario could not be found or is invalid; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CallInfo(_Strict):
    caller: str = "+14255551212"
    caller_name: str | None = "Caller"
    dialed: str = "+18005551212"
    # Extra SIP headers of the INVITE (typically X-...); they appear in the webhook's sip_headers.
    headers: dict[str, str] = Field(default_factory=dict)


class Step(_Strict):
    """One caller action. Exactly one of say/dtmf/silence/hangup/drop_sideband/wait."""

    say: str | None = None
    dtmf: str | None = None
    silence: bool | None = None
    hangup: bool | None = None
    drop_sideband: bool | None = None
    wait: float | None = None
    # Pause after the wait_for condition is met (None = config.caller_step_delay_s).
    after: float | None = None
    wait_for: Literal["agent_idle", "nothing"] = "agent_idle"

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        actions = [
            k
            for k in ("say", "dtmf", "silence", "hangup", "drop_sideband", "wait")
            if getattr(self, k) not in (None, False)
        ]
        if len(actions) != 1:
            raise ValueError(
                "each step needs exactly one of say, dtmf, silence, hangup, drop_sideband, wait; got "
                + (", ".join(actions) or "none")
            )
        if self.dtmf is not None and (not self.dtmf or set(self.dtmf) - DTMF_CHARS):
            raise ValueError(f"dtmf must be a non-empty string of 0-9 * # A-D, got {self.dtmf!r}")
        if self.wait is not None and self.wait < 0:
            raise ValueError("wait must be >= 0")
        return self

    @property
    def action(self) -> str:
        for k in ("say", "dtmf", "silence", "hangup", "drop_sideband", "wait"):
            if getattr(self, k) not in (None, False):
                return k
        raise AssertionError("unreachable")


class CallerScript(_Strict):
    # The first step waits until the agent has finished its first response (the greeting).
    wait_for_greeting: bool = True
    greeting_timeout_s: float = 5.0
    steps: list[Step] = Field(default_factory=list)
    # What the caller does when the steps run out.
    on_end: Literal["stay", "hangup"] = "stay"


class FunctionCall(_Strict):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class McpUse(_Strict):
    """A call of a tool of one of the session's MCP servers (``type: "mcp"`` tools), made by the platform."""

    server: str  # the server_label
    tool: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class Rule(_Strict):
    """Maps a caller utterance to a reply: say, call, or say then call (e.g. goodbye then end_call)."""

    match: str
    # False: case-insensitive substring. True: case-insensitive regex (named groups template `say`/arguments).
    regex: bool = False
    say: str | None = None
    call: FunctionCall | None = None
    mcp: McpUse | None = None

    @model_validator(mode="after")
    def _check(self) -> Rule:
        if self.say is None and self.call is None and self.mcp is None:
            raise ValueError(f"rule {self.match!r} needs `say`, `call`, `mcp` or a combination")
        if self.regex:
            try:
                re.compile(self.match)
            except re.error as exc:
                raise ValueError(f"rule match {self.match!r} is not a valid regex: {exc}") from exc
        return self


class ModelScript(_Strict):
    # Said for the first response when the response.create carries no quoted text.
    greeting: str | None = None
    # Said when nothing else applies (no quoted instructions, no matching rule).
    default_reply: str | None = None
    # Said after input_audio_buffer.timeout_triggered (caller silence).
    on_idle: str = "Are you still there?"
    rules: list[Rule] = Field(default_factory=list)
    # Function name -> reply after its function_call_output; `{output}` is the raw output string, `{field}` a
    # field of the output when it is a JSON object.
    after_function: dict[str, str] = Field(default_factory=dict)
    # Said after an MCP call (same response): `after_function[tool]` with `{output}` when it worked (default: the
    # output itself), else this with `{error}`, the error message the platform got (or why the tool was not there).
    mcp_failed: str = "Sorry, I could not use that system: {error}"


class AcceptFault(_Strict):
    status: int | None = None  # answer accept with this HTTP status ...
    times: int = 1  # ... this many times, then behave
    delay_s: float = 0.0  # sleep before answering accept


class HangupFault(_Strict):
    status: int = 500  # answer /hangup with this HTTP status (>= 400) ...
    times: int = 1  # ... this many times, then behave
    delay_s: float = 0.0  # sleep before answering /hangup

    @field_validator("status")
    @classmethod
    def _error_status(cls, v: int) -> int:
        if not 400 <= v <= 599:
            raise ValueError(f"status must be an HTTP error status (400-599), got {v}")
        return v

    @field_validator("times")
    @classmethod
    def _times(cls, v: int) -> int:
        if v < 0:
            raise ValueError("times must be >= 0")
        return v


class Faults(_Strict):
    accept: AcceptFault | None = None
    hangup: HangupFault | None = None  # fail (or slow) the first N /hangup requests; the call stays up
    duplicate_webhook: bool = False  # deliver the same event (same webhook-id) a second time after success
    late_webhook_after_s: float | None = (
        None  # redeliver the same event this long after the first, whatever the call state
    )
    bad_signature: bool = False  # sign with a wrong secret
    stale_timestamp_s: float | None = None  # shift webhook-timestamp into the past (negative = future)
    extra_signatures: int = 0  # add n non-matching v1 signatures before the real one
    webhook_status_delay_s: float | None = None  # delay before the first delivery (dispatch latency)
    drop_sideband_after_s: float | None = (
        None  # drop every sideband (1006) this long after the first connect; call stays up
    )


class Scenario(_Strict):
    name: str = "inline"
    description: str | None = None
    call: CallInfo = Field(default_factory=CallInfo)
    script: CallerScript = Field(default_factory=CallerScript)
    model: ModelScript = Field(default_factory=ModelScript)
    faults: Faults = Field(default_factory=Faults)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("name must not be empty")
        return v


BUILTIN_DEFAULT = {
    "name": "builtin-default",
    "description": "Caller stays on the line silently; the model greets and answers generically.",
    "model": {"default_reply": "How can I help you today?"},
}


def _format_error(source: str, exc: ValidationError) -> str:
    lines = [f"invalid scenario {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"  {loc}: {err['msg']}")
    return "\n".join(lines)


def parse_scenario(data: Any, source: str = "<inline>") -> Scenario:
    if isinstance(data, Scenario):
        return data
    if not isinstance(data, dict):
        raise ScenarioError(f"invalid scenario {source}: expected a mapping, got {type(data).__name__}")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        raise ScenarioError(_format_error(source, exc)) from None


def load_file(path: Path) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from None
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ScenarioError(f"cannot parse scenario {path}: {exc}") from None
    if isinstance(data, dict) and "name" not in data:
        data = {**data, "name": path.stem}
    return parse_scenario(data, str(path))


def _dirs(scenario_dir: str | None) -> list[Path]:
    dirs = [Path(scenario_dir)] if scenario_dir else []
    return dirs + [BUILTIN_DIR]


def _files(scenario_dir: str | None) -> list[Path]:
    out: list[Path] = []
    for d in _dirs(scenario_dir):
        if d.is_dir():
            out += sorted(p for p in d.iterdir() if p.suffix in (".yaml", ".yml", ".json"))
    return out


def find_by_name(name: str, scenario_dir: str | None) -> Scenario:
    p = Path(name)
    if p.suffix in (".yaml", ".yml", ".json") and p.is_file():
        return load_file(p)
    for d in _dirs(scenario_dir):
        for ext in (".yaml", ".yml", ".json"):
            cand = d / f"{name}{ext}"
            if cand.is_file():
                return load_file(cand)
    raise ScenarioError(f"scenario {name!r} not found in {', '.join(str(d) for d in _dirs(scenario_dir))}")


def default_scenario(scenario_dir: str | None) -> Scenario:
    for d in _dirs(scenario_dir):
        for ext in (".yaml", ".yml", ".json"):
            cand = d / f"default{ext}"
            if cand.is_file():
                return load_file(cand)
    return parse_scenario(BUILTIN_DEFAULT, "<builtin default>")


def find_by_dialed(dialed: str, scenario_dir: str | None) -> Scenario | None:
    """Scenario files in the user's scenario directory whose call.dialed equals the dialed number."""
    if not scenario_dir:
        return None
    for path in _files(scenario_dir):
        if path.parent != Path(scenario_dir):
            continue
        try:
            sc = load_file(path)
        except ScenarioError:
            continue
        if "dialed" in sc.call.model_fields_set and sc.call.dialed == dialed:
            return sc
    return None


def resolve(spec: None | str | dict | Scenario, scenario_dir: str | None) -> Scenario:
    """Scenario from None (default), a name/path, an inline dict or a Scenario."""
    if spec is None:
        return default_scenario(scenario_dir)
    if isinstance(spec, str):
        return find_by_name(spec, scenario_dir)
    return parse_scenario(spec)
