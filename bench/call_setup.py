"""Call set-up through the whole local stack: how long the caller waits at each step, on the emulator's clock.

For N calls placed one after another through the emulator's control API, against the app running under the
local runner (real webhook, real Durable orchestration on the SDK's replay engine, real sideband):

- ``webhook → accept``: the platform sends the signed webhook until our accept reaches it (our webhook path
  plus one HTTP round trip each way; the caller hears ringing);
- ``accept → greeting``: the accept until the greeting's ``response.create`` (starting the orchestration,
  scheduling the ``converse`` activity, opening the sideband; the caller hears silence).

Baseline beside it: the same emulator and conversation engine with no Functions layer at all (the test
accepts, then calls ``converse`` directly), so the difference is the cost of the webhook host and Durable.

    .venv/bin/python bench/call_setup.py --calls 30
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from emulator import Emulator, EmulatorConfig  # noqa: E402
from localrun.stack import Stack, StackConfig, http_json  # noqa: E402
from shared.auth import ApiKeyAuth  # noqa: E402
from shared.call_control import CallControlClient  # noqa: E402
from shared.conversation import converse  # noqa: E402
from shared.tools import ToolRegistry  # noqa: E402
from shared.transcript import iso, utc_now  # noqa: E402

# The caller hears the greeting and hangs up: every call is one greeting.
SCENARIO = {"script": {"steps": [], "on_end": "hangup"}, "model": {"default_reply": "Okay."}}
PROFILE = {"instructions": "You are a receptionist.", "greeting": "Thank you for calling. How can I help?"}


def _ms(timestamps: dict, start: str, end: str) -> float:
    return (timestamps[end] - timestamps[start]) * 1000


def _row(name: str, values: list[float]) -> str:
    """The first call pays lazy imports and new connections; the rest show the warm path."""
    first, warm = values[0], sorted(values[1:])
    p95 = warm[min(len(warm) - 1, int(len(warm) * 0.95))]
    return (f"  {name:<35} first {first:7.1f} ms | warm p50 {statistics.median(warm):6.1f} ms"
            f"  p95 {p95:6.1f} ms  max {warm[-1]:6.1f} ms")


def through_the_stack(calls: int) -> tuple[list[float], list[float]]:
    config = StackConfig(app_port=0, emulator_http_port=0, sip_port=0, azurite_ports=(0, 0, 0),
                         azurite_location=Path(tempfile.mkdtemp(prefix="bench-azurite-")), echo=False,
                         log_dir=Path(tempfile.mkdtemp(prefix="bench-logs-")),
                         task_hub_dir=Path(tempfile.mkdtemp(prefix="bench-taskhub-")),
                         emulator_options={"speech_seconds_per_char": 0.001})
    webhook_to_accept, accept_to_greeting = [], []
    with Stack(config) as stack:
        for _ in range(calls):
            status, body = http_json("POST", f"{stack.emulator_url}/_emulator/calls", {"scenario": SCENARIO})
            assert status in (200, 201), body
            call_id = body["call_id"]
            deadline = time.monotonic() + 20
            while True:
                status, call = http_json("GET", f"{stack.emulator_url}/_emulator/calls/{call_id}")
                ts = call.get("timestamps") or {}
                if call.get("state") == "ended" and "first_response_create" in ts:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"call {call_id} did not finish: {call.get('state')} {sorted(ts)}")
                time.sleep(0.02)
            webhook_to_accept.append(_ms(ts, "webhook_sent", "accept_received"))
            accept_to_greeting.append(_ms(ts, "accept_received", "first_response_create"))
    return webhook_to_accept, accept_to_greeting


async def engine_only(calls: int) -> list[float]:
    emu = await Emulator(EmulatorConfig(http_port=0, sip_port=None, api_key="k", speech_seconds_per_char=0.001)).start()
    auth = ApiKeyAuth("k")
    control = CallControlClient(emu.http_url, auth)
    values = []
    try:
        async with httpx.AsyncClient() as http:
            for _ in range(calls):
                call_id = await emu.place_call(SCENARIO)
                r = await http.post(f"{emu.http_url}/openai/v1/realtime/calls/{call_id}/accept",
                                    headers={"api-key": "k"}, json={"type": "realtime", "model": "gpt-realtime"})
                r.raise_for_status()
                call = {
                    "call_id": call_id,
                    "accepted_at": iso(utc_now()),
                    "profile": PROFILE,
                    "max_duration_seconds": 60,
                }
                await converse(
                    call, endpoint=emu.http_url, auth=auth, call_control=control, tools=ToolRegistry(), turns=None
                )
                ts = emu.calls[call_id].timestamps
                values.append(_ms(ts, "accept_received", "first_response_create"))
    finally:
        await control.aclose()
        await emu.stop()
    return values


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    print(f"Call set-up over {args.calls} calls, on the emulator's clock")
    webhook_to_accept, accept_to_greeting = through_the_stack(args.calls)
    baseline = asyncio.run(engine_only(args.calls))
    print("Switchboard (local runner: webhook host + Durable + activity):")
    print(_row("webhook sent -> accept received", webhook_to_accept))
    print(_row("accept -> greeting response.create", accept_to_greeting))
    print("Baseline (engine called directly, no Functions layer):")
    print(_row("accept -> greeting response.create", baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
