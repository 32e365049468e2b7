"""Phone numbers from SIP From/To headers, and masking for logs and storage.

SIP headers are untrusted input from the carrier (and whoever spoofed the caller id), so parsing is
defensive: bounded length, no regex backtracking on attacker data, and "not a number" is ``None``
rather than an exception. A number without a leading '+' is kept as presented (we do not invent a
country code) and reported as not E.164, so routing never treats it as a verified international number.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from urllib.parse import unquote

MAX_HEADER_CHARS = 256
MAX_DISPLAY_CHARS = 64

E164 = re.compile(r"\+[1-9][0-9]{1,14}")  # ASCII digits only: \d also matches "١٢٣"
_DIGITS = re.compile(r"[0-9]{3,15}")
# RFC 3966 visual separators, plus the spaces people paste into tel: URIs.
_VISUAL = str.maketrans("", "", "-.() ")
# Unicode categories dropped from display names: controls, formats, surrogates, private use, unassigned,
# and the line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


@dataclass(frozen=True)
class Party:
    number: str | None  # "+14255551212", or digits as presented ("4255551212"), or None
    is_e164: bool
    display: str | None


def is_e164(value: str | None) -> bool:
    return value is not None and E164.fullmatch(value) is not None


def parse_party(value: str | None) -> Party | None:
    """Parse a From/To header value. None for missing or oversized input; Party.number None if no number."""
    if value is None or len(value) > MAX_HEADER_CHARS:
        return None
    display, uri = _split_name_addr(value.strip())
    number = number_from_uri(uri) if uri else None
    return Party(number=number, is_e164=is_e164(number), display=_clean_display(display))


def number_from_header(value: str | None) -> str | None:
    party = parse_party(value)
    return party.number if party else None


def number_from_uri(uri: str) -> str | None:
    """The phone number in a sip:/sips:/tel: URI, or None (e.g. sip:alice@host, sip:anonymous@...)."""
    if len(uri) > MAX_HEADER_CHARS:
        return None
    scheme, sep, rest = uri.strip().partition(":")
    if not sep:
        return None
    scheme = scheme.lower()
    if scheme in ("sip", "sips"):
        user, at, _host = rest.partition("@")
        if not at:
            return None
        candidate = user.split(";", 1)[0]  # user params, e.g. ;phone-context=..., ;isub=...
        candidate = candidate.split(":", 1)[0]  # user:password (deprecated, but legal)
    elif scheme == "tel":
        candidate = rest.split(";", 1)[0]  # ;ext=, ;phone-context=, ...
    else:
        return None
    return _normalise(unquote(candidate))


def _normalise(candidate: str) -> str | None:
    text = candidate.translate(_VISUAL)
    if text.startswith("+"):
        return text if E164.fullmatch(text) else None
    if _DIGITS.fullmatch(text):
        return text  # national or unknown format: keep, never guess a country code
    return None


def _split_name_addr(value: str) -> tuple[str | None, str | None]:
    """(display name, URI) of a name-addr or addr-spec (RFC 3261 §20.10), header params dropped."""
    if value.startswith('"'):
        # quoted-string with backslash escapes: scan, do not regex (untrusted input).
        chars: list[str] = []
        i = 1
        while i < len(value):
            ch = value[i]
            if ch == "\\" and i + 1 < len(value):
                chars.append(value[i + 1])
                i += 2
                continue
            if ch == '"':
                break
            chars.append(ch)
            i += 1
        else:
            return None, None  # unterminated quote
        rest = value[i + 1 :].lstrip()
        if not rest.startswith("<"):
            return None, None
        end = rest.find(">")
        return ("".join(chars), rest[1:end]) if end > 0 else (None, None)
    lt = value.find("<")
    if lt >= 0:
        end = value.find(">", lt)
        if end < 0:
            return None, None
        return value[:lt].strip() or None, value[lt + 1 : end]
    # addr-spec without brackets: everything after the first ';' is header params (tag=...).
    return None, value.split(";", 1)[0].strip() or None


def _clean_display(display: str | None) -> str | None:
    if not display:
        return None
    # Drop control and format characters (log injection, bidi tricks) and the line and paragraph separators
    # U+2028/U+2029 (log viewers break lines on them too); bound the length.
    kept = "".join(ch for ch in display if unicodedata.category(ch) not in _UNSAFE_CATEGORIES).strip()
    return kept[:MAX_DISPLAY_CHARS] or None


def mask(number: str | None) -> str | None:
    """'+14255551212' -> '+1425***1212': a prefix (up to 5 chars) and the last 4 stay, at least 3 are hidden.

    Numbers too short to keep both parts and still hide 3 characters are masked completely. Use this
    everywhere a number is logged or stored.
    """
    if number is None:
        return None
    if len(number) > MAX_HEADER_CHARS:
        return "***"
    keep_tail = 4
    keep_head = min(5, len(number) - keep_tail - 3)
    if keep_head < 2:  # fewer than 9 characters: nothing useful can be shown safely
        return "***"
    return f"{number[:keep_head]}***{number[-keep_tail:]}"
