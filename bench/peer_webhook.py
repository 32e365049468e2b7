"""The baseline peer: a minimal webhook server that does what the platform documentation's sample does.

The "Sample webhook endpoint" of the Azure OpenAI Realtime-over-SIP how-to is a Flask app that, for each
``realtime.call.incoming``: verifies the signature, POSTs the accept with ``requests`` (a new connection per call),
starts one thread per call that opens the sideband WebSocket, sends a ``response.create`` greeting and reads events
until the socket closes, and answers the webhook 200. This file is our own equivalent of it, Flask-free (the
standard library's threading HTTP server: one thread per request) so the benchmarks need no extra dependency.
It keeps no state, writes no record and runs no workflow: it is the floor a real app can be compared with.

    python bench/peer_webhook.py --port 0 --secret whsec_... --api-key KEY --emulator http://127.0.0.1:8765

Prints ``listening <port>`` once ready. Not deployed, not imported by the app.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import websockets

CALL_ACCEPT = {"type": "realtime", "instructions": "You are a support agent.", "model": "gpt-realtime"}
GREETING = {"type": "response.create",
            "response": {"instructions": "Say to the user 'Thank you for calling, how can I help you'"}}


def verify(secret: str, body: bytes, headers) -> bool:
    """Standard Webhooks v1: HMAC-SHA256 over ``id.timestamp.body`` with the base64 key after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    wid, ts, sigs = headers.get("webhook-id"), headers.get("webhook-timestamp"), headers.get("webhook-signature")
    if not (wid and ts and sigs) or abs(time.time() - int(ts)) > 300:
        return False
    expected = base64.b64encode(hmac.new(key, f"{wid}.{ts}.".encode() + body, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(s.partition(",")[2], expected) for s in sigs.split())


async def websocket_task(ws_base: str, api_key: str, call_id: str) -> None:
    try:
        async with websockets.connect(f"{ws_base}/openai/v1/realtime?call_id={call_id}",
                                      additional_headers={"api-key": api_key}) as ws:
            await ws.send(json.dumps(GREETING))
            while True:
                await ws.recv()
    except Exception:
        pass


def make_handler(secret: str, api_key: str, emulator: str):
    ws_base = emulator.replace("http://", "ws://", 1)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if not verify(secret, body, self.headers):
                self.send_response(400)
                self.end_headers()
                return
            event = json.loads(body)
            if event.get("type") == "realtime.call.incoming":
                call_id = event["data"]["call_id"]
                req = urllib.request.Request(f"{emulator}/openai/v1/realtime/calls/{call_id}/accept",
                                             data=json.dumps(CALL_ACCEPT).encode(), method="POST",
                                             headers={"api-key": api_key, "Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=10).read()
                threading.Thread(target=lambda: asyncio.run(websocket_task(ws_base, api_key, call_id)),
                                 daemon=True).start()
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

    return Handler


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--secret", required=True)
    p.add_argument("--api-key", required=True)
    p.add_argument("--emulator", required=True)
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(a.secret, a.api_key, a.emulator.rstrip("/")))
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
