"""Emulator configuration (one dataclass, shared by the CLI and the programmatic API)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["azure", "openai"]

# Documented maximum session durations (docs/platform.md §1): Azure caps sessions at 30 minutes, OpenAI at 60.
DEFAULT_SESSION_LIMIT_S = {"azure": 1800.0, "openai": 3600.0}


@dataclass
class EmulatorConfig:
    host: str = "127.0.0.1"
    # 0 = pick an ephemeral port (tests). The CLI defaults to 8765.
    http_port: int = 0
    # 0 = ephemeral port for the SIP front door; None = SIP front door disabled.
    sip_port: int | None = 0
    # RFC 3261 timer T1 (round-trip estimate, 0.5 s by default). The SIP front door derives every retransmission
    # interval and timeout from it (64*T1 = 32 s without an ACK ends the call); tests shrink it.
    sip_t1_s: float = 0.5
    webhook_url: str | None = None
    webhook_secret: str | None = None
    api_key: str | None = "test-key"
    # A separate accepted Bearer token (stands in for an Entra token). The api_key is accepted as Bearer too,
    # because openai-python sends `Authorization: Bearer <api_key>`.
    bearer_token: str | None = None
    scenario_dir: str | None = None
    mode: Mode = "azure"
    # Seconds a call may ring without accept/reject before the SIP leg gets 480 and the call expires.
    ring_timeout_s: float = 10.0
    # None = the documented limit for the mode (1800 s azure, 3600 s openai).
    session_limit_s: float | None = None
    # How long the model (and the scripted caller) "speaks" per transcript character.
    # Real speech is ~0.06 s/char; tests use 0 or a few milliseconds.
    speech_seconds_per_char: float = 0.0
    # Webhook delivery: per-attempt HTTP timeout and the backoff schedule between attempts.
    webhook_timeout_s: float = 5.0
    # How long the emulated platform waits for an MCP server (list or call) and for an approval answer.
    mcp_timeout_s: float = 10.0
    webhook_backoff_s: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
    webhook_max_attempts: int = 5
    # A REFER ends the call this many seconds later (the transfer takes the carrier leg away).
    refer_end_delay_s: float = 0.5
    # Close code used on the sideband when the controller calls /hangup (undocumented upstream; 1000 assumed).
    hangup_close_code: int = 1000
    # Default pause before each caller-script step (after the agent is idle).
    caller_step_delay_s: float = 0.05
    # Maximum time a caller step waits for the agent to become idle before going ahead anyway.
    caller_idle_timeout_s: float = 10.0
    # Reject `OpenAI-Beta: realtime=v1` on the sideband (the emulator speaks GA events only).
    reject_beta_header: bool = True
    extra: dict = field(default_factory=dict)

    def effective_session_limit_s(self) -> float:
        if self.session_limit_s is not None:
            return float(self.session_limit_s)
        return DEFAULT_SESSION_LIMIT_S[self.mode]
