"""SIP front door driven by the real sipp binary (UDP and TCP), with the sipp scenarios kept in emulator/sipp/."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import websockets

from emulator.__main__ import webhook_secret_problem
from emulator.webhooks import new_secret

from .helpers import ACCEPT_BODY, Receiver, connect, drain, post

SIPP = shutil.which("sipp")
SCEN = Path(__file__).resolve().parents[2] / "emulator" / "sipp"
pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp is not installed (Debian package sip-tester)")
P = "/openai/v1/realtime/calls"


def _free_port() -> int:
    """A port free for UDP and TCP alike: sipp -t t1 binds TCP on it (a UDP-only check made TCP runs collide)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            try:
                tcp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no port free for both UDP and TCP")


_running: list[Sipp] = []


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

    async def start(self) -> Sipp:
        _running.append(self)
        # -bg is not used with subprocess; strip it (kept out so that we can wait for the exit code).
        # cwd: sipp drops its own files (<scenario>_<pid>_errors.log ...) into its working directory.
        self.proc = await asyncio.create_subprocess_exec(
            *[a for a in self.args if a != "-bg"],
            cwd=self.tmp,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        return self

    async def wait(self, timeout: float = 25) -> int:
        try:
            _, err = await asyncio.wait_for(self.proc.communicate(), timeout)
        except TimeoutError:
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
    await asyncio.wait_for(call.leg.acked.wait(), 5)


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


class RawPeer:
    """A bare SIP peer over UDP or TCP: sends what the test writes and queues every message it receives."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[str] = asyncio.Queue()
        self.arrivals: list[tuple[float, str]] = []  # (loop time, message) of everything received, as it arrived

    def received(self, msg: str) -> None:
        self.arrivals.append((asyncio.get_running_loop().time(), msg))
        self.inbox.put_nowait(msg)

    @classmethod
    async def open(cls, port: int, transport: str = "UDP") -> RawPeer:
        peer = cls()
        loop = asyncio.get_running_loop()
        if transport == "UDP":
            peer._udp, _ = await loop.create_datagram_endpoint(lambda: _UdpInbox(peer),
                                                               remote_addr=("127.0.0.1", port))
            peer.send = peer._udp.sendto
            peer.local = peer._udp.get_extra_info("sockname")
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            peer._writer = writer
            peer.send = writer.write
            peer.local = writer.get_extra_info("sockname")
            peer._pump = asyncio.create_task(_tcp_pump(reader, peer))
        peer.transport = transport
        return peer

    def close(self) -> None:
        if self.transport == "UDP":
            self._udp.close()
        else:
            self._pump.cancel()
            self._writer.close()

    async def next(self, start: str, timeout: float = 5.0) -> str:
        """The next message whose start line begins with `start` ("SIP/2.0 " for any response, "BYE " ...)."""
        while True:
            msg = await asyncio.wait_for(self.inbox.get(), timeout)
            if msg.startswith(start):
                return msg

    async def next_status(self, timeout: float = 5.0) -> str:
        return await self.next("SIP/2.0 ", timeout)


class _UdpInbox(asyncio.DatagramProtocol):
    def __init__(self, peer: RawPeer) -> None:
        self.peer = peer

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self.peer.received(data.decode(errors="replace"))


async def _tcp_pump(reader: asyncio.StreamReader, peer: RawPeer) -> None:
    try:
        while True:
            head = (await reader.readuntil(b"\r\n\r\n")).decode(errors="replace")
            length = int(_header(head, "Content-Length") or 0)
            body = (await reader.readexactly(length)).decode(errors="replace") if length else ""
            peer.received(head + body)
    except (asyncio.IncompleteReadError, ConnectionError):
        peer.received("<closed>")


def _header(msg: str, name: str) -> str:
    for line in msg.split("\r\n\r\n", 1)[0].split("\r\n")[1:]:
        key, _, value = line.partition(":")
        if key.strip().lower() == name.lower():
            return value.strip()
    return ""


def _request(method: str, call_id: str, cseq: str, port: int, extra: str = "", *, branch: str = "",
             from_tag: str = "raw1", transport: str = "UDP", headers: dict | None = None, body: str = "") -> bytes:
    """A request of a raw peer; `extra` goes after the To URI (e.g. ";tag=..."); `headers` overrides (None drops)."""
    hs = {"Via": f"SIP/2.0/{transport} 127.0.0.1:9;branch={branch or 'z9hG4bK' + call_id}", "Max-Forwards": "70",
          "From": f"<sip:+14255551212@127.0.0.1>;tag={from_tag}", "To": f"<sip:+18005551212@127.0.0.1>{extra}",
          "Call-ID": call_id, "CSeq": cseq, "Contact": "<sip:+14255551212@127.0.0.1:9>",
          "Content-Length": str(len(body.encode()))}
    for key, value in (headers or {}).items():
        if value is None:
            hs.pop(key, None)
        else:
            hs[key] = value
    lines = [f"{method} sip:+18005551212@127.0.0.1:{port} SIP/2.0"] + [f"{k}: {v}" for k, v in hs.items()]
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


def _reply(request: str, status: int, reason: str = "OK") -> bytes:
    """The raw peer's response to a request the emulator sent (Via, From, To, Call-ID and CSeq copied)."""
    copied = [f"{n}: {_header(request, n)}" for n in ("Via", "From", "To", "Call-ID", "CSeq")]
    return ("\r\n".join([f"SIP/2.0 {status} {reason}"] + copied + ["Content-Length: 0"]) + "\r\n\r\n").encode()


def _to_tag(response: str) -> str:
    return _header(response, "To").split(";tag=", 1)[1]


async def test_udp_transactions_retransmissions_ack_and_481(sip_emu):
    peer = await RawPeer.open(sip_emu.sip_port)
    transport = peer._udp
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
        transport.sendto(_request("ACK", "raw-call-1", "1 ACK", sip_emu.sip_port, ";tag=" + _to_tag(first)))
        await asyncio.sleep(1.2)  # longer than the next retransmission interval (1 s)
        assert peer.inbox.empty()
        # A CANCEL after the final response only gets its own 200; requests outside any dialog get 481.
        transport.sendto(_request("CANCEL", "raw-call-1", "1 CANCEL", sip_emu.sip_port))
        assert (await peer.next_status()).startswith("SIP/2.0 200 ")
        transport.sendto(_request("BYE", "raw-unknown", "2 BYE", sip_emu.sip_port))
        assert (await peer.next_status()).startswith("SIP/2.0 481 ")
        assert call.state == "rejected" and len(sip_emu.calls) == 1
    finally:
        peer.close()


# ---------------------------------------------------------------------------------------------- malformed requests

MALFORMED = {
    # RFC 3261 §8.1.1: the six header fields every request carries.
    "no To": ({"To": None}, "Missing To Header"),
    "no From": ({"From": None}, "Missing From Header"),
    "no Call-ID": ({"Call-ID": None}, "Missing Call-ID Header"),
    "no CSeq": ({"CSeq": None}, "Missing CSeq Header"),
    "no Via": ({"Via": None}, "Missing Via Header"),
    "no Max-Forwards": ({"Max-Forwards": None}, "Missing Max-Forwards Header"),
    "CSeq abc": ({"CSeq": "abc"}, "Bad CSeq"),
    "CSeq of another method": ({"CSeq": "1 BYE"}, "CSeq Method Does Not Match Request"),
    # RFC 3261 §18.3: the datagram ends before the body it announces.
    "Content-Length beyond the datagram": ({"Content-Length": "400"}, "Content-Length Exceeds Datagram"),
}


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


def _problems(caplog) -> tuple[list[str], list[str]]:
    """(WARNING lines of the emulator, ERROR-or-worse lines about the emulator's code, asyncio's included).

    asyncio's own ERRORs (an exception in a protocol callback or a task) count when their traceback passes through
    emulator/; others are left out (e.g. an earlier test's HTTP client collected during this one).
    """
    def _text(r: logging.LogRecord) -> str:
        return r.getMessage() + (logging.Formatter().formatException(r.exc_info) if r.exc_info else "")

    warnings = [
        r.getMessage() for r in caplog.records if r.name.startswith("emulator") and r.levelno == logging.WARNING
    ]
    errors = [f"{r.name}: {_text(r)}" for r in caplog.records if r.levelno >= logging.ERROR
              and (r.name.startswith("emulator") or f"emulator{os.sep}" in _text(r))]
    return warnings, errors


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_invite_gets_400_naming_the_problem_and_creates_nothing(
    emulator_factory, receiver, caplog, case
):
    caplog.set_level(logging.WARNING)
    emu = await emulator_factory(sip_port=0, webhook_url=receiver.url)
    overrides, reason = MALFORMED[case]
    peer = await RawPeer.open(emu.sip_port)
    try:
        peer.send(_request("INVITE", "bad-1", "1 INVITE", emu.sip_port, headers=overrides, body="v=0\r\n"))
        answer = await peer.next_status()
        assert answer.startswith(f"SIP/2.0 400 {reason}\r\n"), answer
        # A well-formed INVITE after it is the barrier: its webhook is the only one, its call the only call.
        peer.send(_request("INVITE", "good-1", "1 INVITE", emu.sip_port))
        assert (await peer.next_status()).startswith("SIP/2.0 100 ")
        await receiver.wait_count(1)
        call = await _sip_call(emu)
        assert list(emu.calls) == [call.call_id] and len(receiver.requests) == 1
        assert _header(answer, "Call-ID") in ("bad-1", "")
    finally:
        peer.close()
    warnings, errors = _problems(caplog)
    host, port = peer.local[:2]
    assert errors == []
    assert len(warnings) == 1 and f"{host}:{port}" in warnings[0] and reason in warnings[0], warnings


# Each is one malformed message; none may crash a handler (ERROR/traceback) and each gets exactly one WARNING line.
GARBAGE_UDP = [
    b"\x00\xff\xfe not sip at all\r\n\r\n",
    b"SIP/2.0 2000 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx\r\nFrom: <sip:a@b>;tag=1\r\n\r\n",
    _request("INVITE", "g-1", "1 INVITE", 5060).replace(b"SIP/2.0\r\n", b"SIP/3.0\r\n", 1),
    _request("INVITE", "g-2", "99999999999 INVITE", 5060),
    _request("INVITE", "g-3", "1 INVITE", 5060, headers={"Content-Length": "-1"}),
    _request("INVITE", "g-4", "1 INVITE", 5060, headers={"Via": "garbage"}),
    _request("INVITE", "g-5", "1 INVITE", 5060, headers={"Max-Forwards": "ten"}),
    _request(
        "INVITE", "g-5b", "1 INVITE", 5060, headers={"Content-Length": "\u00b2"}
    ),  # a digit to isdigit(), not to int()
    _request("INVITE", "g-6", "1 INVITE", 5060, headers={"X-Evil": "a\x00b"}),
    _request("INVITE", "g-7", "1 INVITE", 5060).replace(
        b"Max-Forwards: 70", b"Max-Forwards 70\xff\r\nMax-Forwards: 70"
    ),
    _request("BYE", "g-8", "2 BYE", 5060, headers={"Call-ID": None}),
    _request("ACK", "g-9", "1 ACK", 5060, headers={"CSeq": "one ACK"}),
]
# (message, the answer before the emulator closes the connection, or None when the test half-closes it first)
GARBAGE_TCP = [
    (
        _request("INVITE", "t-1", "1 INVITE", 5060, transport="TCP", headers={"Content-Length": "zz"}),
        "SIP/2.0 400 Bad Content-Length",
    ),
    (
        _request("INVITE", "t-2", "1 INVITE", 5060, transport="TCP", headers={"Content-Length": str(10**9)}),
        "SIP/2.0 413 ",
    ),
    (
        _request("INVITE", "t-2b", "1 INVITE", 5060, transport="TCP", headers={"Content-Length": "\u0661"}),
        "SIP/2.0 400 Bad Content-Length",
    ),
    (
        _request("INVITE", "t-3", "1 INVITE", 5060, transport="TCP", headers={"Content-Length": "50"}, body="short"),
        None,
    ),
    (b"INVITE sip:x@y SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bKt4\r\nCall-ID: t-4", None),
]


async def _warned(caplog, count: int) -> None:
    async def _wait() -> None:
        while len(_problems(caplog)[0]) < count:
            await asyncio.sleep(0.01)
    await asyncio.wait_for(_wait(), 5)


async def test_malformed_sip_gets_one_warning_line_and_never_an_error(sip_emu, caplog):
    caplog.set_level(logging.WARNING)
    peer = await RawPeer.open(sip_emu.sip_port)
    try:
        for n, data in enumerate(GARBAGE_UDP, 1):
            peer.send(data)
            # An OPTIONS after each message proves the server is alive and orders the log lines.
            peer.send(_request("OPTIONS", f"ping-{n}", "1 OPTIONS", sip_emu.sip_port))
            assert _header(await peer.next("SIP/2.0 200 "), "Call-ID") == f"ping-{n}"
            warnings, errors = _problems(caplog)
            assert errors == [] and len(warnings) == n, (n, data, warnings)
    finally:
        peer.close()
    for n, (data, answer) in enumerate(GARBAGE_TCP, 1):
        peer = await RawPeer.open(sip_emu.sip_port, "TCP")
        try:
            peer.send(data)
            if answer is None:
                peer._writer.write_eof()  # the stream ends mid-message (mid-body, mid-header section)
            else:
                assert (await peer.next_status()).startswith(answer)
            assert (await peer.next("<closed>")) == "<closed>"  # framing is lost: the emulator closes
        finally:
            peer.close()
        await _warned(caplog, len(GARBAGE_UDP) + n)
    warnings, errors = _problems(caplog)
    assert errors == [] and len(warnings) == len(GARBAGE_UDP) + len(GARBAGE_TCP), warnings
    assert all("from 127.0.0.1:" in w for w in warnings), warnings
    assert not any("\x00" in w or "\r" in w or "\n" in w for w in warnings)  # escaped, one line each
    assert sip_emu.calls == {}


async def test_mutated_messages_never_raise_or_log_an_error(sip_emu, caplog):
    """A seeded mutation run (deterministic): bytes deleted, inserted and duplicated in valid messages."""
    import random

    caplog.set_level(logging.WARNING)
    port = sip_emu.sip_port
    seeds = [
        _request(m, "mut", f"1 {m}", port, ";tag=t" if m in ("ACK", "BYE") else "", body="v=0\r\n" * (m == "INVITE"))
        for m in ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "NOTIFY")
    ]
    seeds.append(_reply(seeds[2].decode(), 200))
    pieces = [bytes([c]) for c in b":; \r\n,<>=\x00\xff09zZ\t/@"] + ["\u00b2".encode(), b"\r\n\r\n", b"SIP/2.0"]
    rnd = random.Random(3261)
    for _ in range(1500):
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randint(1, 5)):
            pos = rnd.randrange(len(data) + 1)
            op = rnd.random()
            if op < 0.4:
                del data[pos:pos + rnd.randint(1, 8)]
            elif op < 0.8:
                data[pos:pos] = rnd.choice(pieces)
            else:
                data[pos:pos] = data[rnd.randrange(len(data)):][:16]
        for transport in ("UDP", "TCP"):
            sip_emu.sip.dispatch(bytes(data), lambda _d: None, transport, ("127.0.0.1", 9))  # raises nothing
    await asyncio.sleep(0.1)  # let the calls some mutants placed run their first steps
    warnings, errors = _problems(caplog)
    assert errors == [] and warnings and all("\n" not in w for w in warnings)


