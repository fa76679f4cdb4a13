"""The campaign layer's answers to the engine's `CampaignControls`, read from the record.

Each worker process keeps one `Controls`: it reads a campaign's record (`campaigns.record`) at
most every `ttl` seconds, so a pause reaches every worker within that time. Only a running
campaign sends, and a scheduled one once its start has come; a cancelled one drops what is
left; any other state holds it. Opt-outs are checked per chunk (`engine.control.opted_out`).
Whom a campaign reached (the provider accepted its message) is remembered for `memory` seconds
in one list a UTC day, an entry a chunk with the people's numbers packed (`campaigns.reached`),
where planners look for the people another campaign messaged within a frequency cap.
A campaign whose record has `followup_window` (seconds) asks a question: each person it reached
has it open from then for that long, in one hash a UTC day, `{namespace}:asked:YYYYMMDD`,
person -> `campaign|at_ms|closes_ms|message|region` (see ask.lua; loa.followups reads it).
One that also has `followup_remind` (seconds) lists each person reached in a sorted set by when
their reminder is due (`reminders_key`), and the campaign in `reminding_key`, for the reminder
chore of loa.followups.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from loa.campaigns.reached import entry as reached_entry
from loa.campaigns.record import Field, State
from loa.engine.connection import RedisClient, text
from loa.engine.control import (
    DAY_SECONDS,
    HOLD_RETRY_MS,
    REGION,
    SEND,
    CampaignControls,
    Decision,
    Verdict,
    opted_out,
    person_of,
)
from loa.engine.keys import (
    asked_key,
    campaign_key,
    reached_key,
    reminders_key,
    reminding_key,
)
from loa.engine.quiet import QuietHours
from loa.engine.ratelimit import RateLimiter, RateSpec
from loa.engine.scripts import scripts
from loa.message import Lane, Message

CACHE_SECONDS = 0.5
READ = [
    Field.STATE,
    Field.START_MS,
    Field.QUIET_HOURS,
    Field.TIMEZONE,
    Field.RATE,
    Field.FOLLOWUP_WINDOW,
    Field.FOLLOWUP_REMIND,
]


def campaign_controls(redis: RedisClient, namespace: str, memory: float) -> CampaignControls:
    """A worker's controls: the engine's ControlsFactory for campaigns."""
    return Controls(redis, namespace, memory=memory)


@dataclass(frozen=True, slots=True)
class _Entry:
    read_at: float
    state: str
    start_ms: int
    quiet: QuietHours | None
    limiter: RateLimiter | None
    followup: int = 0  # seconds a reply counts as an answer to its question (0: it asks none)
    remind: int = 0  # seconds after the question a reminder is due (0: none)


class Controls:
    """The per-process cache of campaign controls and the suppression check."""

    def __init__(
        self,
        redis: RedisClient,
        namespace: str,
        ttl: float = CACHE_SECONDS,
        memory: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl = ttl
        self.clock = clock  # seconds, for the cache's age
        self.memory = memory  # seconds a person reached is remembered (0: nobody is)
        self._cache: dict[str, _Entry] = {}
        table = scripts(redis, "loa.campaigns")
        self._ask = table["ask"]
        self._reach = table["reach"]

    async def verdict(self, campaign: str, lane: Lane, now_ms: int) -> Verdict:
        """May a chunk of `campaign` leave now?"""
        if not campaign:
            return SEND
        entry = await self._entry(campaign)
        if entry is None:
            return SEND  # not a managed campaign: plain engine traffic
        if entry.state == State.CANCELLED:
            return Verdict(Decision.CANCEL)
        started = entry.state == State.SCHEDULED and 0 < entry.start_ms <= now_ms
        if entry.state != State.RUNNING and not started:
            return Verdict(Decision.HOLD, now_ms + HOLD_RETRY_MS)
        if entry.quiet is not None and lane is not Lane.EMERGENCY:
            moment = datetime.fromtimestamp(now_ms / 1000, UTC)
            if entry.quiet.contains(moment):
                return Verdict(Decision.HOLD, int(entry.quiet.next_end(moment).timestamp() * 1000))
        return SEND

    async def campaign_limiter(self, campaign: str) -> RateLimiter | None:
        """The campaign's own rate limit, shared by all its routes, if it has one."""
        entry = await self._entry(campaign) if campaign else None
        return entry.limiter if entry else None

    async def suppressed(self, addresses: Sequence[str]) -> list[bool]:
        """Which of `addresses` opted out (one round trip)."""
        return await opted_out(self.redis, self.namespace, addresses)

    async def reached(
        self,
        campaign: str,
        messages: Sequence[Message],
        accepted: Sequence[int],
        sent_at: float | None = None,
    ) -> None:
        """Remember that the provider accepted `messages[i]` for each i in `accepted`, for
        other campaigns' frequency caps: what `campaign` sent, not what it planned; and open
        the campaign's question for them, if it asks one, as asked at `sent_at` (epoch
        seconds; default now): a reply can come before the provider's answer was read."""
        if not (accepted and campaign):
            return
        entry = await self._entry(campaign)
        if entry is None:
            return  # plain engine traffic, not a campaign: no cap ever asks about it
        now = time.time()
        if entry.followup:
            asked = min(now, sent_at) if sent_at else now
            await self._open_question(campaign, entry.followup, messages, accepted, asked)
            if entry.remind:
                await self._plan_reminders(campaign, entry, messages, accepted, asked)
        if not self.memory:
            return
        people = (person_of(messages[i]) for i in accepted)
        await self._reach(
            keys=[reached_key(self.namespace, now)],
            args=[
                reached_entry(campaign, int(now), people),
                int(self.memory) + DAY_SECONDS,  # the day's last entry is kept its full memory
            ],
        )

    async def _open_question(
        self,
        campaign: str,
        window: int,
        messages: Sequence[Message],
        accepted: Sequence[int],
        now: float,
    ) -> None:
        """The people reached have the campaign's question open for `window` seconds."""
        at_ms = int(now * 1000)
        people = []
        for i in accepted:
            message = messages[i]
            region = message.extra.get(REGION, "") if message.extra else ""
            people.append(f"{person_of(message)}|{message.id}|{region}")
        await self._ask(
            keys=[asked_key(self.namespace, now)],
            args=[
                f"{campaign}|{at_ms}|{at_ms + window * 1000}",
                ",".join(people),
                window + DAY_SECONDS,
            ],
        )

    async def _plan_reminders(
        self,
        campaign: str,
        entry: _Entry,
        messages: Sequence[Message],
        accepted: Sequence[int],
        now: float,
    ) -> None:
        """Each person reached is due a reminder `remind` seconds from now, if they do not
        answer; a chunk sent again (after a crash) or a fallback keeps the first due time."""
        due_ms = int(now * 1000) + entry.remind * 1000
        key = reminders_key(self.namespace, campaign)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(key, {person_of(messages[i]): due_ms for i in accepted}, nx=True)
        pipe.expire(key, entry.followup + DAY_SECONDS)
        pipe.sadd(reminding_key(self.namespace), campaign)
        await pipe.execute()

    async def _entry(self, campaign: str) -> _Entry | None:
        cached = self._cache.get(campaign)
        if cached is not None and self.clock() - cached.read_at < self.ttl:
            return cached if cached.state else None
        fields = await self.redis.hmget(campaign_key(self.namespace, campaign), READ)
        state, start, quiet, zone, rate, followup, remind = (text(value) for value in fields)
        if not state:
            # not a stored campaign (plain engine traffic): remembered as such for `ttl` too
            self._cache[campaign] = _Entry(self.clock(), "", 0, None, None)
            return None
        hours = QuietHours.parse(quiet, zone or "UTC") if quiet else None
        limiter = cached.limiter if cached else None
        if rate and (limiter is None or limiter.limits.rate != float(rate)):
            spec = RateSpec(float(rate))  # in messages: a campaign's cap counts people reached
            limiter = RateLimiter(self.redis, self.namespace, f"campaign.{campaign}", spec)
        entry = _Entry(
            self.clock(),
            state,
            int(start or 0),
            hours,
            limiter if rate else None,
            int(followup or 0),
            int(remind or 0),
        )
        self._cache[campaign] = entry
        return entry
