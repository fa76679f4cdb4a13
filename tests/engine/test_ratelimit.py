"""The shared limiter's arithmetic against real Redis: slow rates, partial grants, throttling."""

from __future__ import annotations

import asyncio
import time

import pytest

from loa.engine.ratelimit import RateLimiter
from loa.settings import RouteSettings

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("rate", [0.5, 3, 12, 17, 19])
async def test_slow_and_odd_rates_grant_tokens_at_their_rate(redis_client, namespace, rate):
    # at these rates a token fits the tolerance exactly; float rounding once made it never fit
    limiter = RateLimiter(redis_client, namespace, "slow", RouteSettings(adapter="null", rate=rate))
    tokens = 3
    started = time.monotonic()
    for _ in range(tokens):
        await asyncio.wait_for(limiter.acquire(1), 10)
    elapsed = time.monotonic() - started
    # the first token is free; the others arrive one interval apart
    assert elapsed >= (tokens - 1) / rate * 0.9


async def test_a_large_request_is_granted_in_leases(redis_client, namespace):
    limits = RouteSettings(adapter="null", rate=1000, burst=0.05)
    limiter = RateLimiter(redis_client, namespace, "big", limits)
    started = time.monotonic()
    waited = await asyncio.wait_for(limiter.acquire(300), 10)
    elapsed = time.monotonic() - started
    assert waited > 0
    assert elapsed >= (300 - 50) / 1000 * 0.9, "no more than the burst arrives at once"


async def test_throttle_halves_the_shared_rate_once_per_window(redis_client, namespace):
    limits = RouteSettings(adapter="null", rate=100, throttle_recovery=0.01)
    first = RateLimiter(redis_client, namespace, "carrier", limits)
    second = RateLimiter(redis_client, namespace, "carrier", limits)
    assert await first.report_throttle() == pytest.approx(0.5, abs=0.01)
    assert await second.report_throttle() == pytest.approx(0.5, abs=0.01), "one overload, one cut"
    assert await second.current_factor() == pytest.approx(0.5, abs=0.01), "shared by processes"


async def test_unlimited_route_never_touches_redis(redis_client, namespace):
    limiter = RateLimiter(redis_client, namespace, "free", RouteSettings(adapter="null"))
    assert await limiter.acquire(10_000) == 0.0
    assert not await redis_client.exists(limiter.key)