# ---------------------------------------------------------------------------------------------- 2xx never ACKed

@pytest.mark.parametrize("transport", ["UDP", "TCP"])
async def test_unacked_200_is_resent_t1_doubling_then_bye_ends_the_call(emulator_factory, transport):
    t1 = 0.05
    emu = await emulator_factory(sip_port=0, sip_t1_s=t1)
    peer = await RawPeer.open(emu.sip_port, transport)
    try:
        peer.send(_request("INVITE", "noack-1", "1 INVITE", emu.sip_port, transport=transport))
        assert (await peer.next_status()).startswith("SIP/2.0 100 ")
        call = await _sip_call(emu)
        t0 = asyncio.get_running_loop().time()  # the first 200 goes out after this
        assert await post(emu, f"{P}/{call.call_id}/accept", ACCEPT_BODY) == (200, b"")
        ws = await connect(emu, call.call_id)
        msg = await peer.next("BYE ", timeout=64 * t1 + 10)  # the test never ACKs
        oks = [t - t0 for t, m in peer.arrivals if m.startswith("SIP/2.0 200 ")]
        bye_at = next(t for t, m in peer.arrivals if m.startswith("BYE ")) - t0
        # Resends at T1, 3*T1, 7*T1 ... after the first 200 (T1 doubling; T2 = 4 s is not reached): load can only delay
        # them, so each comes no earlier than that, and 64*T1 holds at most six of them (T1 fixed would be 63).
        resends = oks[1:]
        assert 3 <= len(resends) <= 6, oks
        assert all(r >= 0.95 * t1 * (2 ** (k + 1) - 1) for k, r in enumerate(resends)), oks
        assert bye_at >= 0.95 * 64 * t1, bye_at
        assert _header(msg, "Call-ID") == "noack-1" and _header(msg, "CSeq").endswith(" BYE")
        peer.send(_reply(msg, 200))
        # The platform side ends too, like a caller hang-up: the sideband drops, /hangup answers 404.
        assert await emu.wait_for_state(call.call_id, "ended", 5) == "ended"
        assert call.ended_reason == "ack_timeout"
        closed = await drain(ws, [], timeout=5)
        assert isinstance(closed, websockets.ConnectionClosed) and closed.rcvd is None  # no close frame (1006)
        status, _ = await post(emu, f"{P}/{call.call_id}/hangup")
        assert status == 404

        async def _forgotten() -> None:  # nothing of the call is left in the SIP layer (a long-running emulator)
            while emu.sip.dialogs or emu.sip.transactions or emu.sip.client_transactions:
                await asyncio.sleep(0.02)
        await asyncio.wait_for(_forgotten(), 64 * t1 + 5)
    finally:
        peer.close()


