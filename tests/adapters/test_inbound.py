"""Callbacks beside their providers: each adapter's declared capabilities and webhook format."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest

from loa.adapters import registry
from loa.adapters.base import Capabilities
from loa.adapters.inbound import InvalidEvent, LoaWebhook, Window
from loa.adapters.null import NullAdapter, NullOptions
from loa.adapters.zalo.webhook import ZaloWebhook
from loa.errors import AuthError
from loa.message import Inbound, Receipt
from loa.settings import Settings

SECRET = "oa-secret"
NOW = 1_764_800_000.0  # seconds


def zalo_event(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "app_id": "1234",
        "event_name": name,
        "timestamp": str(int(NOW * 1000)),
        "sender": {"id": "user-9"},
        "recipient": {"id": "oa-1"},
        **extra,
    }


def zalo_headers(body: bytes, event: dict[str, Any], secret: str = SECRET) -> dict[str, str]:
    signed = f"{event['app_id']}".encode() + body + f"{event['timestamp']}{secret}".encode()
    return {"x-zevent-signature": hashlib.sha256(signed).hexdigest()}


def test_each_adapter_declares_what_its_provider_sends_back() -> None:
    assert registry.capabilities("smpp") == Capabilities(receipts=True, replies=True)
    assert registry.capabilities("zalo").webhook == "zalo"
    assert registry.capabilities("http") == Capabilities(), "loa's receipt batch, if set up"
    assert registry.capabilities("no-such-adapter") == Capabilities()


def test_the_api_finds_a_routes_format_through_the_registry() -> None:
    assert isinstance(registry.webhook("zalo"), ZaloWebhook)
    for adapter in ("http", "null", "fcm", "smpp"):
        assert isinstance(registry.webhook(adapter), LoaWebhook), adapter


def test_receipts_are_awaited_where_they_can_come() -> None:
    settings = Settings.model_validate(
        {
            "routes": {"push": {"adapter": "null"}, "quiet": {"adapter": "null"}},
            "api": {"webhook_secrets": {"push": "push-secret-0123"}},
        }
    )
    null = NullAdapter(NullOptions())
    assert registry.receives_receipts(settings, "push", null), "its provider calls back"
    assert not registry.receives_receipts(settings, "quiet", null), "nothing ever comes back"


def test_a_zalo_event_is_verified_and_read_beside_its_adapter() -> None:
    window = Window(NOW, 300)
    received = zalo_event("user_received_message", message={"msg_id": "z-1"})
    body = orjson.dumps(received)
    events = ZaloWebhook().events("zalo-zns", body, SECRET, zalo_headers(body, received), window)
    assert events.receipts == [Receipt("zalo-zns", "z-1", True, "RECEIVED")]
    reply = zalo_event("user_send_text", message={"msg_id": "z-2", "text": "STOP"})
    body = orjson.dumps(reply)
    events = ZaloWebhook().events("zalo-zns", body, SECRET, zalo_headers(body, reply), window)
    assert events.replies == [Inbound("zalo-zns", "user-9", "STOP", "zalo", "oa-1", "z-2")]
    follow = zalo_event("follow")
    body = orjson.dumps(follow)
    events = ZaloWebhook().events("zalo-zns", body, SECRET, zalo_headers(body, follow), window)
    assert (events.receipts, events.replies) == ([], []), "other events are taken, not kept"


@pytest.mark.parametrize(
    ("headers", "code"),
    [({}, "bad_signature"), ({"x-zevent-signature": "00" * 32}, "bad_signature")],
)
def test_a_zalo_event_signed_wrong_is_refused(headers: dict[str, str], code: str) -> None:
    body = orjson.dumps(zalo_event("user_received_message", message={"msg_id": "z-1"}))
    with pytest.raises(AuthError) as refused:
        ZaloWebhook().events("zalo-zns", body, SECRET, headers, Window(NOW, 300))
    assert refused.value.code == code


def test_a_stale_zalo_event_is_refused() -> None:
    event = zalo_event("user_received_message", message={"msg_id": "z-1"})
    body = orjson.dumps(event)
    with pytest.raises(AuthError) as refused:
        ZaloWebhook().events("z", body, SECRET, zalo_headers(body, event), Window(NOW + 301, 300))
    assert refused.value.code == "stale_timestamp"


def test_a_verified_zalo_event_without_its_message_is_invalid() -> None:
    event = zalo_event("user_send_text")
    body = orjson.dumps(event)
    with pytest.raises(InvalidEvent, match=r"sender\.id and message\.text"):
        ZaloWebhook().events("z", body, SECRET, zalo_headers(body, event), Window(NOW, 300))


def test_loas_receipt_batch_is_verified_and_read() -> None:
    body = orjson.dumps({"receipts": [{"id": "p-1", "delivered": False, "state": "EXPIRED"}]})
    stamp = str(int(NOW))
    digest = hmac.new(b"push-secret-0123", stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {"x-loa-timestamp": stamp, "x-loa-signature": f"sha256={digest}"}
    events = LoaWebhook().events("push", body, "push-secret-0123", headers, Window(NOW, 300))
    assert events.receipts == [Receipt("push", "p-1", False, "EXPIRED")]
    with pytest.raises(AuthError):
        LoaWebhook().events("push", body, "other", headers, Window(NOW, 300))
