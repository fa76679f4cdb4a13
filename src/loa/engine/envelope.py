"""Batches and their versioned msgpack envelope: the one thing a queue entry holds."""

from __future__ import annotations

import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import msgpack

from loa.errors import EnvelopeError
from loa.message import Lane, Message

VERSION = 1
_FIELDS = 9  # version, id, campaign, lane, route, attempt, created_ms, expires_ms, messages


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
        )


def message_row(message: Message) -> list[Any]:
    """A message as the plain list stored in an envelope."""
    return [message.id, message.to, message.body, message.parts, message.extra]


def pack(batch: Batch) -> bytes:
    """Encode a batch as a versioned msgpack envelope."""
    rows = [message_row(m) for m in batch.messages]
    return msgpack.packb(  # type: ignore[no-any-return]
        [
            VERSION,
            batch.id,
            batch.campaign,
            int(batch.lane),
            batch.route,
            batch.attempt,
            batch.created_ms,
            batch.expires_ms,
            rows,
        ],
        use_bin_type=True,
    )


def unpack(data: bytes) -> Batch:
    """Decode an envelope; anything that is not a version-1 envelope raises EnvelopeError."""
    try:
        fields = msgpack.unpackb(data, raw=False, use_list=True, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise EnvelopeError(f"queue entry is not valid msgpack: {exc}") from exc
    if not isinstance(fields, list) or not fields:
        raise EnvelopeError("queue entry is not an envelope (expected a msgpack array)")
    if fields[0] != VERSION:
        raise EnvelopeError(
            f"unsupported envelope version {fields[0]!r} (this loa reads {VERSION})"
        )
    if len(fields) != _FIELDS:
        raise EnvelopeError(f"envelope has {len(fields)} fields, expected {_FIELDS}")
    _, batch_id, campaign, lane, route, attempt, created_ms, expires_ms, rows = fields
    try:
        messages = list(itertools.starmap(Message, rows))
        return Batch(
            route=route,
            lane=Lane(lane),
            messages=messages,
            campaign=campaign,
            id=batch_id,
            attempt=attempt,
            created_ms=created_ms,
            expires_ms=expires_ms,
        )
    except (TypeError, ValueError) as exc:
        raise EnvelopeError(f"envelope fields are malformed: {exc}") from exc
