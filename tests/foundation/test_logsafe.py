"""shared.logsafe: one filter on the root handlers escapes what log lines take from outside."""

from __future__ import annotations

import io
import logging
import uuid

import pytest

from shared.logsafe import escape, install


@pytest.fixture
def captured():
    """A logger whose one handler (with the filter, as `install` puts it) writes to a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test.logsafe.{uuid.uuid4().hex}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    assert install(logger) == 1 and install(logger) == 0  # idempotent
    yield logger, stream
    logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("value, shown", [
    ("x\r\nINJECTED fake line", "x\\r\\nINJECTED fake line"),
    ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
    ("tab\there", "tab\\there"),
    ("nul\x00 del\x7f c1\x85 ls\u2028 ps\u2029", "nul\\x00 del\\x7f c1\\x85 ls\\u2028 ps\\u2029"),
    ("plain ascii, caf\u00e9, \u65e5\u672c", "plain ascii, caf\u00e9, \u65e5\u672c"),
])
def test_string_arguments_are_escaped(captured, value, shown):
    logger, stream = captured
    logger.info("event type %s ignored", value)
    assert lines(stream) == [f"INFO event type {shown} ignored"]


def test_non_string_arguments_are_escaped_when_formatted_and_numbers_still_format(captured):
    logger, stream = captured

    class Peer:
        def __str__(self) -> str:
            return "peer\nINJECTED"

        def __repr__(self) -> str:
            return "<peer\r\nINJECTED>"

    logger.warning("%s %r %d %.1f %s %r", Peer(), Peer(), 7, 2.25, ValueError("bad\nvalue"), b"\r\n")
    assert lines(stream) == ["WARNING peer\\nINJECTED <peer\\r\\nINJECTED> 7 2.2 bad\\nvalue b'\\r\\n'"]


def test_mapping_arguments_are_escaped(captured):
    logger, stream = captured
    logger.info("path %(path)s status %(status)d", {"path": "/a\r\nINJECTED", "status": 404})
    assert lines(stream) == ["INFO path /a\\r\\nINJECTED status 404"]


def test_a_message_without_arguments_is_escaped_but_a_format_string_is_not_touched(captured):
    logger, stream = captured
    outside = "x\nINJECTED"
    logger.info(f"f-string with {outside}")
    logger.info(ValueError("an object\nlogged as is"))
    logger.info("100%% literal\twith %s", "arg")  # the format string is the program's own text
    assert lines(stream) == ["INFO f-string with x\\nINJECTED", "INFO an object\\nlogged as is",
                             "INFO 100% literal\twith arg"]


def test_tracebacks_keep_their_lines(captured):
    logger, stream = captured
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed for %s", "a\nb")
    text = stream.getvalue()
    assert text.startswith("ERROR failed for a\\nb\nTraceback (most recent call last):\n")


def test_escape_returns_the_same_object_when_nothing_needs_escaping():
    text = "GET /api/calls 200 1.2ms"
    assert escape(text) is text
