"""Reading records off the queue leaves the ones it does not want readable by the next reader."""

from __future__ import annotations

import json

from azure.storage.queue import QueueClient, TextBase64EncodePolicy

from localrun.demo import take_call_record


def test_records_left_for_others_stay_base64(azurite: str, unique_name: str) -> None:
    queue = QueueClient.from_connection_string(azurite, unique_name, message_encode_policy=TextBase64EncodePolicy())
    queue.create_queue()
    try:
        for call_id in ("rtc_a", "rtc_b"):
            queue.send_message(json.dumps({"call_id": call_id, "outcome": "rejected"}))
        # Taking b first makes a visible again (it was received on the way); then a must still decode.
        assert take_call_record(azurite, unique_name, "rtc_b", timeout=10)["call_id"] == "rtc_b"
        assert take_call_record(azurite, unique_name, "rtc_a", timeout=10)["call_id"] == "rtc_a"
    finally:
        queue.delete_queue()
        queue.close()
