"""Greeting latency: from the accept to the greeting's response.create, as the emulator's clock sees it.

Until the first response.create arrives the caller hears silence, so the engine sends the greeting as soon as the
sideband is open instead of waiting for session.created. This bench measures that against a baseline engine that
waits for session.created first (the pattern of most samples), over N calls each.

On loopback one round trip costs microseconds, so ``--rtt-ms`` puts a TCP proxy between the engine and the emulator
that delays every chunk by half the round trip each way (Functions and Azure OpenAI in one region: a few ms;
across regions: tens of ms). The WebSocket handshake pays it in both variants; the baseline pays one more.

    .venv/bin/python bench/greeting_latency.py --calls 50 --rtt-ms 0,20,80
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import Emulator, EmulatorConfig  # noqa: E402
from shared.auth import ApiKeyAuth  # noqa: E402
from shared.call_control import CallControlClient  # noqa: E402
from shared.conversation import ConversationEngine, EngineOptions  # noqa: E402
from shared.tools import ToolRegistry  # noqa: E402
from shared.transcript import iso, utc_now  # noqa: E402

KEY = "bench-key"
PROFILE = {"instructions": "You are a receptionist.", "greeting": "Thank you for calling. How can I help?"}
# The caller hears the greeting and hangs up: every call is one greeting.
SCENARIO = {"script": {"steps": [], "on_end": "hangup"}, "model": {"default_reply": "Okay."}}


class WaitForSessionCreated(ConversationEngine):
    """Baseline: greet only once session.created has arrived."""

    def _greet(self) -> None:
        self._greet_pending = True

    def _dispatch(self, event: dict[str, Any]) -> None:
        super()._dispatch(event)
        if event["type"] == "session.created" and getattr(self, "_greet_pending", False):
            self._greet_pending = False
            ConversationEngine._greet(self)


class DelayProxy:
    """TCP forwarder that delivers every chunk ``one_way`` seconds after it was read, in order.

    ``hold_first_frame`` additionally holds back the server's first WebSocket bytes after the 101 (that is
    session.created) to model a service that is slow to announce the session; client frames still pass.
    """

    def __init__(self, port: int, one_way: float, hold_first_frame: float = 0.0) -> None:
        self.target_port = port
        self.one_way = one_way
        self.hold = hold_first_frame
        self.server: asyncio.base_events.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer, self.hold),
                             return_exceptions=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, hold: float = 0.0) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                at, data = await queue.get()
                if not data:
                    break
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                writer.write(data)
                await writer.drain()
            writer.close()

        task = asyncio.create_task(deliver())
        in_headers = hold > 0
        try:
            while data := await reader.read(65536):
                at = time.monotonic() + self.one_way
                if in_headers and b"\r\n\r\n" in data:
                    # Headers pass now; what follows them (the first frames) is held back.
                    head, rest = data.split(b"\r\n\r\n", 1)
                    queue.put_nowait((at, head + b"\r\n\r\n"))
                    in_headers, data, at = False, rest, at + hold
                    if not data:
                        hold_next = at
                        data = await reader.read(65536)
                        if not data:
                            break
                        at = max(hold_next, time.monotonic() + self.one_way)
                queue.put_nowait((at, data))
        finally:
            queue.put_nowait((0.0, b""))
            await task

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


class NoTurns:
    async def load(self, call_id: str) -> list:
        return []

    async def append(self, *a: Any) -> None:
        pass


async def one_call(emu: Emulator, http: httpx.AsyncClient, engine_cls: type[ConversationEngine], endpoint: str,
                   control: CallControlClient, auth: ApiKeyAuth) -> float:
    call_id = await emu.place_call(SCENARIO)
    r = await http.post(f"{emu.http_url}/openai/v1/realtime/calls/{call_id}/accept",
                        json={"type": "realtime", "model": "gpt-realtime", "instructions": PROFILE["instructions"]},
                        headers={"api-key": KEY})
    r.raise_for_status()
    call = {"call_id": call_id, "accepted_at": iso(utc_now()), "profile": PROFILE, "max_duration_seconds": 60}
    engine = engine_cls(call, endpoint=endpoint, auth=auth, call_control=control, tools=ToolRegistry(),
                        turns=None, options=EngineOptions(reconnect_delays=(0.0,)))
    summary = await asyncio.wait_for(engine.run(), 10)
    assert summary["outcome"] == "caller_hung_up", summary
    ts = emu.calls[call_id].timestamps
    return ts["first_response_create"] - ts["accept_received"]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=40)
    ap.add_argument("--rtt-ms", default="0,20,80", help="comma-separated round-trip times to simulate")
    ap.add_argument("--slow-session-created-ms", type=float, default=300.0,
                    help="what-if rows: session.created held back this long (0 = skip those rows)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)

    emu = Emulator(EmulatorConfig(http_port=0, sip_port=None, api_key=KEY, speech_seconds_per_char=0.0,
                                  caller_step_delay_s=0.0))
    await emu.start()
    auth = ApiKeyAuth(KEY)
    control = CallControlClient(emu.http_url, auth)
    print(f"greeting latency, accept -> greeting response.create (emulator clock), {args.calls} calls per row")
    print(f"{'rtt':>6}  {'variant':<28} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
    try:
        async with httpx.AsyncClient() as http:
            rows = [(float(x), 0.0) for x in args.rtt_ms.split(",")]
            if args.slow_session_created_ms:
                rows.append((float(args.rtt_ms.split(",")[-1]), args.slow_session_created_ms / 1000))
            for rtt, hold in rows:
                proxy = DelayProxy(emu.http_port, rtt / 2000, hold)
                port = await proxy.start()
                endpoint = f"http://127.0.0.1:{port}"
                if hold:
                    print(f"what-if: session.created arrives {hold * 1000:g} ms after the upgrade")
                for label, cls in (("greet at once (engine)", ConversationEngine),
                                   ("wait for session.created", WaitForSessionCreated)):
                    await one_call(emu, http, cls, endpoint, control, auth)  # warm-up
                    samples = [await one_call(emu, http, cls, endpoint, control, auth) for _ in range(args.calls)]
                    ms = [s * 1000 for s in samples]
                    print(f"{rtt:>4g}ms  {label:<28} {statistics.median(ms):>8.2f} {pct(ms, 95):>8.2f} {max(ms):>8.2f}")
                await proxy.stop()
    finally:
        await control.aclose()
        await emu.stop()


if __name__ == "__main__":
    asyncio.run(main())
