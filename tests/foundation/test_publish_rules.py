"""scripts/publish_rules.py against a real blob on Azurite: it validates before uploading, and publishes carry an
ETag precondition so that concurrent publishes conflict cleanly (one wins, the other uploads nothing, exit code 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobServiceClient

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "publish_rules.py"
SHIPPED = json.loads((ROOT / "routing.json").read_text())


@pytest.fixture
def blob(azurite: str, unique_name: str):
    service = BlobServiceClient.from_connection_string(azurite)
    container = service.create_container(unique_name)
    yield container.get_blob_client("routing.json")
    container.delete_container()
    service.close()


def rules_file(tmp_path: Path, greeting: str, name: str | None = None) -> Path:
    rules = json.loads(json.dumps(SHIPPED))
    rules["profiles"]["reception"]["greeting"] = greeting
    path = tmp_path / (name or f"{greeting.strip('.').replace(' ', '_')}.json")
    path.write_text(json.dumps(rules))
    return path


def start(blob, azurite: str, *args: str | Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("ROUTING_RULES_URI", "CALL_STORAGE_CONNECTION_STRING")}
    env |= {"ROUTING_RULES_URI": blob.url, "CALL_STORAGE_CONNECTION_STRING": azurite}
    return subprocess.Popen([sys.executable, str(SCRIPT), *map(str, args)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run(blob, azurite: str, *args: str | Path) -> tuple[int, str, str]:
    proc = start(blob, azurite, *args)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def greeting_of(blob) -> str:
    return json.loads(blob.download_blob().readall())["profiles"]["reception"]["greeting"]


def test_an_invalid_file_is_never_uploaded(blob, azurite, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"numbers": {"*": "nobody"}, "profiles": SHIPPED["profiles"]}))
    code, _, err = run(blob, azurite, bad)
    assert code == 1
    assert "invalid: numbers.*: unknown profile 'nobody'" in err and "nothing was uploaded" in err
    with pytest.raises(ResourceNotFoundError):
        blob.get_blob_properties()


def test_two_concurrent_publishes_of_the_same_version_conflict_cleanly(blob, azurite, tmp_path):
    base = blob.upload_blob(json.dumps(SHIPPED))["etag"]
    procs = {name: start(blob, azurite, rules_file(tmp_path, name), "--if-match", base)
             for name in ("Edit by Ann.", "Edit by Bob.")}
    results = {name: (p.wait(timeout=60), p.stdout.read(), p.stderr.read()) for name, p in procs.items()}  # type: ignore[union-attr]
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 3], results
    [winner] = [name for name, (code, _, _) in results.items() if code == 0]
    [(_, _, loser_err)] = [r for r in results.values() if r[0] == 3]
    assert greeting_of(blob) == winner  # the winner's edit is there whole; the loser's is not mixed in
    assert f"changed since your version (ETag {base}" in loser_err and "Nothing was uploaded" in loser_err


def test_pull_edit_publish_cannot_overwrite_a_newer_version(blob, azurite, tmp_path):
    blob.upload_blob(json.dumps(SHIPPED))
    ann, bob = tmp_path / "ann.json", tmp_path / "bob.json"
    assert run(blob, azurite, "--pull", ann)[0] == 0
    assert run(blob, azurite, "--pull", bob)[0] == 0
    assert json.loads(ann.read_text()) == SHIPPED
    for path, greeting in ((ann, "Ann's."), (bob, "Bob's.")):
        rules = json.loads(path.read_text())
        rules["profiles"]["reception"]["greeting"] = greeting
        path.write_text(json.dumps(rules))
    code, out, _ = run(blob, azurite, ann)
    assert code == 0 and "published" in out
    code, _, err = run(blob, azurite, bob)  # Bob edited the version before Ann's
    assert code == 3 and "conflict" in err
    assert greeting_of(blob) == "Ann's."
    # Ann's copy now tracks the version she made: her next edit publishes.
    assert ann.with_name("ann.json.etag").read_text().strip() == blob.get_blob_properties().etag
    assert run(blob, azurite, ann)[0] == 0


def test_two_first_publishes_conflict_too(blob, azurite, tmp_path):
    # No blob yet: both uploads are If-None-Match: * ('--if-match ""': "I expect no rules blob"), so one creates it
    # and the other finds it there, whatever the timing.
    procs = {name: start(blob, azurite, rules_file(tmp_path, name), "--if-match", "") for name in ("One.", "Two.")}
    results = {name: (p.wait(timeout=60), p.stderr.read()) for name, p in procs.items()}  # type: ignore[union-attr]
    assert sorted(code for code, _ in results.values()) == [0, 3], results
    [winner] = [name for name, (code, _) in results.items() if code == 0]
    assert greeting_of(blob) == winner
    [loser_err] = [err for code, err in results.values() if code == 3]
    assert "changed since your version (no rules blob" in loser_err


def test_the_post_provision_upload_never_overwrites_published_rules(blob, azurite, tmp_path):
    shipped = ROOT / "routing.json"
    code, out, _ = run(blob, azurite, shipped, "--if-absent")
    assert code == 0 and "published" in out
    assert json.loads(blob.download_blob().readall()) == SHIPPED
    blob.upload_blob(json.dumps({**SHIPPED, "capacity": {"max_concurrent_calls": 3}}), overwrite=True)
    code, out, _ = run(blob, azurite, shipped, "--if-absent")  # a re-provision
    assert code == 0 and "left as it is" in out
    assert json.loads(blob.download_blob().readall())["capacity"] == {"max_concurrent_calls": 3}


def test_the_postprovision_hook_uploads_the_initial_rules(blob, azurite, monkeypatch):
    # scripts/register_webhook.py runs the upload after registering the webhook (azure.yaml postprovision).
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import register_webhook

    monkeypatch.setenv("ROUTING_RULES_URI", blob.url)
    monkeypatch.setenv("CALL_STORAGE_CONNECTION_STRING", azurite)
    assert register_webhook.upload_initial_rules(os.environ) == 0
    assert json.loads(blob.download_blob().readall()) == SHIPPED
    assert register_webhook.upload_initial_rules({}) == 0  # no rules blob configured: nothing to do
