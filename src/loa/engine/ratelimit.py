"""A route's rate limit, shared by every process on every machine through one Redis key."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from loa.engine.connection import RedisClient
from loa.engine.keys import limiter_key
from loa.engine.scripts import scripts
from loa.settings import RouteSettings


def _default(name: str) -> float:
    """A route's default for one limiter setting: one source for both kinds of limit."""
    return float(RouteSettings.model_fields[name].default)


@dataclass(frozen=True, slots=True)
class RateSpec:
    """What a limiter holds to: tokens a second (0: unlimited), burst, and throttle recovery."""

    rate: float
    burst: float = _default("burst")  # seconds of rate that may be sent at once
    throttle_floor: float = _default("throttle_floor")  # the lowest share a throttle cuts to
    throttle_recovery: float = _default("throttle_recovery")  # share regained per second

    @classmethod
    def of(cls, route: RouteSettings) -> RateSpec:
        """A route's limit, in its own unit (SMS parts or messages)."""
        return cls(route.rate, route.burst, route.throttle_floor, route.throttle_recovery)


@dataclass(frozen=True, slots=True)
class Grant:
    """One answer of the shared limiter."""

    granted: int
    wait: float  # seconds before asking again for the rest, when not all was granted
    factor: float  # the route's current share of its configured rate (throttling)


# Throttled answers within this long of a cut belong to the same overload: one cut, not many.
CUT_INTERVAL_US = 250_000
MEASURE_WINDOW_US = 1_000_000  # what the provider took and refused is measured over this long
PROBE = 0.01  # above the provider's known cap, probe 1 % of it per second at first
MARGIN = 0.97  # after a throttle, run this far below what the provider took
SETTLE = 0.92  # and start from this share of that, while the provider's window fills again


class RateLimiter:
    """GCRA over leases: one round trip buys many tokens; throttle reports slow the route down."""

    def __init__(self, redis: RedisClient, namespace: str, route: str, limits: RateSpec):
        self.key = limiter_key(namespace, route)
        self.limits = limits
        self._script = scripts(redis)["gcra"]
        self.factor = 1.0
        # tokens the provider took and refused since this process last asked: they travel
        # with the next request, so measuring costs no round trip of its own
        self._took = 0
        self._refused = 0

    @property
    def unlimited(self) -> bool:
        """True when the route has no rate (rate 0): acquire returns at once."""
        return self.limits.rate <= 0

    def record(self, took: int, refused: int = 0) -> None:
        """Tokens the provider took and refused as throttled, told with the next request."""
        self._took += took
        self._refused += refused

    async def _ask(self, want: int, throttled: bool) -> Grant:
        limits = self.limits
        took, refused = self._took, self._refused
        self._took = self._refused = 0
        args = [
            limits.rate,
            limits.burst,
            want,
            1 if throttled else 0,
            limits.throttle_floor,
            limits.throttle_recovery,
            CUT_INTERVAL_US,
            took,
            refused,
            MEASURE_WINDOW_US,
            PROBE,
            MARGIN,
            SETTLE,
        ]
        try:
            granted, wait_us, factor = await self._script(keys=[self.key], args=args)
        except BaseException:
            self.record(took, refused)  # not told: tell them next time
            raise
        self.factor = int(factor) / 1_000_000
        return Grant(int(granted), int(wait_us) / 1_000_000, self.factor)

    def slice_tokens(self) -> int:
        """The most tokens one send may spend at once: the burst at the route's current rate.

        A carrier counts what arrives in its own per-second window; a chunk's worth of tokens
        sent at once can overflow it even when the average rate is well below its cap.
        """
        if self.unlimited:
            return 0
        return max(1, int(self.limits.rate * self.factor * self.limits.burst))

    async def acquire(
        self, tokens: int, give_way: Callable[[], Awaitable[bool]] | None = None
    ) -> float | None:
        """Wait until `tokens` may be sent; returns the seconds spent waiting.

        `give_way` is asked after each wait: when it answers True, the tokens granted so far
        are given back and None is returned, nothing may be sent.
        """
        if self.unlimited or tokens <= 0:
            return 0.0
        started = time.monotonic()
        remaining = tokens
        while remaining > 0:
            grant = await self._ask(remaining, throttled=False)
            remaining -= grant.granted
            if remaining > 0 and grant.wait > 0:
                await asyncio.sleep(grant.wait)
                if give_way is not None and await give_way():
                    await self.refund(tokens - remaining)
                    return None
        return time.monotonic() - started

    async def refund(self, tokens: int) -> None:
        """Give back tokens that were granted but will not be spent."""
        if not self.unlimited and tokens > 0:
            await self._ask(-tokens, throttled=False)

    async def report_throttle(self) -> float:
        """The provider throttled us: cut the route's rate to the share of what we offered that
        it took (told by `record`), at most once per 250 ms; returns the new factor."""
        if self.unlimited:
            return 1.0
        return (await self._ask(0, throttled=True)).factor

    async def current_factor(self) -> float:
        """The route's share of its configured rate now, recovery included."""
        if self.unlimited:
            return 1.0
        return (await self._ask(0, throttled=False)).factor
