"""Campaigns in Redis: their plan, audience, state and planning counters; the lifecycle rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from loa.campaigns.record import (
    ACTIVE,
    ENDED,
    TRANSITIONS,
    Campaign,
    Field,
    State,
    new_campaign_id,
)
from loa.engine.connection import RedisClient, text
from loa.engine.envelope import now_ms
from loa.engine.keys import active_campaigns_key, campaign_key, campaigns_key
from loa.engine.scripts import scripts
from loa.errors import CampaignError


class CampaignStore:
    """Creates, reads and moves campaigns through their lifecycle."""

    def __init__(self, redis: RedisClient, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self._transition = scripts(redis, "loa.campaigns")["transition"]

    @property
    def index_key(self) -> str:
        """A sorted set of campaign ids by creation time."""
        return campaigns_key(self.namespace)

    @property
    def active_key(self) -> str:
        """A set of the ids of campaigns that may be active (scheduled, running or paused)."""
        return active_campaigns_key(self.namespace)

    async def active_ids(self) -> list[str]:
        """The campaigns the clock looks at: every one that may be scheduled, running or paused."""
        return sorted(text(i) for i in await self.redis.smembers(self.active_key))

    async def forget_active(self, campaign_ids: list[str]) -> None:
        """Stop watching campaigns that have ended (or are gone)."""
        if campaign_ids:
            await self.redis.srem(self.active_key, *campaign_ids)

    async def watch_all_active(self) -> int:
        """Add every stored campaign that is active to the watched set (campaigns stored before
        the set existed, or a process that died between a transition and its bookkeeping)."""
        stored: Any = await self.redis.zrange(self.index_key, 0, -1)
        ids = [text(i) for i in stored]
        found = []
        for start in range(0, len(ids), 500):
            some = ids[start : start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for campaign_id in some:
                pipe.hget(self.key(campaign_id), Field.STATE)
            states = await pipe.execute()
            found += [i for i, state in zip(some, states, strict=True) if text(state) in ACTIVE]
        if found:
            await self.redis.sadd(self.active_key, *found)
        return len(found)

    def key(self, campaign_id: str) -> str:
        """The campaign's hash (the engine reads its state from the same hash)."""
        return campaign_key(self.namespace, campaign_id)

    async def create(
        self, fields: Mapping[str, str | int], campaign_id: str | None = None
    ) -> Campaign:
        """Store a new draft campaign (under `campaign_id`, or a new id); returns it."""
        campaign_id = campaign_id or new_campaign_id()
        now = now_ms()
        values = {
            **{k: str(v) for k, v in fields.items()},
            "id": campaign_id,
            "state": State.DRAFT,
            "created_ms": str(now),
        }
        await self.redis.hset(self.key(campaign_id), mapping=values)  # type: ignore[arg-type]
        await self.redis.zadd(self.index_key, {campaign_id: now})
        return Campaign(campaign_id, {k: str(v) for k, v in values.items()})

    async def get(self, campaign_id: str) -> Campaign:
        """The campaign, or CampaignError when there is none with that id."""
        raw = await self.redis.hgetall(self.key(campaign_id))
        if not raw:
            raise CampaignError(f"no campaign {campaign_id!r}")
        return Campaign(campaign_id, {text(k): text(v) for k, v in raw.items()})

    async def ids(self, limit: int = 100) -> list[str]:
        """The newest campaign ids first (`limit` 0: all of them)."""
        ids: Any = await self.redis.zrevrange(self.index_key, 0, limit - 1)
        return [text(i) for i in ids]

    async def update(self, campaign_id: str, fields: Mapping[str, str | int]) -> None:
        """Set fields of an existing campaign."""
        values = {k: str(v) for k, v in fields.items()}
        await self.redis.hset(self.key(campaign_id), mapping=values)  # type: ignore[arg-type]

    async def apply(
        self, campaign_id: str, action: str, fields: Mapping[str, str | int] | None = None
    ) -> State:
        """Carry out a lifecycle action, setting `fields` too; refused if the state forbids it."""
        allowed, target = TRANSITIONS[action]
        now = str(now_ms())
        pairs = [str(item) for pair in (fields or {}).items() for item in pair]
        if target in ACTIVE:
            # watched before it can be active, so the clock never misses one; a refused action
            # leaves a campaign watched that needs no watching, which costs one read a tick
            await self.redis.sadd(self.active_key, campaign_id)
        reply = await self._transition(
            keys=[self.key(campaign_id)],
            args=[target, now, len(allowed), *sorted(allowed), *pairs],
        )
        if int(reply[0]) == -1:
            raise CampaignError(f"no campaign {campaign_id!r}")
        if int(reply[0]) == 0:
            current = text(reply[1])
            may = " or ".join(sorted(allowed))
            raise CampaignError(
                f"cannot {action} campaign {campaign_id}: it is {current} (must be {may})"
            )
        if target in ENDED:
            await self.forget_active([campaign_id])
        return target
