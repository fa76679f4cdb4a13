"""Putting messages on the queues: batching, shard choice and backpressure."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from loa.engine.enqueue import pick_shard, wait_for_room
from loa.engine.envelope import Batch
from loa.engine.keys import ShardKeys, shard_keys
from loa.engine.queue import Queues
from loa.message import Lane, Message
from loa.settings import Settings

PIPELINE = 32  # batches per round trip


@dataclass(slots=True)
class Enqueued:
    """What one `enqueue` call put on the queues."""

    messages: int = 0
    batches: int = 0
    waited: float = 0.0  # seconds spent waiting for room (backpressure)


class Producer:
    """Packs messages into batches and spreads them over a route's shards, waiting when full."""

    def __init__(self, queues: Queues, settings: Settings, max_wait: float = 3600.0) -> None:
        self.queues = queues
        self.settings = settings
        self.max_wait = max_wait
        self._shards: dict[str, list[ShardKeys]] = {}
        self._turn: dict[str, int] = {}  # batches put per route: the shards take turns

    def _next_shard(self, route: str) -> ShardKeys:
        if route not in self._shards:
            limits = self.settings.route(route)
            self._shards[route] = shard_keys(self.settings.namespace, route, limits.shards)
        turn = self._turn.get(route, 0)
        self._turn[route] = turn + 1
        return pick_shard(self._shards[route], turn)

    async def enqueue(
        self,
        route: str,
        messages: Iterable[Message],
        *,
        lane: Lane = Lane.NORMAL,
        campaign: str = "",
        expires_ms: int = 0,
    ) -> Enqueued:
        """Queue `messages` (any iterable, consumed as a stream) on `route` in `lane`."""
        size = self.settings.queue.batch_size
        result = Enqueued()
        pending: list[tuple[ShardKeys, Batch]] = []
        iterator = iter(messages)
        while chunk := list(itertools.islice(iterator, size)):
            batch = Batch(
                route=route, lane=lane, messages=chunk, campaign=campaign, expires_ms=expires_ms
            )
            pending.append((self._next_shard(route), batch))
            result.messages += len(chunk)
            result.batches += 1
            if len(pending) >= PIPELINE:
                result.waited += await self._flush(pending)
        if pending:
            result.waited += await self._flush(pending)
        return result

    async def _flush(self, pending: list[tuple[ShardKeys, Batch]]) -> float:
        waited = await self.wait_for_room(pending)
        await self.queues.put_many(pending)
        pending.clear()
        return waited

    async def wait_for_room(self, pending: list[tuple[ShardKeys, Batch]]) -> float:
        """Backpressure: wait while any target stream holds `max_depth` batches or more."""
        limit = self.settings.queue.max_depth
        return await wait_for_room(self.queues, limit, pending, self.max_wait)
