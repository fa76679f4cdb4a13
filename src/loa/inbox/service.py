"""The hotline inbox: citizens' messages as conversations, and cases operators answer.

`sync` takes in the inbound stream (`{ns}:inbound`, which workers and webhooks write) from
where it left off, each message once:

- an opt-out keyword: the worker has opted the sender out already; they are told it worked
  (`inbox.optout_confirmation`, on by default);
- an opt-in keyword (`BAT`, `START`): the sender is taken off the opt-out list and told so;
- an answer to an open question, such as a reply to an appointment from someone in a drive
  (loa.appointments applies those), or one of the options of a campaign's follow-up question
  the sender had open (loa.followups stores those): nothing more here;
- anything else joins the conversation with that number. A number's first message, or its
  first after its last case was closed, opens a new case: open, assigned, answered, closed.

An operator's answer is a one-to-one message on the route the citizen wrote in through (SMS
to their number; from another channel, the SMS route), through the queues, rate limits and
workers like any message, in the high lane.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from loa.appointments.replies import reply_action
from loa.campaigns.questions import Questions
from loa.campaigns.suppression import Suppression
from loa.engine.connection import RedisClient, text
from loa.engine.envelope import now_ms
from loa.engine.events import read_inbound
from loa.engine.keys import drive_prefix, drives_key, inbox_prefix, shard_keys
from loa.engine.producer import Producer
from loa.engine.queue import Queues
from loa.engine.scripts import scripts
from loa.errors import ApiError, InvalidPhone
from loa.message import Lane, Message
from loa.phone import canonical, normalize
from loa.settings import Settings
from loa.sms import analyse, to_ascii

STATES = ("open", "assigned", "answered", "closed")
MAX_REPLY = 1000  # characters in an operator's answer: seven SMS parts at most
PAGE = 500  # inbound messages taken in per round trip
_WORD = re.compile(r"[^A-Z0-9]+")


def mask(phone: str) -> str:
    """A number as a viewer sees it: the country code and the last three digits."""
    if phone.startswith("+") and len(phone) > 6:
        return phone[:3] + "*" * (len(phone) - 6) + phone[-3:]
    return "*" * max(0, len(phone) - 3) + phone[-3:]


def _keyword(message: str) -> str:
    return _WORD.sub(" ", to_ascii(message).upper()).strip()


@dataclass(frozen=True, slots=True)
class Case:
    """One case: a conversation with one number, from its first message until it is closed."""

    id: str
    phone: str
    channel: str
    route: str
    state: str
    assignee: str
    urgent: bool
    opened_ms: int
    updated_ms: int
    messages: int
    last: str

    @classmethod
    def of(cls, fields: dict[str, str]) -> Case:
        """A case from its hash."""
        return cls(
            fields["id"],
            fields.get("phone", ""),
            fields.get("channel", "sms"),
            fields.get("route", ""),
            fields.get("state", "open"),
            fields.get("assignee", ""),
            fields.get("urgent") == "1",
            int(fields.get("opened_ms", 0) or 0),
            int(fields.get("updated_ms", 0) or 0),
            int(fields.get("messages", 0) or 0),
            fields.get("last", ""),
        )

    def to_json(self, numbers: bool) -> dict[str, Any]:
        """The case as the API and `--json` show it; `numbers`: the full number, else masked."""
        return {
            "id": self.id,
            "phone": self.phone if numbers else mask(self.phone),
            "channel": self.channel,
            "route": self.route,
            "state": self.state,
            "assignee": self.assignee,
            "urgent": self.urgent,
            "opened_ms": self.opened_ms,
            "updated_ms": self.updated_ms,
            "messages": self.messages,
            "last": self.last,
        }


def order(case: Case) -> tuple[bool, bool, int, int]:
    """Open cases first, urgent ones on top, then by state, the latest change first."""
    return (case.state == "closed", not case.urgent, STATES.index(case.state), -case.updated_ms)


@dataclass
class SyncReport:
    """What one `sync` took in."""

    read: int = 0
    cases: int = 0  # new cases
    messages: int = 0  # messages added to conversations
    optouts: int = 0
    optins: int = 0
    answers: int = 0  # answers to open questions, left to what asked them
    confirmations: int = 0  # opt-out and opt-in confirmations queued
    skipped: int = 0  # senders that are no number (a Zalo id that sent a keyword)

    def to_json(self) -> dict[str, int]:
        """Counts only: never a number."""
        return dict(self.__dict__)


@dataclass
class Sent:
    """An operator's answer, queued."""

    case: str
    message: str
    route: str
    parts: int
    lane: str = Lane.HIGH.label
    notes: list[str] = field(default_factory=list)


