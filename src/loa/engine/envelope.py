"""Batches and their versioned msgpack envelope: the one thing a queue entry holds.

Version 2 (written now) stores what every message of a batch shares once: a campaign's batch
holds the same text for a few hundred people, and storing it once per message made the text
most of the queues' memory. Version 1 entries (already queued) are still read. Version 3 is
version 2 with the region of the campaign's audience every recipient of the batch is in (the
planner batches each region apart, so that workers count what they send per region with the
batch, not per message); a batch without a region is written as version 2.

    v1: [1, id, campaign, lane, route, attempt, created_ms, expires_ms, rows]
        rows: [id, to, body, parts, extra] each
    v2: [2, id, campaign, lane, route, attempt, created_ms, expires_ms, common, rows]
        common: [body, parts] shared by every row, which is then [id, to] or [id, to, extra];
        or nil, and every row is whole as in v1
    v3: [3, id, campaign, lane, route, attempt, created_ms, expires_ms, region, common, rows]

The rows stay last in both, so a reader that only wants message ids finds them at [-1][i][0].
"""

from __future__ import annotations

import itertools
import operator
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgpack

from loa.errors import EnvelopeError
from loa.message import Lane, Message

VERSION = 2  # of a batch without a region
REGION_VERSION = 3
# fields of each version: version, id, campaign, lane, route, attempt, created_ms, expires_ms,
# (v3: region,) (v2, v3: common,) rows
_FIELDS = {1: 9, 2: 10, 3: 11}


def now_ms() -> int:
    """Wall-clock milliseconds, the unit of every timestamp in an envelope."""
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class Batch:
    """Up to a few hundred messages for one route and lane: the unit stored in a queue entry."""

    route: str
    lane: Lane
    messages: list[Message]
    campaign: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempt: int = 0
    created_ms: int = field(default_factory=now_ms)
    expires_ms: int = 0  # 0: never expires
    region: str = ""  # the audience region all its recipients are in ("": none, or several)

    def expired(self, at_ms: int) -> bool:
        """True when the batch's advice is stale at `at_ms` and must not be sent."""
        return self.expires_ms != 0 and at_ms >= self.expires_ms

    def derive(self, messages: list[Message], attempt: int) -> Batch:
        """A batch with the same identity and limits carrying `messages` (for retries)."""
        return Batch(
            route=self.route,
            lane=self.lane,
            messages=messages,
            campaign=self.campaign,
            id=f"{self.id.split('~', 1)[0]}~{attempt}",
            attempt=attempt,
            created_ms=self.created_ms,
            expires_ms=self.expires_ms,
            region=self.region,
        )


def message_row(message: Message) -> list[Any]:
    """A message as the plain list stored in an envelope."""
    return [message.id, message.to, message.body, message.parts, message.extra]


# the same row as a tuple, read in C (msgpack packs a tuple as the list it packs)
_ROW = operator.attrgetter("id", "to", "body", "parts", "extra")


def pack(batch: Batch) -> bytes:
    """Encode a batch as a versioned msgpack envelope (the current version)."""
    messages = batch.messages
    common = _common(messages)
    rows: list[Any]
    if common is None:
        rows = list(map(_ROW, messages))
    else:
        rows = [[m.id, m.to] if m.extra is None else [m.id, m.to, m.extra] for m in messages]
    head = [
        REGION_VERSION if batch.region else VERSION,
        batch.id,
        batch.campaign,
        int(batch.lane),
        batch.route,
        batch.attempt,
        batch.created_ms,
        batch.expires_ms,
    ]
    if batch.region:
        head.append(batch.region)
    return msgpack.packb([*head, common, rows], use_bin_type=True)  # type: ignore[no-any-return]


def _common(messages: list[Message]) -> list[Any] | None:
    """[body, parts] when more than one message and all of them share both, else None."""
    if len(messages) < 2:
        return None
    first = messages[0]
    body, parts = first.body, first.parts
    for m in messages:
        # `is` first: a planner's messages share one body object, and comparing is then free
        if (m.body is not body and m.body != body) or m.parts != parts:
            return None
    return [body, parts]


def unpack(data: bytes) -> Batch:
    """Decode an envelope of version 1 or 2; anything else raises EnvelopeError."""
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise EnvelopeError(f"queue entry is not valid msgpack: {exc}") from exc
    if not isinstance(fields, list) or not fields:
        raise EnvelopeError("queue entry is not an envelope (expected a msgpack array)")
    version = fields[0]
    expected = _FIELDS.get(version) if type(version) is int else None
    if expected is None:
        *first, last = (str(v) for v in _FIELDS)
        known = f"{', '.join(first)} and {last}"
        raise EnvelopeError(f"unsupported envelope version {version!r} (this loa reads {known})")
    if len(fields) != expected:
        raise EnvelopeError(
            f"envelope version {version} has {len(fields)} fields, expected {expected}"
        )
    batch_id, campaign, lane, route, attempt, created_ms, expires_ms = fields[1:8]
    try:
        region = fields[8] if version == REGION_VERSION else ""
        if type(region) is not str:
            raise TypeError("the region must be text")
        messages = _messages(fields[-2] if version >= 2 else None, fields[-1])
        return Batch(
            route=route,
            lane=Lane(lane),
            messages=messages,
            campaign=campaign,
            id=batch_id,
            attempt=attempt,
            created_ms=created_ms,
            expires_ms=expires_ms,
            region=region,
        )
    except (TypeError, ValueError, IndexError) as exc:
        raise EnvelopeError(f"envelope fields are malformed: {exc}") from exc


def _messages(common: Any, rows: list[Any]) -> list[Message]:
    """Whole messages from stored rows: each gets the shared body and parts when there are."""
    if common is None:
        return list(itertools.starmap(Message, rows))
    body, parts = common
    if not isinstance(body, str) or type(parts) is not int:
        raise TypeError("the shared body and parts must be text and a whole number")
    messages = []
    for row in rows:
        if not 2 <= len(row) <= 3:
            raise ValueError(f"a row of {len(row)} fields where 2 or 3 are expected")
        extra = row[2] if len(row) == 3 else None
        messages.append(Message(row[0], row[1], body, parts, extra))
    return messages
