"""What a campaign's operators decided, as workers ask it before each chunk leaves.

The engine knows no campaign state: it declares what it asks (`CampaignControls`: may this
chunk leave, at what campaign rate, who opted out, whom it reached) and the campaign layer
answers (`loa.campaigns.controls`), built in each worker by the `ControlsFactory` it is given.
Opt-outs live in one set, `{namespace}:suppressed`, checked per chunk: an address as it is, or,
for a person whose data was erased, `h:` and a salted digest of it (`optout_digest`), so they
stay opted out with no number kept; the salt is `{namespace}:suppressed:salt`.
Whom a campaign reached (the provider accepted its message) is remembered for `memory` seconds
(`loa.campaigns.reached`), where planners look for the people another campaign messaged within
a frequency cap.
A campaign whose hash has `followup_window` (seconds) asks a question: each person it reached
has it open from then for that long, in one hash a UTC day, `{namespace}:asked:YYYYMMDD`,
person -> `campaign|at_ms|closes_ms|message|region` (see ask.lua; loa.followups reads it).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from loa.engine.connection import RedisClient
from loa.engine.keys import optout_salt_key, suppression_key
from loa.engine.ratelimit import RateLimiter
from loa.message import Lane, Message

PERSON = "person"  # the key of Message.extra naming the person when `to` is not their phone
REGION = "region"  # the key of Message.extra with the person's region, when a campaign asks
DAY_SECONDS = 86_400


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


class CampaignControls(Protocol):
    """What a worker asks about a campaign before and after each chunk (one per process)."""

    async def verdict(self, campaign: str, lane: Lane, now_ms: int) -> Verdict:
        """May a chunk of `campaign` leave now? SEND for traffic of no stored campaign."""
        ...

    async def campaign_limiter(self, campaign: str) -> RateLimiter | None:
        """The campaign's own rate limit (in messages), shared by all its routes, if any."""
        ...

    async def suppressed(self, addresses: Sequence[str]) -> list[bool]:
        """Which of `addresses` opted out."""
        ...

    async def reached(
        self,
        campaign: str,
        messages: Sequence[Message],
        accepted: Sequence[int],
        sent_at: float | None = None,
    ) -> None:
        """The provider accepted `messages[i]` for each i in `accepted`, sent at `sent_at`
        (epoch seconds; default now): a reply can come before the provider's answer was read."""
        ...


# how a worker builds its controls: (its Redis client, the namespace, seconds a person reached
# is remembered for frequency caps); a module-level function, so it crosses to worker processes
ControlsFactory = Callable[[RedisClient, str, float], CampaignControls]
