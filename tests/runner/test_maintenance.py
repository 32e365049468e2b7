"""History retention on the runner: the real `purge_history` timer function, the SDK's purge call through the
runner's Durable API (DELETE instances/?...), the timer scheduler, and the live-calls sweep on Azurite."""

from __future__ import annotations

import asyncio
import datetime as dt

import azure.durable_functions as df
import pytest

from localrun.durable.seed import seed, snapshot
from localrun.durable.store import TaskHubStore
from localrun.host import HostConfig, LocalHost
from shared.history import HistoryQuery
from shared.records import decision_record
from tests.runner.conftest import ROOT
from tests.runner.maintenance_app import app as maintenance_app
from tests.runner.maintenance_app import ticks

MKEY = {"x-functions-key": "mkey-test"}
NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
def app_env(monkeypatch, azurite_connection_string, webhook_secret, unique_name):
    from call_workflow import runtime

    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", "gpt-realtime")
    monkeypatch.setenv("AZURE_OPENAI_AUTH", "api-key")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "k")
    monkeypatch.setenv("WEBHOOK_SECRET", webhook_secret)
    monkeypatch.setenv("CALL_STORAGE_CONNECTION_STRING", azurite_connection_string)
    monkeypatch.setenv("CALL_LIVE_TABLE", "live" + unique_name.replace("-", "")[:20])
    monkeypatch.setenv("CALL_HISTORY_TABLE", "hist" + unique_name.replace("-", "")[:20])
    monkeypatch.setenv("HISTORY_RETENTION_DAYS", "30")
    runtime.reset()
    yield
    runtime.reset()


async def start(tmp_path, run_timers: bool = False) -> LocalHost:
    # retention=None: the engine's own purge-at-start stays out of the way; the timer function does the purging.
    host = LocalHost(HostConfig(app_dir=str(ROOT), port=0, load_local_settings=False, task_hub_dir=str(tmp_path),
                                function_key="fkey-test", master_key="mkey-test", run_timers=run_timers,
                                engine_options={"retention": None}), app=maintenance_app)
    await host.start()
    return host


async def test_purge_timer_deletes_only_finished_calls_older_than_the_retention(app_env, tmp_path, http):
    store = TaskHubStore(tmp_path / "switchboard")
    seed(store, [
        snapshot("old-completed", "call", NOW - 40 * DAY, "Completed"),
        snapshot("old-failed", "call", NOW - 31 * DAY, "Failed"),
        snapshot("old-terminated", "call", NOW - 90 * DAY, "Terminated"),
        snapshot("old-running", "call", NOW - 45 * DAY, "Running"),  # a call still live is never purged
        snapshot("recent-completed", "call", NOW - 29 * DAY, "Completed"),
    ])
    host = await start(tmp_path)
    try:
        from call_workflow import runtime

        live = (await runtime.get()).live
        await live.add("rtc_leaked", NOW - dt.timedelta(minutes=1))
        await live.add("rtc_live", NOW + dt.timedelta(minutes=30))
        history = (await runtime.get()).history  # the console's call history keeps the same days
        for call_id, age in (("rtc_old", 31 * DAY), ("rtc_recent", 29 * DAY)):
            await history.upsert(decision_record(call_id, "rejected", "after_hours", sip_status=480, caller=None,
                                                 dialed=None, profile_name="closed",
                                                 decided_at=(NOW - age).isoformat().replace("+00:00", "Z")))

        async with http.post(f"{host.base_url}/admin/functions/purge_history", headers=MKEY) as r:
            assert r.status == 202
        left = sorted(s["instanceId"] for s in host.engine.list_instances())
        assert left == ["old-running", "recent-completed"]
        assert sorted(p.name for p in store.directory.glob("*.json")) == ["old-running.json", "recent-completed.json"]
        assert await live.count(NOW) == 1  # the expired row was swept, the live one kept
        assert await live.count(NOW - dt.timedelta(minutes=5)) == 1
        kept, _ = await history.search(HistoryQuery((NOW - 31 * DAY).date(), (NOW - 29 * DAY).date()), limit=100)
        assert [r["call_id"] for r in kept] == ["rtc_recent"]

        # Nothing left to purge: the API answers 404 and the SDK reports 0, which the function takes in its stride.
        client = df.DurableOrchestrationClient(host.durable.client_binding())
        result = await client.purge_instance_history_by(created_time_from=NOW - 400 * DAY,
                                                        created_time_to=NOW - 30 * DAY,
                                                        runtime_status=[df.OrchestrationRuntimeStatus.Completed])
        assert result.instances_deleted == 0
        async with http.post(f"{host.base_url}/admin/functions/purge_history", headers=MKEY) as r:
            assert r.status == 202
        assert len(host.engine.list_instances()) == 2
    finally:
        await host.stop()


async def test_purge_api_by_id_and_its_refusals(app_env, tmp_path, http):
    store = TaskHubStore(tmp_path / "switchboard")
    seed(store, [snapshot("done", "call", NOW - DAY, "Completed"), snapshot("live", "call", NOW - DAY, "Running")])
    host = await start(tmp_path)
    try:
        client = df.DurableOrchestrationClient(host.durable.client_binding())
        assert (await client.purge_instance_history("live")).instances_deleted == 0  # running: not purged
        assert (await client.purge_instance_history("done")).instances_deleted == 1
        assert (await client.purge_instance_history("done")).instances_deleted == 0
        base = f"{host.base_url}/runtime/webhooks/durabletask/instances/"  # the app's port: the master key
        async with http.delete(base, params={"runtimeStatus": "Completed"}, headers=MKEY) as r:
            assert r.status == 400  # no createdTimeFrom: refused, as the extension does
        async with http.delete(
            base, params={"createdTimeFrom": "2020-01-01T00:00:00Z", "runtimeStatus": "Running"}, headers=MKEY
        ) as r:
            assert r.status == 400 and "running" in (await r.json())["ExceptionMessage"]
        async with http.delete(base, params={"createdTimeFrom": "yesterday"}, headers=MKEY) as r:
            assert r.status == 400
        assert [s["instanceId"] for s in host.engine.list_instances()] == ["live"]
    finally:
        await host.stop()


async def test_timer_functions_run_on_their_schedule_and_on_demand(app_env, tmp_path, http):
    ticks.clear()
    host = await start(tmp_path, run_timers=True)
    try:
        deadline = asyncio.get_running_loop().time() + 15
        while len(ticks) < 3:  # run_on_startup, then at least two scheduled seconds
            assert asyncio.get_running_loop().time() < deadline, f"only {len(ticks)} ticks"
            await asyncio.sleep(0.05)
        assert all(t.schedule_status.get("Next") for t in ticks)
        async with http.post(f"{host.base_url}/admin/functions/every_second") as r:
            assert r.status == 401
        async with http.post(f"{host.base_url}/admin/functions/nope", headers=MKEY) as r:
            assert r.status == 404
        assert "every_second: timerTrigger (* * * * * * UTC)" in host.banner()
    finally:
        await host.stop()
    count = len(ticks)
    await asyncio.sleep(1.5)
    assert len(ticks) == count  # stopped with the host
