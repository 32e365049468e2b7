"""Oversized request bodies are refused before they are buffered (`FUNCTIONS_REQUEST_BODY_SIZE_LIMIT`).

Measured on the runner process itself: 64 concurrent 15 MiB uploads to the anonymous webhook, half with a
Content-Length and half chunked, must each get 413 while the runner's peak resident memory grows by less than
50 MiB (it used to buffer every body in full before the intake's size check: ~700 MiB more, never given back).
"""

from __future__ import annotations

import asyncio
import sys

import pytest

from tests.runner.runner_process import RunnerProcess, example_settings

pytestmark = [pytest.mark.timeout(180),
              pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/status")]

MIB = 1024 * 1024
BODY = 15 * MIB
PIECE = b"x" * (64 * 1024)


async def post(port: int, total: int, chunked: bool, path: str = "/api/calls/incoming") -> int:
    """POST `total` bytes (sent as they are accepted) and return the status the server answers with."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {total}"
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                 f"{framing}\r\n\r\n".encode())

    async def send() -> None:
        sent = 0
        try:
            while sent < total:
                piece = PIECE[: total - sent]
                writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if chunked else piece)
                await writer.drain()
                sent += len(piece)
            if chunked:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
        except OSError:  # the server answered and closed while we were still sending: expected
            pass

    sender = asyncio.create_task(send())
    try:
        status_line = await asyncio.wait_for(reader.readline(), 90)
    finally:
        sender.cancel()
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    return int(status_line.split()[1])


@pytest.fixture(scope="module")
def runner():
    r = RunnerProcess()
    yield r
    r.stop()


def test_the_app_caps_request_bodies_at_the_webhooks_own_limit():
    from localrun.host.server import DEFAULT_BODY_LIMIT, body_limit_from_env
    from shared.intake import MAX_BODY_BYTES

    assert body_limit_from_env(example_settings()) == MAX_BODY_BYTES
    assert body_limit_from_env({}) == DEFAULT_BODY_LIMIT == 100 * MIB
    for bad in ("0", "-1", "1e6", "lots", "１２"):
        with pytest.raises(ValueError, match="FUNCTIONS_REQUEST_BODY_SIZE_LIMIT"):
            body_limit_from_env({"FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": bad})


async def test_concurrent_oversized_and_chunked_bodies_get_413_without_growing_the_runner(runner):
    # Warm up the paths (first request, first 413) so the baseline is the steady state.
    assert await post(runner.port, BODY, chunked=False) == 413
    assert await post(runner.port, BODY, chunked=True) == 413
    baseline = runner.rss_mib()
    statuses = await asyncio.gather(*(post(runner.port, BODY, chunked=i % 2 == 1) for i in range(64)))
    assert statuses == [413] * 64
    growth = runner.peak_rss_mib() - baseline
    print(f"runner RSS {baseline:.0f} MiB before, peak {runner.peak_rss_mib():.0f} MiB: +{growth:.1f} MiB "
          f"(goal < 50 MiB)")
    assert growth < 50, f"the runner's resident memory grew by {growth:.0f} MiB"


async def test_a_body_under_the_cap_still_reaches_the_webhook(runner):
    # 200 KiB of junk: under the cap, so the intake itself answers (401: it is not signed).
    assert await post(runner.port, 200 * 1024, chunked=False) == 401
    assert await post(runner.port, 200 * 1024, chunked=True) == 401


def test_a_bad_limit_stops_the_runner_with_a_message_naming_the_setting():
    import subprocess

    from tests.runner.runner_process import ROOT

    env = {**example_settings(), "PATH": "/usr/bin:/bin", "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT": "lots"}
    result = subprocess.run([sys.executable, "-m", "localrun", "--port", "0", "--no-local-settings"], check=False,
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT must be a positive number of bytes, got 'lots'" in result.stderr
    assert "Traceback" not in result.stderr
