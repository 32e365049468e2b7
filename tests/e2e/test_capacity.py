"""The live-calls table through the whole stack: the webhook adds a call's row, the end of the call removes it, and
the daily purge runs against the real app (timer function -> SDK purge -> runner's Durable API)."""

from __future__ import annotations

import asyncio
import datetime as dt
import time

from localrun.stack import http_json
from shared.live_calls import PARTITION, LiveCallTable


def live_rows(stack) -> dict[str, dt.datetime]:
    async def read() -> dict[str, dt.datetime]:
        table = LiveCallTable.from_connection_string(stack.storage_connection_string)  # the default CALL_LIVE_TABLE
        try:
            rows = {}
            async for e in table._table.query_entities("PartitionKey eq @pk", parameters={"pk": PARTITION}):
                rows[e["RowKey"]] = e["expires"]
            return rows
        finally:
            await table.aclose()

    return asyncio.run(read())


def test_a_call_counts_while_it_is_live_and_not_after(phone, stack):
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_chatty")
    phone.wait_state(call_id, "accepted")
    deadline = time.monotonic() + 15
    while call_id not in (rows := live_rows(stack)):
        assert time.monotonic() < deadline, "the webhook never added the call's live row"
        time.sleep(0.1)
    # It expires at the latest moment the call can be live. With routing.json's 600 s maximum that is when the
    # orchestrator would give up retrying a failing hangup: the platform's 30-minute session cap + 1 min.
    left = rows[call_id] - dt.datetime.now(dt.UTC)
    assert dt.timedelta(seconds=1800) < left < dt.timedelta(seconds=1800 + 60 + 30)

    status, body = phone.operator("POST", f"calls/{call_id}/hangup")
    assert status == 202, body
    assert sipp.wait(30) == 0, sipp.log()
    phone.record(call_id)  # published: publish_call_record ran, and removed the row first
    assert call_id not in live_rows(stack)


def test_purge_history_runs_in_the_real_app_and_keeps_recent_calls(phone, stack):
    sipp, (call_id,) = phone.call("uac_accept_bye_recv", scenario="e2e_chatty")
    phone.wait_state(call_id, "accepted")
    status, _ = phone.operator("POST", f"calls/{call_id}/hangup")
    assert status == 202
    assert sipp.wait(30) == 0, sipp.log()
    phone.record(call_id)
    status, body = http_json("POST", f"{stack.app_url}/admin/functions/purge_history",
                             headers={"x-functions-key": stack.master_key})
    assert status == 202, body
    # Finished minutes ago, not HISTORY_RETENTION_DAYS ago: still there.
    assert phone.orchestration(call_id) is not None
    deadline = time.monotonic() + 10
    while not any("purged 0 finished orchestration(s)" in line for line in stack.logs("app")):
        assert time.monotonic() < deadline, "\n".join(stack.logs("app")[-20:])
        time.sleep(0.1)
    assert not any("timer purge_history failed" in line for line in stack.logs("app"))
