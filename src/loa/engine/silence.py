"""Fallback on silence: a message accepted but not reported delivered in time goes on, once.

A plan's `fallback_after` puts in each message of a channel with receipts how long it may wait
(`loa.fallback.AFTER`). When the provider accepts it, the sender arms a timer: the member
`campaign|message` in the route's sorted set of waiting timers, scored by its due time, with
what it fires (the message, which carries its next channels) in a hash beside it. A delivered
receipt met with the message before the timer is due cancels it (`cancel`, called by the
receipt writer); nothing else does. Every worker sweeps the routes it serves: a sweep claims
the due timers under a lease, queues each one's next-channel message with put-once and the
batch id `fbt.{route}.{campaign}|{message}`, then closes them, counting `fallback_timeout`
once each in the route's counters (per lane and per campaign).

A sweeper killed between its claim and its close leaves the timers claimed; after the lease
(the workers' `claim_idle`) the next sweep fires them again, and put-once queues nothing twice.
Timers live in Redis, in the hash slot of the route's shard 0 (so their counters change in the
same step as they close): they survive restarts, and cost no task per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import msgpack
from redis.exceptions import RedisError

from loa.engine.connection import RedisClient, text
from loa.engine.correlation import Sent
from loa.engine.enqueue import pick_shard
from loa.engine.envelope import Batch, message_row, now_ms
from loa.engine.keys import ShardKeys, shard_keys, timer_keys
from loa.engine.metrics import Metrics
from loa.engine.queue import Queues
from loa.engine.scripts import scripts
from loa.fallback import next_message, silence_ms
from loa.message import Lane, Message, Outcome

log = logging.getLogger(__name__)

SWEEP_PERIOD = 0.25  # seconds between two sweeps of a worker's routes
SWEEP_LIMIT = 500  # timers claimed by one call
# how long a fired timer is remembered: a message sent again after a crash, within this, arms
# no second timer (its fallback would be queued once anyway, but counted twice)
FIRED_MEMORY_MS = 86_400_000


def member(campaign: str, message_id: str) -> str:
    """A timer's name: the person (message id) in the campaign, as receipts name them too."""
    return Sent(campaign, message_id).member


def batch_id(route: str, timer: str) -> str:
    """The id of the batch a timer queues: the same however many sweeps fire it."""
    return f"fbt.{route}.{timer}"


async def cancel(redis: RedisClient, namespace: str, delivered: Mapping[str, Sequence[str]]) -> int:
    """Cancel the timers (by route) of messages reported delivered before they were due."""
    if not any(delivered.values()):
        return 0
    script = scripts(redis)["silence_cancel"]
    now = now_ms()
    cancelled = 0
    for route, members in delivered.items():
        if members:
            keys = timer_keys(namespace, route)
            redis_keys = [keys.waiting, keys.payloads, keys.shard.campaign_stats]
            got = await script(keys=redis_keys, args=[now, *members])
            cancelled += int(got)
    return cancelled


async def pending(redis: RedisClient, namespace: str, route: str) -> int:
    """Timers of a route armed and not yet closed (waiting or being fired)."""
    keys = timer_keys(namespace, route)
    pipe = redis.pipeline(transaction=False)
    pipe.zcard(keys.waiting)
    pipe.zcard(keys.firing)
    waiting, firing = await pipe.execute()  # (fired ones are closed: not counted here)
    return int(waiting) + int(firing)


async def campaign_timers(
    redis: RedisClient, namespace: str, routes: Sequence[str], campaign: str
) -> int:
    """Timers of a campaign armed and not yet closed, over `routes`: while there are, some of
    its messages may still go on to their next channel, and the campaign is not done."""
    pipe = redis.pipeline(transaction=False)
    for route in routes:
        pipe.hget(timer_keys(namespace, route).shard.campaign_stats, f"{campaign}:timers")
    return sum(int(value or 0) for value in await pipe.execute())


