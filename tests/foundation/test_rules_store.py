"""Routing rules from a real blob on Azurite: a published change takes effect without a restart, within the refresh
interval; an invalid or unreadable version keeps the last good rules (one ERROR line with the refused ETag, and the
switchboard.rules.rejected metric); the intake uses the rules current at each delivery."""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from localrun.telemetry import memory
from shared.routing import RoutingRules, load_rules, parse_rules_text
from shared.rules_store import MAX_RULES_BYTES, BlobRulesReader, RulesHolder, RulesRefresher, blob_client

from .conftest import incoming_body, signed_headers
from .harness import Workflow, make_intake

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = json.loads((ROOT / "routing.json").read_text())


def parse(data: bytes) -> RoutingRules:
    return parse_rules_text(data, "ROUTING_RULES_URI", tool_names={"lookup_order"}, max_call_duration_seconds=900)


def packaged() -> RoutingRules:
    return load_rules(ROOT / "routing.json", tool_names={"lookup_order"}, max_call_duration_seconds=900)


def with_greeting(greeting: str, instructions: str | None = None) -> bytes:
    rules = copy.deepcopy(SHIPPED)
    rules["profiles"]["reception"]["greeting"] = greeting
    if instructions:
        rules["profiles"]["reception"]["instructions"] = instructions
    return json.dumps(rules).encode()


def wait_for(condition, timeout: float = 20.0) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - start


@pytest.fixture
def blob(azurite: str, unique_name: str):
    service = BlobServiceClient.from_connection_string(azurite)
    container = service.create_container(unique_name)
    client = container.get_blob_client("routing.json")
    yield client
    container.delete_container()
    service.close()


def reader_for(blob, azurite: str) -> BlobRulesReader:
    # The app's own client: the URI plus the account key of the local connection string.
    return BlobRulesReader(lambda: blob_client(blob.url, connection_string=azurite))


def rejected_count() -> float:
    return sum(p.value for name, _, p in memory().metric_points() if name == "switchboard.rules.rejected")


def test_a_published_change_takes_effect_within_the_refresh_interval(blob, azurite):
    blob.upload_blob(with_greeting("Version one."))
    holder = RulesHolder(packaged())
    interval = 0.5
    refresher = RulesRefresher(holder, reader_for(blob, azurite), parse, interval=interval, source=blob.url)
    refresher.start()
    try:
        assert refresher.first_check.wait(20)
        assert holder.current.profiles["reception"].greeting == "Version one."
        first = holder.version.etag
        blob.upload_blob(with_greeting("Version two."), overwrite=True)
        took = wait_for(lambda: holder.current.profiles["reception"].greeting == "Version two.")
        assert holder.version.etag not in (None, first)
        # Within one interval plus one request's time (generous: a loaded 2-core machine).
        assert took < interval + 5.0, took
    finally:
        refresher.stop()


def test_an_unchanged_blob_is_not_downloaded_again(blob, azurite):
    blob.upload_blob(with_greeting("Same."))
    holder = RulesHolder(packaged())
    refresher = RulesRefresher(holder, reader_for(blob, azurite), parse, interval=60, source="blob")
    assert refresher.check_once() == "loaded"
    before = holder.current
    assert [refresher.check_once() for _ in range(3)] == ["unchanged"] * 3  # If-None-Match -> 304
    assert holder.current is before  # no re-parse, no swap: the intake's accept bodies stay built


