"""SIP front door driven by the real sipp binary (UDP and TCP), with the sipp scenarios kept in emulator/sipp/."""

from __future__ import annotations

import asyncio
import shutil
import socket
from pathlib import Path

import pytest

from .helpers import ACCEPT_BODY, post

SIPP = shutil.which("sipp")
SCEN = Path(__file__).resolve().parents[2] / "emulator" / "sipp"
pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian package sip-tester)")
P = "/openai/v1/realtime/calls"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_running: list["Sipp"] = []


@pytest.fixture(autouse=True)
async def _no_sipp_outlives_its_test():
    # A failed assertion before sipp.wait() would otherwise leave sipp running until its own -timeout.
    yield
    while _running:
        sipp = _running.pop()
        sipp.kill()
        await sipp.proc.wait()


class Sipp:
    def __init__(self, tmp: Path, name: str, port: int, transport: str = "u1", pause_ms: int = 300,
                 scenario: str = "default", dialed: str = "+18005551212") -> None:
        self.tmp = tmp
        self.msg_file = tmp / f"{name}.msg.log"
        self.err_file = tmp / f"{name}.err.log"
        self.args = [SIPP, f"127.0.0.1:{port}", "-sf", str(SCEN / f"{name}.xml"), "-m", "1", "-l", "1",
                     "-p", str(_free_port()), "-i", "127.0.0.1", "-t", transport, "-timeout", "20s", "-timeout_error",
                     "-s", dialed, "-key", "caller", "+14255551212", "-key", "scenario", scenario, "-d", str(pause_ms),
                     "-trace_msg", "-message_file", str(self.msg_file), "-trace_err", "-error_file", str(self.err_file),
                     "-nostdin", "-bg"]

    def kill(self) -> None:
        if getattr(self, "proc", None) is not None and self.proc.returncode is None:
            self.proc.kill()

    async def start(self) -> "Sipp":
        _running.append(self)
        # -bg is not used with subprocess; strip it (kept out so that we can wait for the exit code).
        # cwd: sipp drops its own files (<scenario>_<pid>_errors.log ...) into its working directory.
        self.proc = await asyncio.create_subprocess_exec(*[a for a in self.args if a != "-bg"], cwd=self.tmp,
                                                         stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        return self

    async def wait(self, timeout: float = 25) -> int:
        try:
            _, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        except asyncio.TimeoutError:
            self.kill()
            await self.proc.wait()
            raise
        self.stderr = err.decode(errors="replace")
        return self.proc.returncode or 0

    def log(self) -> str:
        out = self.msg_file.read_text(errors="replace") if self.msg_file.exists() else ""
        err = self.err_file.read_text(errors="replace") if self.err_file.exists() else ""
        return out + "\n--- errors ---\n" + err + getattr(self, "stderr", "")


async def _sip_call(emu, timeout: float = 10.0):
    async def _w():
        while True:
            for c in emu.calls.values():
                if c.source == "sip":
                    return c
            await asyncio.sleep(0.02)
    return await asyncio.wait_for(_w(), timeout)


async def _acked(emu, call) -> None:
    dialog = next(d for d in emu.sip.dialogs.values() if d.call_id == call.call_id)
    await asyncio.wait_for(dialog.acked.wait(), 5)


@pytest.fixture
async def sip_emu(emulator_factory):
    return await emulator_factory(sip_port=0)


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_accept_then_platform_hangup_sends_bye(sip_emu, tmp_path, transport):
    sipp = await Sipp(tmp_path, "uac_accept_bye_recv", sip_emu.sip_port, transport).start()
    call = await _sip_call(sip_emu)
    headers = {h["name"]: h["value"] for h in call.sip_headers}
    assert headers["X-Customer-Id"] == "42" and "+14255551212" in headers["From"] and "Call-ID" in headers
    assert call.caller == "+14255551212" and call.dialed == "+18005551212"
    assert await post(sip_emu, f"{P}/{call.call_id}/accept", ACCEPT_BODY) == (200, b"")
    await _acked(sip_emu, call)
    assert await post(sip_emu, f"{P}/{call.call_id}/hangup") == (200, b"")
    rc = await sipp.wait()
    assert rc == 0, sipp.log()
    log = sipp.log()
    assert "SIP/2.0 180 Ringing" in log and "SIP/2.0 200 OK" in log and "BYE sip:" in log
    assert call.state == "ended" and call.ended_reason == "hangup"


@pytest.mark.parametrize("code", [486, 603, 404, 600])
async def test_reject_sends_the_chosen_status(sip_emu, tmp_path, code):
    sipp = await Sipp(tmp_path, "uac_reject", sip_emu.sip_port).start()
    call = await _sip_call(sip_emu)
    assert await post(sip_emu, f"{P}/{call.call_id}/reject", {"status_code": code}) == (200, b"")
    assert await sipp.wait() == 0, sipp.log()
    assert f"SIP/2.0 {code} " in sipp.log()
    assert call.state == "rejected"


async def test_reject_default_is_603_over_tcp(sip_emu, tmp_path):
    sipp = await Sipp(tmp_path, "uac_reject", sip_emu.sip_port, "t1").start()
    call = await _sip_call(sip_emu)
    assert await post(sip_emu, f"{P}/{call.call_id}/reject", {}) == (200, b"")
    assert await sipp.wait() == 0, sipp.log()
    assert "SIP/2.0 603 Decline" in sipp.log()


async def test_ring_timeout_answers_480(emulator_factory, tmp_path):
    emu = await emulator_factory(sip_port=0, ring_timeout_s=0.4)
    sipp = await Sipp(tmp_path, "uac_reject", emu.sip_port).start()
    call = await _sip_call(emu)
    assert await sipp.wait() == 0, sipp.log()
    assert "SIP/2.0 480 Temporarily Unavailable" in sipp.log()
    assert call.state == "expired" and call.ended_reason == "ring_timeout"


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_caller_bye_ends_call(sip_emu, tmp_path, transport):
    sipp = await Sipp(tmp_path, "uac_caller_hangup", sip_emu.sip_port, transport, pause_ms=400).start()
    call = await _sip_call(sip_emu)
    await post(sip_emu, f"{P}/{call.call_id}/accept", ACCEPT_BODY)
    assert await sipp.wait() == 0, sipp.log()
    assert await sip_emu.wait_for_state(call.call_id, "ended", 2) == "ended"
    assert call.ended_reason == "caller_hangup"


async def test_cancel_while_ringing(sip_emu, tmp_path):
    sipp = await Sipp(tmp_path, "uac_cancel", sip_emu.sip_port, pause_ms=300).start()
    call = await _sip_call(sip_emu)
    assert await sipp.wait() == 0, sipp.log()
    assert "SIP/2.0 487" in sipp.log()
    assert call.state == "expired" and call.ended_reason == "caller_cancelled"
    status, _ = await post(sip_emu, f"{P}/{call.call_id}/accept", ACCEPT_BODY)
    assert status == 404


@pytest.mark.parametrize("transport", ["u1", "t1"])
async def test_refer_sends_refer_then_bye(sip_emu, tmp_path, transport):
    sipp = await Sipp(tmp_path, "uac_refer", sip_emu.sip_port, transport).start()
    call = await _sip_call(sip_emu)
    await post(sip_emu, f"{P}/{call.call_id}/accept", ACCEPT_BODY)
    await _acked(sip_emu, call)
    assert await post(sip_emu, f"{P}/{call.call_id}/refer", {"target_uri": "tel:+14155550123"}) == (200, b"")
    assert await sipp.wait() == 0, sipp.log()
    assert "Refer-To: <tel:+14155550123>" in sipp.log()
    assert call.state == "ended" and call.ended_reason == "referred" and call.refer_target == "tel:+14155550123"


class RawUdp(asyncio.DatagramProtocol):
    """A bare UDP SIP peer: sends what the test writes and queues every datagram it receives."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.inbox.put_nowait(data.decode())

    async def next_status(self, timeout: float = 3.0) -> str:
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), timeout)
            if msg.startswith("SIP/2.0 "):
                return msg


def _request(method: str, call_id: str, cseq: str, port: int, extra: str = "") -> bytes:
    return (f"{method} sip:+18005551212@127.0.0.1:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:+14255551212@127.0.0.1>;tag=raw1\r\nTo: <sip:+18005551212@127.0.0.1>{extra}\r\n"
            f"Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContact: <sip:+14255551212@127.0.0.1:9>\r\n"
            "Content-Length: 0\r\n\r\n").encode()


async def test_udp_transactions_retransmissions_ack_and_481(sip_emu):
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(RawUdp, remote_addr=("127.0.0.1", sip_emu.sip_port))
    try:
        invite = _request("INVITE", "raw-call-1", "1 INVITE", sip_emu.sip_port)
        transport.sendto(invite)
        assert (await peer.next_status()).startswith("SIP/2.0 100 ")
        transport.sendto(invite)  # a retransmission gets the last answer again and places no second call
        assert (await peer.next_status()).startswith("SIP/2.0 100 ")
        call = await _sip_call(sip_emu)
        assert [c.source for c in sip_emu.calls.values()] == ["sip"]
        assert await post(sip_emu, f"{P}/{call.call_id}/reject", {"status_code": 486}) == (200, b"")
        first = await peer.next_status()
        assert first.startswith("SIP/2.0 486 ")
        # No ACK yet: the final response is retransmitted (T1 = 0.5 s), unchanged.
        assert await peer.next_status() == first
        to_tag = first.split("\r\nTo: ", 1)[1].split("\r\n", 1)[0].split(">", 1)[1]
        transport.sendto(_request("ACK", "raw-call-1", "1 ACK", sip_emu.sip_port, to_tag))
        await asyncio.sleep(1.2)  # longer than the next retransmission interval (1 s)
        assert peer.inbox.empty()
        # A CANCEL after the final response only gets its own 200; requests outside any dialog get 481.
        transport.sendto(_request("CANCEL", "raw-call-1", "1 CANCEL", sip_emu.sip_port))
        assert (await peer.next_status()).startswith("SIP/2.0 200 ")
        transport.sendto(_request("BYE", "raw-unknown", "2 BYE", sip_emu.sip_port))
        assert (await peer.next_status()).startswith("SIP/2.0 481 ")
        assert call.state == "rejected" and len(sip_emu.calls) == 1
    finally:
        transport.close()
