"""Small helpers: id generation, phone-number masking, time."""

from __future__ import annotations

import re
import secrets
import time


def hex_id(prefix: str, nbytes: int = 16) -> str:
    return f"{prefix}{secrets.token_hex(nbytes)}"


def new_call_id() -> str:
    # Same shape as production ids (docs/platform.md §1): rtc_u1_<32 hex>.
    return hex_id("rtc_u1_")


def event_id() -> str:
    return hex_id("event_", 10)


def now() -> float:
    return time.time()


_PHONE = re.compile(r"\+?\d{5,}")


def mask_number(value: str | None) -> str:
    """Keep the country/area prefix and the last 4 digits: +14255551212 -> +1425***1212.

    Phone numbers never reach the log unmasked (design constraint 12).
    """
    if not value:
        return ""

    def _mask(m: re.Match[str]) -> str:
        s = m.group(0)
        plus = "+" if s.startswith("+") else ""
        digits = s.lstrip("+")
        if len(digits) <= 4:
            return s
        head = digits[:4] if len(digits) > 8 else digits[:1]
        return f"{plus}{head}***{digits[-4:]}"

    return _PHONE.sub(_mask, value)
