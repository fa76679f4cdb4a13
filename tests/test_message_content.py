"""Per-channel content in Message.extra: what planners write is what adapters read, and the keys
of queued batches stay as they were."""

from __future__ import annotations

import pytest

from loa.engine.envelope import Batch, pack, unpack
from loa.message import (
    EmailContent,
    Lane,
    Message,
    PushContent,
    ZaloContent,
    email_content,
    email_extra,
    push_content,
    push_extra,
    zalo_content,
    zalo_extra,
)


def test_written_extras_keep_the_queued_keys() -> None:
    assert email_extra(EmailContent("Tiêm chủng")) == {"channel": "email", "subject": "Tiêm chủng"}
    assert email_extra(EmailContent("s", "<p>x</p>")) == {
        "channel": "email",
        "subject": "s",
        "html": "<p>x</p>",
    }
    assert push_extra(PushContent("Nhắc lịch")) == {"channel": "fcm", "title": "Nhắc lịch"}
    assert zalo_extra(ZaloContent("123", {"name": "An"})) == {
        "channel": "zalo",
        "template_id": "123",
        "data": {"name": "An"},
    }


def test_content_read_back_after_a_trip_through_a_queued_batch() -> None:
    messages = [
        Message("1", "a@example.org", "hi", extra=email_extra(EmailContent("s", "<b>hi</b>"))),
        Message("2", "tok", "hi", extra=push_extra(PushContent("t", {"k": "v"}))),
        Message("3", "+84912345678", extra=zalo_extra(ZaloContent("9", {"n": "An"}))),
    ]
    batch = Batch("r", Lane.NORMAL, messages, "c")
    email, push, zalo = unpack(pack(batch)).messages
    assert email_content(email) == EmailContent("s", "<b>hi</b>")
    assert push_content(push) == PushContent("t", {"k": "v"})
    assert zalo_content(zalo) == ZaloContent("9", {"n": "An"})


def test_bad_content_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"extra\.subject must be text"):
        email_content(Message("1", "a@example.org", extra={"subject": 3}))
    with pytest.raises(ValueError, match=r"extra\.html must be text"):
        email_content(Message("1", "a@example.org", extra={"html": b"x"}))
    with pytest.raises(ValueError, match=r"no template_id"):
        zalo_content(Message("1", "+84912345678", extra={"data": {}}))
    with pytest.raises(ValueError, match=r"extra\.data must be a table"):
        zalo_content(Message("1", "+84912345678", extra={"data": [1]}), "route-template")


def test_defaults_when_a_message_carries_nothing() -> None:
    bare = Message("1", "x")
    assert email_content(bare) == EmailContent()
    assert push_content(bare) == PushContent()
    assert zalo_content(bare, "route-template") == ZaloContent("route-template", {})
    # a push's data values are sent as text; data that is no table is none
    odd = Message("1", "x", extra={"title": 7, "data": {"n": 1}})
    assert push_content(odd) == PushContent("7", {"n": "1"})
    assert push_content(Message("1", "x", extra={"data": "nope"})).data == {}
