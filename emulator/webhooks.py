"""`realtime.call.incoming` webhooks: body, Standard Webhooks v1 signature, delivery with retries.

The body is compact JSON and the signature covers the exact bytes sent (docs/platform.md §3.1-3.2). The webhook-id
is constant across retries of one event; webhook-timestamp is the time of each attempt.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp

from .calls import RINGING, Call
from .util import hex_id, now

if TYPE_CHECKING:
    from .server import Emulator

log = logging.getLogger("emulator.webhooks")

USER_AGENT = "OpenAI/1.0 (+https://platform.openai.com/docs/webhooks)"


def secret_key(secret: str) -> bytes:
    # Standard Webhooks: the key is the base64-decoded part after "whsec_".
    raw = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    return base64.b64decode(raw + "=" * (-len(raw) % 4))


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    to_sign = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def build_incoming_body(call: Call) -> bytes:
    body = {
        "object": "event",
        "id": hex_id("evt_"),
        "type": "realtime.call.incoming",
        "created_at": int(call.created_at),
        "data": {"call_id": call.call_id, "sip_headers": call.sip_headers, "sip_media_security": "srtp"},
    }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass
class Target:
    url: str
    secret: str | None
    source: str  # "config" or the webhook endpoint id


class WebhookSender:
    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self._session: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._session:
            await self._session.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def targets(self) -> list[Target]:
        cfg = self.emu.config
        out = []
        if cfg.webhook_url:
            out.append(Target(cfg.webhook_url, cfg.webhook_secret, "config"))
        for ep in self.emu.endpoints.subscribed("realtime.call.incoming"):
            out.append(Target(ep["url"], ep["signing_secret"], ep["id"]))
        return out

    def headers_for(self, call: Call, secret: str | None, body: bytes) -> tuple[dict[str, str], int]:
        faults = call.scenario.faults
        ts = int(time.time())
        if faults.stale_timestamp_s:
            ts -= int(faults.stale_timestamp_s)
        assert call.webhook_id
        sigs: list[str] = []
        for _ in range(faults.extra_signatures):
            sigs.append(sign(new_secret(), call.webhook_id, ts, body))
        if secret:
            real_secret = new_secret() if faults.bad_signature else secret
            sigs.append(sign(real_secret, call.webhook_id, ts, body))
        headers = {
            "user-agent": USER_AGENT,
            "content-type": "application/json",
            "webhook-id": call.webhook_id,
            "webhook-timestamp": str(ts),
        }
        if sigs:
            headers["webhook-signature"] = " ".join(sigs)
        return headers, ts

    async def attempt(self, call: Call, target: Target, kind: str) -> bool:
        assert call.webhook_body is not None
        headers, ts = self.headers_for(call, target.secret, call.webhook_body)
        record: dict[str, Any] = {
            "t": now(), "status": None, "webhook_id": call.webhook_id, "timestamp": ts,
            "url": target.url, "target": target.source, "kind": kind, "error": None,
        }
        call.webhook_attempts.append(record)
        call.mark("webhook_sent")
        timeout = aiohttp.ClientTimeout(total=self.emu.config.webhook_timeout_s)
        try:
            async with self._http().post(target.url, data=call.webhook_body, headers=headers, timeout=timeout) as resp:
                await resp.read()
                record["status"] = resp.status
        except TimeoutError:
            record["error"] = "timeout"
        except aiohttp.ClientError as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        record["duration_s"] = now() - record["t"]
        ok = record["status"] is not None and 200 <= record["status"] < 300
        log.info(
            "call %s webhook %s attempt %d -> %s",
            call.call_id,
            kind,
            sum(1 for a in call.webhook_attempts if a["target"] == target.source),
            record["status"] or record["error"],
        )
        return ok

    async def deliver(self, call: Call) -> None:
        """Deliver the incoming-call event to every target, retrying each until 2xx (while the call rings)."""
        call.webhook_id = hex_id("wh_")
        call.webhook_body = build_incoming_body(call)
        faults = call.scenario.faults
        if faults.webhook_status_delay_s:
            await asyncio.sleep(faults.webhook_status_delay_s)
        targets = self.targets()
        if not targets:
            log.info("call %s no webhook target configured; waiting for accept/reject", call.call_id)
        await asyncio.gather(*(self._deliver_one(call, t) for t in targets))

    async def _deliver_one(self, call: Call, target: Target) -> None:
        cfg = self.emu.config
        faults = call.scenario.faults
        if faults.late_webhook_after_s is not None:
            call.spawn(self._late(call, target, faults.late_webhook_after_s), "late-webhook")
        for n in range(cfg.webhook_max_attempts):
            if await self.attempt(call, target, "retry" if n else "initial"):
                if faults.duplicate_webhook:
                    await asyncio.sleep(0.05)
                    await self.attempt(call, target, "duplicate")
                return
            if n + 1 >= cfg.webhook_max_attempts:
                break
            backoff = cfg.webhook_backoff_s[min(n, len(cfg.webhook_backoff_s) - 1)]
            await asyncio.sleep(backoff)
            # Production keeps retrying for up to 72 h; here retries stop once the call is no longer ringing
            # (a late delivery is what the late_webhook_after_s fault is for).
            if call.state != RINGING:
                return

    async def _late(self, call: Call, target: Target, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.attempt(call, target, "late")