class Inbox:
    """The inbox on one Redis, for the CLI and the API."""

    def __init__(self, settings: Settings, redis: RedisClient) -> None:
        self.settings = settings
        self.redis = redis
        self.namespace = settings.namespace
        self.prefix = inbox_prefix(settings.namespace)
        table = scripts(redis, "loa.inbox")
        self._ingest = table["ingest"]
        self._case = table["case"]
        self._questions = Questions(redis, settings.namespace)

    def key(self, suffix: str) -> str:
        """One of the inbox's keys."""
        return f"{self.prefix}:{suffix}"

    async def sync(self, limit: int = 100_000) -> SyncReport:
        """Take in the inbound messages that came since the last time (see the module)."""
        report = SyncReport()
        after = text(await self.redis.get(self.key("cursor"))) or "-"
        while report.read < limit:
            page = await read_inbound(self.redis, self.namespace, after, PAGE)
            if not page:
                break
            for entry in page:
                report.read += 1
                await self._take(entry, report)
            after = page[-1]["id"]
            # past the keywords too; never back, should another sync have gone further
            await self._ingest([self.prefix], [after, "", "", "", "", "", 0, 0, ""])
        return report

    async def _take(self, entry: dict[str, str], report: SyncReport) -> None:
        message = entry.get("text", "")
        sender = entry.get("sender", "")
        try:
            phone = canonical(sender)
        except InvalidPhone:
            report.skipped += 1
            return
        if entry.get("optout") == "1":
            report.optouts += 1
            if self.settings.inbox.optout_confirmation and await self._claim(entry, "optout"):
                await self._confirm(entry, phone, self.settings.inbox.optout_text, report)
            return
        optin = {_keyword(word) for word in self.settings.inbox.optin_keywords}
        if _keyword(message) in optin:
            report.optins += 1
            if await self._claim(entry, "optin"):
                await Suppression(self.redis, self.namespace).remove([phone])
                await self._confirm(entry, phone, self.settings.inbox.optin_text, report)
            return
        at = int(entry.get("at", 0) or 0) or now_ms()
        if await self._answers_a_question(phone, message, at):
            report.answers += 1
            return
        log = {"at": at, "dir": "in", "text": message, "id": entry["id"]}
        case, new = await self._ingest(
            [self.prefix],
            [
                entry["id"],
                phone,
                entry.get("channel", "sms"),
                entry.get("route", ""),
                entry.get("recipient", ""),
                message,
                at,
                0,
                orjson.dumps(log).decode(),
            ],
        )
        if text(case):
            report.messages += 1
            report.cases += int(new)

    async def raise_case(
        self,
        phone: str,
        message: str,
        *,
        channel: str = "sms",
        route: str = "",
        urgent: bool = False,
    ) -> str:
        """Add a message to a number's conversation from elsewhere than the inbound stream
        (an urgent answer to a question opens a case at once); the case's id."""
        at = now_ms()
        log = {"at": at, "dir": "in", "text": message, "id": ""}
        case, _ = await self._ingest(
            [self.prefix],
            ["", canonical(phone), channel, route, "", message, at, int(urgent),
             orjson.dumps(log).decode()],
        )  # fmt: skip
        return text(case)

    async def _claim(self, entry: dict[str, str], kind: str) -> bool:
        """Whether this keyword message is answered here now (each once, by one process)."""
        claimed = await self.redis.set(
            self.key(f"answered:{entry['id']}"), kind, nx=True, ex=30 * 86400
        )
        return bool(claimed)

    async def _answers_a_question(self, phone: str, message: str, at: int) -> bool:
        """A reply to an appointment from someone in a drive (loa.appointments applies it), or
        an option of the follow-up question the sender had open then (loa.followups)."""
        if await self._questions.answers(phone, message, at):
            return True
        if reply_action(message) is None:
            return False
        for drive in await self.redis.smembers(drives_key(self.namespace)):
            people = f"{drive_prefix(self.namespace, text(drive))}:people"
            if await self.redis.hexists(people, phone):
                return True
        return False

    async def _confirm(
        self, entry: dict[str, str], phone: str, message: str, report: SyncReport
    ) -> None:
        route = self._sms_route(entry.get("route", ""), entry.get("channel", "sms"))
        if route:
            await self._send(route, phone, message, f"confirm-{entry['id']}")
            report.confirmations += 1

    def _sms_route(self, route: str, channel: str) -> str:
        """The route an SMS to this citizen goes out on ("" if none is configured)."""
        if channel == "sms" and route in self.settings.routes:
            return route
        sms = self.settings.channels.get("sms")
        return sms.default if sms is not None and sms.default in self.settings.routes else ""

    async def _send(self, route: str, phone: str, body: str, message_id: str) -> int:
        parts = analyse(body).parts
        queues = Queues(self.redis, self.namespace)
        await queues.prepare(shard_keys(self.namespace, route, self.settings.route(route).shards))
        message = Message(id=message_id, to=phone, body=body, parts=parts)
        await Producer(queues, self.settings).enqueue(route, [message], lane=Lane.HIGH)
        return parts

    async def cases(self, *, closed: bool = False, limit: int = 100) -> list[Case]:
        """Cases in the inbox's order (see `order`); closed ones too when `closed`."""
        ids: list[Any] = await self.redis.zrevrange(self.key("active"), 0, limit - 1)
        if closed:
            recent: list[Any] = await self.redis.zrevrange(self.key("cases"), 0, limit - 1)
            ids += [case for case in recent if case not in ids]
        found = await self._load([text(case) for case in ids])
        return sorted(found, key=order)[:limit]

    async def _load(self, ids: Sequence[str]) -> list[Case]:
        pipe = self.redis.pipeline(transaction=False)
        for case in ids:
            pipe.hgetall(self.key(f"case:{case}"))
        return [
            Case.of({text(k): text(v) for k, v in fields.items()})
            for fields in await pipe.execute()
            if fields
        ]

    async def case(self, case_id: str) -> tuple[Case, list[dict[str, Any]]]:
        """One case and its conversation, oldest message first."""
        found = await self._load([case_id])
        if not found:
            raise ApiError(f"no case {case_id!r}", code="case_not_found", status=404)
        raw: list[Any] = await self.redis.lrange(self.key(f"log:{case_id}"), 0, -1)
        return found[0], [orjson.loads(entry) for entry in raw]

    async def assign(self, case_id: str, to: str, by: str) -> str:
        """Assign a case to an operator (`to`); the state it was in."""
        return await self._step("assign", case_id, to or by)

    async def close(self, case_id: str, by: str) -> str:
        """Close a case; the number's next message opens a new one. The state it was in."""
        return await self._step("close", case_id, by)

    async def _step(self, action: str, case_id: str, who: str, entry: str = "") -> str:
        outcome, before = await self._case(
            [self.prefix], [action, case_id, now_ms(), who, entry]
        )
        if text(outcome) == "unknown":
            raise ApiError(f"no case {case_id!r}", code="case_not_found", status=404)
        if text(outcome) == "closed":
            raise ApiError(f"case {case_id} is closed", code="case_closed", status=409)
        return text(before)

    async def reply(self, case_id: str, message: str, by: str) -> Sent:
        """Answer a case: a one-to-one SMS to the citizen, queued in the high lane."""
        body = message.strip()
        if not body:
            raise ApiError("the answer is empty", code="empty_reply", status=422)
        if len(body) > MAX_REPLY:
            raise ApiError(
                f"the answer is longer than {MAX_REPLY} characters", code="too_long", status=422
            )
        case, _ = await self.case(case_id)
        if case.state == "closed":
            raise ApiError(f"case {case_id} is closed", code="case_closed", status=409)
        route = self._sms_route(case.route, case.channel)
        if not route:
            raise ApiError("no SMS route is configured to answer on", code="no_route", status=409)
        message_id = f"inbox-{case_id}-{secrets.token_hex(4)}"
        try:
            phone = normalize(case.phone)
        except InvalidPhone:
            raise ApiError(
                f"case {case_id} came from a {case.channel} id, not a phone number: "
                "no SMS can answer it",
                code="no_number",
                status=409,
            ) from None
        parts = await self._send(route, phone, body, message_id)
        entry = {
            "at": now_ms(),
            "dir": "out",
            "text": body,
            "by": by,
            "id": message_id,
            "route": route,
        }
        await self._step("answered", case_id, by, orjson.dumps(entry).decode())
        sent = Sent(case_id, message_id, route, parts)
        if case.channel != "sms":
            sent.notes.append(f"the citizen wrote on {case.channel}; the answer goes by SMS")
        return sent
