"""Erasure: every trace of one number (a data subject's request), or everything of a campaign.

`purge_number` finds the number in every form it is stored in (E.164 `+84912345678`,
`84912345678`, `0084912345678`, national `0912345678`), inside msgpack batches and dead
letters too, and takes it out: from queued batches (its messages counted `suppressed`, the
rest of each batch stays queued), inbox cases, appointment ledgers (a place is given back
first), the inbound stream, dead letters, deduplication and frequency memory (the columnar
planner's compressed deltas of seen numbers and the packed entries of whom campaigns reached
too: they hold each number exactly, so each is opened and packed again without it), and any
other key of the namespace that names it. The
opt-out list keeps a salted digest instead of the number, so a person who opted out stays
opted out. A batch a worker is sending at that moment is left to it (the person is opted out
only if they were; see docs/privacy.md).

`purge_campaign` removes what one ended campaign kept about people: queued batches, dead
letters, its deduplication hash, its receipt keys, its frequency memory and its pinned
audience; its record and counters stay. After either, `rewrite_aof` makes the server rewrite
its append-only file, so deleted data leaves the disk too.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import msgpack
from redis.exceptions import RedisError, ResponseError

from loa.appointments.ledger import Ledger
from loa.campaigns.record import ENDED, State
from loa.campaigns.store import CampaignStore
from loa.campaigns.suppression import Suppression
from loa.engine.connection import RedisClient, text
from loa.engine.correlation import stored_sent
from loa.engine.envelope import Batch, now_ms, pack, unpack
from loa.engine.keys import (
    LANES,
    ShardKeys,
    campaign_seen_key,
    campaign_seen_numbers_key,
    drives_key,
    inbound_key,
    inbox_prefix,
    legacy_frequency_key,
    optout_salt_key,
    reached_key,
    receipt_pattern,
    shard_keys,
    suppression_key,
)
from loa.engine.queue import GROUP, Queues
from loa.engine.scripts import scripts
from loa.errors import CampaignError, EnvelopeError
from loa.message import Message, Outcome
from loa.phone import canonical
from loa.settings import Settings

PAGE = 500  # entries, members or keys read per round trip
REWRITE_ATTEMPTS = 20  # reads of one element another erasure keeps changing, at most
SEEN_NUMBERS = ":seen-numbers"  # the end of a columnar planner's seen-number deltas' key
# campaigns whose data may go: not while they could still send
PURGEABLE = ENDED | {State.DRAFT, State.APPROVED}


@dataclass
class NumberPurged:
    """What a purge of one number took out: counts only, never the number."""

    queued: int = 0  # messages taken out of queued batches
    in_flight: int = 0  # batches a worker was sending that named it (left to the worker)
    cases: int = 0  # inbox cases deleted, with their conversations
    appointments: int = 0  # drives that knew the number
    inbound: int = 0  # inbound stream entries
    dead_letters: int = 0
    entries: int = 0  # other hash fields, members and stream entries
    keys: int = 0  # whole keys deleted
    opted_out: bool = False  # still opted out (as a salted digest)

    def to_json(self) -> dict[str, Any]:
        """The counts, for `--json` and the API."""
        return asdict(self)


@dataclass
class CampaignPurged:
    """What a purge of one campaign took out."""

    queued: int = 0  # messages dropped from the queues
    dead_letters: int = 0
    receipts: int = 0  # receipt keys
    frequency: int = 0  # people in the frequency memory
    dedup: int = 0  # deduplication keys
    audience: bool = False  # the pinned audience copy was deleted

    def to_json(self) -> dict[str, Any]:
        """The counts, for `--json` and the API."""
        return asdict(self)


def number_pattern(e164: str) -> re.Pattern[bytes]:
    """The number in each form it may be stored in, never part of a longer number."""
    digits = e164.lstrip("+")
    forms = [re.escape(digits)]
    if e164.startswith("+84"):
        forms.append("0" + re.escape(digits[2:]))
    return re.compile(rb"(?<![0-9])(?:\+|00)?(?:" + "|".join(forms).encode() + rb")(?![0-9])")


class Matcher:
    """Does a stored value mention the number: as text, or inside msgpack."""

    def __init__(self, e164: str) -> None:
        self.pattern = number_pattern(e164)
        self.number = int(e164.lstrip("+"))  # as the columnar planner keys it

    def __call__(self, value: Any) -> bool:
        if isinstance(value, str):
            return self.pattern.search(value.encode()) is not None
        if isinstance(value, bytes):
            if self.pattern.search(value):
                return True
            try:
                decoded = msgpack.unpackb(value, raw=False, strict_map_key=False)
            except (ValueError, TypeError, UnicodeDecodeError):  # not msgpack: plain bytes
                return False
            return not isinstance(decoded, bytes | int | float) and self(decoded)
        if isinstance(value, dict):
            return any(self(k) or self(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return any(self(item) for item in value)
        return False

    def message(self, message: Message) -> bool:
        """Is this message to the number (or about its person)."""
        return self(message.to) or self(message.extra or {})


def _glob(text_: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text_)


async def scan(redis: RedisClient, match: str) -> AsyncIterator[str]:
    """Every key matching a glob pattern, in pages."""
    async for key in redis.scan_iter(match=match, count=PAGE):
        yield text(key)


def all_shards(settings: Settings) -> list[ShardKeys]:
    """Every shard of every configured route."""
    return [
        keys
        for route, limits in settings.routes.items()
        for keys in shard_keys(settings.namespace, route, limits.shards)
    ]


class Purge:
    """Erasure on one Redis, for the CLI, the API and tests."""

    def __init__(self, settings: Settings, redis: RedisClient) -> None:
        self.settings = settings
        self.redis = redis
        self.namespace = settings.namespace
        table = scripts(redis, "loa.privacy")
        self._swap = table["swap"]
        self._rewrite_script = table["rewrite"]

    async def number(self, number: str) -> NumberPurged:
        """Every trace of `number` (see the module); an opt-out stays, as a salted digest."""
        e164 = canonical(number)
        match = Matcher(e164)
        done = NumberPurged()
        done.opted_out = await Suppression(self.redis, self.namespace).erase(e164)
        await self._queued(match, done)
        await self._cases(match, done)
        await self._appointments(e164, done)
        await self._everything_else(match, done)
        return done

    async def _queued(self, match: Matcher, done: NumberPurged) -> None:
        """Take the number's messages out of every queued and retrying batch."""
        for keys in all_shards(self.settings):
            for lane in LANES:
                cursor = "-"
                while True:
                    page: Any = await self.redis.xrange(keys.stream(lane), min=cursor, count=PAGE)
                    for entry_id, fields in page:
                        envelope = fields.get(b"b")
                        await self._swap_one(keys, "stream", text(entry_id), envelope, match, done)
                    if len(page) < PAGE:
                        break
                    cursor = "(" + text(page[-1][0])
                members: Any = await self.redis.zrange(keys.delayed(lane), 0, -1)
                for member in members:
                    await self._swap_one(keys, "later", member, member, match, done)

    async def _swap_one(
        self,
        keys: ShardKeys,
        kind: str,
        ref: str | bytes,
        envelope: bytes | None,
        match: Matcher,
        done: NumberPurged,
    ) -> None:
        if not envelope or not match(envelope):
            return
        try:
            batch = unpack(envelope)
        except EnvelopeError:
            return  # unreadable: a worker quarantines it to dead letters, swept from there
        keep = [m for m in batch.messages if not match.message(m)]
        removed = len(batch.messages) - len(keep)
        if not removed:
            return
        new = pack(_with(batch, keep)) if keep else b""
        campaign = f"{batch.campaign}:{Outcome.SUPPRESSED}" if batch.campaign else ""
        try:
            taken = await self._swap(
                keys=[keys.stream(batch.lane), keys.delayed(batch.lane), keys.stats,
                      keys.campaign_stats],
                args=[kind, GROUP, ref, new, removed, f"{batch.lane.label}:{Outcome.SUPPRESSED}",
                      campaign],
            )  # fmt: skip
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            return
        if int(taken) < 0:
            done.in_flight += 1
        else:
            done.queued += int(taken)

    async def _cases(self, match: Matcher, done: NumberPurged) -> None:
        """Delete the number's inbox cases with their conversations."""
        prefix = inbox_prefix(self.namespace)
        async for key in scan(self.redis, f"{_glob(prefix)}:case:*"):
            phone = await self.redis.hget(key, "phone")
            if phone is None or not match(phone):
                continue
            case = key.rsplit(":", 1)[1]
            pipe = self.redis.pipeline(transaction=False)
            pipe.delete(key, f"{prefix}:log:{case}")
            pipe.hdel(f"{prefix}:open", text(phone))
            pipe.zrem(f"{prefix}:cases", case)
            pipe.zrem(f"{prefix}:active", case)
            await pipe.execute()
            done.cases += 1

    async def _appointments(self, e164: str, done: NumberPurged) -> None:
        """Give the number's place back (to whoever waits first), then forget them."""
        for raw in await self.redis.smembers(drives_key(self.namespace)):
            ledger = Ledger(self.redis, self.namespace, text(raw))
            person = (await ledger.people([e164]))[0]
            if person is None:
                continue
            if person.state in ("placed", "confirmed"):
                await ledger.change("release", e164, "", int(time.time() // 60), "erasure")
            await self.redis.hdel(ledger.key("people"), e164)
            await self.redis.hdel(ledger.key("fields"), e164)
            done.appointments += 1

    async def _everything_else(self, match: Matcher, done: NumberPurged) -> None:
        """Any other key of the namespace that names the number: the field, member or entry
        goes (a whole key when its name or a string value names it)."""
        skip = {suppression_key(self.namespace), optout_salt_key(self.namespace)}
        ns = _glob(self.namespace)
        for pattern in (f"{ns}:*", f"{{{ns}:*"):  # `{ns:inbound}:seen:...` starts with a tag
            async for key in scan(self.redis, pattern):
                if key in skip or _is_queue(key):
                    continue
                await self._sweep_key(key, match, done)

    async def _sweep_key(self, key: str, match: Matcher, done: NumberPurged) -> None:
        if match(key):
            done.keys += await self.redis.delete(key)
            return
        kind = text(await self.redis.type(key))
        if kind == "string":
            if match(await self.redis.get(key)):
                done.keys += await self.redis.delete(key)
        elif kind == "hash" and key.endswith(SEEN_NUMBERS):
            await self._sweep_seen(key, match, done)
        elif kind == "list" and key.startswith(self._reached_prefix):
            await self._sweep_reached(key, match, done)
        elif kind == "hash":
            async for field, value in self.redis.hscan_iter(key, count=PAGE):
                if match(field) or match(value):
                    done.entries += await self.redis.hdel(key, field)
        elif kind == "set":
            found = [m async for m in self.redis.sscan_iter(key, count=PAGE) if match(m)]
            if found:
                done.entries += await self.redis.srem(key, *found)
        elif kind == "zset":
            found = [m async for m, _ in self.redis.zscan_iter(key, count=PAGE) if match(m)]
            if found:
                done.entries += await self.redis.zrem(key, *found)
        elif kind == "list":
            values: Any = await self.redis.lrange(key, 0, -1)
            for value in {v for v in values if match(v)}:
                done.entries += await self.redis.lrem(key, 0, value)
        elif kind == "stream":
            await self._sweep_stream(key, match, done)

    async def _sweep_seen(self, key: str, match: Matcher, done: NumberPurged) -> None:
        """Take the number out of each compressed delta of a campaign's seen numbers."""
        from loa.campaigns import packing  # numpy, loaded only by a purge that needs it

        async for field, blob in self.redis.hscan_iter(key, count=PAGE):
            if await self._rewrite(key, "hash", field, blob, _without(packing.without, match)):
                done.entries += 1

    @property
    def _reached_prefix(self) -> str:
        return reached_key(self.namespace, 0).rsplit(":", 1)[0] + ":"

    async def _sweep_reached(self, key: str, match: Matcher, done: NumberPurged) -> None:
        """Take the number out of each packed entry of whom campaigns reached on one day;
        each stays where it is, so planners reading the list keep their place."""
        from loa.campaigns import reached  # (see _sweep_seen)

        change = _without(reached.entry_without, match)
        async for first, entries in reached.pages(self.redis, key):
            for index, raw in enumerate(entries, first):
                if await self._rewrite(key, "list", index, raw, change):
                    done.entries += 1

    async def _rewrite(
        self,
        key: str,
        kind: str,
        where: str | bytes | int,
        read: bytes,
        change: Callable[[bytes], bytes | None],
    ) -> bool:
        """Store `change(read)` in place of an element (None: leave it), only while it still
        holds what was read; read again when another erasure changed it first."""
        for _ in range(REWRITE_ATTEMPTS):
            new = change(read)
            if new is None:
                return False
            if await self._rewrite_script(keys=[key], args=[kind, where, read, new]):
                return True
            again: Any = await (
                self.redis.lindex(key, int(where))
                if kind == "list"
                else self.redis.hget(key, where)
            )
            if again is None:
                return False  # gone (expired) meanwhile
            read = again
        raise RuntimeError(f"{key}: changed {REWRITE_ATTEMPTS} times while being erased from")

    async def _sweep_stream(self, key: str, match: Matcher, done: NumberPurged) -> None:
        cursor = "-"
        while True:
            page: Any = await self.redis.xrange(key, min=cursor, count=PAGE)
            found = [eid for eid, fields in page if match(fields)]
            if found:
                removed = int(await self.redis.xdel(key, *found))
                if key == inbound_key(self.namespace):
                    done.inbound += removed
                elif key.endswith(":dead"):
                    done.dead_letters += removed
                else:
                    done.entries += removed
            if len(page) < PAGE:
                return
            cursor = "(" + text(page[-1][0])

    async def campaign(self, campaign_id: str) -> CampaignPurged:
        """Everything one campaign kept about people (see the module); its record stays."""
        store = CampaignStore(self.redis, self.namespace)
        campaign = await store.get(campaign_id)
        if campaign.state not in PURGEABLE:
            raise CampaignError(
                f"campaign {campaign_id} is {campaign.state}: cancel it first "
                f"(loa campaign cancel {campaign_id})"
            )
        done = CampaignPurged()
        shards = all_shards(self.settings)
        done.queued = await Queues(self.redis, self.namespace).drop_campaign(
            shards, campaign_id, Outcome.CANCELLED
        )
        for keys in shards:
            done.dead_letters += await self._drop_dead(keys.dead, campaign_id)
        ns = _glob(self.namespace)
        done.dedup = await self.redis.delete(
            campaign_seen_key(self.namespace, campaign_id),
            campaign_seen_numbers_key(self.namespace, campaign_id),  # the columnar planner's
        )
        async for key in scan(self.redis, receipt_pattern(ns)):
            sent = stored_sent(text(await self.redis.get(key)))
            if sent is not None and sent.campaign == campaign_id:
                done.receipts += await self.redis.delete(key)
        done.frequency = await self._forget_reached(campaign_id)
        directory = self.settings.data_dir / "campaigns" / campaign_id
        if directory.exists():
            await asyncio.to_thread(shutil.rmtree, directory, True)
            done.audience = True
            await store.update(campaign_id, {"audience_removed_ms": now_ms()})
        return done

    async def _drop_dead(self, key: str, campaign_id: str) -> int:
        """Delete one campaign's dead letters from one dead-letter stream."""
        removed, cursor = 0, "-"
        while True:
            page: Any = await self.redis.xrange(key, min=cursor, count=PAGE)
            found = [
                eid for eid, fields in page if _letter_campaign(fields.get(b"m")) == campaign_id
            ]
            if found:
                removed += int(await self.redis.xdel(key, *found))
            if len(page) < PAGE:
                return removed
            cursor = "(" + text(page[-1][0])

    async def _forget_reached(self, campaign_id: str) -> int:
        """Empty the campaign's entries of whom campaigns reached (every day kept), in place;
        the people they named."""
        from loa.campaigns import packing, reached  # (see _sweep_seen)

        def emptied(raw: bytes) -> bytes | None:
            found = reached.read_entry(raw)
            return b"" if found is not None and found[0] == campaign_id else None

        forgotten = 0
        async for key in scan(self.redis, f"{_glob(self._reached_prefix)}*"):
            async for first, entries in reached.pages(self.redis, key):
                for index, raw in enumerate(entries, first):
                    found = reached.read_entry(raw)
                    if found is None or found[0] != campaign_id:
                        continue
                    if await self._rewrite(key, "list", index, raw, emptied):
                        forgotten += len(packing.unpack(found[2]))
        return forgotten + await self._forget_legacy(campaign_id)

    async def _forget_legacy(self, campaign_id: str) -> int:
        """The campaign's people in the frequency memory kept before the packed lists."""
        forgotten = 0
        prefix = legacy_frequency_key(self.namespace, 0).rsplit(":", 1)[0]
        async for key in scan(self.redis, f"{_glob(prefix)}:*"):
            found = [
                field
                async for field, value in self.redis.hscan_iter(key, count=PAGE)
                if text(value).split("@", 1)[0] == campaign_id
            ]
            for first in range(0, len(found), PAGE):
                forgotten += await self.redis.hdel(key, *found[first : first + PAGE])
        return forgotten


def _without(
    take_out: Callable[[bytes, int], bytes | None], match: Matcher
) -> Callable[[bytes], bytes | None]:
    """A change for `_rewrite`: the packed set or entry without the matched number."""
    return lambda raw: take_out(raw, match.number)


def _letter_campaign(raw: bytes | None) -> str:
    try:
        letter = msgpack.unpackb(raw or b"", raw=False, strict_map_key=False)
    except (ValueError, TypeError, UnicodeDecodeError):
        return ""
    return str(letter.get("campaign", "")) if isinstance(letter, dict) else ""


def _is_queue(key: str) -> bool:
    """A lane stream or retry set: handled batch by batch, never as a whole."""
    tail = key.rsplit("}", 1)[-1]
    return any(tail in (f":q:{lane.label}", f":later:{lane.label}") for lane in LANES)


def _with(batch: Batch, messages: list[Message]) -> Batch:
    return Batch(
        route=batch.route,
        lane=batch.lane,
        messages=messages,
        campaign=batch.campaign,
        id=batch.id,
        attempt=batch.attempt,
        created_ms=batch.created_ms,
        expires_ms=batch.expires_ms,
        region=batch.region,
    )


async def rewrite_aof(redis: RedisClient, wait: float = 30.0) -> str:
    """Have the server rewrite its append-only file now that data was deleted.

    A rewrite already running started from data that may still hold what was deleted, so
    this waits (up to `wait` seconds) for it to end and starts a fresh one. Returns what
    happened: `started`, `no aof` (persistence off), or `busy` (still running: run it again).
    """
    deadline = time.monotonic() + wait
    while True:
        try:
            info: Any = await redis.info("persistence")
        except RedisError:
            return "unknown"
        if not int(info.get("aof_enabled", 0)):
            return "no aof"
        if not int(info.get("aof_rewrite_in_progress", 0)):
            try:
                await redis.bgrewriteaof()
                return "started"
            except ResponseError as exc:
                if "in progress" not in str(exc):
                    raise
        if time.monotonic() > deadline:
            return "busy"
        await asyncio.sleep(0.2)


def forms(e164: str) -> Iterable[str]:
    """The forms a number is looked for in (for docs and tests)."""
    digits = e164.lstrip("+")
    yield e164
    yield digits
    yield "00" + digits
    if e164.startswith("+84"):
        yield "0" + digits[2:]
