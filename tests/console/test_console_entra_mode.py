"""CONSOLE_AUTH=entra, as the app runs in Azure: the app loads as the worker loads it (a subprocess importing
function_app), the console's data routes are anonymous to the host, and the app itself answers 401 without a valid
Entra token (a forged Easy Auth header counts for nothing), 403 to an action by a user without the operator role.
Tokens are real RS256 tokens; PyJWT's key client fetches the signing keys over HTTP from a local stand-in."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import jwt

from localrun.stack import ROOT
from tests.console.entra_keys import CLIENT, ROLE, SIGNING, TENANT
from tests.test_startup import good_env

SCRIPT = """
import asyncio, json, sys
import azure.functions as func
import jwt
import function_app
from call_workflow import console
from shared.console_auth import EntraTokenValidator

# The tenant's keys from a local HTTP server instead of login.microsoftonline.com (no internet here).
console._validator = EntraTokenValidator(console.validator().tenant_id, console.validator().client_id,
                                         console.OPERATOR_ROLE, authority=sys.argv[1])
fns = {f.get_function_name(): f for f in function_app.app.get_functions()}
levels = {n: next(b["authLevel"] for b in json.loads(f.get_function_json())["bindings"] if b["type"] == "httpTrigger")
          for n, f in fns.items() if n.startswith("console")}

def call(name, headers, route_params=None, method="GET", body=b""):
    req = func.HttpRequest(method, "https://x/console", headers=headers, params={},
                           route_params=route_params or {}, body=body)
    kwargs = {"req": req}
    if name in ("console_hangup", "console_transfer", "console_live"):
        base = "http://127.0.0.1:9/runtime/webhooks/durabletask/"  # refuses connections: nothing gets that far
        kwargs["client"] = json.dumps({"taskHubName": "switchboard", "baseUrl": base, "rpcBaseUrl": base,
                                       "httpBaseUrl": base, "requiredQueryStringParameters": "",
                                       "creationUrls": {}, "managementUrls": {}})
    fn = fns[name].get_user_function()
    result = fn(**kwargs)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    return {"status": result.status_code, "body": json.loads(result.get_body() or b"null")}

tokens = json.loads(sys.argv[2])
out = {"levels": levels, "config": call("console_config", {})}
out["none"] = call("console_me", {})
out["forged"] = call("console_history", {"x-ms-client-principal": tokens["forged"]})
out["operator"] = call("console_me", {"authorization": "Bearer " + tokens["operator"]})
out["viewer"] = call("console_me", {"authorization": "Bearer " + tokens["viewer"]})
out["viewer_hangup"] = call("console_hangup", {"authorization": "Bearer " + tokens["viewer"]},
                            {"call_id": "rtc_1"}, "POST")
out["none_hangup"] = call("console_hangup", {}, {"call_id": "rtc_1"}, "POST")
print(json.dumps(out))
"""


def _token(authority: str, **claims) -> str:
    now = int(time.time())
    base = {"aud": CLIENT, "iss": f"{authority}/{TENANT}/v2.0", "tid": TENANT, "iat": now,
            "exp": now + 600, "name": "Ana"}
    return jwt.encode(base | claims, SIGNING, algorithm="RS256", headers={"kid": "k1"})


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return good_env(tmp_path) | {"CONSOLE_AUTH": "entra", "CONSOLE_ENTRA_TENANT_ID": TENANT,
                                 "CONSOLE_ENTRA_CLIENT_ID": CLIENT} | extra


def test_entra_mode_refuses_without_a_token_and_checks_the_role(tmp_path: Path, authority: str) -> None:
    forged = __import__("base64").b64encode(json.dumps(
        {"auth_typ": "aad", "claims": [{"typ": "roles", "val": ROLE}]}).encode()).decode()
    tokens = {"operator": _token(authority, roles=[ROLE]), "viewer": _token(authority, roles=[]), "forged": forged}
    result = subprocess.run([sys.executable, "-c", SCRIPT, authority, json.dumps(tokens)], cwd=ROOT,
                            env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.splitlines()[-1])
    # Anonymous to the host: the app checks every data request itself.
    assert set(out["levels"].values()) == {"ANONYMOUS"}
    assert out["config"]["body"]["auth"] == "entra" and out["config"]["body"]["client_id"] == CLIENT
    for case in ("none", "forged", "none_hangup"):
        assert out[case]["status"] == 401 and set(out[case]["body"]) == {"error"}, out[case]
    assert out["operator"] == {"status": 200, "body": {"auth": "entra", "user": "Ana", "can_act": True,
                                                       "operator_role": ROLE}}
    assert out["viewer"]["body"]["can_act"] is False
    assert out["viewer_hangup"]["status"] == 403 and ROLE in out["viewer_hangup"]["body"]["error"]


def test_a_bad_console_auth_setting_stops_the_app_naming_it(tmp_path: Path) -> None:
    for extra, name in (({"CONSOLE_AUTH": "easyauth"}, "CONSOLE_AUTH"),
                        ({"CONSOLE_ENTRA_CLIENT_ID": "my-app"}, "CONSOLE_ENTRA_CLIENT_ID")):
        result = subprocess.run([sys.executable, "-c", "import function_app"], cwd=ROOT,
                                env=_env(tmp_path, **extra), capture_output=True, text=True, timeout=60)
        assert result.returncode != 0 and name in result.stderr, result.stderr[-2000:]
