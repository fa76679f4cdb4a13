"""Channel fallback: a planned message's next channel, for when this one cannot reach the person."""

from __future__ import annotations

from typing import Any

from loa.message import Message

NEXT = "next"  # the key of Message.extra holding the remaining channels


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
