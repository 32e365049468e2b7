"""The end-of-call state and the keypad on their own (shared/call_ending.py, shared/keypad.py)."""

from __future__ import annotations

import asyncio

from shared.call_ending import CallEnding
from shared.keypad import Keypad, MenuAction, digits_message


def test_one_ending_at_a_time_and_the_first_outcome_stands() -> None:
    ending = CallEnding("call_1")
    assert ending.claim()
    assert not ending.claim()  # a second ending (a deadline during a hangup) loses
    ending.finish("agent_ended", "the agent ended the call")
    ending.finish("completed", "the platform closed the sideband")
    assert (ending.outcome, ending.reason) == ("agent_ended", "the agent ended the call")


def test_a_failed_transfer_releases_the_claim_and_forgets_the_target() -> None:
    ending = CallEnding("call_1")
    assert ending.claim()
    ending.leaving, ending.transfer_target = True, "sales"
    ending.finish("transferred", "transferred to sales")
    ending.transfer_failed()
    assert not ending.leaving and ending.outcome is None and ending.transfer_target is None
    assert ending.claim()  # the call goes on; the time limit may still end it
    assert ending.summary_fields()["outcome"] == "failed"  # no outcome yet: the summary says so


def test_summary_fields_name_the_target_only_for_a_transfer() -> None:
    ending = CallEnding("call_1", transfer_target="sales")
    ending.finish("caller_hung_up", "the call was gone when the transfer was requested")
    ending.call_gone = True
    fields = ending.summary_fields()
    assert fields["transfer_target"] is None and fields["call_gone"] and not fields["hangup_confirmed"]
    ended = CallEnding("call_2", transfer_target="sales", refer_accepted=True)
    ended.finish("transferred", "transferred to sales")
    assert ended.summary_fields()["transfer_target"] == "sales"


def test_menu_entries_resolve_to_what_they_do_and_unusable_ones_to_none() -> None:
    menu = {"1": {"action": "say", "text": "We open at nine."}, "2": {"action": "transfer", "target": "sales"},
            "3": {"action": "transfer", "target": "nowhere"}, "4": {"action": "say"},
            "9": {"action": "end_call", "text": "Goodbye."}}
    keypad = Keypad({"digits": {"mode": "menu", "menu": menu}}, 1.0)
    targets = {"sales": "sip:sales@example.com"}
    assert [keypad.press(d) is not None for d in "12345"] == [True, True, True, True, False]
    assert keypad.pressed == "12345"
    assert Keypad.action(menu["1"], targets) == MenuAction("say", "We open at nine.")
    assert Keypad.action(menu["2"], targets) == MenuAction("transfer", None, "sales")
    assert Keypad.action(menu["3"], targets) is None  # unknown target: the digit goes to the model
    assert Keypad.action(menu["4"], targets) is None  # a say without text
    assert Keypad.action(menu["9"], targets) == MenuAction("end_call", "Goodbye.")


def test_without_menu_mode_no_digit_is_a_menu_entry() -> None:
    keypad = Keypad({"digits": {"mode": "model", "menu": {"1": {"action": "say", "text": "hi"}}}}, 1.0)
    assert keypad.press("1") is None and keypad.pressed == "1"


async def test_digits_typed_at_a_human_pace_are_one_batch() -> None:
    keypad = Keypad({}, 2.0)  # generous: a loaded machine must not split the batch
    assert keypad.hold("1")
    keypad.flush_task = asyncio.create_task(keypad.pause())
    for digit in "234#":
        await asyncio.sleep(0.01)
        assert not keypad.hold(digit)  # the pending flush covers it
    assert await asyncio.wait_for(keypad.flush_task, 5.0) == "1234#"
    assert keypad.buffer == "" and keypad.hold("5")
    assert digits_message("1234#")["item"]["content"][0]["text"] == "The caller pressed 1234# on the keypad."
