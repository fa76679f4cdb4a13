"""Replies to campaigns' questions, matched, stored once as structured answers, and counted.

`sync` reads the inbound stream (`{ns}:inbound`) from where it left off (its own cursor,
`{ns}:{followups}:cursor`). A reply from a number with an open question (loa.followups.
questions) is stored with its campaign (answer.lua, once per stream id, whatever crashes
between): an option's answer with its code, label, text, message and region; anything else
as "unparsed" with its text, and the hotline inbox takes it up as well. An opt-out keyword
is never an answer. An urgent answer opens an urgent hotline case at once, with the campaign
and the person's earlier answer attached.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import orjson

from loa.campaigns.questions import Open, Questions
from loa.campaigns.schedule import format_duration
from loa.campaigns.service import Campaigns
from loa.engine.connection import RedisClient, text
from loa.engine.events import read_inbound
from loa.errors import InvalidPhone
from loa.inbox.service import Inbox, mask
from loa.phone import canonical
from loa.settings import Settings

PAGE = 500  # inbound messages read per round trip
UNPARSED_SHOWN = 100  # the newest unparsed replies a summary lists


def followup_prefix(namespace: str, campaign: str) -> str:
    """Every key of one campaign's answers starts with this; the hash tag keeps them together."""
    return f"{namespace}:{{fu:{campaign}}}"


@dataclass
class SyncReport:
    """What one `sync` read and stored."""

    read: int = 0
    answers: int = 0  # replies that are an option of the open question
    changed: int = 0  # of those, people who answered before (the newer answer counts)
    unparsed: int = 0  # replies to an open question that match no option
    urgent: int = 0  # urgent answers, each an urgent hotline case
    other: int = 0  # replies from numbers with no question open, opt-outs, not numbers

    def to_json(self) -> dict[str, int]:
        """Counts only: never a number."""
        return dict(self.__dict__)


class Followups:
    """Answers to campaigns' questions on one Redis, for the CLI and the API."""

    def __init__(self, settings: Settings, redis: RedisClient) -> None:
        self.settings = settings
        self.redis = redis
        self.namespace = settings.namespace
        self.questions = Questions(redis, settings.namespace)
        source = resources.files("loa.followups").joinpath("lua", "answer.lua").read_text()
        self._answer = redis.register_script(source)

    @property
    def cursor_key(self) -> str:
        """The last inbound stream id read by `sync`."""
        return f"{self.namespace}:{{followups}}:cursor"

    async def sync(self, limit: int = 100_000) -> SyncReport:
        """Store the replies that came since the last time (see the module)."""
        report = SyncReport()
        after = text(await self.redis.get(self.cursor_key)) or "-"
        while report.read < limit:
            page = await read_inbound(self.redis, self.namespace, after, PAGE)
            if not page:
                break
            for entry in page:
                report.read += 1
                await self._take(entry, report)
            after = page[-1]["id"]
            await self.redis.set(self.cursor_key, after)
        return report

    async def _take(self, entry: dict[str, str], report: SyncReport) -> None:
        if entry.get("optout") == "1":
            report.other += 1  # the person asked to hear no more: never an answer
            return
        try:
            phone = canonical(entry.get("sender", ""))
        except InvalidPhone:
            report.other += 1
            return
        at_ms = int(entry.get("at", 0) or 0)
        question = await self.questions.open_for(phone, at_ms) if at_ms else None
        if question is None:
            report.other += 1
            return
        reply = entry.get("text", "")
        option = question.match(reply)
        asked = question.asked
        day = datetime.fromtimestamp(at_ms / 1000, UTC).date().isoformat()
        code = option.code if option else ""
        stored = {
            "id": entry["id"],
            "at": at_ms,
            "day": day,
            "code": code,
            "label": option.label if option else "",
            "text": reply,
            "message": asked.message,
            "region": asked.region,
            "channel": entry.get("channel", "sms"),
            "phone": phone,
        }
        outcome, earlier = await self._answer(
            [followup_prefix(self.namespace, asked.campaign)],
            [entry["id"], phone, code, asked.region, day, orjson.dumps(stored).decode()],
        )
        outcome = text(outcome)
        if outcome == "unparsed":
            report.unparsed += 1
        elif outcome == "answered":
            report.answers += 1
            report.changed += int(bool(text(earlier)))
            if option is not None and option.urgent:
                report.urgent += 1
                await self._raise(entry, phone, question, reply, text(earlier))

    async def _raise(
        self, entry: dict[str, str], phone: str, question: Open, reply: str, earlier: str
    ) -> str:
        """An urgent answer opens (or marks urgent) the number's hotline case at once."""
        option = question.match(reply)
        assert option is not None
        note = (
            f"[campaign {question.asked.campaign}, question {question.followup.id}] "
            f"answer {option.code} ({option.label}): {reply}"
        )
        if earlier:
            was = orjson.loads(earlier)
            note += f" | earlier answer {was['code']} ({was['label']}) on {was['day']}"
        inbox = Inbox(self.settings, self.redis)
        return await inbox.raise_case(
            phone, note, channel=entry.get("channel", "sms"), route=entry.get("route", ""),
            urgent=True,
        )  # fmt: skip

    async def summary(self, campaign: str, *, numbers: bool = False) -> dict[str, Any]:
        """Counts per answer, per region and per day; the response rate; the unparsed replies.

        Raises CampaignError when there is no such campaign; a campaign that asks nothing has
        an empty summary with `question` None.
        """
        status = await Campaigns(self.settings, self.redis).status(campaign)
        followup = await self.questions.followup(campaign)
        prefix = followup_prefix(self.namespace, campaign)
        raw: Any = await self.redis.hgetall(f"{prefix}:counts")
        counts = {text(k): int(v) for k, v in raw.items()}
        unparsed: list[Any] = await self.redis.lrange(f"{prefix}:unparsed", -UNPARSED_SHOWN, -1)
        options = followup.options if followup else []
        by_region: dict[str, dict[str, int]] = {}
        by_day: dict[str, dict[str, int]] = {}
        for field, amount in counts.items():
            kind, _, rest = field.partition(":")
            where, _, code = rest.rpartition(":")
            if kind in ("region", "day") and amount:
                table = by_region if kind == "region" else by_day
                table.setdefault(where or "unknown", {})[code] = amount
        sent = int(status.get("sent", 0) or 0)
        answered = counts.get("answered", 0)
        return {
            "campaign": campaign,
            "question": followup.id if followup else None,
            "sent": sent,
            "answered": answered,
            "response_rate": round(answered / sent, 4) if sent else 0.0,
            "options": [
                {
                    "code": option.code,
                    "label": option.label,
                    "urgent": option.urgent,
                    "count": counts.get(f"option:{option.code}", 0),
                }
                for option in options
            ],
            "by_region": dict(sorted(by_region.items())),
            "by_day": dict(sorted(by_day.items())),
            "unparsed_count": counts.get("unparsed", 0),
            "reminder": (
                {
                    "after": format_duration(followup.remind_after),
                    "sent": counts.get("reminded", 0),
                    "skipped": counts.get("reminder_skipped", 0),
                }
                if followup and followup.remind_after
                else None
            ),
            "unparsed": [_shown(orjson.loads(item), numbers) for item in reversed(unparsed)],
        }


def _shown(reply: dict[str, Any], numbers: bool) -> dict[str, Any]:
    """An unparsed reply as a summary lists it: the number masked unless `numbers`."""
    phone = str(reply.get("phone", ""))
    return {
        "at": reply.get("at", 0),
        "text": reply.get("text", ""),
        "region": reply.get("region", ""),
        "phone": phone if numbers else mask(phone),
    }
