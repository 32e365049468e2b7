"""`python -m localrun`: serve the Functions app on port 7071 under /api, like `func start`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from shared import logsafe
from shared.routing import RoutingRulesError
from shared.settings import SettingsError

from .server import HostConfig, HostConfigError, serve

# What a person gets wrong in their settings or rules: said in one message, without a traceback (--debug shows it).
CONFIG_ERRORS = (SettingsError, RoutingRulesError)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m localrun", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__ + " Settings come from the environment, then local.settings.json's Values "
                    "(copy local.settings.example.json); the keys from $LOCALRUN_FUNCTION_KEY and "
                    "$LOCALRUN_MASTER_KEY, else generated and printed.")
    p.add_argument("--app", default="function_app:app", help="module:attribute of the FunctionApp")
    p.add_argument("--app-dir", default=".", help="folder of the app, host.json and local.settings.json")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=7071, help="port (0 = any free port)")
    p.add_argument("--rpc-port", type=int, default=0,
                   help="private port of the Durable API the SDK calls, on 127.0.0.1 only (0 = any free port); "
                        "never tunnel it")
    p.add_argument("--task-hub-dir", default=None,
                   help="keep orchestration state in this folder (relative to --app-dir), so that a restarted "
                        "runner resumes live calls; None: in memory, a restart forgets them")
    p.add_argument("--queue-polling", action="store_true",
                   default=os.environ.get("LOCALRUN_QUEUE_POLLING", "").lower() in ("1", "true", "yes"),
                   help="delay each Durable queue hop (start -> orchestrator, orchestrator -> activity) as the Azure "
                        "Storage provider's polling back-off would, from host.json maxQueuePollingInterval "
                        "($LOCALRUN_QUEUE_POLLING=1); off: hops are immediate")
    p.add_argument("--no-local-settings", action="store_true", help="do not read local.settings.json")
    p.add_argument("--telemetry", choices=("off", "summary", "console"),
                   default=os.environ.get("LOCALRUN_TELEMETRY", "off"),
                   help="OpenTelemetry locally: summary prints one timing line per call, console also every span "
                        "and metric ($LOCALRUN_TELEMETRY)")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logs, including the SDK's Durable API calls")
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of a bad setting or bad routing rules, not only the message")
    return p.parse_args(argv)


def describe_config_error(exc: Exception, app_dir: str, read_local_settings: bool) -> str:
    """One message for a bad setting or bad routing rules: what is wrong and where to fix it."""
    local = Path(app_dir) / "local.settings.json"
    if isinstance(exc, RoutingRulesError):
        path = os.environ.get("ROUTING_RULES_PATH") or "routing.json"
        text = str(exc) if str(exc).startswith(path) else f"{path}: {exc}"
        message = f"localrun: the app cannot start: bad routing rules in {text}"
    else:
        message = f"localrun: the app cannot start: {exc}"
        if read_local_settings and not local.exists() and " is missing" in str(exc):
            example = local.with_name("local.settings.example.json")
            message += f"\n  There is no {local}: the settings come from the environment alone."
            if example.exists():
                message += (" Start from the example, which has a safe local value for every setting:"
                            f"\n    cp {example} {local}")
            else:
                message += ' Put them in the environment, or in that file as {"Values": {"NAME": "value", ...}}.'
    return message + "\n  (--debug shows the traceback)"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # Escape control characters in every logged value that comes from outside (a request path, say).
    logsafe.install()
    for noisy in ("azure", "aiohttp.access", "urllib3", "httpx", "httpcore", "websockets"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.telemetry != "off":
        from localrun.telemetry import configure

        configure(args.telemetry)  # the host's exporters, before the app is loaded (as in Azure)
    task_hub_dir = str(Path(args.app_dir) / args.task_hub_dir) if args.task_hub_dir else None
    config = HostConfig(app_spec=args.app, app_dir=args.app_dir, host=args.host, port=args.port, rpc_port=args.rpc_port,
                        task_hub_dir=task_hub_dir, load_local_settings=not args.no_local_settings,
                        log_durable_rpc=args.verbose, queue_polling=args.queue_polling)

    async def run() -> None:
        task = asyncio.ensure_future(serve(config))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(run())
    except OSError as exc:
        print(f"localrun: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}. "
              f"Stop whatever uses the port (e.g. `ss -ltnp 'sport = :{args.port}'`) or pass --port.", file=sys.stderr)
        return 2
    except HostConfigError as exc:
        print(f"localrun: {exc}", file=sys.stderr)
        return 2
    except CONFIG_ERRORS as exc:
        if args.debug:
            raise
        print(describe_config_error(exc, args.app_dir, not args.no_local_settings), file=sys.stderr)
        return 2
    except (SystemExit, KeyboardInterrupt):
        raise
    return 0