async def test_an_ack_stops_the_200_and_keeps_the_call(emulator_factory):
    t1 = 0.02
    emu = await emulator_factory(sip_port=0, sip_t1_s=t1)
    peer = await RawPeer.open(emu.sip_port)
    try:
        peer.send(_request("INVITE", "ack-1", "1 INVITE", emu.sip_port))
        call = await _sip_call(emu)
        await post(emu, f"{P}/{call.call_id}/accept", ACCEPT_BODY)
        ok = await peer.next("SIP/2.0 200 ")
        peer.send(_request("ACK", "ack-1", "1 ACK", emu.sip_port, ";tag=" + _to_tag(ok), branch="z9hG4bKack-1-ack"))
        await asyncio.wait_for(call.leg.acked.wait(), 5)
        await asyncio.sleep(64 * t1 + 0.5)  # past the point where an unACKed call would have been ended
        assert call.state == "accepted"
        while not peer.inbox.empty():
            assert not peer.inbox.get_nowait().startswith("BYE ")
    finally:
        peer.close()


# ---------------------------------------------------------------------------------------------- Call-ID reuse

async def test_new_invite_reusing_an_ended_calls_call_id_is_a_new_call(sip_emu):
    port = sip_emu.sip_port
    peer = await RawPeer.open(port)
    try:
        peer.send(_request("INVITE", "reuse-1", "1 INVITE", port, branch="z9hG4bKfirst"))
        first = await _sip_call(sip_emu)
        await post(sip_emu, f"{P}/{first.call_id}/accept", ACCEPT_BODY)
        ok = await peer.next("SIP/2.0 200 ")
        tag = ";tag=" + _to_tag(ok)
        peer.send(_request("ACK", "reuse-1", "1 ACK", port, tag, branch="z9hG4bKfirst-ack"))
        peer.send(_request("BYE", "reuse-1", "2 BYE", port, tag, branch="z9hG4bKfirst-bye"))
        assert _header(await peer.next("SIP/2.0 200 "), "CSeq") == "2 BYE"
        assert await sip_emu.wait_for_state(first.call_id, "ended", 5) == "ended"
        # Same Call-ID, From tag and CSeq as the ended call (sipp always sends "CSeq: 1 INVITE"), a new branch.
        peer.send(_request("INVITE", "reuse-1", "1 INVITE", port, branch="z9hG4bKsecond"))
        assert (await peer.next_status()).startswith("SIP/2.0 100 ")

        async def _second():
            while len(sip_emu.calls) < 2:
                await asyncio.sleep(0.02)
            return next(c for c in sip_emu.calls.values() if c is not first)
        second = await asyncio.wait_for(_second(), 5)
        assert second.state == "ringing" and first.state == "ended"
        await post(sip_emu, f"{P}/{second.call_id}/reject", {"status_code": 486})
        busy = await peer.next_status()
        assert busy.startswith("SIP/2.0 486 ") and _to_tag(busy) != _to_tag(ok), busy
    finally:
        peer.close()


