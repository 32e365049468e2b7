"""Routing rules from a real blob on Azurite: a published change takes effect without a restart, within the refresh
interval; an invalid or unreadable version keeps the last good rules (one ERROR line with the refused ETag, and the
switchboard.rules.rejected metric); the intake uses the rules current at each delivery."""

from __future__ import annotations

import copy
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from localrun.telemetry import memory
from shared.routing import RoutingRules, load_rules, parse_rules_text
from shared.rules_store import (
    MAX_RULES_BYTES,
    BlobRulesReader,
    RulesHolder,
    RulesRefresher,
    blob_client,
    connection_string_credential,
)

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


# The refresher's decisions against a stand-in reader: what it logs, counts and keeps, check by check.


class ReaderStandIn:
    """Answers each fetch in turn (the last one again when they run out): None (unchanged), (bytes, ETag) or an
    exception; records the ETag each fetch was conditional on."""

    def __init__(self, *answers: object) -> None:
        self.answers = list(answers)
        self.asked: list[str | None] = []

    def fetch(self, etag: str | None) -> tuple[bytes, str] | None:
        self.asked.append(etag)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer  # type: ignore[return-value]


def counted(name: str) -> dict[str, float]:
    """A counter's value by its ``reason`` attribute ('' when it has none)."""
    out: dict[str, float] = {}
    for metric, attributes, point in memory().metric_points():
        if metric == name:
            out[attributes.get("reason", "")] = out.get(attributes.get("reason", ""), 0) + point.value
    return out


def lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == "switchboard.rules"]


def test_an_outage_is_one_warning_until_the_blob_is_readable_again(caplog: pytest.LogCaptureFixture) -> None:
    reader = ReaderStandIn(OSError("x" * 500), TimeoutError("still down"), (with_greeting("Back."), '"e1"'),
                           TimeoutError("down again"))
    holder = RulesHolder(packaged())
    refresher = RulesRefresher(holder, reader, parse, interval=60, source="https://acct/rules/routing.json")
    before = counted("switchboard.rules.rejected")
    caplog.set_level(logging.INFO, logger="switchboard.rules")

    assert [refresher.check_once() for _ in range(4)] == ["unreadable", "unreadable", "loaded", "unreadable"]
    assert lines(caplog, logging.WARNING) == [
        f"routing rules https://acct/rules/routing.json unreadable (OSError: {'x' * 200}); keeping ETag None",
        'routing rules https://acct/rules/routing.json unreadable (TimeoutError: down again); keeping ETag "e1"']
    after = counted("switchboard.rules.rejected")
    assert after.get("unreadable", 0) == before.get("unreadable", 0) + 2
    assert after.get("invalid", 0) == before.get("invalid", 0)
    assert reader.asked == [None, None, None, '"e1"']  # an outage forgets no ETag
    assert holder.current.profiles["reception"].greeting == "Back."


def test_a_refused_version_is_said_once_and_not_fetched_again(caplog: pytest.LogCaptureFixture) -> None:
    bad = b'{"numbers": {"*": "nobody"}, "profiles": {}}'
    reader = ReaderStandIn((bad, '"e2"'), None, (b"[]", '"e3"'))
    holder = RulesHolder(packaged(), '"e1"')
    good = holder.version
    refresher = RulesRefresher(holder, reader, parse, interval=60, source="blob")
    before = counted("switchboard.rules.rejected")
    caplog.set_level(logging.INFO, logger="switchboard.rules")

    assert [refresher.check_once() for _ in range(3)] == ["rejected", "unchanged", "rejected"]
    assert holder.version is good
    assert reader.asked == [None, '"e2"', '"e2"']  # the refused ETag is remembered: an unchanged blob is a 304
    errors = lines(caplog, logging.ERROR)
    assert errors[0] == ('routing rules blob ETag "e2" rejected, keeping ETag "e1": profiles: at least one profile '
                         'is required')
    assert errors[1].startswith('routing rules blob ETag "e3" rejected, keeping ETag "e1": ')
    assert len(errors) == 2 and lines(caplog, logging.INFO) == []
    after = counted("switchboard.rules.rejected")
    assert after.get("invalid", 0) == before.get("invalid", 0) + 2
    assert after.get("unreadable", 0) == before.get("unreadable", 0)


def test_a_loaded_version_is_logged_counted_and_checked_after_the_swap(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, str | None]] = []
    holder = RulesHolder(packaged())
    reader = ReaderStandIn((with_greeting("New."), '"e7"'), None)
    refresher = RulesRefresher(holder, reader, parse, interval=60, source="blob",
                               on_loaded=lambda rules: seen.append((rules.profiles["reception"].greeting,
                                                                    holder.version.etag)))
    before = counted("switchboard.rules.loaded").get("", 0)
    caplog.set_level(logging.INFO, logger="switchboard.rules")

    assert refresher.check_once() == "loaded"
    assert seen == [("New.", '"e7"')]  # the check sees the rules already swapped in
    assert lines(caplog, logging.INFO) == [f'routing rules blob ETag "e7" loaded ({len(SHIPPED["profiles"])} '
                                           'profiles)']
    assert counted("switchboard.rules.loaded").get("", 0) == before + 1
    assert refresher.check_once() == "unchanged" and seen == [("New.", '"e7"')]


def test_a_failing_post_load_check_does_not_undo_the_reload(caplog: pytest.LogCaptureFixture) -> None:
    def broken(rules: RoutingRules) -> None:
        raise RuntimeError("warning hook broke")

    holder = RulesHolder(packaged())
    refresher = RulesRefresher(holder, ReaderStandIn((with_greeting("Kept."), '"e8"')), parse, interval=60,
                               source="blob", on_loaded=broken)
    caplog.set_level(logging.INFO, logger="switchboard.rules")
    assert refresher.check_once() == "loaded"
    assert (holder.current.profiles["reception"].greeting, holder.version.etag) == ("Kept.", '"e8"')
    [failed] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failed.getMessage() == "routing rules: post-load check failed" and failed.exc_info is not None


