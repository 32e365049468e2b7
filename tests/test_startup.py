"""The app refuses to start on a bad setting or bad routing rules, and says which one; a webhook secret that is
not usable yet (an unresolved Key Vault reference) stops the webhook alone, never the other functions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localrun.stack import new_webhook_secret
from tests.azure_settings import bicep_app_settings

ROOT = Path(__file__).resolve().parent.parent


def good_env(tmp_path: Path) -> dict[str, str]:  # noqa: ARG001 - one signature for every case
    return {
        "PATH": "/usr/bin:/bin",
        "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com",
        "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
        "AZURE_OPENAI_AUTH": "api-key",
        "AZURE_OPENAI_API_KEY": "k",
        "WEBHOOK_SECRET": new_webhook_secret(),
        "CALL_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
    }


def load_app(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "import function_app"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_the_app_loads_with_valid_settings_and_the_shipped_rules(tmp_path: Path) -> None:
    result = load_app(good_env(tmp_path))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("name", "value", "message"), [
    ("AZURE_OPENAI_ENDPOINT", "http://example.com", "Setting AZURE_OPENAI_ENDPOINT is 'http://example.com'"),
    ("MAX_CALL_DURATION_SECONDS", "forever", "Setting MAX_CALL_DURATION_SECONDS is 'forever'"),
    ("AZURE_OPENAI_AUTH", "password", "Setting AZURE_OPENAI_AUTH is 'password'"),
])
def test_a_bad_setting_stops_the_app_naming_the_setting(tmp_path: Path, name: str, value: str, message: str) -> None:
    env = good_env(tmp_path) | {name: value}
    result = load_app(env)
    assert result.returncode != 0
    assert message in result.stderr


def test_a_missing_setting_stops_the_app_naming_the_setting(tmp_path: Path) -> None:
    env = good_env(tmp_path)
    del env["AZURE_OPENAI_DEPLOYMENT"]
    result = load_app(env)
    assert result.returncode != 0 and "Setting AZURE_OPENAI_DEPLOYMENT is missing" in result.stderr


def test_bad_routing_rules_stop_the_app_naming_the_field(tmp_path: Path) -> None:
    rules = json.loads((ROOT / "routing.json").read_text())
    rules["profiles"]["reception"]["hours"] = {"timezone": "Mars/Olympus", "weekly": {"mon": ["09:00-17:00"]}}
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    result = load_app(good_env(tmp_path) | {"ROUTING_RULES_PATH": str(path)})
    assert result.returncode != 0
    assert "profiles.reception.hours.timezone" in result.stderr and "Mars/Olympus" in result.stderr


def test_a_profile_naming_an_unregistered_tool_stops_the_app(tmp_path: Path) -> None:
    rules = json.loads((ROOT / "routing.json").read_text())
    rules["profiles"]["reception"]["tools"] = ["lookup_order", "launch_rockets"]
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(rules))
    result = load_app(good_env(tmp_path) | {"ROUTING_RULES_PATH": str(path)})
    assert result.returncode != 0 and "launch_rockets" in result.stderr


INDEX = """
# The Python worker puts its own handler on the root logger (it forwards log lines to the host) before it imports
# the app; with Azure Monitor configured too, stderr's last-resort handler would no longer print anything.
import logging, sys
logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))
import json, function_app
print(json.dumps({f.get_function_name(): json.loads(f.get_function_json())["bindings"]
                  for f in function_app.app.get_functions()}))
"""


def index(env: dict[str, str]) -> dict[str, list[dict]]:
    """{function name: bindings}, as the Python worker reports them to the host (func start, Azure)."""
    result = subprocess.run([sys.executable, "-c", INDEX], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


ALL_FUNCTIONS = {"incoming_call", "call", "converse", "hangup_call", "refer_call", "publish_call_record",
                 "analyze_call",
                 "operator_list_calls", "operator_get_call", "operator_hangup", "operator_transfer",
                 "operator_drain", "purge_history", "console_page", "console_asset", "console_config", "console_me",
                 "console_live", "console_transcript", "console_hangup", "console_transfer", "console_history",
                 "console_record", "console_stats"}


@pytest.mark.parametrize("webhook_secret", [
    "@Microsoft.KeyVault(VaultName=kv-abc123;SecretName=webhook-secret)",  # what Azure hands over until resolved
    "",  # the setting missing altogether
    "whsec_!!",  # a malformed secret
])
def test_an_unusable_webhook_secret_leaves_every_function_indexed(webhook_secret: str) -> None:
    # The Function App's settings exactly as infra/modules/functionapp.bicep writes them, before the post-provision
    # hook has stored the secret. Indexing used to fail here, and the host then ran no function at all.
    env = {"PATH": "/usr/bin:/bin", **bicep_app_settings(), "WEBHOOK_SECRET": webhook_secret}
    result = subprocess.run([sys.executable, "-c", INDEX], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) == ALL_FUNCTIONS
    # One error line at start-up names the setting, and never repeats its value (it names the vault and secret).
    errors = [line for line in result.stderr.splitlines() if "WEBHOOK_SECRET" in line]
    assert len(errors) == 1 and "The webhook will answer 503" in errors[0], result.stderr
    assert "kv-abc123" not in result.stderr and "whsec_!!" not in result.stderr


WEBHOOK = """
# The Python worker puts its own handler on the root logger (it forwards log lines to the host) before it imports
# the app; with Azure Monitor configured too, stderr's last-resort handler would no longer print anything.
import logging, sys
logging.getLogger().addHandler(logging.StreamHandler(sys.stderr))
import asyncio, json, sys, time
import azure.functions as func
import function_app
from shared.webhook import sign

