"""A route's lanes: the highest lane with work on any of its shards, read for every sender."""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError

from loa.engine.context import RouteContext
from loa.engine.envelope import now_ms
from loa.message import Lane

log = logging.getLogger(__name__)

# How old the route's view of its busiest lane may be when a sender decides to send a lower
# lane: shared by the senders of a process, so a busy route reads it 100 times a second at most
TOP_LANE_FRESH = 0.01
SOON_MS = 1000  # a higher lane's retries due within this long hold lower lanes back already


class LaneView:
    """While a higher lane has batches waiting or being sent anywhere, no lower lane goes."""

    def __init__(self, ctx: RouteContext) -> None:
        self.ctx = ctx
        self.top = Lane.BULK  # as last read
        self._read_at = -1.0  # never read yet
        self._reading: asyncio.Future[None] | None = None

    async def top_lane(self) -> Lane:
        """The highest lane with work on any shard of the route, as read at most TOP_LANE_FRESH
        and a round trip ago. One read at a time serves every sender, and none waits for it
        (but for the first): a busy route must not queue its senders behind this check."""
        reading = self._reading
        if reading is None and time.monotonic() - self._read_at >= TOP_LANE_FRESH:
            reading = self._reading = asyncio.ensure_future(self._read())
        if reading is not None and self._read_at < 0:
            await asyncio.shield(reading)
        return self.top

    async def outranked(self, lane: Lane) -> bool:
        """True when a higher lane than `lane` has work on the route: `lane` must give way."""
        return lane != Lane.EMERGENCY and await self.top_lane() < lane

    async def close(self) -> None:
        """Stop a read under way."""
        if self._reading is not None:
            self._reading.cancel()
            await asyncio.gather(self._reading, return_exceptions=True)

    async def _read(self) -> None:
        try:
            # retries due very soon count as work: an alert a throttle put back for 50 ms must
            # not let bulk take the route meanwhile
            self.top = await self.ctx.queues.top_lane(self.ctx.shards, now_ms() + SOON_MS)
        except (RedisError, OSError) as exc:  # the senders' own calls will say it; keep the last
            log.warning(
                "could not read the route's lanes",
                extra={"route": self.ctx.name, "error": repr(exc)},
            )
        finally:
            self._read_at = time.monotonic()
            self._reading = None
