"""What providers send back: receipts met with their messages, and replies with their opt-outs.

Adapters hand receipts and inbound messages to an `EventWriter` (the `EventSink` of
loa.adapters.base) from their read loops; it queues them and writes them to Redis in batches.

- A receipt is met with the message it reports on through one key per provider id,
  `{ns}:{rcpt:ROUTE:ID}`, written by whichever half arrives first (`correlate.lua`): the sender
  when the provider accepts a message, or the receipt when it beats the submit response. When
  both are in, the campaign's counters `{ns}:{camp:ID}:receipts` (fields `ROUTE:delivered`,
  `ROUTE:undelivered`) count it. A receipt for an id nobody sent waits out the TTL, counted.
- A reply goes into the stream `{ns}:inbound`; one that is an opt-out keyword ("STOP",
  "TU CHOI", "HUY", in any case, with or without diacritics) puts its sender on the
  suppression list at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from importlib import resources

from redis.exceptions import NoScriptError

from loa.campaigns.sms import to_ascii
from loa.campaigns.suppression import canonical
from loa.engine.connection import RedisClient, text
from loa.engine.control import campaign_key, suppression_key
from loa.engine.metrics import Metrics
from loa.errors import InvalidPhone
from loa.message import Inbound, Message, Receipt
from loa.settings import EventSettings

log = logging.getLogger(__name__)

FLUSH_PERIOD = 0.2  # seconds between writes of queued events
MAX_QUEUED = 100_000  # events held in memory while Redis is away; beyond it the oldest go
_WORD = re.compile(r"[^A-Z0-9]+")


def receipt_key(namespace: str, route: str, provider_id: str) -> str:
    """The key that meets a message and its receipt."""
    return f"{namespace}:{{rcpt:{route}:{provider_id}}}"


def receipts_key(namespace: str, campaign: str) -> str:
    """A campaign's receipt counters: fields `ROUTE:delivered` and `ROUTE:undelivered`."""
    return f"{campaign_key(namespace, campaign)}:receipts"


def inbound_key(namespace: str) -> str:
    """The stream of replies and other inbound messages."""
    return f"{namespace}:inbound"


def is_optout(message: str, keywords: Sequence[str]) -> bool:
    """True when a reply is one of the opt-out keywords, whatever its case and diacritics."""
    words = _WORD.sub(" ", to_ascii(message).upper()).strip()
    return any(words == _WORD.sub(" ", to_ascii(k).upper()).strip() for k in keywords)


class Correlator:
    """The sender's half: remembers which campaign message each provider id belongs to."""

    def __init__(self, redis: RedisClient, namespace: str, settings: EventSettings) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl = int(settings.receipt_ttl)
        self.source = resources.files("loa.engine").joinpath("lua", "correlate.lua").read_text()
        self.sha = ""

    async def meet(self, calls: Sequence[tuple[str, str, str]]) -> list[bytes | None]:
        """Run correlate.lua for (key, half, value) calls in one pipelined round trip."""
        if not self.sha:
            self.sha = text(await self.redis.script_load(self.source))
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for key, half, value in calls:
                pipe.evalsha(self.sha, 1, key, half, value, self.ttl)
            try:
                return list(await pipe.execute())
            except NoScriptError:  # the server restarted and forgot its scripts
                if attempt == 2:
                    raise
                self.sha = text(await self.redis.script_load(self.source))
        raise AssertionError("unreachable")

    async def sent(
        self, route: str, campaign: str, accepted: Sequence[tuple[Message, str]]
    ) -> Counter[str]:
        """Record accepted messages (with their provider ids); count receipts that beat them."""
        calls: list[tuple[str, str, str]] = []
        parts: list[int] = []
        for message, provider_ids in accepted:
            # a long SMS has one id per part; its first part's receipt speaks for it
            for part, provider_id in enumerate(provider_ids.split(",")):
                key = receipt_key(self.namespace, route, provider_id)
                calls.append((key, "sent", f"{campaign}|{message.id}|{part}"))
                parts.append(part)
        early: Counter[str] = Counter()
        if not calls:
            return early
        for part, reply in zip(parts, await self.meet(calls), strict=True):
            if reply and part == 0:
                delivered, _, _state = text(reply).partition("|")
                early[f"{route}:{'delivered' if delivered == '1' else 'undelivered'}"] += 1
        return early

    async def count(self, campaign: str, counts: Counter[str]) -> None:
        """Add receipt counts to a campaign."""
        if counts:
            pipe = self.redis.pipeline(transaction=False)
            for field, amount in counts.items():
                pipe.hincrby(receipts_key(self.namespace, campaign), field, amount)
            await pipe.execute()


