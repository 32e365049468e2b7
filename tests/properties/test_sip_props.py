"""Properties of the emulator's SIP parser (emulator/sip.py) on arbitrary bytes: parse() never raises; what it
accepts has every mandatory header and readable fields; what it refuses is answered with one 400/505 response when it
is a request other than ACK, and dropped otherwise; and that response is itself a well-formed SIP response."""

from __future__ import annotations

from types import SimpleNamespace

from hypothesis import example, given
from hypothesis import strategies as st

from emulator import sip

INVITE = (b"INVITE sip:+18005551212@127.0.0.1:5060 SIP/2.0\r\n"
          b"Via: SIP/2.0/UDP 127.0.0.1:5061;branch=z9hG4bK-1\r\n"
          b"Max-Forwards: 70\r\n"
          b'From: "Alice" <sip:+14255551212@127.0.0.1>;tag=a1\r\n'
          b"To: <sip:+18005551212@127.0.0.1>\r\n"
          b"Call-ID: c1@127.0.0.1\r\n"
          b"CSeq: 1 INVITE\r\n"
          b"Contact: <sip:alice@127.0.0.1:5061>\r\n"
          b"Content-Type: application/sdp\r\n"
          b"Content-Length: 4\r\n\r\nv=0\n")
SEEDS = [INVITE, INVITE.replace(b"INVITE", b"OPTIONS"), INVITE.replace(b"INVITE", b"ACK"),
         INVITE.replace(b"INVITE", b"BYE"),
         b"SIP/2.0 200 OK\r\n" + INVITE.split(b"\r\n", 1)[1].replace(b"Max-Forwards: 70\r\n", b"")]
# Bytes that matter to the grammar, so mutations hit separators rather than only letters.
SPECIAL = st.sampled_from([b"\r\n", b"\r", b"\n", b"\x00", b":", b";", b",", b" ", b"\t", b"\r\n\r\n", b"\xff",
                           b"SIP/2.0", b"branch=", b"tag=", b"4294967296", b"-1", b"\xef\xbc\x91"])
CHUNKS = SPECIAL | st.binary(min_size=1, max_size=8)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert":
            data[at:at] = draw(CHUNKS)
        elif op == "delete":
            del data[at:at + draw(st.integers(1, 20))]
        else:
            data[at:at + 1] = draw(CHUNKS)
    return bytes(data)


MESSAGES = mutated() | st.binary(max_size=600)


def server() -> sip.SipServer:
    # dispatch() of a malformed message touches no emulator state: a stand-in with the one setting read at init.
    return sip.SipServer(SimpleNamespace(config=SimpleNamespace(sip_t1_s=0.5)), "127.0.0.1", 0)  # type: ignore[arg-type]


@given(MESSAGES, st.booleans())
@example(b"INVITE sip:x SIP/2.0\r\nCSeq: 99999999999 INVITE\r\n\r\n", True)
@example(b"SIP/2.0 200 OK\r\nCSeq: 1\xef\xbc\x91 INVITE\r\n\r\n", True)
def test_parse_never_raises_and_accepts_only_complete_messages(data: bytes, datagram: bool) -> None:
    msg = sip.parse(data, datagram=datagram)
    if msg.problem is not None:
        assert msg.problem.status in (400, 505)
        assert "\r" not in msg.problem.reason and "\n" not in msg.problem.reason
        return
    assert msg.kind in ("request", "response")
    for name in sip.MANDATORY if msg.is_request else sip.MANDATORY[:-1]:
        assert msg.get(name)
    number, method = msg.cseq
    assert 0 <= number < 2**31 and method
    if msg.is_request:
        assert method == msg.method
    else:
        assert 100 <= msg.status <= 699
    assert msg.sent_by and isinstance(msg.branch, str)
    assert isinstance(msg.from_tag, str) and isinstance(msg.to_tag, str)
    if msg.all("content-length"):
        assert len(msg.body) == int(msg.get("content-length")) or not datagram


@given(MESSAGES, st.sampled_from(["UDP", "TCP"]))
@example(INVITE.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), "UDP")
@example(INVITE.replace(b"Call-ID: c1", b"Call-ID: c\x001"), "UDP")  # echoed the NUL before the fix
@example(INVITE.replace(b"branch=z9hG4bK-1", b"branch=z9hG4bK-1\nContent-Length: 0"), "UDP")  # and bare LFs
def test_a_malformed_message_is_answered_once_or_dropped(data: bytes, transport: str) -> None:
    msg = sip.parse(data, datagram=transport == "UDP")
    if msg.problem is None and msg.is_request:
        return  # a well-formed request goes to the emulator's call handling, covered by tests/emulator
    sent: list[bytes] = []
    srv = server()
    srv.dispatch(data, sent.append, transport, ("192.0.2.1", 5061))
    assert not srv.transactions and not srv.dialogs  # a malformed request creates nothing
    if msg.problem is None or not msg.is_request or msg.method == "ACK":
        assert sent == []
        return
    [response] = sent
    answer = sip.parse(response)
    assert answer.kind == "response" and answer.status == msg.problem.status
    assert answer.start == f"SIP/2.0 {msg.problem.status} {msg.problem.reason}"
    # Values copied from the request never smuggle a line break or a NUL into the response (header injection).
    head = response.partition(b"\r\n\r\n")[0]
    for line in head.split(b"\r\n"):
        assert b"\r" not in line and b"\n" not in line and b"\x00" not in line, line
