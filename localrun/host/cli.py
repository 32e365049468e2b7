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

from .server import HostConfig, HostConfigError, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m localrun", description=__doc__)
    p.add_argument(
        "--app", default="function_app:app", help="module:attribute of the FunctionApp (default %(default)s)"
    )
    p.add_argument("--app-dir", default=".", help="folder of the app, host.json and local.settings.json (default: .)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=7071, help="port (default %(default)s; 0 = any free port)")
    p.add_argument("--rpc-port", type=int, default=0,
                   help="private port of the Durable API the SDK calls, on 127.0.0.1 only (default: any free port); "
                        "never tunnel it")
    p.add_argument("--task-hub-dir", default=None,
                   help="keep orchestration state in this folder (relative to --app-dir), so that a restarted "
                        "runner resumes live calls; default: in memory, a restart forgets them")
    p.add_argument("--queue-polling", action="store_true",
                   default=os.environ.get("LOCALRUN_QUEUE_POLLING", "").lower() in ("1", "true", "yes"),
                   help="delay each Durable queue hop (start -> orchestrator, orchestrator -> activity) as the Azure "
                        "Storage provider's polling back-off would, from host.json maxQueuePollingInterval "
                        "(also $LOCALRUN_QUEUE_POLLING=1); default off: hops are immediate")
    p.add_argument("--no-local-settings", action="store_true", help="do not read local.settings.json")
    p.add_argument("--telemetry", choices=("off", "summary", "console"),
                   default=os.environ.get("LOCALRUN_TELEMETRY", "off"),
                   help="OpenTelemetry locally: summary prints one timing line per call, console also every span "
                        "and metric (default: $LOCALRUN_TELEMETRY or off)")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logs, including the SDK's Durable API calls")
    return p.parse_args(argv)


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
    except (SystemExit, KeyboardInterrupt):
        raise
    return 0
