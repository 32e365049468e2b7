"""Standard Webhooks v1 verification and parsing of the `realtime.call.incoming` event.

Verification follows the Standard Webhooks spec (and openai-python's ``webhooks.verify_signature``):
``base64(HMAC-SHA256(key, f"{webhook-id}.{webhook-timestamp}.{raw_body}"))`` where ``key`` is the
base64-decoded part of the ``whsec_`` secret. It runs on the exact bytes received, before any JSON parsing,
so that nothing from an unauthenticated body is ever looked at. Stdlib only: this module sits on the
webhook hot path, and importing ``openai`` costs far more than the whole verification.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from . import phone

TOLERANCE_SECONDS = 300  # the SDKs' default; applies to the past and the future (clock skew)
INCOMING_CALL = "realtime.call.incoming"

_ID_HEADER = "webhook-id"
_TS_HEADER = "webhook-timestamp"
_SIG_HEADER = "webhook-signature"
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # int() alone would also take "+1", " 1", "1_0" and "１"
# A call id from the platform (rtc_u1_...): opaque, but bounded and URL-safe, because it ends up in a REST
# path and in Durable instance ids. shared.call_control checks the same pattern before every request.
CALL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-.]{0,127}", re.ASCII)
MAX_SIGNATURES = 16  # a header with more is not a rotation, it is someone making us compare strings
MAX_SIP_HEADERS = 256


class WebhookVerificationError(Exception):
    """The delivery is not authentic or not fresh (answer 401). ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class WebhookPayloadError(ValueError):
    """The body is authentic but not the JSON shape we expect (answer 400)."""


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret (padding optional, as some dashboards strip it)."""
    if not secret.startswith("whsec_"):
        raise ValueError("webhook secret must start with 'whsec_'")
    body = secret.removeprefix("whsec_")
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("webhook secret is not base64 after 'whsec_'") from None


def _signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` header value (``v1,<b64>``) for tests and the emulator."""
    raw = body.encode() if isinstance(body, str) else body
    return "v1," + _signature(secret_key(secret), msg_id, str(int(timestamp)), raw).decode()


def _lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    # Header names are case-insensitive (HTTP/1.1); hosts hand us "Webhook-Id" or "webhook-id".
    wanted = (_ID_HEADER, _TS_HEADER, _SIG_HEADER)
    found: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in wanted:
            found[lowered] = value
    return found


class WebhookVerifier:
    """Verifies deliveries against one or more secrets (several during rotation). Keys are decoded once."""

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        tolerance_seconds: int = TOLERANCE_SECONDS,
        now: Callable[[], float] = time.time,
    ) -> None:
        if not secrets:
            raise ValueError("at least one webhook secret is required")
        self._keys = tuple(secret_key(s) for s in secrets)
        self._tolerance = tolerance_seconds
        self._now = now

    def verify(self, body: bytes, headers: Mapping[str, str]) -> str:
        """Check id, timestamp and signature; return the webhook-id. Raises WebhookVerificationError."""
        found = _lower_headers(headers)
        missing = [h for h in (_ID_HEADER, _TS_HEADER, _SIG_HEADER) if not found.get(h, "").strip()]
        if missing:
            raise WebhookVerificationError(f"missing header(s): {', '.join(missing)}")
        msg_id = found[_ID_HEADER].strip()
        timestamp = found[_TS_HEADER].strip()
        if not _TIMESTAMP.fullmatch(timestamp):
            raise WebhookVerificationError("bad timestamp: not an integer number of seconds")
        # A host that decodes header bytes with surrogateescape (aiohttp does) hands us lone surrogates, which
        # str.encode() refuses: such an id cannot have been signed, so it is a refusal, not a crash.
        if not msg_id.isascii():
            try:
                msg_id.encode()
            except UnicodeEncodeError:
                raise WebhookVerificationError("bad webhook-id: not UTF-8 text") from None
        skew = self._now() - int(timestamp)
        if skew > self._tolerance:
            raise WebhookVerificationError("stale timestamp: older than the tolerance")
        if skew < -self._tolerance:
            raise WebhookVerificationError("future timestamp: newer than the tolerance")

        offered = _v1_signatures(found[_SIG_HEADER])
        if not offered:
            raise WebhookVerificationError("no v1 signature in webhook-signature")
        matched = False
        for key in self._keys:
            expected = _signature(key, msg_id, timestamp, body)
            for candidate in offered:
                # Constant time, and no early exit across candidates: timing says nothing about which matched.
                matched |= hmac.compare_digest(expected, candidate)
        if not matched:
            raise WebhookVerificationError("no matching signature")
        return msg_id


