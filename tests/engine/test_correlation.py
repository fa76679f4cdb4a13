"""The receipt-key records: what the sender and the receipt writer store, read back the same."""

from __future__ import annotations

import pytest

from loa.engine.correlation import Heard, Sent, stored_sent


@pytest.mark.parametrize(
    ("record", "stored"),
    [
        (Sent("20261204-3f9a1c", "m1", 0), "20261204-3f9a1c|m1|0"),
        (Sent("c", "row|7", 2), "c|row|7|2"),  # a message id may hold the separator
        (Sent("c", "", 1), "c||1"),
        (Sent("c", "m1", 0, "79"), "c|m1|0|@79"),
        (Sent("c", "row|7", 2, "HÀ NỘI"), "c|row|7|2|@HÀ NỘI"),
    ],
)
def test_a_sent_part_reads_back_as_written(record: Sent, stored: str) -> None:
    assert record.encode() == stored
    assert Sent.decode(stored) == record


def test_only_the_first_part_speaks_for_a_long_message() -> None:
    assert Sent("c", "m", 0).speaks
    assert not Sent("c", "m", 1).speaks


@pytest.mark.parametrize(
    ("heard", "stored"),
    [
        (Heard(True, "DELIVRD"), "1|DELIVRD"),
        (Heard(False, "UNDELIV"), "0|UNDELIV"),
        (Heard(False, "a|b"), "0|a|b"),
    ],
)
def test_a_receipt_reads_back_as_written(heard: Heard, stored: str) -> None:
    assert heard.encode() == stored
    assert Heard.decode(stored) == heard


@pytest.mark.parametrize(
    ("value", "campaign"),
    [("s:c1|m|0", "c1"), ("m:c2|m|1", "c2"), ("r:1|DELIVRD", None), ("d", None), ("", None)],
)
def test_a_keys_value_names_its_campaign_only_while_it_holds_a_message(
    value: str, campaign: str | None
) -> None:
    sent = stored_sent(value)
    assert (sent.campaign if sent else None) == campaign