class EventWriter:
    """The worker's EventSink: queues receipts and replies, writes them to Redis in batches."""

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
        self.receipts: list[Receipt] = []
        self.replies: list[Inbound] = []
        self.wake = asyncio.Event()

    def receipt(self, receipt: Receipt) -> None:
        """Queue a receipt (called from an adapter's read loop: never blocks)."""
        self.receipts.append(receipt)
        self._trim(self.receipts)
        self.wake.set()

    def inbound(self, message: Inbound) -> None:
        """Queue a reply (never blocks)."""
        self.replies.append(message)
        self._trim(self.replies)
        self.wake.set()

    @staticmethod
    def _trim(queue: list[Receipt] | list[Inbound]) -> None:
        if len(queue) > MAX_QUEUED:  # Redis has been away for long: keep memory bounded
            del queue[: len(queue) - MAX_QUEUED]
            log.error("event queue full; the oldest events were dropped")

    async def run(self, stopping: asyncio.Event) -> None:
        """Write queued events until `stopping`, then once more."""
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), FLUSH_PERIOD)
            self.wake.clear()
            await self._flush_safely()
        await self._flush_safely()

    async def _flush_safely(self) -> None:
        try:
            await self.flush()
        except (ConnectionError, OSError, TimeoutError) as exc:  # Redis away: keep, try again
            log.warning("could not write events yet", extra={"error": type(exc).__name__})
            await asyncio.sleep(FLUSH_PERIOD)

    async def flush(self) -> None:
        """Write what is queued; on failure it stays queued for the next round."""
        if self.receipts:
            batch = self.receipts[:]
            await self._write_receipts(batch)
            del self.receipts[: len(batch)]
        if self.replies:
            batch_in = self.replies[:]
            await self._write_replies(batch_in)
            del self.replies[: len(batch_in)]

    async def _write_receipts(self, receipts: list[Receipt]) -> None:
        calls = [
            (
                receipt_key(self.namespace, receipt.route, receipt.provider_id),
                "receipt",
                f"{1 if receipt.delivered else 0}|{receipt.state}",
            )
            for receipt in receipts
        ]
        by_campaign: dict[str, Counter[str]] = {}
        for receipt, reply in zip(receipts, await self.correlator.meet(calls), strict=True):
            outcome = "delivered" if receipt.delivered else "undelivered"
            if not reply:
                self.metrics.receipts.labels(receipt.route, "waiting").inc()
                continue
            campaign, _, rest = text(reply).partition("|")
            self.metrics.receipts.labels(receipt.route, outcome).inc()
            if rest.endswith("|0"):  # the first part speaks for a long message
                counts = by_campaign.setdefault(campaign, Counter())
                counts[f"{receipt.route}:{outcome}"] += 1
        for campaign, counts in by_campaign.items():
            await self.correlator.count(campaign, counts)

    async def _write_replies(self, replies: list[Inbound]) -> None:
        pipe = self.redis.pipeline(transaction=False)
        optouts: list[str] = []
        now = int(time.time() * 1000)
        for reply in replies:
            optout = is_optout(reply.text, self.settings.optout_keywords)
            if optout:
                with contextlib.suppress(InvalidPhone):  # a sender id that is no number
                    optouts.append(canonical(reply.sender))
            pipe.xadd(
                inbound_key(self.namespace),
                {
                    "at": now,
                    "route": reply.route,
                    "channel": reply.channel,
                    "sender": reply.sender,
                    "recipient": reply.recipient,
                    "text": reply.text,
                    "optout": int(optout),
                },
                maxlen=self.settings.inbound_max,
                approximate=True,
            )
        await pipe.execute()
        for reply in replies:
            optout = is_optout(reply.text, self.settings.optout_keywords)
            self.metrics.inbound.labels(reply.route, reply.channel, str(optout).lower()).inc()
        if optouts:
            await self.redis.sadd(suppression_key(self.namespace), *optouts)
            log.info("opt-out replies applied", extra={"count": len(optouts)})


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
