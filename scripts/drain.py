#!/usr/bin/env python3
"""Drain the Function App before a deploy or a setting change, so that no live call is cut.

On Flex Consumption a deploy, an app-setting change or a restart force-terminates every running execution (the
default site update strategy, Recreate), and with it every live call. This script turns the app's drain flag on
(new calls are rejected or referred, see shared/drain.py), waits until the operator API lists no live call, and
then lets the deploy go ahead. Runs as the azd ``predeploy``/``postdeploy`` hooks (azure.yaml) and by hand::

    python scripts/drain.py on --wait [--timeout 1200] [--force]   # before: drain, wait for live calls to end
    python scripts/drain.py off                                     # after: take calls again
    python scripts/drain.py status
    python scripts/drain.py predeploy | postdeploy                  # what the azd hooks run

``predeploy`` is ``on --wait``, but it carries on when the app has no drain endpoint yet (the first deploy). When
the wait times out it turns the drain off again and fails, so the deploy does not start; ``--force`` deploys anyway
(cutting the calls still live). The flag expires by itself (``--expires-in-minutes``, default 60), so a deploy that
dies half-way cannot leave the app refusing calls for ever.

Where the app is (flags override environment variables; azd exports the Bicep outputs to hooks):

    --base-url  SWITCHBOARD_API_URL, else WEBHOOK_URL without /calls/incoming   (https://<app>/api)
    --key       SWITCHBOARD_FUNCTION_KEY, else the app's default function key read through Azure Resource Manager
                (AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZURE_FUNCTION_APP_NAME and your azd/az login)

``SWITCHBOARD_DRAIN_SKIP=true`` makes ``predeploy`` and ``postdeploy`` do nothing: with the RollingUpdate site update
strategy running executions finish by themselves, and draining would only turn callers away during the deploy.

Exit codes: 0 done (or nothing to drain), 1 failed or timed out, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

import httpx

WEB_API_VERSION = "2024-04-01"
ARM_SCOPE = "https://management.azure.com/.default"
DEFAULT_TIMEOUT_SECONDS = 1200.0  # a call lasts 15 minutes by default (MAX_CALL_DURATION_SECONDS=900)
DEFAULT_EXPIRES_MINUTES = 60
POLL_SECONDS = 2.0
# After a deploy the new code may still be starting: how long `off` keeps trying.
STARTUP_GRACE_SECONDS = 180.0


class DrainError(Exception):
    """The drain could not be done; the message says what to check."""


class NotDeployed(DrainError):
    """The app answers 404 for /api/drain: no code yet (first deploy), or a version without drain mode."""


class Api:
    """The app's operator API (function key) over httpx."""

    def __init__(self, base_url: str, key: str, client: httpx.Client) -> None:
        self.base = base_url.rstrip("/")
        self._headers = {"x-functions-key": key}
        self._client = client

    def _call(self, method: str, route: str, body: Any = None) -> Any:
        try:
            r = self._client.request(method, f"{self.base}/{route}", headers=self._headers, json=body)
        except httpx.TransportError as exc:
            raise DrainError(f"{method} {self.base}/{route}: {type(exc).__name__}: {exc}") from None
        if r.status_code == 404:
            raise NotDeployed(f"{method} {self.base}/{route} answered 404")
        if r.status_code in (401, 403):
            raise DrainError(f"{method} {self.base}/{route} answered {r.status_code}: wrong function key")
        if r.status_code >= 400:
            raise DrainError(f"{method} {self.base}/{route} answered {r.status_code}: {r.text[:300]}")
        return r.json()

    def drain_on(self, expires_in_minutes: int | None, reason: str) -> dict[str, Any]:
        body: dict[str, Any] = {"reason": reason}
        if expires_in_minutes:
            body["expires_in_minutes"] = expires_in_minutes
        return self._call("POST", "drain", body)

    def drain_off(self) -> dict[str, Any]:
        return self._call("DELETE", "drain")

    def status(self) -> dict[str, Any]:
        return self._call("GET", "drain")

    def live_calls(self) -> list[dict[str, Any]]:
        return self._call("GET", "calls")["calls"]


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def wait_until_idle(api: Api, *, effective_by: str | None, timeout: float, log: Callable[[str], None],
                    sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time) -> int:
    """Wait until the drain is in force on every instance, then until no call is live. Returns the live count left
    (0 when idle) once ``timeout`` seconds have passed."""
    deadline = clock() + timeout
    # Every webhook follows the flag within its cache period: a call accepted before then must be counted too.
    in_force = _parse_time(effective_by)
    if in_force is not None and in_force > clock():
        sleep(min(in_force - clock() + 0.5, max(0.0, deadline - clock())))
    last = None
    while True:
        live = len(api.live_calls())
        if live == 0:
            return 0
        if live != last:
            log(f"{live} live call(s); waiting for them to end (up to {max(0, deadline - clock()):.0f} s more)")
            last = live
        if clock() >= deadline:
            return live
        sleep(min(POLL_SECONDS, max(0.0, deadline - clock())))


