"""What an outsider can make the runner write into its log, read from the runner process's own output.

* A request path with `%0d%0a` or a signed event whose `type` holds CR/LF and ANSI escapes cannot start a log line
  of their own: the shared.logsafe filter escapes them.
* A request aiohttp cannot even parse is one WARNING line, not an ERROR with a traceback.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from shared.webhook import sign
from tests.runner.runner_process import RunnerProcess, example_settings

pytestmark = pytest.mark.timeout(120)

INJECTED = "INJECTED 2026-11-30 00:00:00,000 ERROR forged"


@pytest.fixture(scope="module")
def runner():
    r = RunnerProcess()
    yield r
    r.stop()


async def raw_request(port: int, data: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.readline(), 30)
    finally:
        writer.close()


def lines_after(runner: RunnerProcess, mark: int) -> list[str]:
    return runner.lines[mark:]


async def test_a_crlf_in_the_request_path_cannot_forge_a_log_line(runner):
    mark = len(runner.lines)
    path = "/api/calls/x%0d%0a" + INJECTED.replace(" ", "%20") + "%1b%5b31m"
    status = await raw_request(runner.port, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    assert status.startswith(b"HTTP/1.1 4"), status
    line = runner.wait_for_line("x\\r\\nINJECTED", start=mark)
    assert "\\x1b[31m" in line and "\x1b" not in line
    assert not any(ln.startswith("INJECTED") for ln in lines_after(runner, mark))


async def test_a_signed_event_type_with_crlf_and_ansi_is_logged_escaped(runner):
    mark = len(runner.lines)
    secret = example_settings()["WEBHOOK_SECRET"]
    body = json.dumps({"object": "event", "id": "evt_1", "type": "realtime.call.x\r\n" + INJECTED + "\x1b[2J",
                       "created_at": int(time.time()), "data": {"call_id": "rtc_log1"}}).encode()
    ts = int(time.time())
    head = (f"POST /api/calls/incoming HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nwebhook-id: wh_log1\r\nwebhook-timestamp: {ts}\r\n"
            f"webhook-signature: {sign(secret, 'wh_log1', ts, body)}\r\n\r\n").encode()
    status = await raw_request(runner.port, head + body)
    assert status.startswith(b"HTTP/1.1 200"), status  # an unknown event type is acknowledged and ignored
    line = runner.wait_for_line("ignored: event type", start=mark)
    assert "realtime.call.x\\r\\nINJECTED" in line and "\x1b" not in line
    assert not any(ln.startswith("INJECTED") for ln in lines_after(runner, mark))


@pytest.mark.parametrize("request_bytes", [
    b"GET /api/calls HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET /\x01\x1b[31m HTTP/1.1\r\nHost: x\r\n\r\n",
    b"POST /api/calls/incoming HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /api/calls HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
], ids=["content-length", "control-in-path", "chunk-size", "header-line"])
async def test_a_malformed_request_is_one_warning_line_without_a_traceback(runner, request_bytes):
    mark = len(runner.lines)
    status = await raw_request(runner.port, request_bytes)
    assert status.split(b" ")[1] == b"400", status
    line = runner.wait_for_line("malformed HTTP request from 127.0.0.1: 400", start=mark)
    assert " WARNING " in line and "\x1b" not in line
    # Let anything else it might log arrive, then check there was nothing more.
    await raw_request(runner.port, b"GET /admin/host/ping HTTP/1.1\r\nHost: x\r\n\r\n")
    new = lines_after(runner, mark)
    assert not [ln for ln in new if "Traceback" in ln or " ERROR " in ln], new
    assert len([ln for ln in new if "malformed HTTP request" in ln]) == 1, new
