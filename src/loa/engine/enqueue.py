"""The one way a planner puts batches on the queues: batch ids, shard choice, room, put-once.

A planner only groups messages and numbers its batches per route; this module turns a
(prefix, route, number) into the batch id, picks the shard (`pick_shard`, the one picker the
producer and the fallback hand-over use too), waits while the target streams are full
(backpressure) and queues each id at most once, so a planner that starts again after a crash
queues nothing twice.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from loa.engine.envelope import Batch, now_ms
from loa.engine.keys import ShardKeys, shard_keys
from loa.engine.queue import Queues
from loa.errors import QueueFull
from loa.message import Lane, Message
from loa.settings import Settings

PIPELINE = 32  # batches put together: one look for room and one round trip of puts


def pick_shard(shards: Sequence[ShardKeys], key: int | str) -> ShardKeys:
    """The shard for a batch: by its number, or by a stable hash of its id (never by chance,
    so a batch queued again after a crash meets its own id in the same shard)."""
    index = key if isinstance(key, int) else zlib.crc32(key.encode())
    return shards[index % len(shards)]


def batch_id(prefix: str, route: str, number: int) -> str:
    """The id of a planner's batch: deterministic, so `put_once` refuses it a second time."""
    return f"{prefix}.{route}.{number}"


@dataclass(frozen=True, slots=True)
class Numbered:
    """A batch as a planner hands it over: where it goes, its number on the route, its rows."""

    route: str
    number: int
    messages: list[Message]
    due_ms: int = 0  # 0: at once; else the time it becomes due
    region: str = ""  # the audience region every message is in ("": none, or several)


@dataclass(frozen=True, slots=True)
class Origin:
    """What every batch of one planning run shares."""

    campaign: str
    prefix: str  # batch ids start with it: the campaign, and its partition when there are some
    lane: Lane
    expires_ms: int = 0


async def wait_for_room(
    queues: Queues, limit: int, pending: Sequence[tuple[ShardKeys, Batch]], max_wait: float
) -> float:
    """Backpressure: wait while any target stream holds `limit` batches or more."""
    streams = sorted({keys.stream(batch.lane) for keys, batch in pending})
    waited, pause = 0.0, 0.01
    while True:
        pipe = queues.redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(stream)
        if max(await pipe.execute()) < limit:
            return waited
        if waited >= max_wait:
            raise QueueFull(f"queues stayed full for {waited:.0f}s ({len(streams)} streams)")
        await asyncio.sleep(pause)
        waited += pause
        pause = min(pause * 2, 0.5)


class Enqueuer:
    """Puts numbered batches of one planning run on the queues, once each."""

    def __init__(
        self, queues: Queues, settings: Settings, origin: Origin, max_wait: float = 3600.0
    ) -> None:
        self.queues = queues
        self.settings = settings
        self.origin = origin
        self.max_wait = max_wait
        self._shards: dict[str, list[ShardKeys]] = {}

    async def prepare(self) -> None:
        """Create every route's streams and consumer groups (once, before the first put)."""
        for route in self.settings.routes:
            await self.queues.prepare(self.shards(route))

    def shards(self, route: str) -> list[ShardKeys]:
        """The route's shard keys (cached)."""
        if route not in self._shards:
            count = self.settings.route(route).shards
            self._shards[route] = shard_keys(self.settings.namespace, route, count)
        return self._shards[route]

    async def put(self, items: Sequence[Numbered]) -> int:
        """Queue the batches, PIPELINE at a time: one look for room on their streams, then one
        put for them. Returns how many were new (the others were queued before a restart)."""
        new = 0
        for start in range(0, len(items), PIPELINE):
            new += await self._put(items[start : start + PIPELINE])
        return new

    async def _put(self, items: Sequence[Numbered]) -> int:
        origin, now = self.origin, now_ms()
        queued: list[tuple[ShardKeys, Batch, int]] = []
        for item in items:
            batch = Batch(
                route=item.route,
                lane=origin.lane,
                messages=item.messages,
                campaign=origin.campaign,
                id=batch_id(origin.prefix, item.route, item.number),
                expires_ms=origin.expires_ms,
                region=item.region,
            )
            keys = pick_shard(self.shards(item.route), item.number)
            queued.append((keys, batch, item.due_ms if item.due_ms > now else 0))
        limit = self.settings.queue.max_depth
        await wait_for_room(self.queues, limit, [(k, b) for k, b, _ in queued], self.max_wait)
        return await self.queues.put_once(queued)
