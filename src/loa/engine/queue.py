"""Sharded batch queues on Redis streams: put, take by priority, claim, checkpoint, settle."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack
from redis.exceptions import ResponseError

from loa.engine.connection import RedisClient, is_cluster, text
from loa.engine.envelope import Batch, now_ms, pack, unpack
from loa.engine.keys import LANES, ShardKeys, region_field
from loa.engine.progress import Progress
from loa.engine.scripts import ScriptArg, scripts
from loa.errors import EnvelopeError
from loa.message import Lane, Outcome

log = logging.getLogger(__name__)

GROUP = "workers"
FIELD = b"b"
PROMOTE_PER_TAKE = 16
SCAN_PAGE = 200  # queue entries read per round trip when looking for a campaign's batches
DROP_PER_CALL = 500  # batches dropped per script call
URGENT = LANES[:-1]  # the lanes that hold lower ones back: all but bulk


@dataclass(slots=True)
class Taken:
    """A batch this consumer now owns, with where it lives and how far it already got."""

    keys: ShardKeys
    lane: Lane
    entry_id: str
    batch: Batch
    consumer: str
    reclaimed: bool = False
    progress: Progress | None = None
    deliveries: int = 1  # how many consumers have taken it, this one included
    lost: bool = False  # another consumer claimed it: stop sending, do not settle

    @property
    def stream(self) -> str:
        """The stream that holds the entry."""
        return self.keys.stream(self.lane)


@dataclass(slots=True)
class DeadLetter:
    """One message that gave up, with the reason."""

    entry_id: str
    route: str
    lane: str
    campaign: str
    batch: str
    attempt: int
    message: list[Any]
    reason: str
    at_ms: int


class Held(enum.Enum):
    """A take that found lower lanes held back while a higher lane is being sent."""

    BACK = "held back"


class Queues:
    """All queue operations; one instance per process, shared by its route runners."""

    def __init__(self, redis: RedisClient, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        table = scripts(redis)
        self._take = table["take"]
        self._checkpoint = table["checkpoint"]
        self._settle = table["settle"]
        self._touch = table["touch"]
        self._put_once = table["put_once"]
        self._drop = table["drop"]
        self._top_lane = table["top_lane"]

    async def prepare(self, shards: Iterable[ShardKeys]) -> None:
        """Create each lane stream and its consumer group if missing."""
        for keys in shards:
            for stream in keys.streams():
                try:
                    await self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def put(self, keys: ShardKeys, batch: Batch) -> str:
        """Append a batch to its lane's stream; returns the entry id."""
        entry_id = await self.redis.xadd(keys.stream(batch.lane), {FIELD: pack(batch)})
        return text(entry_id)

    async def put_once(self, items: Sequence[tuple[ShardKeys, Batch, int]]) -> int:
        """Queue (keys, batch, due ms) items unless a batch with that id was queued before.

        Due 0 goes to the lane's stream; a later due time waits in its retry set. Returns how
        many were new.
        """
        flags = await self._put_once.run_many(
            [
                (
                    [keys.stream(batch.lane), keys.delayed(batch.lane), keys.planned],
                    [batch.id, pack(batch), due_ms],
                )
                for keys, batch, due_ms in items
            ]
        )
        return sum(int(flag) for flag in flags)

    async def put_many(self, items: Sequence[tuple[ShardKeys, Batch]]) -> None:
        """Append many batches in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for keys, batch in items:
            pipe.xadd(keys.stream(batch.lane), {FIELD: pack(batch)})
        await pipe.execute()

    async def take(
        self, keys: ShardKeys, consumer: str, lowest: Lane = Lane.BULK
    ) -> Taken | Held | None:
        """The next batch of this shard, highest lane first down to `lowest`, or None.

        Held.BACK when the shard has nothing waiting in the lanes that may go now, but a higher
        lane's batches are still being sent: lower lanes wait until they are done.
        """
        args: list[ScriptArg] = [GROUP, consumer, 1, now_ms(), PROMOTE_PER_TAKE, int(lowest) + 1]
        try:
            got = await self._take(keys=[*keys.streams(), *keys.delayed_sets()], args=args)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # the streams were deleted under us (a flushed or replaced server): make them again
            log.warning("queue streams were missing; recreated them", extra={"route": keys.route})
            await self.prepare([keys])
            return None
        if not got:
            return None
        if int(got[0]) < 0:
            return Held.BACK
        lane = LANES[int(got[0])]
        for entry_id, fields in got[1]:
            return await self._decode(keys, lane, text(entry_id), fields, consumer)
        return None

    async def top_lane(self, shards: Sequence[ShardKeys], now: int) -> Lane:
        """The highest lane with work on any of `shards`: batches waiting or being sent, or
        retries due (epoch ms `now`). BULK when no higher lane has any. One call on a single
        server; on a cluster, whose nodes hold different shards, one per shard."""
        keys = [
            [*(k.stream(lane) for lane in URGENT), *(k.delayed(lane) for lane in URGENT)]
            for k in shards
        ]
        if is_cluster(self.redis):
            found = await asyncio.gather(*(self._top_lane(keys=one, args=[now]) for one in keys))
            return LANES[min(int(index) for index in found)]
        every = [key for one in keys for key in one]
        return LANES[int(await self._top_lane(keys=every, args=[now]))]

    async def wait_take(self, keys: ShardKeys, consumer: str, block_ms: int) -> list[Taken]:
        """Block up to `block_ms` for new batches of this shard (idle senders wait here).

        One entry per lane at most; all of them are now ours, highest lane first.
        """
        streams: dict[Any, Any] = {stream: ">" for stream in keys.streams()}
        try:
            # RESP2 reply: [[stream, [(entry id, {field: value})]], ...]
            reply: Any = await self.redis.xreadgroup(
                GROUP, consumer, streams, count=1, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.prepare([keys])
            return []
        lanes = {stream: lane for stream, lane in zip(keys.streams(), LANES, strict=True)}
        found: list[Taken] = []
        for stream, entries in reply or []:
            lane = lanes[text(stream)]
            for entry_id, fields in entries:
                taken = await self._decode(keys, lane, text(entry_id), fields, consumer)
                if taken is not None:
                    found.append(taken)
        return sorted(found, key=lambda t: t.lane)

    async def forget_idle_consumers(self, keys: ShardKeys, idle_ms: int) -> int:
        """Remove consumers (old worker processes) that own nothing and were idle `idle_ms`."""
        removed = 0
        for stream in keys.streams():
            for info in await self.redis.xinfo_consumers(stream, GROUP):
                if int(info["pending"]) == 0 and int(info["idle"]) >= idle_ms:
                    await self.redis.xgroup_delconsumer(stream, GROUP, info["name"])
                    removed += 1
        return removed

    async def claim(
        self,
        keys: ShardKeys,
        consumer: str,
        min_idle_ms: int,
        cursors: dict[str, str],
        count: int = 8,
    ) -> list[Taken]:
        """Batches that another consumer took and left idle (it died): now ours, with progress.

        `cursors` remembers, per stream, where the scan of pending entries stopped, so a dead
        worker's batches are found behind any number of live ones over successive calls.
        """
        claimed: list[Taken] = []
        for lane in LANES:
            stream = keys.stream(lane)
            cursor = cursors.get(stream, "0-0")
            reply = await self.redis.xautoclaim(
                stream, GROUP, consumer, min_idle_ms, start_id=cursor, count=count
            )
            cursors[stream] = text(reply[0])
            for entry_id, fields in reply[1]:
                taken = await self._decode(
                    keys, lane, text(entry_id), fields, consumer, reclaimed=True
                )
                if taken is not None:
                    taken.deliveries = await self._deliveries(stream, taken.entry_id)
                    claimed.append(taken)
        return claimed

    async def touch(self, stream: str, consumer: str, entry_ids: Sequence[str]) -> list[str]:
        """Refresh ownership of held entries of one stream; returns those no longer ours."""
        lost = await self._touch(keys=[stream], args=[GROUP, consumer, *entry_ids])
        return [text(entry_id) for entry_id in lost]

    async def _deliveries(self, stream: str, entry_id: str) -> int:
        pending = await self.redis.xpending_range(stream, GROUP, entry_id, entry_id, 1)
        return int(pending[0]["times_delivered"]) if pending else 1

    async def checkpoint(self, taken: Taken, progress: Progress) -> bool:
        """Save progress and refresh ownership; False when the batch is no longer ours."""
        keys = [taken.stream, taken.keys.progress]
        args: list[ScriptArg] = [GROUP, taken.consumer, taken.entry_id, progress.pack()]
        return bool(await self._checkpoint(keys=keys, args=args))

    async def settle(
        self,
        taken: Taken,
        counts: Mapping[str, int],
        requeue: Sequence[tuple[int, Batch]] = (),
        dead: Sequence[bytes] = (),
        regions: Mapping[str, int] | None = None,
    ) -> bool:
        """Count, re-queue (due ms, 0 = now), dead-letter, ack: atomically. False if not ours.

        `regions` counts the batch's accepted messages per region of the audience, kept with
        the campaign's counters (region_field) in the same step.
        """
        keys = taken.keys
        args: list[ScriptArg] = [GROUP, taken.entry_id, taken.consumer, len(counts)]
        for name, amount in counts.items():
            args += [f"{taken.lane.label}:{name}", amount]
        campaign = taken.batch.campaign
        regions = regions or {}
        args.append(len(counts) + len(regions) if campaign else 0)
        if campaign:
            for name, amount in counts.items():
                args += [f"{campaign}:{name}", amount]
            for region, amount in regions.items():
                args += [region_field(campaign, region, Outcome.ACCEPTED), amount]
        args.append(len(requeue))
        for due_ms, batch in requeue:
            args += [due_ms, pack(batch)]
        args.extend(dead)
        redis_keys = [
            keys.stream(taken.lane),
            keys.delayed(taken.lane),
            keys.dead,
            keys.stats,
            keys.progress,
            keys.campaign_stats,
        ]
        return bool(await self._settle(keys=redis_keys, args=args))

    async def drop_campaign(
        self, shards: Iterable[ShardKeys], campaign: str, outcome: Outcome
    ) -> int:
        """Remove a campaign's batches that wait in these shards, due now or later, counting
        their messages under `outcome`; returns how many. Batches a worker holds stay with it.
        """
        dropped = 0
        for keys in shards:
            for lane in LANES:
                waiting = await self._waiting_of(keys.stream(lane), campaign)
                later = await self._later_of(keys.delayed(lane), campaign)
                for start in range(0, max(len(waiting), len(later)), DROP_PER_CALL):
                    some = waiting[start : start + DROP_PER_CALL]
                    args: list[ScriptArg] = [
                        GROUP,
                        f"{lane.label}:{outcome}",
                        f"{campaign}:{outcome}",
                        len(some),
                    ]
                    for entry_id, count in some:
                        args += [entry_id, count]
                    for envelope, count in later[start : start + DROP_PER_CALL]:
                        args += [envelope, count]
                    redis_keys = [
                        keys.stream(lane),
                        keys.delayed(lane),
                        keys.stats,
                        keys.campaign_stats,
                    ]
                    dropped += int(await self._drop(keys=redis_keys, args=args))
        return dropped

    async def _waiting_of(self, stream: str, campaign: str) -> list[tuple[str, int]]:
        """(entry id, messages) of the campaign's batches no worker has taken from `stream`."""
        try:
            groups: Any = await self.redis.xinfo_groups(stream)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return []
            raise
        after = next((text(g["last-delivered-id"]) for g in groups if text(g["name"]) == GROUP), "")
        if not after:
            return []
        found: list[tuple[str, int]] = []
        while True:
            # entries up to the group's last delivered id were taken: only later ones wait
            entries: Any = await self.redis.xrange(stream, min=f"({after}", count=SCAN_PAGE)
            for entry_id, fields in entries:
                batch = _readable(fields.get(FIELD, b""))
                if batch is not None and batch.campaign == campaign:
                    found.append((text(entry_id), len(batch.messages)))
            if len(entries) < SCAN_PAGE:
                return found
            after = text(entries[-1][0])

    async def _later_of(self, delayed: str, campaign: str) -> list[tuple[bytes, int]]:
        """(envelope, messages) of the campaign's batches waiting in the retry set `delayed`."""
        found: list[tuple[bytes, int]] = []
        start = 0
        while True:
            envelopes: Any = await self.redis.zrange(delayed, start, start + SCAN_PAGE - 1)
            for envelope in envelopes:
                batch = _readable(envelope)
                if batch is not None and batch.campaign == campaign:
                    found.append((envelope, len(batch.messages)))
            if len(envelopes) < SCAN_PAGE:
                return found
            start += SCAN_PAGE

    async def campaign_stats(self, shards: Iterable[ShardKeys], campaign: str) -> dict[str, int]:
        """One campaign's counters summed over the given shards, keyed by outcome."""
        fields = [f"{campaign}:{outcome}" for outcome in Outcome]
        pipe = self.redis.pipeline(transaction=False)
        for keys in shards:
            pipe.hmget(keys.campaign_stats, fields)
        total = {str(outcome): 0 for outcome in Outcome}
        for values in await pipe.execute():
            for outcome, value in zip(Outcome, values, strict=True):
                total[str(outcome)] += int(value or 0)
        return total

    async def stats(self, shards: Iterable[ShardKeys]) -> dict[str, int]:
        """Counters of every shard summed, keyed `lane:outcome`."""
        pipe = self.redis.pipeline(transaction=False)
        for keys in shards:
            pipe.hgetall(keys.stats)
        total: dict[str, int] = {}
        for counters in await pipe.execute():
            for name, value in counters.items():
                key = text(name)
                total[key] = total.get(key, 0) + int(value)
        return total

    async def backlog(self, shards: Iterable[ShardKeys]) -> dict[str, int]:
        """Batches waiting per lane (stream entries plus retries), and those in flight."""
        shard_list = list(shards)
        pipe = self.redis.pipeline(transaction=False)
        for keys in shard_list:
            for lane in LANES:
                pipe.xlen(keys.stream(lane))
                pipe.zcard(keys.delayed(lane))
                pipe.xpending(keys.stream(lane), GROUP)
        replies = iter(await pipe.execute(raise_on_error=False))
        backlog = {lane.label: 0 for lane in LANES}
        backlog["pending"] = 0
        backlog["delayed"] = 0
        for _keys in shard_list:
            for lane in LANES:
                length, delayed, pending = next(replies), next(replies), next(replies)
                if isinstance(pending, ResponseError):
                    if "NOGROUP" not in str(pending):
                        raise pending
                    pending = {"pending": 0}  # a route no worker has served yet
                # a stream holds its in-flight entries too, until they are settled
                waiting = max(0, int(length) - int(pending["pending"]))
                backlog[lane.label] += waiting + int(delayed)
                backlog["delayed"] += int(delayed)
                backlog["pending"] += int(pending["pending"])
        return backlog

    async def dead_letters(self, keys: ShardKeys, count: int = 100) -> list[DeadLetter]:
        """The oldest dead letters of one shard."""
        letters = []
        for entry_id, fields in await self.redis.xrange(keys.dead, count=count) or []:
            raw = msgpack.unpackb(fields[b"m"])  # type: ignore[index]
            letters.append(DeadLetter(entry_id=text(entry_id or b""), **raw))
        return letters

    async def _decode(
        self,
        keys: ShardKeys,
        lane: Lane,
        entry_id: str,
        fields: Mapping[bytes, bytes] | list[bytes] | None,
        consumer: str,
        *,
        reclaimed: bool = False,
    ) -> Taken | None:
        if isinstance(fields, list):  # a script's reply is a flat list: field, value, ...
            fields = dict(zip(fields[::2], fields[1::2], strict=True))
        raw = fields.get(FIELD, b"") if fields else b""
        try:
            batch = unpack(raw)
        except EnvelopeError as exc:
            await self._quarantine(keys, lane, entry_id, consumer, raw, str(exc))
            return None
        progress = None
        if reclaimed:
            saved = await self.redis.hget(keys.progress, entry_id)
            if saved is not None:
                progress = Progress.unpack(saved if isinstance(saved, bytes) else saved.encode())
        return Taken(keys, lane, entry_id, batch, consumer, reclaimed=reclaimed, progress=progress)

    async def _quarantine(
        self, keys: ShardKeys, lane: Lane, entry_id: str, consumer: str, raw: bytes, reason: str
    ) -> None:
        """A queue entry nobody can read goes to dead letters whole, so the queue moves on."""
        log.error(
            "unreadable queue entry moved to dead letters",
            extra={"route": keys.route, "entry": entry_id, "reason": reason},
        )
        letter = dead_letter(keys.route, lane, None, raw, f"unreadable entry: {reason}")
        empty = Batch(route=keys.route, lane=lane, messages=[])
        taken = Taken(keys, lane, entry_id, empty, consumer)
        await self.settle(taken, {Outcome.UNREADABLE: 1}, dead=[letter])


def _readable(envelope: bytes) -> Batch | None:
    """The batch in an envelope, or None for one nobody can read (a worker quarantines it)."""
    try:
        return unpack(envelope)
    except EnvelopeError:
        return None


def dead_letter(route: str, lane: Lane, batch: Batch | None, message: Any, reason: str) -> bytes:
    """Encode one dead letter: the message as it was queued, where it came from, and why."""
    return msgpack.packb(  # type: ignore[no-any-return]
        {
            "route": route,
            "lane": lane.label,
            "campaign": batch.campaign if batch else "",
            "batch": batch.id if batch else "",
            "attempt": batch.attempt if batch else 0,
            "message": message,
            "reason": reason,
            "at_ms": now_ms(),
        },
        use_bin_type=True,
    )
