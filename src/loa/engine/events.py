"""What providers send back: receipts met with their messages, and replies with their opt-outs.

Adapters hand receipts and inbound messages to an `EventWriter` (the `EventSink` of
loa.adapters.base) from their read loops. Each call returns a future that is done once the
event is in Redis; events that arrive while a write is under way go together in the next one,
so a burst of receipts costs a few round trips, not one each. An event that cannot be written
(Redis away, or slower than WRITE_TIMEOUT) fails its future and is not kept: the adapter
answers its provider with a temporary error, and the provider sends it again. Nothing is
acknowledged to a provider before it is written, and nothing written is dropped.

- A receipt is met with the message it reports on through one key per provider id,
  `{ns}:{rcpt:ROUTE:ID}`, written by whichever half arrives first (`correlate.lua`): the sender
  when the provider accepts a message, or the receipt when it beats the submit response. When
  both are in, the campaign's counters `{ns}:{camp:ID}:receipts` (fields `ROUTE:delivered`,
  `ROUTE:undelivered`) count it, and the key remembers it for `events.dedupe_ttl`, so that a
  repeat is acknowledged and counted nowhere. A receipt for an id nobody sent waits out the
  TTL, counted.
- A reply goes into the stream `{ns}:inbound`, once per provider message id when the provider
  gives one (`inbound.lua`); one that is an opt-out keyword ("STOP", "TU CHOI", "HUY", in any
  case, with or without diacritics) puts its sender on the suppression list at once. A repeat
  of a reply already stored opts nobody out again: a person an operator took off the list
  stays off.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError, RedisError

from loa.engine import silence
from loa.engine.connection import RedisClient, text
from loa.engine.control import campaign_key, suppression_key
from loa.engine.metrics import Metrics
from loa.errors import InvalidPhone, LoaError
from loa.message import Inbound, Message, Receipt
from loa.phone import canonical
from loa.settings import EventSettings
from loa.sms import to_ascii

log = logging.getLogger(__name__)

MAX_QUEUED = 100_000  # events waiting for a write; beyond it new ones are refused, not queued
MAX_BATCH = 5_000  # events in one write
WRITE_TIMEOUT = 5.0  # seconds a write may take before its events are refused (and re-sent)
_WORD = re.compile(r"[^A-Z0-9]+")
REGION_PREFIX = "region:"  # a receipt counter of a region, kept apart from those per route


class EventsNotWritten(LoaError):
    """Receipts or replies that Redis did not take: their provider must send them again."""


def _script(name: str) -> str:
    return resources.files("loa.engine").joinpath("lua", name).read_text()


def receipt_key(namespace: str, route: str, provider_id: str) -> str:
    """The key that meets a message and its receipt."""
    return f"{namespace}:{{rcpt:{route}:{provider_id}}}"


def receipts_key(namespace: str, campaign: str) -> str:
    """A campaign's receipt counters: fields `ROUTE:delivered` and `ROUTE:undelivered`."""
    return f"{campaign_key(namespace, campaign)}:receipts"


def regions_key(namespace: str, campaign: str) -> str:
    """A campaign's receipt counters per region of its audience: `REGION:delivered` and
    `REGION:undelivered` (the region travels with the message, see Correlator.sent)."""
    return f"{campaign_key(namespace, campaign)}:regions"


def sent_value(campaign: str, message: Message, part: int, region: str = "") -> str:
    """What a receipt finds of its message: `campaign|message|part`, and `|@REGION` when its
    batch is of one region of the campaign's audience."""
    value = f"{campaign}|{message.id}|{part}"
    return f"{value}|@{region}" if region else value


def sent_of(value: str) -> tuple[str, bool, str]:
    """A sent value a receipt met: its campaign, whether it is the first part, its region."""
    campaign, _, rest = value.partition("|")
    rest, marked, region = rest.rpartition("|@")
    if not marked:
        rest, region = region, ""
    return campaign, rest.endswith("|0"), region


def sent_member(value: str) -> str:
    """The `campaign|message` of a sent value: the name of its message's fallback timer."""
    value = value.rpartition("|@")[0] or value  # without its region
    return value.rsplit("|", 1)[0]  # without its part


def add_receipts(pipe: Any, namespace: str, campaign: str, counter: str, amount: int) -> None:
    """Add to a receipt counter: `ROUTE:outcome` in the campaign's receipts hash, or
    `region:REGION:outcome` in its regions hash."""
    if counter.startswith(REGION_PREFIX):
        pipe.hincrby(regions_key(namespace, campaign), counter[len(REGION_PREFIX) :], amount)
    else:
        pipe.hincrby(receipts_key(namespace, campaign), counter, amount)


def inbound_key(namespace: str) -> str:
    """The stream of replies and other inbound messages."""
    return f"{namespace}:inbound"


