"""Which question a number has open: the newest one a campaign asked them, within its window.

The engine opens a campaign's question for each person it reached (loa.engine.control,
`asked_key`); the plan's `[followup]` is in the campaign's hash (`followup`, JSON). A reply is
an answer when it came after the question was asked and before its window closed. This module
only reads: the inbox asks it whether to leave a reply alone; loa.followups stores answers.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from loa.campaigns.plan import MAX_FOLLOWUP_WINDOW, Followup, FollowupOption
from loa.engine.connection import RedisClient, text
from loa.engine.control import DAY_SECONDS, asked_key, campaign_key


@dataclass(frozen=True, slots=True)
class Asked:
    """A question a campaign asked one person: when, until when, by which message, where."""

    campaign: str
    at_ms: int
    closes_ms: int
    message: str
    region: str

    @classmethod
    def parse(cls, value: str) -> Asked | None:
        """From its stored form, `campaign|at_ms|closes_ms|message|region` (None if not that)."""
        fields = value.split("|")
        if len(fields) != 5 or not (fields[1].isdigit() and fields[2].isdigit()):
            return None
        return cls(fields[0], int(fields[1]), int(fields[2]), fields[3], fields[4])


@dataclass(frozen=True, slots=True)
class Open:
    """A number's open question and the plan's follow-up it asks."""

    asked: Asked
    followup: Followup

    def match(self, reply: str) -> FollowupOption | None:
        """The option a reply is, or None."""
        return self.followup.match(reply)


class Questions:
    """Open questions on one Redis; campaigns' follow-ups are cached (they never change)."""

    def __init__(self, redis: RedisClient, namespace: str) -> None:
        self.redis = redis
        self.namespace = namespace
        self._followups: dict[str, Followup | None] = {}

    async def open_for(self, phone: str, at_ms: int, since_ms: int | None = None) -> Open | None:
        """The question `phone` had open at `at_ms` (epoch ms), if any; with `since_ms`, only
        a question asked since then is looked for (fewer days to read)."""
        days = MAX_FOLLOWUP_WINDOW.days + 2  # the window, and the day it started on
        if since_ms is not None:
            days = min(days, (at_ms - since_ms) // (DAY_SECONDS * 1000) + 2)
        pipe = self.redis.pipeline(transaction=False)
        for day in range(days):
            pipe.hget(asked_key(self.namespace, at_ms / 1000 - day * DAY_SECONDS), phone)
        newest: Asked | None = None
        for raw in await pipe.execute():
            asked = Asked.parse(text(raw)) if raw else None
            # a question asked after the reply came is not what it answers
            if asked and asked.at_ms <= at_ms and (newest is None or asked.at_ms > newest.at_ms):
                newest = asked
        if newest is None or newest.closes_ms < at_ms:
            return None
        followup = await self.followup(newest.campaign)
        return Open(newest, followup) if followup is not None else None

    async def followup(self, campaign: str) -> Followup | None:
        """The question a campaign asks (None: it asks none, or is gone)."""
        if campaign not in self._followups:
            raw = await self.redis.hget(campaign_key(self.namespace, campaign), "followup")
            try:
                found = Followup.model_validate_json(text(raw)) if raw else None
            except ValidationError:
                found = None  # stored by another version of loa: not a question we can match
            self._followups[campaign] = found
        return self._followups[campaign]

    async def answers(self, phone: str, reply: str, at_ms: int) -> bool:
        """Whether a reply is one of the options of the question `phone` had open then."""
        found = await self.open_for(phone, at_ms)
        return found is not None and found.match(reply) is not None