def test_the_refresher_checks_in_a_daemon_thread_until_stopped() -> None:
    reader = ReaderStandIn((with_greeting("Threaded."), '"e9"'), None)
    holder = RulesHolder(packaged())
    RulesRefresher(holder, reader, parse, interval=0.01, source="blob").stop()  # never started: nothing to stop
    refresher = RulesRefresher(holder, reader, parse, interval=0.01, source="blob")
    refresher.start()
    try:
        assert refresher.first_check.wait(20)
        assert holder.current.profiles["reception"].greeting == "Threaded."
        wait_for(lambda: len(reader.asked) >= 3)  # and again, every interval
        [thread] = [t for t in threading.enumerate() if t.name == "switchboard-rules"]
        assert thread.daemon  # never keeps a worker process from exiting
    finally:
        refresher.stop()
    assert not thread.is_alive()


def test_a_version_the_parser_trips_on_keeps_the_rules_and_later_versions_load(
        caplog: pytest.LogCaptureFixture) -> None:
    def fragile(data: bytes) -> RoutingRules:
        if data == b"trips":
            raise TypeError("'NoneType' object is not subscriptable")
        return parse(data)

    holder = RulesHolder(packaged(), '"e0"')
    good = holder.version
    reader = ReaderStandIn((b"trips", '"e1"'), (with_greeting("Next."), '"e2"'))
    refresher = RulesRefresher(holder, reader, fragile, interval=60, source="blob")
    before = counted("switchboard.rules.rejected").get("invalid", 0)
    caplog.set_level(logging.INFO, logger="switchboard.rules")
    assert refresher.check_once() == "rejected"
    assert holder.version is good
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert error.getMessage() == 'routing rules blob ETag "e1" could not be checked, keeping ETag "e0"'
    assert error.exc_info is not None  # the traceback, for the bug report
    assert counted("switchboard.rules.rejected").get("invalid", 0) == before + 1
    assert refresher.check_once() == "loaded"  # the refresher lives on
    assert holder.current.profiles["reception"].greeting == "Next."


@pytest.mark.parametrize(("connection_string", "account", "key"), [
    ("DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vd==;"
     "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;", "devstoreaccount1", "Eby8vd=="),
    ("AccountKey=a2V5;AccountName=acct;EndpointSuffix=core.windows.net", "acct", "a2V5"),
    ("AccountName=acct;;junk;AccountKey=k=", "acct", "k="),
])
def test_the_account_and_key_of_a_connection_string(connection_string: str, account: str, key: str) -> None:
    assert connection_string_credential(connection_string) == {"account_name": account, "account_key": key}


@pytest.mark.parametrize("connection_string", ["UseDevelopmentStorage=true", "AccountName=acct", "AccountKey=k",
                                               "", "accountname=acct;accountkey=k"])
def test_a_connection_string_without_account_and_key_is_refused(connection_string: str) -> None:
    with pytest.raises(ValueError, match="^the storage connection string has no AccountName/AccountKey$"):
        connection_string_credential(connection_string)


def test_the_blob_client_uses_the_account_key_locally_and_an_identity_in_azure(azurite: str) -> None:
    uri = "https://acct.blob.core.windows.net/rules/routing.json"
    local = blob_client(uri, connection_string=azurite)
    assert local.credential.account_name == "devstoreaccount1"
    assert (local.container_name, local.blob_name) == ("rules", "routing.json")
    developer = blob_client(uri)
    assert type(developer.credential).__name__ == "DefaultAzureCredential"  # a developer's own sign-in


@pytest.fixture
def identity_endpoint(monkeypatch: pytest.MonkeyPatch):
    """The Functions host's managed identity endpoint (IDENTITY_ENDPOINT), standing in: the token requests it got."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            asked.append(self.path)
            body = json.dumps({"access_token": "token", "expires_on": "9999999999", "token_type": "Bearer",
                               "resource": "https://storage.azure.com"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("IDENTITY_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}/msi/token")
    monkeypatch.setenv("IDENTITY_HEADER", "from-the-host")
    yield asked
    server.shutdown()


def test_in_azure_the_blob_is_read_as_the_apps_user_assigned_identity(identity_endpoint: list[str]) -> None:
    client = blob_client("https://acct.blob.core.windows.net/rules/routing.json",
                         client_id="00000000-0000-0000-0000-000000000001")
    assert client.credential.get_token("https://storage.azure.com/.default").token == "token"
    [asked] = identity_endpoint
    assert "client_id=00000000-0000-0000-0000-000000000001" in asked


def test_a_blob_of_up_to_one_megabyte_is_read_and_a_larger_one_is_not(blob, azurite, caplog) -> None:
    made: list[int] = []

    def make() -> object:
        made.append(1)
        return blob_client(blob.url, connection_string=azurite)

    holder = RulesHolder(packaged())
    refresher = RulesRefresher(holder, BlobRulesReader(make), parse, interval=60, source="blob")
    caplog.set_level(logging.WARNING, logger="switchboard.rules")
    blob.upload_blob(b" " * 1_000_000)  # docs/routing.md: over 1 MB is unreadable
    assert refresher.check_once() == "rejected"  # read, and refused as not JSON
    blob.upload_blob(b" " * 1_000_001, overwrite=True)
    assert refresher.check_once() == "unreadable"
    assert lines(caplog, logging.WARNING)[-1].startswith(
        "routing rules blob unreadable (RulesTooLargeError: 1000001 bytes, over 1000000)")
    assert made == [1]  # one client for every check