async def test_two_invites_with_one_call_id_each_get_a_final_answer(sip_emu):
    port = sip_emu.sip_port
    peer = await RawPeer.open(port)
    try:
        first = _request("INVITE", "twin-1", "1 INVITE", port, branch="z9hG4bKtwin-a")
        merged = _request("INVITE", "twin-1", "1 INVITE", port, branch="z9hG4bKtwin-b")
        peer.send(first)
        peer.send(merged)
        answers = {}
        while len(answers) < 2:
            msg = await peer.next_status()
            answers.setdefault(_header(msg, "Via").split("branch=")[1], msg)
        assert answers["z9hG4bKtwin-a"].startswith("SIP/2.0 100 ")
        # RFC 3261 §8.2.2.2: same Call-ID, From tag and CSeq on another transaction is a merged request.
        assert answers["z9hG4bKtwin-b"].startswith("SIP/2.0 482 Loop Detected"), answers
        # Its retransmission is answered from its transaction; a later CSeq while the first rings gets
        # 500 + Retry-After.
        peer.send(merged)
        assert (await peer.next_status()).startswith("SIP/2.0 482 ")
        peer.send(_request("INVITE", "twin-1", "2 INVITE", port, branch="z9hG4bKtwin-c"))
        overlap = await peer.next_status()
        assert overlap.startswith("SIP/2.0 500 ") and 0 <= int(_header(overlap, "Retry-After")) <= 10, overlap
        call = await _sip_call(sip_emu)
        assert list(sip_emu.calls) == [call.call_id] and call.state == "ringing"
        # The first INVITE is unharmed: it is still answered normally.
        await post(sip_emu, f"{P}/{call.call_id}/reject", {"status_code": 486})
        assert _header(await peer.next("SIP/2.0 486 "), "Via").endswith("twin-a")
    finally:
        peer.close()


