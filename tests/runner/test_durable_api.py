"""The Durable HTTP API of the runner, driven by the real `DurableOrchestrationClient` inside HTTP functions
(start_new, create_check_status_response, get_status, get_status_by, get_status_all, raise_event, terminate),
and called directly with the status codes the SDK expects."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.runner.conftest import start_host
from tests.runner.sample_app import app as sample_app

FKEY = {"x-functions-key": "fkey-test"}


@pytest.fixture
async def host():
    h = await start_host(sample_app)
    yield h
    await h.stop()


async def _wait_state(http, host, instance_id, predicate, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with http.get(host.url_for(f"status/{instance_id}"), headers=FKEY) as r:
            body = await r.json()
        if predicate(body):
            return body
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"instance {instance_id} never reached the state: {body}")
        await asyncio.sleep(0.05)


async def test_start_new_status_event_and_completion_through_the_real_sdk_client(host, http):
    async with http.post(host.url_for("start/waiter?id=inst-1"), json={"n": 21}, headers=FKEY) as r:
        assert r.status == 202
        payload = await r.json()
        assert payload["id"] == "inst-1"
        # create_check_status_response rewrote the management URLs to the request's origin.
        assert payload["statusQueryGetUri"].startswith(f"{host.base_url}/runtime/webhooks/durabletask/instances/inst-1")
        assert r.headers["Location"] == payload["statusQueryGetUri"]

    body = await _wait_state(http, host, "inst-1", lambda b: (b.get("customStatus") or {}).get("state") == "waiting")
    assert body["runtimeStatus"] == "Running"
    assert body["input"] == {"n": 21}
    assert body["customStatus"] == {"state": "waiting", "doubled": 42}

    async with http.get(host.url_for("running"), headers=FKEY) as r:
        assert (await r.json()) == {"running": ["inst-1"], "all": ["inst-1"]}

    async with http.post(host.url_for("raise/inst-1/go"), json={"by": "test"}, headers=FKEY) as r:
        assert r.status == 202
    body = await _wait_state(http, host, "inst-1", lambda b: b["runtimeStatus"] == "Completed")
    assert body["output"] == {"doubled": 42, "go": {"by": "test"}}

    # The status URL handed out by create_check_status_response works as is: 200 once completed.
    async with http.get(payload["statusQueryGetUri"]) as r:
        assert r.status == 200
        assert (await r.json())["runtimeStatus"] == "Completed"

    async with http.get(host.url_for("running"), headers=FKEY) as r:
        assert (await r.json()) == {"running": [], "all": ["inst-1"]}

    # Raising an event into a finished instance: the API answers 410 and the SDK says it is gone.
    async with http.post(host.url_for("raise/inst-1/go"), json={}, headers=FKEY) as r:
        assert "is gone" in (await r.json())["error"]


async def test_unknown_instance_status_event_and_terminate(host, http):
    async with http.get(host.url_for("status/nope"), headers=FKEY) as r:
        assert r.status == 404 and (await r.json()) == {"found": False}
    async with http.post(host.url_for("raise/nope/go"), json={}, headers=FKEY) as r:
        assert "No instance with ID nope found" in (await r.json())["error"]
    async with http.post(host.url_for("terminate/nope"), headers=FKEY) as r:
        assert "No instance with ID 'nope' found" in (await r.json())["error"]


async def test_terminate_a_running_instance(host, http):
    async with http.post(host.url_for("start/waiter?id=inst-t"), json={"n": 1}, headers=FKEY) as r:
        assert r.status == 202
    await _wait_state(http, host, "inst-t", lambda b: b.get("runtimeStatus") == "Running")
    async with http.post(host.url_for("terminate/inst-t"), headers=FKEY) as r:
        assert r.status == 202
    body = await _wait_state(http, host, "inst-t", lambda b: b["runtimeStatus"] == "Terminated")
    assert body["runtimeStatus"] == "Terminated"
    # Terminating again: 410, which the SDK accepts silently.
    async with http.post(host.url_for("terminate/inst-t"), headers=FKEY) as r:
        assert r.status == 202


async def test_start_with_an_id_that_is_running_conflicts_and_unknown_orchestrator_is_400(host, http):
    base = host.rpc_base_url.rstrip("/")  # the SDK's private port: keyless
    async with http.post(f"{base}/orchestrators/waiter/dup", json=json.dumps({"n": 1})) as r:
        assert r.status == 202
    async with http.post(f"{base}/orchestrators/waiter/dup", json=json.dumps({"n": 1})) as r:
        assert r.status == 409
    async with http.post(f"{base}/orchestrators/nosuch", json=None) as r:
        assert r.status == 400
        assert "nosuch" in (await r.json())["ExceptionMessage"]
    # Through the SDK: start_new surfaces the conflict as an exception (the starter fails with 500).
    async with http.post(host.url_for("start/waiter?id=dup"), json={"n": 1}, headers=FKEY) as r:
        assert r.status == 500


async def test_list_filters_and_pages_with_a_continuation_token(host, http):
    base = host.rpc_base_url.rstrip("/")  # the SDK's private port: keyless
    for i in range(5):
        async with http.post(f"{base}/orchestrators/waiter/p{i}", json={"n": i}) as r:
            assert r.status == 202
    seen, token = [], None
    while True:
        headers = {"x-ms-continuation-token": token} if token else {}
        async with http.get(f"{base}/instances/?top=2&runtimeStatus=Running,Pending&showInput=false",
                            headers=headers) as r:
            assert r.status == 200
            page = await r.json()
            assert len(page) <= 2 and all("input" not in s for s in page)
            seen += [s["instanceId"] for s in page]
            token = r.headers.get("x-ms-continuation-token")
        if not token:
            break
    assert sorted(seen) == [f"p{i}" for i in range(5)]
    async with http.get(f"{base}/instances/?runtimeStatus=Completed") as r:
        assert await r.json() == []
    async with http.get(f"{base}/instances/?createdTimeFrom=2999-01-01T00:00:00Z") as r:
        assert await r.json() == []
    async with http.get(f"{base}/instances/?instanceIdPrefix=p3") as r:
        assert [s["instanceId"] for s in await r.json()] == ["p3"]


async def test_kill_activity_admin_hook_needs_the_master_key(host, http):
    base = f"{host.base_url}/admin/durable/instances"
    async with http.post(f"{base}/nope/kill-activity?name=double") as r:
        assert r.status == 401
    async with http.post(f"{base}/nope/kill-activity?name=double", headers={"x-functions-key": "mkey-test"}) as r:
        assert r.status == 404
    async with http.post(host.url_for("start/waiter?id=k1"), json={"n": 1}, headers=FKEY) as r:
        assert r.status == 202
    await _wait_state(http, host, "k1", lambda b: (b.get("customStatus") or {}).get("state") == "waiting")
    async with http.post(f"{base}/k1/kill-activity?name=double", headers={"x-functions-key": "mkey-test"}) as r:
        assert r.status == 409  # nothing running by that name any more
    async with http.post(f"{base}/k1/kill-activity", headers={"x-functions-key": "mkey-test"}) as r:
        assert r.status == 400


async def test_fail_starts_hook_makes_the_sdk_client_start_fail_then_recover(host, http):
    hook = f"{host.base_url}/admin/durable/fail-starts"
    async with http.post(f"{hook}?count=1") as r:
        assert r.status == 401
    async with http.post(f"{hook}?count=x", headers={"x-functions-key": "mkey-test"}) as r:
        assert r.status == 400
    async with http.post(f"{hook}?count=1", headers={"x-functions-key": "mkey-test"}) as r:
        assert r.status == 202 and await r.json() == {"failing_starts": 1}
    async with http.post(host.url_for("start/waiter?id=f1"), json={"n": 1}, headers=FKEY) as r:
        assert r.status == 500  # the SDK's start_new raised inside the HTTP function
    assert host.engine.get_status("f1") is None
    async with http.post(host.url_for("start/waiter?id=f1"), json={"n": 1}, headers=FKEY) as r:
        assert r.status == 202


async def test_instance_that_finishes_between_check_and_operation_answers_410(host, http, monkeypatch):
    # The engine can refuse an operation its status had just allowed (the instance ended in between): the API
    # answers 410 like for any finished instance, a status the SDK's raise_event/terminate understand.
    from localrun.durable import InstanceNotRunningError

    async def finished(*args, **kwargs):
        raise InstanceNotRunningError("finished in between")

    async with http.post(host.url_for("start/waiter?id=race-1"), json={"n": 1}, headers=FKEY) as r:
        assert r.status == 202
    await _wait_state(http, host, "race-1", lambda b: b["runtimeStatus"] == "Running")
    monkeypatch.setattr(host.engine, "raise_event", finished)
    monkeypatch.setattr(host.engine, "terminate", finished)
    base = f"{host.rpc_base_url}instances/race-1"
    async with http.post(f"{base}/raiseEvent/go", json={}) as r:
        assert r.status == 410
    async with http.post(f"{base}/terminate?reason=x") as r:
        assert r.status == 410
    async with http.post(f"{host.rpc_base_url}instances/nope/raiseEvent/go",
                         data=b"{bad") as r:
        assert r.status == 404  # an unknown instance is 404 even before its body is read


async def test_with_a_task_hub_folder_a_new_host_carries_on_where_the_last_one_stopped(http, tmp_path):
    first = await start_host(sample_app, task_hub_dir=str(tmp_path))
    try:
        assert "in memory" not in first.banner() and str(tmp_path) in first.banner()
        async with http.post(first.url_for("start/waiter?id=kept"), json={"n": 4}, headers=FKEY) as r:
            assert r.status == 202
        await _wait_state(http, first, "kept", lambda b: (b.get("customStatus") or {}).get("state") == "waiting")
    finally:
        await first.stop()

    second = await start_host(sample_app, task_hub_dir=str(tmp_path))
    try:
        body = await _wait_state(http, second, "kept", lambda b: b.get("found"))
        assert body["runtimeStatus"] == "Running" and body["customStatus"] == {"state": "waiting", "doubled": 8}
        async with http.post(second.url_for("raise/kept/go"), json={"by": "second host"}, headers=FKEY) as r:
            assert r.status == 202
        body = await _wait_state(http, second, "kept", lambda b: b["runtimeStatus"] == "Completed")
        assert body["output"] == {"doubled": 8, "go": {"by": "second host"}}
    finally:
        await second.stop()


async def test_without_a_task_hub_folder_state_is_in_memory(host):
    assert host.engine.store is None
    assert ", in memory)" in host.banner()
