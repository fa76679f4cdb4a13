"""Reminders to whoever has not answered a campaign's question, sent once, as a background chore.

A plan's `[followup]` may set `remind_after` and `reminder` (its text). The engine lists each
person a campaign reached in the campaign's reminders to come (loa.engine.control,
`reminders_key`) with the time the reminder is due. Each tick with reminders due first stores
the answers that came in (loa.followups `sync`), then takes the due ones and, for each:

- their question is still open (its window has not closed, and no newer campaign asked them
  something since) and they have not answered: the reminder is queued as an SMS on their
  carrier's route, under an id made of the campaign and the person (`put_once`), then counted;
- otherwise (or they opted out since) they are taken off the list, counted as skipped.

A crash between the queueing and the counting is harmless: the next tick queues the same id
again, which the queue refuses, and counts it then; so nobody is reminded twice and the count
is exact. The reminder waits out the campaign's quiet hours; a cancelled campaign sends none.
"""

from __future__ import annotations

import hashlib
import logging
import time
import zlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from loa.campaigns.carriers import CarrierTable, SmsRouting
from loa.campaigns.questions import Questions
from loa.campaigns.store import State
from loa.engine.connection import RedisClient, text
from loa.engine.control import (
    DAY_SECONDS,
    campaign_key,
    opted_out,
    reminders_key,
    reminding_key,
)
from loa.engine.envelope import Batch
from loa.engine.keys import shard_keys
from loa.engine.queue import Queues
from loa.engine.quiet import QuietHours
from loa.followups.service import Followups, followup_prefix
from loa.message import Lane, Message
from loa.settings import Settings
from loa.sms import analyse

log = logging.getLogger(__name__)

BUDGET = 500  # reminders one tick settles per campaign at most; the next tick does the rest


@dataclass
class Reminded:
    """What one tick did: counts only."""

    sent: int = 0
    skipped: int = 0  # answered already, or the question closed or was replaced

    def to_json(self) -> dict[str, int]:
        """The counts, for logs."""
        return asdict(self)


def reminder_id(campaign: str, phone: str) -> str:
    """The reminder's message id: the same for the same person and campaign, no number in it."""
    digest = hashlib.sha256(f"{campaign}|{phone}".encode()).hexdigest()[:20]
    return f"rm-{campaign}-{digest}"


class Reminders:
    """The reminder chore (loa.privacy.retention.chores runs its `tick` beside the workers)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.namespace = settings.namespace
        self._redis: RedisClient | None = None
        self._prepared: set[str] = set()
        self._routing = _sms_routing(settings)
        self._warned = False
        self._synced = False

    def _bind(self, redis: RedisClient) -> None:
        if self._redis is not redis:
            self._redis = redis
            self.questions = Questions(redis, self.namespace)
            self.queues = Queues(redis, self.namespace)
            source = resources.files("loa.followups").joinpath("lua", "remind.lua").read_text()
            self._settle = redis.register_script(source)
            self._prepared.clear()

    async def tick(self, redis: RedisClient, now_ms: int | None = None) -> Reminded:
        """Send the reminders that are due (see the module)."""
        self._bind(redis)
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        done = Reminded()
        self._synced = False
        campaigns: set[bytes | str] = await redis.smembers(reminding_key(self.namespace))
        for campaign in sorted(text(c) for c in campaigns):
            await self._campaign(redis, campaign, now_ms, done)
        if done.sent or done.skipped:
            log.info("follow-up reminders", extra=done.to_json())
        return done

    async def _campaign(
        self, redis: RedisClient, campaign: str, now_ms: int, done: Reminded
    ) -> None:
        key = reminders_key(self.namespace, campaign)
        followup = await self.questions.followup(campaign)
        state, quiet, zone = (
            text(v)
            for v in await redis.hmget(
                campaign_key(self.namespace, campaign), ["state", "quiet_hours", "timezone"]
            )
        )
        if followup is None or not followup.reminder or not state or state == State.CANCELLED:
            await redis.delete(key)  # nothing to remind of: the campaign is gone or cancelled
            await redis.srem(reminding_key(self.namespace), campaign)
            return
        if self._routing is None:
            if not self._warned:
                log.warning("follow-up reminders are due, but no SMS channel is configured")
                self._warned = True
            return
        if quiet and QuietHours.parse(quiet, zone or "UTC").contains(
            datetime.fromtimestamp(now_ms / 1000, UTC)
        ):
            return  # after the quiet hours, not during them
        due: list[Any] = await redis.zrangebyscore(key, "-inf", now_ms, 0, BUDGET, withscores=True)
        if not due:
            if state in (State.DONE, State.EXPIRED) and not await redis.zcard(key):
                await redis.srem(reminding_key(self.namespace), campaign)
            return
        if not self._synced:
            # the answers that came in since the last `sync` count: nobody who answered is
            # reminded because no one has stored their answer yet
            await Followups(self.settings, redis).sync()
            self._synced = True
        keep = followup.window.total_seconds() + DAY_SECONDS
        prefix = followup_prefix(self.namespace, campaign)
        remind_ms = (
            int(followup.remind_after.total_seconds() * 1000) if followup.remind_after else 0
        )
        for raw, due_ms in due:
            phone = text(raw)
            # asked `remind_after` before it was due: no older day needs reading
            asked_ms = int(due_ms) - remind_ms
            question = await self.questions.open_for(phone, now_ms, since_ms=asked_ms)
            still = question is not None and question.asked.campaign == campaign
            # the engine checks opt-outs only for a campaign's batches: a reminder has none
            if still and await self._unanswered(redis, prefix, phone):
                await self._queue(campaign, phone, followup.reminder)
                done.sent += int(await self._settle([prefix], [phone, "sent", int(keep)]))
            else:
                done.skipped += int(await self._settle([prefix], [phone, "skipped", int(keep)]))

    async def _unanswered(self, redis: RedisClient, prefix: str, phone: str) -> bool:
        """Whether `phone` neither answered nor opted out (a STOP is an answer of a kind)."""
        if not phone.startswith("+"):
            return False  # reached by an id that is no number (a Zalo id): no SMS to send
        if await redis.hexists(f"{prefix}:answers", phone):
            return False
        return not (await opted_out(redis, self.namespace, [phone]))[0]

    async def _queue(self, campaign: str, phone: str, body: str) -> None:
        """The reminder as a one-message batch, queued once whatever the attempts."""
        assert self._routing is not None
        route = self._routing.route_for(phone)
        shards = shard_keys(self.namespace, route, self.settings.route(route).shards)
        if route not in self._prepared:
            await self.queues.prepare(shards)
            self._prepared.add(route)
        message_id = reminder_id(campaign, phone)
        message = Message(id=message_id, to=phone, body=body, parts=analyse(body).parts)
        # no campaign on the batch: a reminder neither asks the question again nor counts as
        # one of the campaign's messages; its own count is the follow-up's `reminded`
        batch = Batch(route=route, lane=Lane.NORMAL, messages=[message], id=message_id)
        keys = shards[zlib.crc32(batch.id.encode()) % len(shards)]
        await self.queues.put_once([(keys, batch, 0)])


def _sms_routing(settings: Settings) -> SmsRouting | None:
    """The carrier's route for a number, as the planner picks it (None: no SMS channel)."""
    spec = settings.channels.get("sms")
    if spec is None or not (spec.default or spec.carriers):
        return None
    default = spec.default or next(iter(spec.carriers.values()))
    return SmsRouting(CarrierTable.default(spec.prefixes or None), spec.carriers, default=default)
