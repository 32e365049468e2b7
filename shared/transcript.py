"""Small pure helpers of the conversation engine: time stamps, the spoken-line instructions, token usage."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .payloads import TokenUsage


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """The orchestration's timestamp form: ``2026-11-25T12:00:00.000000Z``."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_iso(value: str) -> datetime:
    ts = datetime.fromisoformat(value)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def say_exactly(text: str, lead: str = "Say exactly") -> str:
    """Instructions that make the model speak a fixed line (greeting, prompts, closing line).

    The line is quoted; double quotes inside it would end the quote early, so they become single quotes.
    """
    return f'{lead}: "{text.replace(chr(34), chr(39))}"'


def greeting_instructions(greeting: str) -> str:
    return say_exactly(greeting, "Greet the caller by saying exactly")


class Usage:
    """Token usage summed over every ``response.done`` of the call (the model's responses, not transcription)."""

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.total_tokens = 0

    def add(self, usage: dict[str, Any] | None) -> None:
        if not isinstance(usage, dict):
            return
        self.input_tokens += int(usage.get("input_tokens") or 0)
        self.output_tokens += int(usage.get("output_tokens") or 0)
        self.total_tokens += int(usage.get("total_tokens") or 0)

    def as_dict(self) -> TokenUsage:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        }