def _v1_signatures(header: str) -> list[bytes]:
    out: list[bytes] = []
    for part in header.split()[:MAX_SIGNATURES]:
        version, sep, value = part.partition(",")
        if sep and version == "v1" and value:
            # compare_digest on str rejects non-ASCII with TypeError; compare bytes instead.
            out.append(value.encode("utf-8", "replace"))
    return out


def verify(secrets: Sequence[str], body: bytes, headers: Mapping[str, str], *, now: float | None = None) -> str:
    """One-shot form of :class:`WebhookVerifier`; returns the webhook-id."""
    clock = time.time if now is None else (lambda: now)
    return WebhookVerifier(secrets, now=clock).verify(body, headers)


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class WebhookEvent:
    webhook_id: str
    event_id: str
    type: str
    created_at: int
    data: Mapping[str, Any]  # read-only view of the event's `data` object


@dataclass(frozen=True)
class IncomingCall:
    call_id: str
    webhook_id: str
    event_id: str
    created_at: int
    sip_headers: tuple[tuple[str, str], ...]  # order and repeats preserved; untrusted
    caller: str | None  # E.164 when caller_is_e164, else the digits as presented; None when unknown
    dialed: str | None
    caller_display: str | None  # sanitised display name; untrusted, never used for decisions
    caller_is_e164: bool = False
    dialed_is_e164: bool = False

    def header(self, name: str) -> str | None:
        """First value of a SIP header, case-insensitively."""
        return _first(self.sip_headers, (name.strip().lower(),))


def parse_event(body: bytes, webhook_id: str) -> WebhookEvent:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError; deep nesting raises RecursionError
        raise WebhookPayloadError("body is not JSON") from None
    if not isinstance(payload, dict):
        raise WebhookPayloadError("body is not a JSON object")
    event_id = payload.get("id")
    event_type = payload.get("type")
    created_at = payload.get("created_at")
    data = payload.get("data")
    if not isinstance(event_id, str) or not event_id:
        raise WebhookPayloadError("id: expected a non-empty string")
    if not isinstance(event_type, str) or not event_type:
        raise WebhookPayloadError("type: expected a non-empty string")
    if not isinstance(created_at, int) or isinstance(created_at, bool):
        raise WebhookPayloadError("created_at: expected an integer")
    if not isinstance(data, dict):
        raise WebhookPayloadError("data: expected an object")
    return WebhookEvent(webhook_id, event_id, event_type, created_at, MappingProxyType(data))


def parse_incoming_call(event: WebhookEvent) -> IncomingCall:
    if event.type != INCOMING_CALL:
        raise WebhookPayloadError(f"type: expected {INCOMING_CALL!r}")
    call_id = event.data.get("call_id")
    if not isinstance(call_id, str) or not CALL_ID.fullmatch(call_id):
        raise WebhookPayloadError("data.call_id: expected an opaque id of letters, digits, '_', '-', '.'")
    raw_headers = event.data.get("sip_headers")
    if not isinstance(raw_headers, list):
        raise WebhookPayloadError("data.sip_headers: expected a list")
    if len(raw_headers) > MAX_SIP_HEADERS:
        raise WebhookPayloadError(f"data.sip_headers: more than {MAX_SIP_HEADERS} entries")
    sip_headers: list[tuple[str, str]] = []
    for i, item in enumerate(raw_headers):
        if (
            not isinstance(item, dict)
            or not isinstance(item.get("name"), str)
            or not isinstance(item.get("value"), str)
        ):
            raise WebhookPayloadError(f"data.sip_headers[{i}]: expected {{'name': str, 'value': str}}")
        sip_headers.append((item["name"], item["value"]))

    # SIP allows compact header names: "f" for From, "t" for To (RFC 3261 §7.3.3).
    from_party = phone.parse_party(_first(sip_headers, ("from", "f")))
    to_party = phone.parse_party(_first(sip_headers, ("to", "t")))
    return IncomingCall(
        call_id=call_id,
        webhook_id=event.webhook_id,
        event_id=event.event_id,
        created_at=event.created_at,
        sip_headers=tuple(sip_headers),
        caller=from_party.number if from_party else None,
        dialed=to_party.number if to_party else None,
        caller_display=from_party.display if from_party else None,
        caller_is_e164=bool(from_party and from_party.is_e164),
        dialed_is_e164=bool(to_party and to_party.is_e164),
    )


def _first(headers: Iterable[tuple[str, str]], names: tuple[str, ...]) -> str | None:
    """First value of any of ``names`` (lower case); several names because SIP has compact forms."""
    for name, value in headers:
        if name.strip().lower() in names:
            return value
    return None