def seen_key(namespace: str, route: str, provider_id: str) -> str:
    """Marks a reply as stored, by its provider id; in the inbound stream's hash slot."""
    return f"{{{inbound_key(namespace)}}}:seen:{route}:{provider_id}"


@dataclass(frozen=True, slots=True)
class Written:
    """What one write kept, and the repeats of events it had kept before."""

    receipts: int = 0
    replies: int = 0
    duplicates: int = 0


def is_optout(message: str, keywords: Sequence[str]) -> bool:
    """True when a reply is one of the opt-out keywords, whatever its case and diacritics."""
    words = _WORD.sub(" ", to_ascii(message).upper()).strip()
    return any(words == _WORD.sub(" ", to_ascii(k).upper()).strip() for k in keywords)


class Script:
    """A Lua script run many times in one pipelined round trip, on a server or a cluster."""

    def __init__(self, redis: RedisClient, name: str) -> None:
        self.redis = redis
        self.source = _script(name)
        self.sha = ""

    async def run_many(
        self, calls: Sequence[tuple[Sequence[str], Sequence[str | int]]]
    ) -> list[Any]:
        """Run it once per (keys, args) call; the replies in order."""
        if not self.sha:
            self.sha = text(await self.redis.script_load(self.source))
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(self.sha, len(keys), *keys, *args)
            try:
                return list(await pipe.execute())
            except NoScriptError:  # the server restarted and forgot its scripts
                if attempt == 2:
                    raise
                self.sha = text(await self.redis.script_load(self.source))
        raise AssertionError("unreachable")


def optout_address(reply: Inbound) -> str | None:
    """Whom a STOP opts out: an SMS sender's number in E.164, an OTT sender's id as it is.

    An OTT id is never read as a phone number: a Zalo id of digits alone is an id, not a
    malformed number to be dropped. None when an SMS sender is no number at all.
    """
    if reply.channel != "sms":
        return reply.sender.strip() or None
    try:
        return canonical(reply.sender)
    except InvalidPhone:
        return None


class Correlator:
    """The sender's half: remembers which campaign message each provider id belongs to."""

    def __init__(self, redis: RedisClient, namespace: str, settings: EventSettings) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl = int(settings.receipt_ttl)
        self.dedupe_ttl = int(settings.dedupe_ttl)
        self.script = Script(redis, "correlate.lua")

    async def meet(self, calls: Sequence[tuple[str, str, str]]) -> list[bytes | int | None]:
        """Run correlate.lua for (key, half, value) calls in one pipelined round trip."""
        return await self.script.run_many(
            [([key], [half, value, self.ttl, self.dedupe_ttl]) for key, half, value in calls]
        )

    async def sent(
        self,
        route: str,
        campaign: str,
        accepted: Sequence[tuple[Message, str]],
        region: str = "",
        delivered: list[str] | None = None,
    ) -> Counter[str]:
        """Record accepted messages (with their provider ids) of one batch, whose people are of
        `region` when it has one; count receipts that beat them.

        `delivered`, when given, gets the `campaign|message` of each message whose delivered
        receipt came first (its fallback timer is cancelled by the caller).
        """
        calls: list[tuple[str, str, str]] = []
        parts: list[tuple[int, Message]] = []
        for message, provider_ids in accepted:
            # a long SMS has one id per part; its first part's receipt speaks for it
            for part, provider_id in enumerate(provider_ids.split(",")):
                key = receipt_key(self.namespace, route, provider_id)
                calls.append((key, "sent", sent_value(campaign, message, part, region)))
                parts.append((part, message))
        early: Counter[str] = Counter()
        if not calls:
            return early
        for (part, message), reply in zip(parts, await self.meet(calls), strict=True):
            if isinstance(reply, bytes) and part == 0:
                said, _, _state = text(reply).partition("|")
                outcome = "delivered" if said == "1" else "undelivered"
                early[f"{route}:{outcome}"] += 1
                if region:
                    early[f"{REGION_PREFIX}{region}:{outcome}"] += 1
                if said == "1" and delivered is not None:
                    delivered.append(f"{campaign}|{message.id}")
        return early

    async def count(self, campaign: str, counts: Counter[str]) -> None:
        """Add receipt counts to a campaign (per route, and per region when they say one)."""
        if counts:
            pipe = self.redis.pipeline(transaction=False)
            for counter, amount in counts.items():
                add_receipts(pipe, self.namespace, campaign, counter, amount)
            await pipe.execute()


@dataclass(slots=True)
class _Batch:
    """Events that will be written together, and the one future they all wait on."""

    future: asyncio.Future[None]
    receipts: list[Receipt] = field(default_factory=list)
    replies: list[Inbound] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.receipts) + len(self.replies)


