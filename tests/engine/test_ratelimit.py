"""The shared limiter's arithmetic against real Redis: slow rates, partial grants, throttling."""

from __future__ import annotations

import asyncio
import time

import pytest

from loa.engine.ratelimit import MARGIN, SETTLE, RateLimiter, RateSpec

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("rate", [0.5, 3, 12, 17, 19])
async def test_slow_and_odd_rates_grant_tokens_at_their_rate(redis_client, namespace, rate):
    # at these rates a token fits the tolerance exactly; float rounding once made it never fit
    limiter = RateLimiter(redis_client, namespace, "slow", RateSpec(rate))
    tokens = 3
    started = time.monotonic()
    for _ in range(tokens):
        await asyncio.wait_for(limiter.acquire(1), 10)
    elapsed = time.monotonic() - started
    # the first token is free; the others arrive one interval apart
    assert elapsed >= (tokens - 1) / rate * 0.9


async def test_a_large_request_is_granted_in_leases(redis_client, namespace):
    limits = RateSpec(rate=1000, burst=0.05)
    limiter = RateLimiter(redis_client, namespace, "big", limits)
    started = time.monotonic()
    waited = await asyncio.wait_for(limiter.acquire(300), 10)
    elapsed = time.monotonic() - started
    assert waited > 0
    assert elapsed >= (300 - 50) / 1000 * 0.9, "no more than the burst arrives at once"


async def test_a_first_throttle_halves_the_shared_rate_once_per_window(redis_client, namespace):
    limits = RateSpec(rate=100, throttle_recovery=0.01)
    first = RateLimiter(redis_client, namespace, "carrier", limits)
    second = RateLimiter(redis_client, namespace, "carrier", limits)
    halved = 0.5 * SETTLE  # nothing known about the provider's cap yet: half, and a little room
    assert await first.report_throttle() == pytest.approx(halved, abs=0.01)
    assert await second.report_throttle() == pytest.approx(halved, abs=0.01), (
        "one overload, one cut"
    )
    assert await second.current_factor() == pytest.approx(halved, abs=0.01), "shared by processes"


async def test_a_throttle_that_goes_on_cuts_to_what_the_provider_took(redis_client, namespace):
    limits = RateSpec(rate=1000, throttle_recovery=0.01)
    limiter = RateLimiter(redis_client, namespace, "carrier", limits)
    limiter.record(40, 10)
    started = time.monotonic()
    assert await limiter.report_throttle() == pytest.approx(0.5 * SETTLE, abs=0.01)
    # meanwhile the provider took 120 and refused 40 more (told with the next requests, before
    # the next cut is allowed): it takes about 300 a second
    await asyncio.sleep(0.2)
    limiter.record(60, 20)
    await limiter.acquire(1)
    await asyncio.sleep(0.2)
    limiter.record(60, 20)
    factor = await limiter.report_throttle()
    took_per_s = 120 / (time.monotonic() - started)
    # not halved again: straight to what it took, less the margin and the room to settle
    assert factor == pytest.approx(took_per_s / 1000 * MARGIN * SETTLE, rel=0.15)
    ceiling = float(await redis_client.hget(limiter.key, "ceiling"))
    assert ceiling == pytest.approx(took_per_s, rel=0.15), "the provider's cap is remembered"


async def test_unlimited_route_never_touches_redis(redis_client, namespace):
    limiter = RateLimiter(redis_client, namespace, "free", RateSpec(0.0))
    assert await limiter.acquire(10_000) == 0.0
    assert not await redis_client.exists(limiter.key)


async def test_tokens_given_back_are_granted_again_at_once(redis_client, namespace):
    limits = RateSpec(rate=20, burst=0.5)  # 10 tokens at once
    limiter = RateLimiter(redis_client, namespace, "refund", limits)
    assert limiter.slice_tokens() == 10
    assert await limiter.acquire(10) == pytest.approx(0.0, abs=0.05)
    assert (await limiter._ask(10, throttled=False)).granted == 0, "the burst is spent"
    await limiter.refund(10)
    assert (await limiter._ask(10, throttled=False)).granted == 10, "and back, unspent"


async def test_a_wait_for_tokens_gives_way_and_returns_what_it_held(redis_client, namespace):
    limits = RateSpec(rate=10, burst=1.0)  # 10 tokens at once
    limiter = RateLimiter(redis_client, namespace, "give-way", limits)

    async def give_way() -> bool:
        return True  # a higher lane turned up while we waited for the rest

    # 10 granted at once, then a wait of half a second for the other 5, then giving way
    assert await asyncio.wait_for(limiter.acquire(15, give_way), 10) is None
    # the 10 went back: the whole burst is there again (kept, only 5 would be)
    assert (await limiter._ask(10, throttled=False)).granted == 10
