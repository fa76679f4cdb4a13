"""Whether a route's provider answers: after a send got no answer, nothing leaves until it does."""

from __future__ import annotations

import asyncio
import logging

from loa.adapters.base import Pingable
from loa.engine.context import RouteContext

log = logging.getLogger(__name__)

PROBE_PAUSE_MIN = 0.5  # seconds between pings of a provider that stopped answering, at first
PROBE_PAUSE_MAX = 5.0


class ProviderHealth:
    """Holds a route after an unanswered send, so an outage does not turn every message in it
    into a duplicate, and pings the provider until it answers again."""

    def __init__(self, ctx: RouteContext) -> None:
        self.ctx = ctx
        self._healthy = asyncio.Event()
        self._healthy.set()
        self._probe: asyncio.Task[None] | None = None

    def suspect(self) -> None:
        """A send got no answer: hold the route, and ping the provider until it answers."""
        if not isinstance(self.ctx.adapter, Pingable) or not self._healthy.is_set():
            return
        self._healthy.clear()
        log.warning(
            "a send got no answer: the route holds its messages until the provider answers",
            extra={"route": self.ctx.name},
        )
        self._probe = asyncio.create_task(
            self._ping_until_answered(), name=f"{self.ctx.name}-probe"
        )

    async def until_healthy(self) -> bool:
        """Wait while the route is held for an unanswered send; False when asked to stop."""
        if self._healthy.is_set():
            return True
        stopping = self.ctx.stopping
        healthy = asyncio.ensure_future(self._healthy.wait())
        stop = asyncio.ensure_future(stopping.wait())
        try:
            await asyncio.wait([healthy, stop], return_when=asyncio.FIRST_COMPLETED)
        finally:
            healthy.cancel()
            stop.cancel()
        return self._healthy.is_set() and not stopping.is_set()

    async def close(self) -> None:
        """Stop pinging."""
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)

    async def _ping_until_answered(self) -> None:
        ctx = self.ctx
        assert isinstance(ctx.adapter, Pingable)
        pause = PROBE_PAUSE_MIN
        while not ctx.stopping.is_set():
            try:
                async with asyncio.timeout(ctx.limits.timeout):
                    await ctx.adapter.ping()
            # the plug-in boundary: whatever the ping raised, the provider did not answer
            except Exception:
                log.debug("ping unanswered", extra={"route": ctx.name}, exc_info=True)
                await ctx.pause(pause)
                pause = min(pause * 2, PROBE_PAUSE_MAX)
                continue
            log.info("the provider answers again: the route resumes", extra={"route": ctx.name})
            self._healthy.set()
            return
