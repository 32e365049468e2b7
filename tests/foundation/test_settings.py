"""Settings.from_env (shared/settings.py): every bad value fails at start-up naming the setting; the webhook-only
secrets (webhook_secrets) fail the same way, but only when the webhook asks for them."""

from __future__ import annotations

import pytest

from shared.settings import SETTINGS, WEBHOOK_ONLY, Settings, SettingsError, webhook_secrets

SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY"  # 24 bytes


@pytest.fixture
def env(tmp_path):
    rules = tmp_path / "routing.json"
    rules.write_text("{}")
    return {
        "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
        "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
        "WEBHOOK_SECRET": SECRET,
        "ROUTING_RULES_PATH": str(rules),
        "CALL_STORAGE_QUEUE_URI": "https://acct.queue.core.windows.net",
        "CALL_STORAGE_TABLE_URI": "https://acct.table.core.windows.net",
    }


def test_minimal_environment_and_defaults(env):
    s = Settings.from_env(env)
    assert s.auth_mode == "entra" and s.api_key is None
    assert s.token_scope == "https://cognitiveservices.azure.com/.default"
    assert webhook_secrets(env) == (SECRET,)
    assert s.max_call_duration_seconds == 900
    assert not s.drain.always and s.drain.reject_status == 503 and s.drain.refer_uri is None
    assert s.drain.flag_table == "drainflag"
    assert (
        s.storage.uses_identity and s.storage.records_queue == "call-records" and s.storage.turns_table == "callturns"
    )
    assert s.storage.live_table == "calllive" and s.history_retention_days == 30


def test_endpoint_suffix_is_stripped_and_previous_secret_kept(env):
    env["AZURE_OPENAI_ENDPOINT"] = "https://res.openai.azure.com/openai/v1/"
    env["WEBHOOK_SECRET_PREVIOUS"] = "whsec_" + "WllZWVlZWVlZWVlZWVlZWVlZWVla"
    s = Settings.from_env(env)
    assert s.openai_endpoint == "https://res.openai.azure.com"
    assert len(webhook_secrets(env)) == 2


@pytest.mark.parametrize(
    "name, value, problem",
    [
        ("AZURE_OPENAI_ENDPOINT", None, "is missing"),
        ("AZURE_OPENAI_ENDPOINT", "res.openai.azure.com", "is 'res.openai.azure.com'"),
        ("AZURE_OPENAI_ENDPOINT", "http://res.openai.azure.com", "is 'http://"),
        ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com?x=1", "no query"),
        ("AZURE_OPENAI_DEPLOYMENT", "  ", "is missing"),
        ("AZURE_OPENAI_AUTH", "password", "is 'password'"),
        ("AZURE_OPENAI_TOKEN_SCOPE", "https://cognitiveservices.azure.com", "is 'https://"),
        ("WEBHOOK_SECRET", None, "is missing"),
        ("WEBHOOK_SECRET", "secret123", "does not start with 'whsec_'"),
        ("WEBHOOK_SECRET", "whsec_***", "is not base64"),
        ("WEBHOOK_SECRET", "whsec_QUJD", "fewer than 16 bytes"),
        ("WEBHOOK_SECRET_PREVIOUS", "whsec_!!", "is not base64"),
        ("ROUTING_RULES_PATH", "/nonexistent/routing.json", "which is not a file"),
        ("MAX_CALL_DURATION_SECONDS", "ten", "is 'ten'"),
        ("MAX_CALL_DURATION_SECONDS", "5", "is 5"),
        ("MAX_CALL_DURATION_SECONDS", "3301", "is 3301"),
        ("HISTORY_RETENTION_DAYS", "0", "is 0"),
        ("HISTORY_RETENTION_DAYS", "3651", "is 3651"),
        ("HISTORY_RETENTION_DAYS", "a month", "is 'a month'"),
        ("CALL_LIVE_TABLE", "live-calls", "is 'live-calls'"),
        ("CALL_LIVE_TABLE", "CallTurns", "names the turns table"),
        ("CALL_STORAGE_QUEUE_URI", None, "is missing"),
        ("CALL_STORAGE_TABLE_URI", "http://acct.table.core.windows.net", "is 'http://"),
        ("CALL_RECORDS_QUEUE", "Bad_Queue", "is 'Bad_Queue'"),
        ("CALL_RECORDS_QUEUE", "a--b", "is 'a--b'"),
        ("CALL_TURNS_TABLE", "1table", "is '1table'"),
        ("DRAIN_MODE", "maybe", "is 'maybe'"),
        ("DRAIN_REJECT_STATUS", "busy", "is 'busy'"),
        ("DRAIN_REJECT_STATUS", "200", "is 200"),
        ("DRAIN_REFER_URI", "https://example.com", "is 'https://example.com'"),
        ("DRAIN_FLAG_TABLE", "drain-flag", "is 'drain-flag'"),
    ],
)
def test_bad_setting_is_named_with_expected_form(env, name, value, problem):
    if value is None:
        env.pop(name, None)
    else:
        env[name] = value
    read = webhook_secrets if name in WEBHOOK_ONLY else Settings.from_env
    with pytest.raises(SettingsError) as info:
        read(env)
    assert info.value.setting == name
    message = str(info.value)
    assert message.startswith(f"Setting {name} ") and problem in message, message
    form = next(s.form for s in SETTINGS if s.name == name)
    assert message.endswith(f"expected {form}.")


