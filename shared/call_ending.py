"""How one call ended: the outcome, the one-ending-at-a-time claim, and what the platform said about the end.

The conversation engine (shared/conversation.py) owns the sequencing (goodbye, then hangup or REFER); this unit
holds the state it sequences: whether an ending (hangup or transfer) is under way, whether we are leaving (the
socket is then expected to close), the outcome and reason, and the facts the orchestrator reads to decide whether
it must still hang up (shared.outcomes.platform_ended).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TypedDict

log = logging.getLogger("switchboard.conversation")


class EndFields(TypedDict):
    """The end fields of the call summary (shared.payloads.CallSummary)."""

    outcome: str
    reason: str
    transfer_target: str | None
    hangup_confirmed: bool
    call_gone: bool
    refer_accepted: bool


@dataclass
class CallEnding:
    call_id: str
    outcome: str | None = None
    reason: str = ""
    transfer_target: str | None = None
    # What the platform said about the end of the call; the orchestrator hangs up unless one of these proves
    # the call is over (shared.outcomes.platform_ended).
    hangup_confirmed: bool = False  # our /hangup answered 2xx or 404
    call_gone: bool = False  # the platform answered 404 for this call (sideband connect, /hangup, /refer)
    refer_accepted: bool = False  # a REFER answered 200 and the call left
    # Sequencing: one ending at a time. A transfer holds the claim until it succeeds or fails.
    claimed: bool = False
    task: asyncio.Task | None = None  # the hangup or transfer under way
    leaving: bool = False  # we asked the platform to hang up or refer: the socket is expected to close

    def claim(self) -> bool:
        """Take the right to end the call; False if an ending (hangup or transfer) is already under way."""
        if self.claimed:
            return False
        self.claimed = True
        return True

    def finish(self, outcome: str, reason: str) -> None:
        """Record the outcome; the first one stands."""
        if self.outcome is None:
            self.outcome, self.reason = outcome, reason
            log.info("call %s: outcome %s (%s)", self.call_id, outcome, reason)

    def transfer_failed(self) -> None:
        """The REFER went nowhere: the call goes on, and a later ending may claim it again."""
        self.leaving = False
        self.claimed = False
        self.outcome, self.reason, self.transfer_target = None, "", None

    def summary_fields(self) -> EndFields:
        return {
            "outcome": self.outcome or "failed",
            "reason": self.reason or "the engine stopped without an outcome",
            "transfer_target": self.transfer_target if self.outcome == "transferred" else None,
            "hangup_confirmed": self.hangup_confirmed,
            "call_gone": self.call_gone,
            "refer_accepted": self.refer_accepted,
        }
