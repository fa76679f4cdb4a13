"""What a campaign's operators decided, as workers see it before each chunk leaves.

The campaign layer writes one hash per campaign, `{namespace}:{camp:ID}`; the engine reads
these fields: `state` (only "running" sends, and "scheduled" once `start_ms` has come;
"cancelled" drops what is left; any other state holds it), `start_ms`, `quiet_hours`
("21:00-07:00", empty for none), `timezone` (IANA name) and `rate` (the campaign's own cap in
messages per second across every route and worker, empty for none).
Reads are cached for `ttl` seconds, so a pause reaches every worker within that time.
Opt-outs live in one set, `{namespace}:suppressed`, checked per chunk: an address as it is, or,
for a person whose data was erased, `h:` and a salted digest of it (`optout_digest`), so they
stay opted out with no number kept; the salt is `{namespace}:suppressed:salt`.
Whom a campaign reached (the provider accepted its message) is remembered for `memory` seconds
in one hash a UTC day, `{namespace}:freq:YYYYMMDD`, person -> `campaign@epoch`, where planners
look for the people another campaign messaged within a frequency cap.
A campaign whose hash has `followup_window` (seconds) asks a question: each person it reached
has it open from then for that long, in one hash a UTC day, `{namespace}:asked:YYYYMMDD`,
person -> `campaign|at_ms|closes_ms|message|region` (see ask.lua; loa.followups reads it).
One that also has `followup_remind` (seconds) lists each person reached in a sorted set by when
their reminder is due (`reminders_key`), and the campaign in `reminding_key`, for the reminder
chore of loa.followups.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from loa.engine.connection import RedisClient, text
from loa.engine.queue import load_script
from loa.engine.quiet import QuietHours
from loa.engine.ratelimit import RateLimiter
from loa.message import Lane, Message
from loa.settings import RouteSettings

CACHE_SECONDS = 0.5
PERSON = "person"  # the key of Message.extra naming the person when `to` is not their phone
REGION = "region"  # the key of Message.extra with the person's region, when a campaign asks
DAY_SECONDS = 86_400
RUNNING = "running"
SCHEDULED = "scheduled"
CANCELLED = "cancelled"


def campaign_key(namespace: str, campaign: str) -> str:
    """The hash that holds one campaign's state and settings."""
    return f"{namespace}:{{camp:{campaign}}}"


def suppression_key(namespace: str) -> str:
    """The set of opted-out addresses (E.164 numbers, e-mail addresses, OTT ids)."""
    return f"{namespace}:suppressed"


def optout_salt_key(namespace: str) -> str:
    """The salt of the opt-out list's digests; absent until a number is first erased."""
    return f"{suppression_key(namespace)}:salt"


def optout_digest(salt: bytes, address: str) -> str:
    """The opt-out list's member for an erased address: its salted digest, never the address."""
    return "h:" + hmac.new(salt, address.encode(), hashlib.sha256).hexdigest()


async def opted_out(redis: RedisClient, namespace: str, addresses: Sequence[str]) -> list[bool]:
    """Which of `addresses` (canonical) are on the opt-out list, as they are or as digests.

    One round trip while no number was ever erased (no salt yet), two after.
    """
    if not addresses:
        return []
    pipe = redis.pipeline(transaction=False)
    pipe.get(optout_salt_key(namespace))
    pipe.smismember(suppression_key(namespace), list(addresses))
    salt, plain = await pipe.execute()
    flags = [bool(flag) for flag in plain]
    if salt:
        raw = salt if isinstance(salt, bytes) else str(salt).encode()
        digests = [optout_digest(raw, address) for address in addresses]
        hashed = await redis.smismember(suppression_key(namespace), digests)
        flags = [a or bool(b) for a, b in zip(flags, hashed, strict=True)]
    return flags


def frequency_key(namespace: str, epoch: float) -> str:
    """Whom campaigns reached on one UTC day: a hash, person -> `campaign@epoch`.

    One hash a day, not one key a person: a chunk is one HSET, and a planner's look for a
    group of rows one HMGET per day of the window, instead of a command per person.
    """
    return f"{namespace}:freq:{time.strftime('%Y%m%d', time.gmtime(epoch))}"


