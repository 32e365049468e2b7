"""The webhook's latency while the routing rules reload from a blob, next to the same run without reloads.

    python bench/rules_reload.py            # needs Azurite on 127.0.0.1:10000 (make up / the test session's)
    python bench/rules_reload.py --check-every 0.05 --publish-every 0.1 -n 300   # stress: 600x the app's

One process, as in the app: ``Intake.handle`` end to end (verify, parse, decide, accept POST to a loopback stand-in
on its own thread) on the main event loop, while shared/rules_store.py's refresher thread checks a real Azurite blob.
In the "reload" phase a publisher process (an operator's machine) rewrites the blob every ``--publish-every`` seconds
and the refresher checks every ``--check-every`` seconds (default 1 s, 30 times the app's default rate), so every
check downloads, validates and swaps a new version while webhooks are timed. Phases alternate ``--rounds`` times so
that drift on a shared machine hits both alike. Goal: the p99 with reloads within 25 % (or 0.5 ms) of the p99 without.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from azure.storage.blob import BlobServiceClient  # noqa: E402

from bench._load import goal_line, pct  # noqa: E402
from bench.webhook_path import SECRET, StandInThread, body_for, headers_for, registry  # noqa: E402
from localrun.stack import azurite_connection_string  # noqa: E402
from shared.auth import ApiKeyAuth  # noqa: E402
from shared.call_control import CallControlClient  # noqa: E402
from shared.intake import Intake  # noqa: E402
from shared.routing import RoutingRules, load_rules, parse_rules_text  # noqa: E402
from shared.rules_store import BlobRulesReader, RulesHolder, RulesRefresher, blob_client  # noqa: E402

SHIPPED = json.loads((ROOT / "routing.json").read_text())


def version(n: int) -> bytes:
    rules = copy.deepcopy(SHIPPED)
    rules["profiles"]["reception"]["greeting"] = f"Thank you for calling (version {n})."
    return json.dumps(rules).encode()


def parse(data: bytes) -> RoutingRules:
    return parse_rules_text(data, "bench", tool_names={"lookup_order"}, max_call_duration_seconds=900)


async def timed_webhooks(intake: Intake, n: int, tag: str) -> list[float]:
    async def start_call(call_id: str, call_input: dict) -> None:
        return None

    async def call_exists(call_id: str) -> bool:
        return False

    prepared = [(b := body_for(f"rtc_{tag}_{i:08d}_{secrets.token_hex(4)}"), headers_for(b, f"wh_{tag}_{i}"))
                for i in range(n)]
    out = []
    for body, headers in prepared:
        t0 = time.perf_counter()
        result = await intake.handle(body, headers, start_call=start_call, call_exists=call_exists, live_calls=None)
        out.append((time.perf_counter() - t0) * 1000)
        assert result.body.get("status") == "accepted", result
        await asyncio.sleep(0.002)  # spread over time, as deliveries are: reloads land between and during them
    return out


async def run(args: argparse.Namespace) -> None:
    connection_string = azurite_connection_string()
    service = BlobServiceClient.from_connection_string(connection_string)
    container = service.create_container("bench" + secrets.token_hex(5))
    blob = container.get_blob_client("routing.json")
    blob.upload_blob(version(0))
    holder = RulesHolder(load_rules(ROOT / "routing.json", tool_names={"lookup_order"}, max_call_duration_seconds=900))
    with StandInThread() as standin:
        cc = CallControlClient(standin.url, ApiKeyAuth("k"))
        intake = Intake(secrets=(SECRET,), rules=holder, call_control=cc, deployment="d", tools=registry(),
                        max_call_duration_seconds=900)
        await timed_webhooks(intake, 50, "warm")
        quiet: list[float] = []
        reloading: list[float] = []
        swaps = 0
        for r in range(args.rounds):
            quiet += await timed_webhooks(intake, args.n, f"q{r}")

            refresher = RulesRefresher(holder, BlobRulesReader(lambda: blob_client(blob.url,
                                                                                   connection_string=connection_string)),
                                       parse, interval=args.check_every, source="bench")
            stop = threading.Event()
            before = holder.version
            seen: set[int] = set()
            # Publishing happens elsewhere (an operator's machine): its own process, not the app's GIL.
            command = [sys.executable, __file__, "--publisher", blob.url, "--publish-every", str(args.publish_every)]
            publisher = subprocess.Popen(command, cwd=ROOT)  # noqa: ASYNC220 - outside the timed calls
            refresher.start()

            async def count_swaps(stop: threading.Event = stop, seen: set[int] = seen) -> None:
                while not stop.is_set():
                    seen.add(id(holder.version))
                    await asyncio.sleep(0.001)

            counter = asyncio.create_task(count_swaps())
            reloading += await timed_webhooks(intake, args.n, f"r{r}")
            stop.set()
            await counter
            refresher.stop()
            publisher.terminate()
            publisher.wait(10)
            swaps += len(seen - {id(before)})
        await cc.aclose()
    container.delete_container()
    service.close()

    q99, r99 = pct(quiet, 99), pct(reloading, 99)
    goal = max(q99 * 1.25, q99 + 0.5)
    print(f"webhook Intake.handle, {len(quiet)} deliveries per phase, {args.rounds} alternating rounds; "
          f"{swaps} rules versions swapped in during the reload phase (check every {args.check_every} s, publish "
          f"every {args.publish_every} s; the app checks every 30 s)")
    print(goal_line("p50 without reloads [baseline]", pct(quiet, 50), pct(quiet, 50) * 1.25, "ms"))
    print(goal_line("p50 during reloads", pct(reloading, 50), max(pct(quiet, 50) * 1.25, pct(quiet, 50) + 0.5), "ms",
                    baseline=pct(quiet, 50)))
    print(goal_line("p99 without reloads [baseline]", q99, goal, "ms"))
    print(goal_line("p99 during reloads", r99, goal, "ms", baseline=q99))
    if swaps == 0:
        print("  no reload happened during the measured phase: the comparison means nothing")


def publisher(uri: str, every: float) -> None:
    client = blob_client(uri, connection_string=azurite_connection_string())
    i = 0
    while True:
        time.sleep(every)
        i += 1
        client.upload_blob(version(i + int(time.time() * 1000)), overwrite=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--publisher", metavar="URI", help=argparse.SUPPRESS)
    parser.add_argument("-n", type=int, default=1000, help="webhooks per phase and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--check-every", type=float, default=1.0)
    parser.add_argument("--publish-every", type=float, default=1.0)
    args = parser.parse_args()
    if args.publisher:
        publisher(args.publisher, args.publish_every)
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
