"""A worker's cache of campaign controls: a pause is seen once the cache has aged `ttl`."""

from __future__ import annotations

import pytest

from helpers import FakeClock
from loa.campaigns.controls import CACHE_SECONDS, Controls
from loa.campaigns.record import Field, State
from loa.engine.connection import RedisClient
from loa.engine.control import SEND, Decision
from loa.engine.keys import campaign_key
from loa.message import Lane

pytestmark = pytest.mark.anyio


async def test_a_pause_is_seen_when_the_cache_has_aged(
    redis_client: RedisClient, namespace: str
) -> None:
    key = campaign_key(namespace, "c1")
    await redis_client.hset(key, Field.STATE, State.RUNNING)
    clock = FakeClock()
    controls = Controls(redis_client, namespace, clock=clock)
    assert await controls.verdict("c1", Lane.NORMAL, 0) == SEND
    await redis_client.hset(key, Field.STATE, State.PAUSED)
    clock.advance(CACHE_SECONDS / 2)
    assert await controls.verdict("c1", Lane.NORMAL, 0) == SEND, "still the cached state"
    clock.advance(CACHE_SECONDS / 2)
    held = await controls.verdict("c1", Lane.NORMAL, 0)
    assert held.decision is Decision.HOLD


async def test_plain_traffic_is_remembered_as_such_for_ttl(
    redis_client: RedisClient, namespace: str
) -> None:
    clock = FakeClock()
    controls = Controls(redis_client, namespace, clock=clock)
    assert await controls.verdict("c2", Lane.NORMAL, 0) == SEND  # no such campaign
    await redis_client.hset(campaign_key(namespace, "c2"), Field.STATE, State.CANCELLED)
    assert await controls.verdict("c2", Lane.NORMAL, 0) == SEND
    clock.advance(CACHE_SECONDS)
    cancelled = await controls.verdict("c2", Lane.NORMAL, 0)
    assert cancelled.decision is Decision.CANCEL