def test_api_key_mode_requires_the_key(env):
    env["AZURE_OPENAI_AUTH"] = "API-KEY"
    with pytest.raises(SettingsError, match="Setting AZURE_OPENAI_API_KEY is missing"):
        Settings.from_env(env)
    env["AZURE_OPENAI_API_KEY"] = "k"
    assert Settings.from_env(env).auth_mode == "api-key"


def test_connection_string_replaces_service_uris(env):
    del env["CALL_STORAGE_QUEUE_URI"], env["CALL_STORAGE_TABLE_URI"]
    env["CALL_STORAGE_CONNECTION_STRING"] = "UseDevelopmentStorage=true;"
    s = Settings.from_env(env)
    assert not s.storage.uses_identity and s.storage.queue_uri is None
    env["CALL_STORAGE_CONNECTION_STRING"] = "nonsense"
    with pytest.raises(SettingsError, match="Setting CALL_STORAGE_CONNECTION_STRING is not a connection string"):
        Settings.from_env(env)


def test_http_endpoint_allowed_only_for_localhost(env):
    env["AZURE_OPENAI_ENDPOINT"] = "http://127.0.0.1:8765"
    assert Settings.from_env(env).openai_endpoint == "http://127.0.0.1:8765"


# Malformed URLs must be reported against the setting, not escape as a bare ValueError.


@pytest.mark.parametrize("name", ["AZURE_OPENAI_ENDPOINT", "CALL_STORAGE_QUEUE_URI"])
def test_malformed_url_names_the_setting(env, name):
    env[name] = "https://[not-an-ipv6"
    with pytest.raises(SettingsError, match=f"Setting {name}"):
        Settings.from_env(env)


def test_endpoint_with_bad_port_is_rejected(env):
    env["AZURE_OPENAI_ENDPOINT"] = "https://res.openai.azure.com:abc"
    with pytest.raises(SettingsError, match="Setting AZURE_OPENAI_ENDPOINT"):
        Settings.from_env(env)


def test_managed_identity_client_id_must_be_a_guid(env):
    env["AZURE_CLIENT_ID"] = "my-identity"
    with pytest.raises(SettingsError, match="Setting AZURE_CLIENT_ID is 'my-identity'; expected client id"):
        Settings.from_env(env)
    env["AZURE_CLIENT_ID"] = "6f1c2a3b-1111-4222-8333-944455556666"
    assert Settings.from_env(env).managed_identity_client_id == "6f1c2a3b-1111-4222-8333-944455556666"


def test_repr_never_shows_secrets(env):
    # Settings objects end up in tracebacks and debug logs; the key, the webhook secrets and the
    # connection string's AccountKey must not.
    env.update({"AZURE_OPENAI_AUTH": "api-key", "AZURE_OPENAI_API_KEY": "sk-key-that-must-not-leak",
                "WEBHOOK_SECRET_PREVIOUS": "whsec_" + "WllZWVlZWVlZWVlZWVlZWVlZWVla",
                "CALL_STORAGE_CONNECTION_STRING": "AccountName=a;AccountKey=account-key-that-must-not-leak"})
    s = Settings.from_env(env)
    text = repr(s) + str(s) + repr(s.storage)
    for secret in ("sk-key-that-must-not-leak", "QUJDREVGR0hJSktMTU5PUFFSU1RVVldY", "WllZWVlZWVlZWVlZWVlZWVlZWVla",
                   "account-key-that-must-not-leak"):
        assert secret not in text
    assert s.api_key == "sk-key-that-must-not-leak"  # still there for the code that needs it
    assert "deployment='gpt-realtime'" in repr(s)


@pytest.mark.parametrize("name, value", [
    ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com/?api-key=LEAKED-KEY"),
    ("AZURE_OPENAI_ENDPOINT", "http://user:LEAKED-KEY@res.openai.azure.com"),
    ("AZURE_OPENAI_ENDPOINT", "https://[bad?sig=LEAKED-KEY"),
    ("CALL_STORAGE_TABLE_URI", "http://acct.table.core.windows.net/?sv=2024-01-01&sig=LEAKED-KEY"),
    ("CALL_STORAGE_QUEUE_URI", "https://[bad#sig=LEAKED-KEY"),
])
def test_url_errors_do_not_repeat_credentials_pasted_into_the_url(env, name, value):
    # A pasted SAS URL or a key in the query string must not land in the start-up error (and so in logs).
    env[name] = value
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env)
    assert str(info.value).startswith(f"Setting {name} ") and "LEAKED-KEY" not in str(info.value), str(info.value)


def test_webhook_secrets_are_not_checked_with_the_settings_every_function_needs(env):
    # An unresolved Key Vault reference must not stop the app: Settings.from_env ignores it, the webhook refuses it.
    env["WEBHOOK_SECRET"] = "@Microsoft.KeyVault(VaultName=kv-abc;SecretName=webhook-secret)"
    assert Settings.from_env(env).deployment == "gpt-realtime"
    with pytest.raises(SettingsError) as info:
        webhook_secrets(env)
    message = str(info.value)
    assert message.startswith("Setting WEBHOOK_SECRET is an unresolved Key Vault reference")
    assert "kv-abc" not in message and "webhook-secret" not in message  # the reference is not repeated


def test_drain_settings(env):
    env.update({"DRAIN_MODE": "ON", "DRAIN_REJECT_STATUS": "480", "DRAIN_REFER_URI": "tel:+14155550123"})
    drain = Settings.from_env(env).drain
    assert drain.always and drain.reject_status == 480 and drain.refer_uri == "tel:+14155550123"
    env["DRAIN_REFER_URI"] = "sip:overflow@pbx.example.com"
    assert Settings.from_env(env).drain.refer_uri == "sip:overflow@pbx.example.com"
