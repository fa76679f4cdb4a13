"""Channel fallback: a planned message's next channel, for when this one cannot reach the person."""

from __future__ import annotations

from typing import Any

from loa.message import Failed, Message

NEXT = "next"  # the key of Message.extra holding the remaining channels
# the key of Message.extra holding how long (ms) a message accepted on this channel may wait
# for its delivered receipt before it goes on to the next channel (the plan's fallback_after)
AFTER = "fallback_after_ms"
# the key of Message.extra set (to false) when the plan says fallback_on_failure = false:
# then only a failure that belongs to the person (Failed.fallback) hands a message over
ON_FAILURE = "fallback_on_failure"


def has_next(message: Message) -> bool:
    """Whether the message names a next channel at all."""
    remaining = message.extra.get(NEXT) if message.extra else None
    return isinstance(remaining, list) and bool(remaining)


def silence_ms(message: Message) -> int:
    """How long (ms) the message may wait for its delivered receipt; 0: it waits for none."""
    after = message.extra.get(AFTER) if message.extra else None
    if type(after) is not int or after <= 0 or not has_next(message):
        return 0
    return after


def on_failure(message: Message, result: Failed | None) -> bool:
    """Whether a permanent failure (`result`), or giving up after the last attempt (None),
    hands the message to its next channel: a failure of the person's always does; one of the
    template never does; any other unless the plan turned it off."""
    if result is not None and result.fallback:
        return True
    if result is not None and result.template:
        return False
    return not (message.extra and message.extra.get(ON_FAILURE) is False)


def next_message(message: Message) -> tuple[str, Message] | None:
    """The route and message of the recipient's next channel, or None when there is none.

    The planner puts in `extra["next"]` the recipient's remaining channels in plan order, each
    `[channel, route, to, body, parts, extra]`. The message returned keeps `message.id` (the
    same recipient of the same campaign) and carries the entries after the one it was made
    from in its own `extra["next"]`, so it can fall back again. A malformed entry (a queue
    written by something else) counts as no next channel rather than failing the batch.
    """
    remaining = message.extra.get(NEXT) if message.extra else None
    if not isinstance(remaining, list) or not remaining:
        return None
    entry, rest = remaining[0], remaining[1:]
    if not isinstance(entry, list | tuple) or len(entry) != 6:
        return None
    _channel, route, to, body, parts, extra = entry
    if not (isinstance(route, str) and route and isinstance(to, str) and to):
        return None
    if not isinstance(body, str) or type(parts) is not int:
        return None
    fields: dict[str, Any] | None = dict(extra) if isinstance(extra, dict) else None
    if rest:
        fields = {**(fields or {}), NEXT: rest}
    return route, Message(message.id, to, body, parts, fields)