def asked_key(namespace: str, epoch: float) -> str:
    """The questions campaigns opened on one UTC day: a hash, person -> the question (ask.lua)."""
    return f"{namespace}:asked:{time.strftime('%Y%m%d', time.gmtime(epoch))}"


def reminders_key(namespace: str, campaign: str) -> str:
    """A campaign's reminders to come: person -> when it is due (epoch ms). It shares the
    hash tag of the campaign's answers (loa.followups), so one script reads both."""
    return f"{namespace}:{{fu:{campaign}}}:remind"


def reminding_key(namespace: str) -> str:
    """The campaigns with reminders to send: a set."""
    return f"{namespace}:{{followups}}:reminding"


def person_of(message: Message) -> str:
    """Who a message reaches, as the frequency memory knows them: their phone number.

    SMS and Zalo address people by phone; a message to another address (e-mail, a push token)
    names the person's phone in `extra["person"]`.
    """
    extra = message.extra
    person = extra.get(PERSON) if extra else None
    return person if isinstance(person, str) and person else message.to


class Decision(enum.Enum):
    """What to do with the rest of a batch now."""

    SEND = "send"
    HOLD = "hold"  # put it back until `until_ms`
    CANCEL = "cancel"  # count it cancelled and drop it


@dataclass(frozen=True, slots=True)
class Verdict:
    """A decision and, for HOLD, when to look again (epoch ms)."""

    decision: Decision
    until_ms: int = 0


SEND = Verdict(Decision.SEND)
HOLD_RETRY_MS = 1000  # a paused campaign's batches come back to look every second


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
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.ttl = ttl
        self.memory = memory  # seconds a person reached is remembered (0: nobody is)
        self._cache: dict[str, _Entry] = {}
        self._remember = redis.register_script(load_script("remember.lua"))
        self._ask = redis.register_script(load_script("ask.lua"))

    async def verdict(self, campaign: str, lane: Lane, now_ms: int) -> Verdict:
        """May a chunk of `campaign` leave now?"""
        if not campaign:
            return SEND
        entry = await self._entry(campaign)
        if entry is None:
            return SEND  # not a managed campaign: plain engine traffic
        if entry.state == CANCELLED:
            return Verdict(Decision.CANCEL)
        started = entry.state == SCHEDULED and 0 < entry.start_ms <= now_ms
        if entry.state != RUNNING and not started:
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
        await self._remember(
            keys=[frequency_key(self.namespace, now)],
            args=[
                f"{campaign}@{int(now)}",
                ",".join(person_of(messages[i]) for i in accepted),
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
        if cached is not None and time.monotonic() - cached.read_at < self.ttl:
            return cached if cached.state else None
        fields = await self.redis.hmget(
            campaign_key(self.namespace, campaign),
            [
                "state",
                "start_ms",
                "quiet_hours",
                "timezone",
                "rate",
                "followup_window",
                "followup_remind",
            ],
        )
        state, start, quiet, zone, rate, followup, remind = (text(value) for value in fields)
        if not state:
            # not a stored campaign (plain engine traffic): remembered as such for `ttl` too
            self._cache[campaign] = _Entry(time.monotonic(), "", 0, None, None)
            return None
        hours = QuietHours.parse(quiet, zone or "UTC") if quiet else None
        limiter = cached.limiter if cached else None
        if rate and (limiter is None or limiter.limits.rate != float(rate)):
            limits = RouteSettings(adapter="campaign", rate=float(rate), unit="messages")
            limiter = RateLimiter(self.redis, self.namespace, f"campaign.{campaign}", limits)
        entry = _Entry(
            time.monotonic(),
            state,
            int(start or 0),
            hours,
            limiter if rate else None,
            int(followup or 0),
            int(remind or 0),
        )
        self._cache[campaign] = entry
        return entry