@pytest.mark.parametrize(("content", "problem"), [
    (json.dumps({**SHIPPED, "profiles": {**SHIPPED["profiles"], "reception": {
        **SHIPPED["profiles"]["reception"], "hours": {"timezone": "Mars/Base", "weekly": {"mon": ["09:00-17:00"]}}}}}
               ).encode(), "profiles.reception.hours.timezone: unknown time zone 'Mars/Base'"),
    (b'{"numbers": ', "ROUTING_RULES_URI: not JSON"),
    (b"\xff\xfe", "ROUTING_RULES_URI: not UTF-8 text"),
])
def test_an_invalid_blob_keeps_the_last_good_rules(blob, azurite, caplog, content, problem):
    blob.upload_blob(with_greeting("Good."))
    holder = RulesHolder(packaged())
    refresher = RulesRefresher(holder, reader_for(blob, azurite), parse, interval=60, source="blob")
    assert refresher.check_once() == "loaded"
    good = holder.version
    bad_etag = blob.upload_blob(content, overwrite=True)["etag"]
    before = rejected_count()
    caplog.set_level(logging.INFO, logger="switchboard.rules")

    assert refresher.check_once() == "rejected"
    assert holder.version is good
    [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    text = error.getMessage()
    assert problem in text and bad_etag in text and f"keeping ETag {good.etag}" in text
    assert rejected_count() == before + 1
    # The same bad version is said once, not every interval.
    assert refresher.check_once() == "unchanged"
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1
    # The next good version is taken.
    blob.upload_blob(with_greeting("Fixed."), overwrite=True)
    assert refresher.check_once() == "loaded"
    assert holder.current.profiles["reception"].greeting == "Fixed."


def test_an_oversized_or_unreadable_blob_keeps_the_rules(blob, azurite, caplog):
    holder = RulesHolder(packaged())
    rules = holder.current
    caplog.set_level(logging.WARNING, logger="switchboard.rules")
    refresher = RulesRefresher(holder, reader_for(blob, azurite), parse, interval=60, source="blob")
    before = rejected_count()
    assert refresher.check_once() == "unreadable"  # no blob yet (404)
    assert refresher.check_once() == "unreadable"
    assert [r.levelname for r in caplog.records] == ["WARNING"]  # said once while it lasts
    assert rejected_count() == before + 1
    blob.upload_blob(b" " * (MAX_RULES_BYTES + 1))
    assert refresher.check_once() == "unreadable"
    assert holder.current is rules


async def test_the_intake_uses_the_rules_current_at_each_delivery(standin, secret):
    holder = RulesHolder(packaged())
    intake = make_intake(standin.url, (secret,), rules=holder)  # type: ignore[arg-type]
    try:
        for n, instructions in enumerate(("First instructions.", "Second instructions.")):
            holder.swap(parse(with_greeting("Hi.", instructions)), f"etag{n}")
            body = incoming_body(call_id=f"rtc_u1_{n:032x}")
            wf = Workflow()
            result = await intake.handle(body, signed_headers(secret, body, msg_id=f"wh_{n}"), **wf.kwargs())
            assert result.body["status"] == "accepted"
            assert standin.actions("accept")[-1].json()["instructions"] == instructions
            [(_, call_input)] = wf.started
            # The call carries its profile: a later swap cannot change a call in progress.
            assert call_input["profile"]["instructions"] == instructions
    finally:
        await intake._cc.aclose()


def test_reads_race_free_with_swaps():
    # Readers on other threads see one whole version at a time, never a mix.
    a, b = parse(with_greeting("A.")), parse(with_greeting("B."))
    holder = RulesHolder(a, "a")
    stop = threading.Event()
    seen: set[tuple[str, str | None]] = set()

    def read() -> None:
        while not stop.is_set():
            v = holder.version
            seen.add((v.rules.profiles["reception"].greeting, v.etag))

    t = threading.Thread(target=read)
    t.start()
    for i in range(2000):
        holder.swap(*((b, "b") if i % 2 else (a, "a")))
    stop.set()
    t.join()
    assert seen <= {("A.", "a"), ("B.", "b")}


async def test_the_app_reloads_the_blob_without_a_restart(blob, azurite, monkeypatch, webhook_secret):
    # The app's own wiring (call_workflow/runtime.py): ROUTING_RULES_URI set, the packaged file serves until the first
    # check, the first invocation waits for that check, and a later publish reaches the running process.
    from call_workflow import runtime

    blob.upload_blob(with_greeting("From the blob."))
    env = {"AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
           "AZURE_OPENAI_AUTH": "api-key", "AZURE_OPENAI_API_KEY": "k", "WEBHOOK_SECRET": webhook_secret,
           "CALL_STORAGE_CONNECTION_STRING": azurite, "ROUTING_RULES_URI": blob.url,
           "ROUTING_RULES_REFRESH_SECONDS": "5"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    runtime.reset()
    try:
        runtime.load()
        rt = await runtime.get()
        assert rt.intake is not None
        holder = runtime.rules_holder()
        assert holder.current.profiles["reception"].greeting == "From the blob."
        blob.upload_blob(with_greeting("Published later."), overwrite=True)
        took = wait_for(lambda: holder.current.profiles["reception"].greeting == "Published later.", timeout=30)
        assert took < 5 + 5.0, took  # the 5 s interval, plus slack for a loaded machine
        assert rt.intake._current_rules() is holder.current
    finally:
        for loop_runtime in list(runtime._per_loop.values()):
            await loop_runtime.aclose()
        runtime.reset()


def app_env(blob, azurite: str, webhook_secret: str) -> dict[str, str]:
    return {"AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com", "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime",
            "AZURE_OPENAI_AUTH": "api-key", "AZURE_OPENAI_API_KEY": "k", "WEBHOOK_SECRET": webhook_secret,
            "CALL_STORAGE_CONNECTION_STRING": azurite, "ROUTING_RULES_URI": blob.url}


async def test_an_invalid_blob_at_start_up_leaves_the_packaged_rules(blob, azurite, monkeypatch, webhook_secret,
                                                                     caplog):
    from call_workflow import runtime

    etag = blob.upload_blob(b'{"numbers": {"*": "nobody"}, "profiles": {}}')["etag"]
    for name, value in app_env(blob, azurite, webhook_secret).items():
        monkeypatch.setenv(name, value)
    caplog.set_level(logging.WARNING, logger="switchboard.rules")
    runtime.reset()
    rt = None
    try:
        runtime.load()
        rt = await runtime.get()  # waits for the first check
        assert runtime.rules_holder().version.etag is None  # still the packaged file
        assert runtime.rules_holder().current.profiles["reception"].greeting == SHIPPED["profiles"]["reception"][
            "greeting"]
        [error] = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert etag in error.getMessage() and "profiles: at least one profile is required" in error.getMessage()
    finally:
        if rt is not None:
            await rt.aclose()
        runtime.reset()


def test_start_up_warns_when_every_explicit_holiday_is_past(tmp_path, webhook_secret):
    import subprocess
    import sys

    rules = copy.deepcopy(SHIPPED)
    rules["profiles"]["after_hours_demo"]["hours"]["holidays"] = ["2020-12-25"]
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(rules))
    env = {"PATH": "/usr/bin:/bin", "AZURE_OPENAI_ENDPOINT": "https://example.openai.azure.com",
           "AZURE_OPENAI_DEPLOYMENT": "gpt-realtime", "AZURE_OPENAI_AUTH": "api-key", "AZURE_OPENAI_API_KEY": "k",
           "WEBHOOK_SECRET": webhook_secret, "CALL_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
           "ROUTING_RULES_PATH": str(path)}
    code = "import logging; logging.basicConfig(); import function_app"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "hours.holidays is past" in line]
    assert len(warned) == 1 and "profiles.after_hours_demo" in warned[0] and "2020-12-25" in warned[0]
