"""Shared helpers for the foundation tests: secrets, signed incoming-call deliveries."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

import pytest

from shared.webhook import sign


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def incoming_body(
    call_id: str = "rtc_u1_9c6574da8b8a41a18da9308f4ad974ce",
    *,
    caller: str = '"Alice" <sip:+14255551212@sip.example.com>;tag=abc',
    dialed: str = "<sip:+18005551212@sip.example.com>",
    event_type: str = "realtime.call.incoming",
    extra_headers: list[dict[str, str]] | None = None,
) -> bytes:
    headers = [{"name": "From", "value": caller}, {"name": "To", "value": dialed},
               {"name": "Call-ID", "value": "03782086-4ce9-44bf-8b0d-4e303d2cc590"}]
    headers += extra_headers or []
    payload: dict[str, Any] = {
        "object": "event", "id": "evt_" + call_id[-12:], "type": event_type, "created_at": int(time.time()),
        "data": {"call_id": call_id, "sip_headers": headers, "sip_media_security": "srtp"},
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def signed_headers(secret: str, body: bytes, *, msg_id: str = "wh_1", ts: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if ts is None else ts
    return {"webhook-id": msg_id, "webhook-timestamp": str(ts), "webhook-signature": sign(secret, msg_id, ts, body)}


@pytest.fixture
def secret() -> str:
    return new_secret()


@pytest.fixture
async def standin():
    from .standin import StandIn

    server = await StandIn().start()
    yield server
    await server.stop()