class Silence:
    """Arms timers for a worker's senders, and sweeps the routes the worker serves."""

    def __init__(
        self,
        redis: RedisClient,
        queues: Queues,
        metrics: Metrics,
        route_shards: Mapping[str, int],
        lease: float,
    ) -> None:
        self.redis = redis
        self.queues = queues
        self.namespace = queues.namespace
        self.metrics = metrics
        self.route_shards = dict(route_shards)  # every route's shards: fallback targets
        self.lease_ms = max(1, int(lease * 1000))
        table = scripts(redis)
        self._arm = table["silence_arm"]
        self._claim = table["silence_claim"]
        self._fire = table["silence_fire"]

    async def arm(self, route: str, batch: Batch, accepted: Sequence[Message]) -> int:
        """Arm a timer for each accepted message that waits for its receipt; how many were."""
        if not batch.campaign:
            return 0
        now = now_ms()
        args: list[str | int | bytes] = []
        for message in accepted:
            after = silence_ms(message)
            if after:
                payload = _pack(batch, message)
                args += [member(batch.campaign, message.id), now + after, payload]
        if not args:
            return 0
        keys = timer_keys(self.namespace, route)
        redis_keys = [keys.waiting, keys.firing, keys.payloads, keys.fired]
        redis_keys.append(keys.shard.campaign_stats)
        return int(await self._arm(keys=redis_keys, args=args))

    async def run(self, routes: Sequence[str], stopping: asyncio.Event) -> None:
        """Sweep `routes` every SWEEP_PERIOD until `stopping` is set."""
        while not stopping.is_set():
            for route in routes:
                try:
                    while await self.sweep(route) >= SWEEP_LIMIT and not stopping.is_set():
                        pass  # a full claim: more may be due at once
                except (RedisError, OSError) as exc:  # the next sweep tries again
                    log.warning(
                        "could not sweep the fallback timers",
                        extra={"route": route, "error": repr(exc)},
                    )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(SWEEP_PERIOD):
                    await stopping.wait()

    async def sweep(self, route: str) -> int:
        """Fire a route's due timers: queue each fallback once, then close and count them.

        Returns how many timers were claimed.
        """
        keys = timer_keys(self.namespace, route)
        reply = await self._claim(
            keys=[keys.waiting, keys.firing, keys.payloads],
            args=[now_ms(), self.lease_ms, SWEEP_LIMIT],
        )
        claimed = [(text(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2)]
        if not claimed:
            return 0
        items: list[tuple[ShardKeys, Batch, int]] = []
        now = now_ms()
        closing: list[str | int] = [Outcome.FALLBACK_TIMEOUT.value, now, FIRED_MEMORY_MS]
        lanes: dict[str, int] = {}
        for timer, payload in claimed:
            handed = self._fallback(route, timer, payload, now)
            campaign = timer.rsplit("|", 1)[0]
            if handed is None:
                closing += [timer, "", campaign, 0]
                continue
            target_keys, batch = handed
            items.append((target_keys, batch, 0))
            closing += [timer, batch.lane.label, campaign, 1]
            lanes[batch.lane.label] = lanes.get(batch.lane.label, 0) + 1
        if items:
            await self.queues.put_once(items)
        shard = keys.shard
        await self._fire(
            keys=[keys.firing, keys.payloads, shard.stats, shard.campaign_stats, keys.fired],
            args=closing,
        )
        for lane, amount in lanes.items():
            self.metrics.messages.labels(route, lane, Outcome.FALLBACK_TIMEOUT.value).inc(amount)
        return len(claimed)

    def _fallback(
        self, route: str, timer: str, payload: Any, now: int
    ) -> tuple[ShardKeys, Batch] | None:
        """The batch a due timer queues (and its shard), or None when there is nothing to
        send: an unreadable payload, an expired campaign, a next route no worker knows."""
        unpacked = _unpack(payload)
        if unpacked is None:
            log.error("unreadable fallback timer dropped", extra={"route": route})
            return None
        lane, created_ms, expires_ms, message, region = unpacked
        if expires_ms and now >= expires_ms:
            return None  # stale advice is never sent, by any channel
        handover = next_message(message)
        if handover is None or handover[0] not in self.route_shards:
            log.warning(
                "a silent message has no next route this worker knows",
                extra={"route": route, "next": handover[0] if handover else ""},
            )
            return None
        target, moved = handover
        campaign = timer.rsplit("|", 1)[0]
        batch = Batch(
            route=target,
            lane=lane,
            messages=[moved],
            campaign=campaign,
            id=batch_id(route, timer),
            created_ms=created_ms,
            expires_ms=expires_ms,
            region=region,  # its receipts count in the region of the message it replaces
        )
        shards = shard_keys(self.namespace, target, self.route_shards[target])
        return pick_shard(shards, batch.id), batch


def _pack(batch: Batch, message: Message) -> bytes:
    packed: bytes = msgpack.packb(
        [int(batch.lane), batch.created_ms, batch.expires_ms, message_row(message), batch.region],
        use_bin_type=True,
    )
    return packed


def _unpack(payload: Any) -> tuple[Lane, int, int, Message, str] | None:
    """A timer's payload, or None when it is missing or not one loa wrote."""
    if not isinstance(payload, bytes) or not payload:
        return None
    try:
        lane, created_ms, expires_ms, row, region = msgpack.unpackb(payload, raw=False)
        return Lane(lane), int(created_ms), int(expires_ms), Message(*row), str(region)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
        return None