def _function_key_from_arm(env: Mapping[str, str], client: httpx.Client, arm: str,
                           token_provider: Callable[[str], str] | None = None) -> str:
    sub, group, app = (env.get("AZURE_SUBSCRIPTION_ID"), env.get("AZURE_RESOURCE_GROUP"),
                       env.get("AZURE_FUNCTION_APP_NAME"))
    if not (sub and group and app):
        raise DrainError("no function key: pass --key (or SWITCHBOARD_FUNCTION_KEY), or run inside azd so that"
                         " AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP and AZURE_FUNCTION_APP_NAME are set")
    if token_provider is None:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from register_webhook import azure_identity_token_provider  # the same azd-then-Azure-CLI sign-in

        token_provider = azure_identity_token_provider(env.get("AZURE_TENANT_ID"))
    token = token_provider(ARM_SCOPE)
    url = (f"{arm.rstrip('/')}/subscriptions/{sub}/resourceGroups/{group}/providers/Microsoft.Web/sites/{app}"
           f"/host/default/listkeys?api-version={WEB_API_VERSION}")
    r = client.post(url, headers={"Authorization": f"Bearer {token}"})
    if r.status_code != 200:
        raise DrainError(f"reading the function key of {app}: HTTP {r.status_code} from POST {url.split('?')[0]}")
    keys = r.json().get("functionKeys") or {}
    if not keys.get("default"):
        raise DrainError(f"the app {app} has no 'default' function key")
    return keys["default"]


def _base_url(args: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    if args.base_url:
        return args.base_url
    webhook = env.get("WEBHOOK_URL", "")
    if webhook.endswith("/calls/incoming"):
        return webhook.removesuffix("/calls/incoming")
    return None


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="SWITCHBOARD_DRAIN_SKIP=true makes predeploy and postdeploy do nothing. "
                                       "Flags override the environment variables named in brackets.")
    p.add_argument("action", choices=["on", "off", "status", "predeploy", "postdeploy"],
                   help="on/off: the drain flag; status: the flag and the live calls; predeploy: on --wait (carries "
                        "on when the app has no drain endpoint yet); postdeploy: off")
    p.add_argument("--wait", action="store_true", help="with on: wait until no call is live")
    p.add_argument("--timeout", type=float, default=float(env.get("SWITCHBOARD_DRAIN_TIMEOUT") or
                                                          DEFAULT_TIMEOUT_SECONDS),
                   help="seconds to wait for live calls to end [SWITCHBOARD_DRAIN_TIMEOUT, default %(default)s]")
    p.add_argument("--force", action="store_true",
                   default=(env.get("SWITCHBOARD_DRAIN_FORCE") or "").lower() in ("1", "true", "yes"),
                   help="go ahead when the timeout passes with calls still live (they will be cut)"
                        " [SWITCHBOARD_DRAIN_FORCE]")
    p.add_argument("--expires-in-minutes", type=int, default=DEFAULT_EXPIRES_MINUTES,
                   help="the drain ends by itself after this long (safety net; default %(default)s)")
    p.add_argument("--reason", default="deploy", help="shown by GET /api/drain (default %(default)s)")
    p.add_argument("--base-url", default=env.get("SWITCHBOARD_API_URL"),
                   help="the app's API root, https://<app>/api [SWITCHBOARD_API_URL, else from WEBHOOK_URL]")
    p.add_argument("--key", default=env.get("SWITCHBOARD_FUNCTION_KEY"),
                   help="a function key [SWITCHBOARD_FUNCTION_KEY, else read through Azure Resource Manager]")
    p.add_argument("--management-endpoint", default=env.get("AZURE_RESOURCE_MANAGER_ENDPOINT")
                   or "https://management.azure.com", help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None, *, env: Mapping[str, str] | None = None,
         transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
         token_provider: Callable[[str], str] | None = None) -> int:
    env = os.environ if env is None else env
    args = build_parser(env).parse_args(argv)

    def say(message: str) -> None:
        print(f"drain: {message}", file=sys.stderr, flush=True)

    if args.action in ("predeploy", "postdeploy") and (env.get("SWITCHBOARD_DRAIN_SKIP") or "").lower() in (
            "1", "true", "yes"):
        say(f"{args.action}: skipped (SWITCHBOARD_DRAIN_SKIP)")
        return 0

    base = _base_url(args, env)
    if not base:
        say("no app URL: pass --base-url https://<app>/api (or set SWITCHBOARD_API_URL), or run inside azd"
            " (WEBHOOK_URL)")
        return 2
    if args.timeout < 0 or not 1 <= args.expires_in_minutes <= 1440:
        say("--timeout must be >= 0 and --expires-in-minutes from 1 to 1440")
        return 2
    with httpx.Client(timeout=httpx.Timeout(30.0), transport=transport) as client:
        try:
            key = args.key or _function_key_from_arm(env, client, args.management_endpoint, token_provider)
            api = Api(base, key, client)
            return _run(args, api, say, sleep)
        except NotDeployed as exc:
            if args.action == "predeploy":
                say(f"{exc}: no drain endpoint deployed yet (first deploy, or a version without drain mode);"
                    " nothing to drain.")
                return 0
            if args.action == "postdeploy":
                say(f"WARNING: {exc}: the deployed app has no drain endpoint; a drain flag set before the deploy"
                    f" ends by itself when it expires (--expires-in-minutes)")
                return 0
            say(f"FAILED: {exc}")
            return 1
        except DrainError as exc:
            say(f"FAILED: {exc}")
            return 1