class EventWriter:
    """The worker's EventSink: writes receipts and replies to Redis, many to a round trip.

    `receipt` and `inbound` return the future of the batch the event joins: done once the
    batch is written, failed with EventsNotWritten when it cannot be. A write starts as soon as
    an event is handed over; what arrives while it runs joins the next batch. One future per
    batch, not per event: a receipt costs a list append here and a dict lookup in the session.
    """

    def __init__(
        self,
        redis: RedisClient,
        namespace: str,
        settings: EventSettings,
        metrics: Metrics,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.settings = settings
        self.metrics = metrics
        self.correlator = Correlator(redis, namespace, settings)
        self._inbound = Script(redis, "inbound.lua")
        self._batches: collections.deque[_Batch] = collections.deque()  # waiting, oldest first
        self._waiting = 0
        self._writing: asyncio.Task[None] | None = None

    def receipt(self, receipt: Receipt) -> asyncio.Future[None]:
        """Queue a receipt for the next write (never blocks); the future says when it is in."""
        batch = self._open_batch()
        if batch is None:
            return self._refused()
        batch.receipts.append(receipt)
        self._waiting += 1
        return batch.future

    def inbound(self, message: Inbound) -> asyncio.Future[None]:
        """Queue a reply for the next write (never blocks); the future says when it is in."""
        batch = self._open_batch()
        if batch is None:
            return self._refused()
        batch.replies.append(message)
        self._waiting += 1
        return batch.future

    def _open_batch(self) -> _Batch | None:
        """The batch a new event joins (None: too many wait already), and a write under way."""
        if self._waiting >= MAX_QUEUED:
            return None
        loop = asyncio.get_running_loop()
        batches = self._batches
        if not batches or len(batches[-1]) >= MAX_BATCH:
            batches.append(_Batch(loop.create_future()))
        if self._writing is None or self._writing.done():
            self._writing = loop.create_task(self._write_queued(), name="events-write")
        return batches[-1]

    def _refused(self) -> asyncio.Future[None]:
        # Redis has been slow for long: refuse (the provider sends it again), never drop
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        _refuse(future, EventsNotWritten(f"{MAX_QUEUED:,} events already wait for Redis"))
        return future

    @property
    def waiting(self) -> int:
        """Events handed over and not yet written or refused."""
        return self._waiting

    async def drained(self) -> None:
        """Return once every event handed over so far is written or refused."""
        while self._writing is not None and not self._writing.done():
            await asyncio.wait([self._writing])

    async def _write_queued(self) -> None:
        while self._batches:
            batch = self._batches.popleft()  # events from now on join the next batch
            # whatever else ends the write (a bug, a cancel) refuses them: sent again, never hung
            error: EventsNotWritten | None = EventsNotWritten("the write ended unexpectedly")
            try:
                async with asyncio.timeout(WRITE_TIMEOUT):
                    await self.store(batch.receipts, batch.replies)
                error = None
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning(
                    "events not written; their providers are asked to send them again",
                    extra={"count": len(batch), "error": type(exc).__name__},
                )
                error = EventsNotWritten(f"Redis did not take them ({type(exc).__name__})")
            finally:
                self._waiting -= len(batch)
                if error is not None:
                    _refuse(batch.future, error)
                elif not batch.future.done():
                    batch.future.set_result(None)

    async def store(self, receipts: Sequence[Receipt], replies: Sequence[Inbound]) -> Written:
        """Write receipts and replies now, each repeat skipped; raises if Redis fails."""
        counted = await self._write_receipts(receipts) if receipts else 0
        stored, repeats = await self._write_replies(replies) if replies else (0, 0)
        return Written(counted, stored, len(receipts) - counted + repeats)

    async def _write_receipts(self, receipts: Sequence[Receipt]) -> int:
        """Meet receipts with their messages and count them; how many were not repeats."""
        first: dict[str, Receipt] = {}  # a repeat within the batch is met once
        for receipt in receipts:
            key = receipt_key(self.namespace, receipt.route, receipt.provider_id)
            if key in first:
                self.metrics.receipts.labels(receipt.route, "duplicate").inc()
            else:
                first[key] = receipt
        calls = [
            (key, "receipt", f"{1 if receipt.delivered else 0}|{receipt.state}")
            for key, receipt in first.items()
        ]
        by_campaign: dict[str, Counter[str]] = {}
        delivered: dict[str, list[str]] = {}  # route -> campaign|message: timers to cancel
        met: list[str] = []
        seen: Counter[tuple[str, str]] = Counter()  # (route, what it said) for the metric
        replies = await self.correlator.meet(calls)
        for (key, receipt), reply in zip(first.items(), replies, strict=True):
            outcome = "delivered" if receipt.delivered else "undelivered"
            if reply == 0 or not isinstance(reply, bytes):
                seen[receipt.route, "duplicate" if reply == 0 else "waiting"] += 1
                continue
            met.append(key)
            seen[receipt.route, outcome] += 1
            campaign, first_part, region = sent_of(text(reply))
            if first_part:  # the first part speaks for a long message
                counts = by_campaign.setdefault(campaign, Counter())
                counts[f"{receipt.route}:{outcome}"] += 1
                if region:
                    counts[f"{REGION_PREFIX}{region}:{outcome}"] += 1
                if receipt.delivered:
                    delivered.setdefault(receipt.route, []).append(sent_member(text(reply)))
        if met:
            # timers first: a receipt whose count is written has stopped its fallback
            await silence.cancel(self.redis, self.namespace, delivered)
            await self._count(by_campaign, met)
        for (route, said), amount in seen.items():  # once written: a re-sent one counts once
            self.metrics.receipts.labels(route, said).inc(amount)
        return sum(amount for (_, said), amount in seen.items() if said != "duplicate")

    async def _count(self, by_campaign: dict[str, Counter[str]], met: list[str]) -> None:
        """Count met receipts, and mark them counted, in one round trip (in that order)."""
        pipe = self.redis.pipeline(transaction=False)
        for campaign, counts in by_campaign.items():
            for counter, amount in counts.items():
                add_receipts(pipe, self.namespace, campaign, counter, amount)
        for key in met:
            pipe.set(key, "d", ex=self.correlator.dedupe_ttl, xx=True)
        await pipe.execute()

    async def _write_replies(self, replies: Sequence[Inbound]) -> tuple[int, int]:
        """Store replies once each, opt-outs first; (stored, repeats)."""
        fresh = await self._unseen(replies)
        optouts: list[str] = []
        for reply in fresh:
            if is_optout(reply.text, self.settings.optout_keywords):
                address = optout_address(reply)
                if address:
                    optouts.append(address)
        if optouts:
            # before the reply is stored: if we die between, its repeat opts out again
            await self.redis.sadd(suppression_key(self.namespace), *optouts)
            log.info("opt-out replies applied", extra={"count": len(optouts)})
        now = int(time.time() * 1000)
        stream = inbound_key(self.namespace)
        calls: list[tuple[list[str], list[str | int]]] = []
        for reply in fresh:
            optout = is_optout(reply.text, self.settings.optout_keywords)
            keys = [stream]
            if reply.provider_id:
                keys.append(seen_key(self.namespace, reply.route, reply.provider_id))
            entry: dict[str, str | int] = {
                "at": now,
                "route": reply.route,
                "channel": reply.channel,
                "sender": reply.sender,
                "recipient": reply.recipient,
                "text": reply.text,
                "optout": int(optout),
                "provider_id": reply.provider_id,
            }
            args: list[str | int] = [int(self.settings.dedupe_ttl), self.settings.inbound_max]
            args += [item for pair in entry.items() for item in pair]
            calls.append((keys, args))
        results = await self._inbound.run_many(calls) if calls else []
        stored = 0
        for reply, added in zip(fresh, results, strict=True):
            if added:
                stored += 1
                optout = is_optout(reply.text, self.settings.optout_keywords)
                self.metrics.inbound.labels(reply.route, reply.channel, str(optout).lower()).inc()
        return stored, len(replies) - stored

    async def _unseen(self, replies: Sequence[Inbound]) -> list[Inbound]:
        """The replies whose provider id was not stored before (nor earlier in this batch)."""
        with_ids = [reply for reply in replies if reply.provider_id]
        seen: set[tuple[str, str]] = set()
        if with_ids:
            pipe = self.redis.pipeline(transaction=False)
            for reply in with_ids:
                pipe.exists(seen_key(self.namespace, reply.route, reply.provider_id))
            for reply, exists in zip(with_ids, await pipe.execute(), strict=True):
                if exists:
                    seen.add((reply.route, reply.provider_id))
        fresh = []
        for reply in replies:
            if reply.provider_id:
                key = (reply.route, reply.provider_id)
                if key in seen:
                    continue
                seen.add(key)
            fresh.append(reply)
        return fresh


def _refuse(future: asyncio.Future[None], error: Exception) -> None:
    """Fail a future and mark its error as seen: an adapter may not wait for every event."""
    if not future.done():
        future.set_exception(error)
        future.exception()


async def read_inbound(
    redis: RedisClient, namespace: str, after: str = "-", count: int = 1000
) -> list[dict[str, str]]:
    """Inbound messages in arrival order, from after stream id `after` ("-": the oldest)."""
    start = after if after == "-" else f"({after}"
    entries: list[tuple[bytes, dict[bytes, bytes]]] = await redis.xrange(  # type: ignore[assignment]
        inbound_key(namespace), min=start, max="+", count=count
    )
    return [
        {"id": text(entry_id), **{text(k): text(v) for k, v in fields.items()}}
        for entry_id, fields in entries
    ]
