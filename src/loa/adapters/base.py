"""The adapter contract: an async `send` per chunk of messages, `aclose`, an optional `ping`."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from loa.message import Inbound, Message, Receipt, SendResult


@runtime_checkable
class Adapter(Protocol):
    """Speaks one protocol to one provider.

    `send` gets up to `chunk` messages of one route and returns exactly one result per message,
    in order: Accepted, RetryLater, Throttled or Failed. It does not raise for a message that
    failed; an exception means the whole chunk is retried later. `aclose` releases connections
    and may be called more than once.
    """

    async def send(self, messages: Sequence[Message]) -> Sequence[SendResult]: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Pingable(Protocol):
    """An adapter that can tell whether its provider is reachable (used by readiness checks)."""

    async def ping(self) -> None: ...


class EventSink(Protocol):
    """Where an adapter hands what its provider sends back: receipts and inbound messages.

    Both calls return at once (the worker queues the event and writes it to Redis in batches),
    so an adapter may call them from its protocol's read loop.
    """

    def receipt(self, receipt: Receipt) -> None: ...

    def inbound(self, message: Inbound) -> None: ...


@runtime_checkable
class EmitsEvents(Protocol):
    """An adapter whose provider sends receipts or replies; the worker attaches its sink."""

    def attach(self, sink: EventSink) -> None: ...


# A factory builds an adapter for one route from that route's `options` table.
AdapterFactory = Callable[[str, Mapping[str, Any]], Adapter]