# The Durable client binding as the host hands it over, pointing at an address that refuses connections.
base = "http://127.0.0.1:9/runtime/webhooks/durabletask/"
binding = json.dumps({"taskHubName": "switchboard", "baseUrl": base, "rpcBaseUrl": base, "httpBaseUrl": base,
                      "requiredQueryStringParameters": "", "creationUrls": {}, "managementUrls": {}})

body = json.dumps({"object": "event", "id": "evt_1", "type": "realtime.call.incoming", "created_at": 1,
                   "data": {"call_id": "rtc_test", "sip_headers": []}}).encode()
ts = int(time.time())
secret = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"  # what the platform signs with; the app cannot know it
request = func.HttpRequest("POST", "https://func-x.azurewebsites.net/api/calls/incoming", body=body,
                           headers={"webhook-id": "wh_1", "webhook-timestamp": str(ts),
                                    "webhook-signature": sign(secret, "wh_1", ts, body)})
[incoming] = [f for f in function_app.app.get_functions() if f.get_function_name() == "incoming_call"]
class Context:  # what the worker passes: no trace context to join here
    trace_context = None
response = asyncio.run(incoming.get_user_function()(req=request, client=binding, context=Context()))
print(json.dumps({"status": response.status_code, "body": json.loads(response.get_body()),
                  "retry_after": response.headers.get("Retry-After")}))
"""


def test_with_the_bicep_settings_the_webhook_answers_503_and_accepts_nothing() -> None:
    # Azure OpenAI points at an address that refuses connections: an accept attempt would fail loudly, not hang.
    env = {"PATH": "/usr/bin:/bin", **bicep_app_settings(), "AZURE_OPENAI_ENDPOINT": "https://127.0.0.1:9"}
    result = subprocess.run([sys.executable, "-c", WEBHOOK], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    answer = json.loads(result.stdout.splitlines()[-1])
    assert answer == {"status": 503, "body": {"error": "webhook_unavailable", "setting": "WEBHOOK_SECRET"},
                      "retry_after": "30"}
    refused = [line for line in result.stderr.splitlines() if "webhook answered 503" in line]
    assert len(refused) == 1 and "Setting WEBHOOK_SECRET is an unresolved Key Vault reference" in refused[0]


def test_the_bicep_settings_with_a_resolved_secret_load_cleanly() -> None:
    env = {"PATH": "/usr/bin:/bin", **bicep_app_settings(), "WEBHOOK_SECRET": new_webhook_secret()}
    result = subprocess.run([sys.executable, "-c", INDEX], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "WEBHOOK_SECRET" not in result.stderr, result.stderr


def test_the_app_indexes_as_the_functions_host_expects(tmp_path: Path) -> None:
    # What the Python worker reports to the host (func start, Azure): names, triggers, routes and auth levels.
    functions = index(good_env(tmp_path))
    assert set(functions) == ALL_FUNCTIONS
    triggers = {name: next(b for b in bindings if b["direction"] == "IN" and b["type"] != "durableClient")
                for name, bindings in functions.items()}
    assert triggers["call"]["type"] == "orchestrationTrigger"
    assert {n for n, t in triggers.items() if t["type"] == "activityTrigger"} == {
        "converse", "hangup_call", "refer_call", "analyze_call", "publish_call_record"}
    # History retention (call_workflow/maintenance.py): a daily timer, not an HTTP route anyone can call.
    assert triggers["purge_history"]["type"] == "timerTrigger"
    assert triggers["purge_history"]["schedule"] == "0 17 3 * * *"
    http = {t["route"]: (t["methods"], t["authLevel"]) for t in triggers.values() if t["type"] == "httpTrigger"}
    assert http == {
        "api/calls/incoming": (["POST"], "ANONYMOUS"),  # the platform cannot send a key: signature-checked instead
        "api/calls": (["GET"], "FUNCTION"),
        "api/calls/{call_id}": (["GET"], "FUNCTION"),
        "api/calls/{call_id}/hangup": (["POST"], "FUNCTION"),
        "api/calls/{call_id}/transfer": (["POST"], "FUNCTION"),
        "api/drain": (["GET", "POST", "DELETE"], "FUNCTION"),  # drain mode (shared/drain.py): a flag, no Durable
        # The operator console (call_workflow/console.py): the page, its assets and its sign-in configuration hold
        # no data; every data endpoint takes the function key (CONSOLE_AUTH=key; with entra the app checks tokens).
        "console": (["GET"], "ANONYMOUS"),
        "console/assets/{name}": (["GET"], "ANONYMOUS"),
        "console/config": (["GET"], "ANONYMOUS"),
        "console/me": (["GET"], "FUNCTION"),
        "console/live": (["GET"], "FUNCTION"),
        "console/calls/{call_id}/transcript": (["GET"], "FUNCTION"),
        "console/calls/{call_id}/hangup": (["POST"], "FUNCTION"),
        "console/calls/{call_id}/transfer": (["POST"], "FUNCTION"),
        "console/history": (["GET"], "FUNCTION"),
        "console/history/{day}/{call_id}": (["GET"], "FUNCTION"),
        "console/stats": (["GET"], "FUNCTION"),
    }
    # Every HTTP function that touches calls starts or talks to orchestrations through the Durable client binding.
    no_client = {"operator_drain", "console_page", "console_asset", "console_config", "console_me",
                 "console_transcript", "console_history", "console_record", "console_stats"}
    assert all(any(b["type"] == "durableClient" for b in functions[n])
               for n, t in triggers.items() if t["type"] == "httpTrigger" and n not in no_client)
