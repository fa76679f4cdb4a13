"""The adapter contract: an async `send` per chunk of messages, `aclose`, an optional `ping`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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

    Both calls return at once, so an adapter may call them from its protocol's read loop, with
    a future that is done once the event is written to Redis, or fails when it could not be
    written (events that arrive together share one write, and the same future). An adapter
    acknowledges an event to its provider only once the future is done, and answers a failure
    with a temporary error, so that the provider sends the event again: nothing is
    acknowledged and then lost.
    """

    def receipt(self, receipt: Receipt) -> asyncio.Future[None]: ...

    def inbound(self, message: Inbound) -> asyncio.Future[None]: ...


@runtime_checkable
class EmitsEvents(Protocol):
    """An adapter whose provider sends receipts or replies; the worker attaches its sink."""

    def attach(self, sink: EventSink) -> None: ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an adapter's provider does besides taking messages, declared by the adapter class
    as `capabilities` (an adapter that declares none has the defaults).

    `receipts` and `replies`: they come on the adapter's own connection (it `attach`es the
    worker's sink). `webhook`: the name of the callback format its provider sends, as the
    registry knows it; "loa" is loa's own signed receipt batch, which any provider that can be
    configured to send it may use. A route takes callbacks only with a secret
    (`api.webhook_secrets`), and then its accepted messages are remembered for their receipts.
    """

    receipts: bool = False
    replies: bool = False
    webhook: str = "loa"


DEFAULT_CAPABILITIES = Capabilities()


@dataclass(frozen=True, slots=True)
class BindState:
    """One connection a provider sends on: its kind (an SMPP bind mode), up or not, and why not."""

    kind: str
    up: bool
    error: str = ""  # the last failed attempt, as "ErrorType: detail"; empty when none


@runtime_checkable
class Listens(Protocol):
    """An adapter whose provider sends on connections it holds open (SMPP receiving binds).

    `listen` starts keeping them up in the background, whether or not anything is sent, and
    reconnects each one that drops, with back-off, until `aclose`. `binds` says how they are.
    """

    def listen(self) -> None: ...

    def binds(self) -> Sequence[BindState]: ...


# A factory builds an adapter for one route from that route's `options` table.
AdapterFactory = Callable[[str, Mapping[str, Any]], Adapter]
