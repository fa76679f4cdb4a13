"""Zalo's OA webhook: its signature checked on the raw bytes, its events read as loa's.

`X-ZEvent-Signature` is the hex SHA-256 of app_id + the raw body + timestamp + the OA secret
key, where app_id and timestamp are the body's fields (Zalo's OA webhook guide; the secret is
the OA's, not the app's); they are read from the raw bytes to check the signature. Zalo's
timestamp is in milliseconds. `user_received_message` (a ZNS reached the phone) is a delivered
receipt for `message.msg_id`, the id ZNS answered the send with; `user_send_text` is a reply,
kept once per `message.msg_id`; other events are ignored (Zalo wants a 200 for them too).
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from loa.adapters.inbound import Events, Window, invalid, json_object, refuse, same, valid
from loa.errors import ApiError
from loa.message import Inbound, Receipt

SIGNATURE = "x-zevent-signature"
RECEIVED = "user_received_message"
TEXT = "user_send_text"
HANDLED = frozenset({RECEIVED, TEXT})
# Zalo's signed fields, read from the raw body: a string without escapes, or a number
_APP_ID = re.compile(rb'"app_id"\s*:\s*(?:"([^"\\]{1,64})"|(\d{1,20}))')
_STAMP = re.compile(rb'"timestamp"\s*:\s*(?:"(\d{1,20})"|(\d{1,20}))')
_CANDIDATES = 3  # of each field tried: a nested "timestamp" may come before Zalo's own


class ZaloUser(BaseModel):
    """A Zalo user or official account."""

    model_config = ConfigDict(extra="allow")  # Zalo adds fields; the ones we read are checked

    id: str = Field(min_length=1, max_length=64)


class ZaloMessage(BaseModel):
    """The message an event is about."""

    model_config = ConfigDict(extra="allow")

    msg_id: str = Field(min_length=1, max_length=128)
    text: str | None = Field(default=None, max_length=4000)
    delivery_time: str | int | None = None
    tracking_id: str | None = None


class ZaloEvent(BaseModel):
    """One event of Zalo's webhook (ZNS and official account)."""

    model_config = ConfigDict(extra="allow")

    app_id: str | int
    event_name: str = Field(min_length=1, max_length=64)
    timestamp: str | int
    sender: ZaloUser | None = None
    recipient: ZaloUser | None = None
    message: ZaloMessage | None = None


class ZaloWebhook:
    """Zalo's event, verified on its raw bytes, fresh, then parsed."""

    schema = ZaloEvent

    def events(
        self,
        route: str,
        body: bytes,
        secret: str,
        headers: Mapping[str, str],
        window: Window,
    ) -> Events:
        """The receipt or reply one signed Zalo event stands for (none for other events)."""
        signature = headers.get(SIGNATURE)
        if not signature:
            raise refuse(route, "missing (X-ZEvent-Signature)")
        given = signature.strip().removeprefix("mac=").removeprefix("MAC=")
        stamp = _signed_stamp(route, body, secret, given)
        window.check(route, stamp / 1000)  # Zalo's timestamps are in milliseconds
        doc = json_object(body)
        if doc.get("event_name") not in HANDLED:
            return Events()  # follow, seen, ...: Zalo wants a 200, or it retries and disables us
        return _events(route, valid(ZaloEvent, doc))


def _signed_stamp(route: str, body: bytes, secret: str, given: str) -> int:
    """The timestamp Zalo signed the body with: sha256(app_id + body + timestamp + secret).

    app_id and timestamp are fields of the body; they are found in its raw bytes, and the
    first few of each are tried, so nothing of the body is parsed before it is verified.
    """
    app_ids, stamps = _first_values(_APP_ID, body), _first_values(_STAMP, body)
    if not (app_ids and stamps):
        raise ApiError("a Zalo event has app_id and timestamp", code="invalid_request", status=422)
    for app_id in app_ids:
        prefix = hashlib.sha256(app_id + body)
        for stamp in stamps:
            digest = prefix.copy()
            digest.update(stamp + secret.encode())
            if same(given, digest.hexdigest()):
                return int(stamp)
    raise refuse(route, "wrong")


def _events(route: str, event: ZaloEvent) -> Events:
    """The receipt (a ZNS reached the phone) or the reply an event stands for."""
    if event.event_name == RECEIVED:
        if event.message is None:
            raise invalid("message", "a user_received_message event names its message.msg_id")
        receipt = Receipt(route, event.message.msg_id, delivered=True, state="RECEIVED")
        return Events(receipts=[receipt])
    message = event.message
    if message is None or message.text is None or event.sender is None:
        raise invalid("message", "a user_send_text event has sender.id and message.text")
    recipient = event.recipient.id if event.recipient else ""
    reply = Inbound(route, event.sender.id, message.text, "zalo", recipient, message.msg_id)
    return Events(replies=[reply])


def _first_values(field: re.Pattern[bytes], body: bytes) -> list[bytes]:
    """The values of the first few matches of a field in the raw body."""
    found = itertools.islice(field.finditer(body), _CANDIDATES)
    return [match.group(1) or match.group(2) for match in found]
