"""Whether the configured routes are bound: the workers' binds, else a ping of each provider.

A route whose workers report their receiving binds (see loa.engine.binds) is down when none
of those binds is up; a route nobody reports is pinged through a fresh adapter, as before any
worker runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from redis.exceptions import RedisError

from loa.adapters.base import Adapter, EmitsEvents, Pingable
from loa.adapters.registry import create_adapter
from loa.engine.binds import RouteBinds, read_binds
from loa.engine.connection import RedisClient
from loa.engine.events import EventWriter
from loa.errors import LoaError
from loa.settings import Settings

log = logging.getLogger(__name__)

PING_TTL = 5.0  # seconds a ping result is reused: probes every second cost one bind per TTL
PING_TIMEOUT = 2.0
# what a provider that is down is expected to raise; anything else is logged with its traceback
EXPECTED = (LoaError, OSError, TimeoutError, EOFError)

SinkFactory = Callable[[], EventWriter]
ClientFactory = Callable[[], RedisClient]


@dataclass
class _Ping:
    at: float = float("-inf")  # monotonic time of the last ping
    error: str = ""  # why the last ping failed; empty when it answered
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class RouteChecks:
    """Builds each route's adapter once at start-up; pings the pingable ones, cached."""

    def __init__(self, settings: Settings, sink: SinkFactory, redis: ClientFactory) -> None:
        self.settings = settings
        self.sink = sink  # where a receipt that arrives during a ping goes, not lost
        self.redis = redis
        self.broken: dict[str, str] = {}  # route -> why its adapter cannot be built
        self.pings: dict[str, _Ping] = {}

    async def build(self) -> None:
        """Build and close every route's adapter once: a wrong option shows here, for good."""
        for name in self.settings.routes:
            try:
                adapter = self._adapter(name)
            except EXPECTED as exc:
                self.broken[name] = f"its adapter cannot be built ({type(exc).__name__})"
                log.error("route adapter cannot be built", extra={"route": name, "error": str(exc)})
                continue
            if isinstance(adapter, Pingable):
                self.pings[name] = _Ping()
            await adapter.aclose()

    def _adapter(self, name: str) -> Adapter:
        route = self.settings.route(name)
        return create_adapter(name, route.adapter, route.options)

    async def binds(self) -> dict[str, RouteBinds]:
        """The receiving binds the workers report, per route."""
        return await read_binds(self.redis(), self.settings.namespace, list(self.settings.routes))

    async def down(self, binds: dict[str, RouteBinds]) -> dict[str, str]:
        """Each route that is down now, with why; pings older than PING_TTL are made again.

        `binds` are the workers' reports: a route they cover is judged by them, not pinged.
        """
        pinged = [name for name in self.pings if name not in binds]
        await asyncio.gather(*(self._refresh(name) for name in pinged))
        down = dict(self.broken)
        down.update({name: self.pings[name].error for name in pinged if self.pings[name].error})
        for name, held in binds.items():
            if not held.up:  # kinds of error only: an unauthenticated probe learns no addresses
                why = ", ".join(held.errors)
                down[name] = f"no bind up in {held.workers} worker(s) ({why})"
        return dict(sorted(down.items()))

    async def _refresh(self, name: str) -> None:
        ping = self.pings[name]
        async with ping.lock:  # probes that arrive together share one ping
            if time.monotonic() - ping.at < PING_TTL:
                return
            ping.error = await self._ping(name)
            ping.at = time.monotonic()

    async def _ping(self, name: str) -> str:
        """Ping through a fresh adapter: why it failed, or "" when the provider answered."""
        try:
            adapter = self._adapter(name)
        except EXPECTED as exc:  # a file it reads went away since start-up
            return f"its adapter cannot be built ({type(exc).__name__})"
        sink = self.sink()
        if isinstance(adapter, EmitsEvents):
            adapter.attach(sink)  # an SMSC may push a receipt to any bind, this one too
        try:
            if isinstance(adapter, Pingable):
                async with asyncio.timeout(PING_TIMEOUT):
                    await adapter.ping()
        except EXPECTED as exc:
            log.warning("route ping failed", extra={"route": name, "error": type(exc).__name__})
            return f"its provider does not answer ({type(exc).__name__})"
        # the plug-in boundary: a third-party ping's bug marks its route down, never the API
        except Exception as exc:
            log.warning("route ping raised", extra={"route": name}, exc_info=True)
            return f"its ping raised {type(exc).__name__}"
        finally:
            await adapter.aclose()
            await _flush(sink)
        return ""


async def _flush(sink: EventWriter) -> None:
    """Wait for what arrived during a ping to be written (or refused, and so sent again)."""
    with contextlib.suppress(RedisError, OSError, TimeoutError):
        await sink.drained()
