"""ROUTING_RULES_URI and ROUTING_RULES_REFRESH_SECONDS: defaults, and bad values fail at start-up naming the setting."""

from __future__ import annotations

import pytest

from shared.settings import Settings, SettingsError

URI = "https://acct.blob.core.windows.net/routing-rules/routing.json"


@pytest.fixture
def env(tmp_path):
    rules = tmp_path / "routing.json"
    rules.write_text("{}")
    return {
        "AZURE_OPENAI_ENDPOINT": "https://res.openai.azure.com",
        "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
        "ROUTING_RULES_PATH": str(rules),
        "CALL_STORAGE_QUEUE_URI": "https://acct.queue.core.windows.net",
        "CALL_STORAGE_TABLE_URI": "https://acct.table.core.windows.net",
    }


def test_defaults_read_the_packaged_file_only(env):
    s = Settings.from_env(env)
    assert s.routing_rules_uri is None and s.routing_rules_refresh_seconds == 30


def test_a_blob_and_an_interval(env):
    s = Settings.from_env(env | {"ROUTING_RULES_URI": URI, "ROUTING_RULES_REFRESH_SECONDS": "5"})
    assert (s.routing_rules_uri, s.routing_rules_refresh_seconds) == (URI, 5)
    local = "http://127.0.0.1:10000/devstoreaccount1/rules/routing.json"  # Azurite
    assert Settings.from_env(env | {"ROUTING_RULES_URI": local}).routing_rules_uri == local


@pytest.mark.parametrize(("name", "value", "message"), [
    ("ROUTING_RULES_URI", "http://acct.blob.core.windows.net/c/routing.json", "Setting ROUTING_RULES_URI is"),
    ("ROUTING_RULES_URI", "https://acct.blob.core.windows.net/routing.json", "(a container and a blob name"),
    ("ROUTING_RULES_URI", URI + "?sv=2024&sig=SECRET", "(a container and a blob name, no query)"),
    ("ROUTING_RULES_URI", "not a url", "Setting ROUTING_RULES_URI is"),
    ("ROUTING_RULES_REFRESH_SECONDS", "1", "Setting ROUTING_RULES_REFRESH_SECONDS is 1"),
    ("ROUTING_RULES_REFRESH_SECONDS", "soon", "Setting ROUTING_RULES_REFRESH_SECONDS is 'soon'"),
])
def test_bad_values_name_the_setting(env, name, value, message):
    with pytest.raises(SettingsError) as info:
        Settings.from_env(env | {name: value})
    assert message in str(info.value) and info.value.setting == name
    assert "SECRET" not in str(info.value)  # a SAS token is never echoed
