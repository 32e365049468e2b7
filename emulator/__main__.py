"""CLI: python -m emulator [--host 127.0.0.1] [--http-port 8765] [--sip-port 5060] [--webhook-url URL] ..."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from shared import logsafe

from .config import EmulatorConfig
from .server import Emulator


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    # Each help names the environment variable that sets the default and the default itself, written out rather
    # than through ArgumentDefaultsHelpFormatter: that would print the value, and a secret from the environment
    # (--webhook-secret, --api-key, --bearer-token) does not belong in --help output.
    p = argparse.ArgumentParser(
        prog="python -m emulator",
        description="Local emulator of Azure OpenAI Realtime over SIP (docs/emulator.md). Flags override the "
                    "environment variables named in brackets.")
    p.add_argument("--host", default=env("EMULATOR_HOST", "127.0.0.1"),
                   help="bind address [EMULATOR_HOST, default 127.0.0.1: loopback only]")
    p.add_argument("--http-port", type=int, default=int(env("EMULATOR_HTTP_PORT", "8765")),
                   help="REST + WebSocket + control port, 0 = any free one [EMULATOR_HTTP_PORT, default 8765]")
    p.add_argument("--sip-port", type=int, default=int(env("EMULATOR_SIP_PORT", "5060")),
                   help="SIP UDP+TCP port, 0 = any free one [EMULATOR_SIP_PORT, default 5060]")
    p.add_argument("--no-sip", action="store_true", help="disable the SIP front door")
    p.add_argument("--webhook-url", default=env("EMULATOR_WEBHOOK_URL"),
                   help="where realtime.call.incoming is POSTed [EMULATOR_WEBHOOK_URL, default: no webhook]")
    p.add_argument("--webhook-secret", default=env("EMULATOR_WEBHOOK_SECRET"),
                   help="whsec_... signing secret [EMULATOR_WEBHOOK_SECRET, default: deliveries go unsigned]")
    p.add_argument("--api-key", default=env("EMULATOR_API_KEY", "test-key"),
                   help="accepted api-key / Bearer value [EMULATOR_API_KEY, default test-key]")
    p.add_argument("--bearer-token", default=env("EMULATOR_BEARER_TOKEN"),
                   help="an extra accepted Bearer token, standing in for Entra [EMULATOR_BEARER_TOKEN, default none]")
    p.add_argument("--scenario-dir", default=env("EMULATOR_SCENARIO_DIR"),
                   help="directory of scenario YAML/JSON files, searched before emulator/scenarios "
                        "[EMULATOR_SCENARIO_DIR, default: emulator/scenarios alone]")
    p.add_argument("--mode", choices=["azure", "openai"], default=env("EMULATOR_MODE", "azure"),
                   help="URL layout and limits of Azure OpenAI or of OpenAI [EMULATOR_MODE, default azure]")
    p.add_argument("--ring-timeout", type=float, default=10.0,
                   help="seconds a call rings before 480 / expiry [default %(default)s]")
    p.add_argument("--session-limit", type=float, default=None,
                   help="seconds a session may last [default 1800 in azure mode, 3600 in openai mode]")
    p.add_argument("--speech-seconds-per-char", type=float, default=0.06,
                   help="how long speech lasts per character [default %(default)s]")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR [default %(default)s]")
    return p.parse_args(argv)


def webhook_secret_problem(secret: str | None) -> str | None:
    """Why the app would refuse this signing secret, or None (no secret at all is fine: deliveries go unsigned).

    The rule is the app's own (shared/settings.py, WEBHOOK_SECRET), so that what the emulator signs with is exactly
    what the app can verify; checked at start-up because a bad secret would otherwise fail every delivery.
    """
    if secret is None:
        return None
    from shared.settings import SettingsError, _webhook_secret

    try:
        _webhook_secret("WEBHOOK_SECRET", secret)
    except SettingsError as exc:
        return f"--webhook-secret (EMULATOR_WEBHOOK_SECRET) is unusable, the app would refuse it: {exc}"
    return None


def config_from_args(a: argparse.Namespace) -> EmulatorConfig:
    return EmulatorConfig(
        host=a.host, http_port=a.http_port, sip_port=None if a.no_sip else a.sip_port, webhook_url=a.webhook_url,
        webhook_secret=a.webhook_secret, api_key=a.api_key, bearer_token=a.bearer_token, scenario_dir=a.scenario_dir,
        mode=a.mode, ring_timeout_s=a.ring_timeout, session_limit_s=a.session_limit,
        speech_seconds_per_char=a.speech_seconds_per_char,
    )


async def run(cfg: EmulatorConfig) -> None:
    emu = await Emulator(cfg).start()
    base = emu.api_base
    ws_base = base.replace("http://", "ws://")
    print(f"Switchboard emulator ({cfg.mode} mode)", flush=True)
    print(f"  REST        {base}/realtime/calls/{{call_id}}/{{accept|reject|refer|hangup}}", flush=True)
    print(f"  WebSocket   {ws_base}/realtime?call_id={{call_id}}", flush=True)
    print(
        f"  Webhooks    {emu.http_url}/openai/v1/dashboard/webhook_endpoints  and  {emu.http_url}/v1/webhook_endpoints",
        flush=True,
    )
    print(f"  Control     {emu.http_url}/_emulator/calls  (POST to place a call)", flush=True)
    print(
        f"  SIP         {'udp+tcp ' + cfg.host + ':' + str(emu.sip_port) if emu.sip_port else 'disabled'}", flush=True
    )
    print(f"  Webhook to  {cfg.webhook_url or '(none configured)'}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # pragma: no cover (Windows)
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await emu.stop()


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    problem = webhook_secret_problem(a.webhook_secret)
    if problem:
        print(f"python -m emulator: error: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    logsafe.install()  # control characters in logged values from callers are escaped (shared/logsafe.py)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    asyncio.run(run(config_from_args(a)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