# ---------------------------------------------------------------------------------------------- start-up validation

BAD_SECRETS = {
    "README placeholder": "whsec_\u2026",
    "no prefix": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0",
    "not base64": "whsec_not*base64!",
    "too short": "whsec_c2hvcnQ=",
}


@pytest.mark.parametrize("name", list(BAD_SECRETS))
def test_cli_refuses_an_unusable_webhook_secret_with_one_line_and_exit_2(name):
    secret = BAD_SECRETS[name]
    env = {**os.environ, "EMULATOR_WEBHOOK_SECRET": secret} if name == "too short" else dict(os.environ)
    argv = [] if name == "too short" else ["--webhook-secret", secret]  # the flag and its environment variable
    proc = subprocess.run([sys.executable, "-m", "emulator", "--http-port", "0", "--no-sip", *argv], env=env,
                          capture_output=True, text=True, timeout=30, cwd=Path(__file__).resolve().parents[2])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "--webhook-secret" in lines[0] and "whsec_" in lines[0], lines
    assert secret.removeprefix("whsec_") not in lines[0]  # a secret is never echoed
    assert proc.stdout == ""


def test_the_apps_secret_rule_accepts_what_the_emulator_generates():
    assert webhook_secret_problem(new_secret()) is None
    assert webhook_secret_problem(None) is None  # no secret: deliveries go unsigned, as before
    assert "whsec_" in (webhook_secret_problem("whsec_\u2026") or "")
