"""Fixtures for the local runner's HTTP layer: a LocalHost on a free port, reached through real sockets."""

from __future__ import annotations

import aiohttp
import pytest

from localrun.host import HostConfig, LocalHost

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


async def start_host(app, task_hub_dir: str | None = None, listen: str = "127.0.0.1",
                     route_prefix: str = "api") -> LocalHost:
    # The sample apps name their routes without a prefix, as most Functions apps do: the host's default `api`
    # (Switchboard's own host.json sets it empty and writes `api/...` into its routes).
    host = LocalHost(HostConfig(app_dir=str(ROOT), host=listen, port=0, load_local_settings=False,
                                task_hub_dir=task_hub_dir, function_key="fkey-test", master_key="mkey-test",
                                route_prefix=route_prefix), app=app)
    await host.start()
    return host


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session
