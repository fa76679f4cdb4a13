"""The campaign clock: starts, expires and finishes campaigns in the background, not on read.

A server or a worker supervisor runs it once a second; reading a campaign (its status, the
list, the dashboard) never changes it, so a campaign nobody looks at still ends, and every
reader sees the same state. Several clocks may run at once (one per machine): each move is an
atomic transition from the state it was read in, so no campaign is moved twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from redis.exceptions import RedisError

from loa.campaigns.record import State
from loa.campaigns.service import Campaigns
from loa.engine.connection import RedisClient
from loa.settings import Settings

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0


class CampaignClock:
    """One tick moves every campaign whose time (start, expiry) or counters (all sent) came."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._campaigns: Campaigns | None = None
        self._watching = False

    async def tick(self, redis: RedisClient) -> dict[str, State]:
        """Move the campaigns that are due; returns each one moved with its new state."""
        if self._campaigns is None or self._campaigns.redis is not redis:
            self._campaigns = Campaigns(self.settings, redis)
        campaigns = self._campaigns
        if not self._watching:
            # campaigns launched before this version kept no watched set: find them once
            await campaigns.store.watch_all_active()
            self._watching = True
        moved = await campaigns.advance_all()
        for campaign_id, state in moved.items():
            log.info("campaign moved on", extra={"campaign": campaign_id, "state": str(state)})
        return moved


async def run_clock(
    settings: Settings, redis: RedisClient, stopping: asyncio.Event, period: float = TICK_SECONDS
) -> None:
    """Tick every `period` seconds until `stopping` is set; Redis errors wait for the next tick."""
    clock = CampaignClock(settings)
    while not stopping.is_set():
        try:
            await clock.tick(redis)
        except (RedisError, OSError) as exc:
            log.warning("the campaign clock could not tick", extra={"error": type(exc).__name__})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), period)
