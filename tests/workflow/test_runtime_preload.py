"""The start-up preload runs in a background thread (call_workflow/runtime.py), and no invocation builds the clients
beside it: two threads importing overlapping module graphs in different orders can trip CPython's import deadlock
detection. Seen under the local runner as `_DeadlockError: deadlock detected by _ModuleLock('httpcore._backends.
anyio')` when the first operator request arrived while the preload was still importing."""

from __future__ import annotations

import asyncio
import threading

import pytest


@pytest.fixture
def app_env(monkeypatch, azurite_connection_string, webhook_secret):
    from call_workflow import runtime

    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("AZURE_OPENAI_DEPLOYMENT", "gpt-realtime")
    monkeypatch.setenv("AZURE_OPENAI_AUTH", "api-key")
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "k")
    monkeypatch.setenv("WEBHOOK_SECRET", webhook_secret)
    monkeypatch.setenv("CALL_STORAGE_CONNECTION_STRING", azurite_connection_string)
    runtime.reset()
    yield runtime
    runtime.reset()


async def test_the_first_invocations_wait_for_the_preload_then_build_the_clients_once(app_env, monkeypatch):
    runtime = app_env
    release = threading.Event()
    events: list[str] = []

    def slow_preload(settings) -> None:  # stands in for a long import holding module locks
        events.append("preload started")
        release.wait(10)
        events.append("preload done")

    real_build = runtime._build

    def build(settings, rules):
        events.append("build")
        return real_build(settings, rules)

    monkeypatch.setattr(runtime, "_preload", slow_preload)
    monkeypatch.setattr(runtime, "_build", build)
    runtime.load()
    first = asyncio.create_task(runtime.get())
    second = asyncio.create_task(runtime.get())
    await asyncio.sleep(0.3)
    assert events == ["preload started"] and not first.done()  # waiting, not importing beside the preload
    release.set()
    rt1, rt2 = await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert events == ["preload started", "preload done", "build"]  # after the preload, and only once
    assert rt1 is rt2
    await rt1.aclose()
