"""A route's rate limit, shared by every process on every machine through one Redis key."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from loa.engine.connection import RedisClient
from loa.engine.keys import limiter_key
from loa.engine.queue import load_script
from loa.settings import RouteSettings


@dataclass(frozen=True, slots=True)
class Grant:
    """One answer of the shared limiter."""

    granted: int
    wait: float  # seconds before asking again for the rest, when not all was granted
    factor: float  # the route's current share of its configured rate (throttling)


# Throttled answers within this long of a cut belong to the same overload: one cut, not many.
CUT_INTERVAL_US = 250_000


class RateLimiter:
    """GCRA over leases: one round trip buys many tokens; throttle reports slow the route down."""

    def __init__(self, redis: RedisClient, namespace: str, route: str, limits: RouteSettings):
        self.key = limiter_key(namespace, route)
        self.limits = limits
        self._script = redis.register_script(load_script("gcra.lua"))
        self.factor = 1.0

    @property
    def unlimited(self) -> bool:
        """True when the route has no rate (rate 0): acquire returns at once."""
        return self.limits.rate <= 0

    async def _ask(self, want: int, throttled: bool) -> Grant:
        limits = self.limits
        args = [
            limits.rate,
            limits.burst,
            want,
            1 if throttled else 0,
            limits.throttle_floor,
            limits.throttle_recovery,
            CUT_INTERVAL_US,
        ]
        granted, wait_us, factor = await self._script(keys=[self.key], args=args)
        self.factor = int(factor) / 1_000_000
        return Grant(int(granted), int(wait_us) / 1_000_000, self.factor)

    async def acquire(self, tokens: int) -> float:
        """Wait until `tokens` may be sent; returns the seconds spent waiting."""
        if self.unlimited or tokens <= 0:
            return 0.0
        started = time.monotonic()
        remaining = tokens
        while remaining > 0:
            grant = await self._ask(remaining, throttled=False)
            remaining -= grant.granted
            if remaining > 0 and grant.wait > 0:
                await asyncio.sleep(grant.wait)
        return time.monotonic() - started

    async def report_throttle(self) -> float:
        """The provider throttled us: halve the route's rate (at most once per 250 ms)."""
        if self.unlimited:
            return 1.0
        return (await self._ask(0, throttled=True)).factor

    async def current_factor(self) -> float:
        """The route's share of its configured rate now, recovery included."""
        if self.unlimited:
            return 1.0
        return (await self._ask(0, throttled=False)).factor
