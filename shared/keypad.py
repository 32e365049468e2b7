"""The keypad: the digits a caller pressed and the profile's digit menu (``profile.digits``).

In ``menu`` mode a digit with a menu entry is acted on by the engine (say a line, end the call, transfer); any
other digit is held and passed to the model in words once the caller pauses, so "1234#" is one message. The model
does not act on DTMF by itself (docs/platform.md §4.6).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MenuAction:
    """What a usable menu entry does: ``say`` its text, ``end_call`` (after its text, if any), or ``transfer`` to a
    named target (announced with its text, or the engine's default line)."""

    kind: str
    text: str | None = None
    target: str | None = None


class Keypad:
    def __init__(self, profile: dict[str, Any], batch_seconds: float) -> None:
        self.profile_digits: dict[str, Any] = profile.get("digits") or {}
        self.batch_seconds = batch_seconds
        self.pressed = ""  # every digit of the call, for the summary
        self.buffer = ""  # unmapped digits not yet passed to the model
        self.last_digit_at = 0.0  # loop time of the last unmapped digit
        self.flush_task: asyncio.Task | None = None

    def press(self, digit: str) -> dict[str, Any] | None:
        """Record a digit; returns its menu entry, if the profile has a menu and the digit is on it."""
        self.pressed += digit
        if self.profile_digits.get("mode") != "menu":
            return None
        return (self.profile_digits.get("menu") or {}).get(digit) or None

    @staticmethod
    def action(entry: dict[str, Any], targets: dict[str, str]) -> MenuAction | None:
        """What a menu entry does, or None if it is not usable (the digit then goes to the model)."""
        kind = entry.get("action")
        text = entry.get("text") or None
        if kind == "say" and text:
            return MenuAction("say", text)
        if kind == "end_call":
            return MenuAction("end_call", text)
        if kind == "transfer" and entry.get("target") in targets:
            return MenuAction("transfer", text, entry["target"])
        return None

    def hold(self, digit: str) -> bool:
        """Hold an unmapped digit for the model; True if no flush is pending (the caller must start one)."""
        self.buffer += digit
        self.last_digit_at = asyncio.get_running_loop().time()
        return self.flush_task is None or self.flush_task.done()

    async def pause(self) -> str:
        """Wait until no digit has come for ``batch_seconds``, then take the held digits."""
        # An entry typed at a human pace ("1234#", a key every half second) is one message, not one per window.
        loop = asyncio.get_running_loop()
        # A debounce, not a busy wait: each digit moves the deadline, and no event marks "no digit for a while".
        while (left := self.last_digit_at + self.batch_seconds - loop.time()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)
        digits, self.buffer = self.buffer, ""
        return digits


def digits_message(digits: str) -> dict[str, Any]:
    """The conversation item that tells the model which keys the caller pressed."""
    return {"type": "conversation.item.create", "item": {
        "type": "message", "role": "user",
        "content": [{"type": "input_text", "text": f"The caller pressed {digits} on the keypad."}]}}