def _run(args: argparse.Namespace, api: Api, say: Callable[[str], None], sleep: Callable[[float], None]) -> int:
    if args.action == "status":
        view = api.status()
        live = len(api.live_calls())
        state = "drained" if view["drained"] else "taking calls"
        print(f"{state} (source: {view['source']}, since {view.get('since') or '-'}, expires"
              f" {view.get('expires_at') or 'never'}); {live} live call(s)")
        return 0
    if args.action in ("off", "postdeploy"):
        view = _off(api, args.action == "postdeploy", say, sleep)
        if view.get("drained"):
            say(f"still drained by the {view['source']} (DRAIN_MODE=on)")
            return 1
        say("drain off: the app takes calls again")
        return 0
    # on / predeploy
    view = api.drain_on(args.expires_in_minutes, args.reason)
    say(f"drain on: new calls are turned away (expires {view.get('expires_at') or 'never'}; in force on every"
        f" instance by {view.get('effective_by')})")
    if args.action == "on" and not args.wait:
        return 0
    left = wait_until_idle(api, effective_by=view.get("effective_by"), timeout=args.timeout, log=say, sleep=sleep)
    if left == 0:
        say("no live call: safe to deploy or change settings")
        return 0
    if args.force:
        say(f"WARNING: {left} call(s) still live after {args.timeout:g} s; going ahead anyway (--force): they will"
            " be cut")
        return 0
    api.drain_off()
    say(f"FAILED: {left} call(s) still live after {args.timeout:g} s; drain turned off again and nothing deployed."
        " Retry later, raise --timeout, or pass --force to cut them")
    return 1


def _off(api: Api, after_deploy: bool, say: Callable[[str], None], sleep: Callable[[float], None]) -> dict:
    """DELETE /api/drain; right after a deploy the new code may still be starting, so keep trying for a while."""
    deadline = time.monotonic() + (STARTUP_GRACE_SECONDS if after_deploy else 0)
    while True:
        try:
            return api.drain_off()
        except DrainError as exc:  # NotDeployed too: a host that has not indexed the new code yet answers 404
            if time.monotonic() >= deadline:
                raise
            say(f"{exc}; the app may still be starting, retrying")
            sleep(5.0)


if __name__ == "__main__":
    sys.exit(main())
