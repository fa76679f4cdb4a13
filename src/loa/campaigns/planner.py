"""The planner: from an audience file to batches on the engine's queues, once, resumably.

Rows stream through in groups. The work that needs no Redis (parse, normalise the phone number,
filter, choose the first channel the recipient can be reached on and the ones to fall back to,
render, count SMS parts) makes a `Group`; the group then meets Redis once for deduplication,
opt-outs and the frequency cap, and its messages are packed into batches per (route, due time).
While one group's round trips are in flight the next group's rows are worked on, so the two
cores (planner and Redis) work at the same time rather than in turn.

Batch ids are deterministic, the queues refuse an id twice, and a checkpoint after each flush
records where the file and the counters stood: a planner killed mid-file and started again
continues from there, and nobody is queued twice.

Fallback: when a plan has more than one channel, each message carries in `extra["next"]` the
recipient's remaining channels in plan order that it has an address for, each as
`[channel, route, to, body, parts, extra]`; `loa.fallback.next_message` turns that
into the next channel's message when a channel fails for this person. Every channel a person
may be tried on is rendered at planning time, so a template that cannot be rendered for them on
any of those channels makes the row invalid, reported with its line in the dry run, rather than
a fallback that fails on the day; so does an SMS longer than `planning.max_sms_parts`.

A template with logic (anything beyond text and {{ field }} slots) is rendered in a worker
thread, so however long a message takes, the event loop does not wait on it (an API process
answers its health checks meanwhile); text with slots costs a join per row and stays on the
loop, where it is fastest. The sandbox bounds each message's render, and a template it refuses
refuses the whole plan (TemplateRefused): the template is at fault, whoever the recipient.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from loa.campaigns.audience import BadRow, Item, open_audience
from loa.campaigns.carriers import CarrierTable, SmsRouting
from loa.campaigns.plan import Plan
from loa.campaigns.reached import ReachedByOthers
from loa.campaigns.schedule import SendAtError
from loa.campaigns.templates import (
    CompiledTemplates,
    LanguageTemplates,
    RenderedMessage,
    TemplateRefused,
)
from loa.engine.connection import RedisClient
from loa.engine.control import PERSON, REGION, opted_out
from loa.engine.enqueue import Enqueuer, Numbered, Origin
from loa.engine.keys import campaign_seen_key, suppression_key
from loa.engine.queue import Queues
from loa.engine.scripts import scripts
from loa.errors import InvalidPhone, PlanError, TemplateError
from loa.fallback import AFTER, ON_FAILURE
from loa.message import (
    EmailContent,
    Message,
    PushContent,
    ZaloContent,
    email_extra,
    push_extra,
    zalo_extra,
)
from loa.phone import normalize
from loa.settings import Settings
from loa.sms import analyse

GROUP_ROWS = 2000  # rows that meet Redis together
SLICE_ROWS = 250  # rows taken from the file at a time
CHECKPOINT_ROWS = 50_000  # rows between checkpoints (every batch is flushed at one)
FIRST_ERRORS = 100  # invalid rows kept with their line and reason

# the counters planning keeps, in the campaign hash and in every report
PLANNING_COUNTERS = (
    "total",
    "queued",
    "invalid",
    "duplicate",
    "suppressed",
    "filtered",
    "capped",
    "unroutable",
    "scheduled",  # queued with a send time of their own, after the campaign's start
    "past_due",  # queued with a send time at or before the start: they go at once
    "after_expiry",  # a send time after the campaign expires: never sent, not queued
)
BREAKDOWNS = ("by_route", "by_channel", "by_carrier", "by_region", "by_encoding")
# recipients per language, and the SMS parts of those sent an SMS first (by_language in JSON)
LANGUAGE_BREAKDOWNS = ("by_language", "sms_parts_by_language")

# the field of an audience row that says a recipient can be reached on each channel
ADDRESS_COLUMN = {"sms": "phone", "zalo": "zalo_id", "fcm": "fcm_token", "email": "email"}

# what a queued message is counted under: route, channel, carrier, encoding, parts, language
Kind = tuple[str, str, str, str, int, str]
# the messages of one batch: route, due time in ms (0: at the campaign's start)
Bucket = tuple[str, int]
Pending = tuple[Bucket, str]  # a batch being filled: its bucket and its audience region
REGION_BATCHES = 128  # regions batched apart; the rest of a larger `region` column share
# a channel's message for one recipient: body, parts, extra, encoding ("" unless SMS)
Content = tuple[str, int, dict[str, Any] | None, str]
# one planned message with where it goes and what it counts under
Planned = tuple[Message, Bucket, Kind]

_FLAGS = bytes.maketrans(b"01", b"\x00\x01")  # the seen script's answer, as 0/1 bytes


@dataclass
class Report:
    """What planning found (the dry run's answer) or did (a launch's counters)."""

    total: int = 0
    queued: int = 0
    invalid: int = 0
    duplicate: int = 0
    suppressed: int = 0
    filtered: int = 0
    capped: int = 0
    unroutable: int = 0
    scheduled: int = 0
    past_due: int = 0
    after_expiry: int = 0
    parts: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    by_route: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    by_carrier: Counter[str] = field(default_factory=Counter)
    by_region: Counter[str] = field(default_factory=Counter)
    by_encoding: Counter[str] = field(default_factory=Counter)
    by_language: Counter[str] = field(default_factory=Counter)  # recipients
    sms_parts_by_language: Counter[str] = field(default_factory=Counter)  # their first SMS
    parts_by_route: Counter[str] = field(default_factory=Counter)  # for the dry run's ETA
    send_times: Counter[str] = field(default_factory=Counter)  # send_at plans: when they go
    samples: dict[str, dict[str, str]] = field(default_factory=dict)  # "channel/language"
    eta_s: dict[str, float | None] = field(default_factory=dict)  # per route (dry run)
    problems: list[str] = field(default_factory=list)  # plan-level: missing columns, routes
    warnings: list[str] = field(default_factory=list)  # it would go, but not as one may think

    def invalid_row(self, line: int, reason: str) -> None:
        """Count a bad row and keep the first ones with their line."""
        self.invalid += 1
        if len(self.errors) < FIRST_ERRORS:
            self.errors.append((line, reason))

    def add(self, other: Report) -> None:
        """Add the counts of `other` (one group's) to these."""
        for name in (*PLANNING_COUNTERS, "parts"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        room = FIRST_ERRORS - len(self.errors)
        if room > 0:
            self.errors.extend(other.errors[:room])
        for name in (*BREAKDOWNS, *LANGUAGE_BREAKDOWNS, "parts_by_route", "send_times"):
            getattr(self, name).update(getattr(other, name))
        for key, sample in other.samples.items():
            self.samples.setdefault(key, sample)

    def sample(self, channel: str, language: str, to: str, body: str) -> None:
        """Keep the first message of each channel and language (its number masked)."""
        key = f"{channel}/{language}"
        if key not in self.samples:
            self.samples[key] = {"to": mask(to), "body": body}

    def count_queued(self, kinds: Iterable[Kind], regions: Iterable[str]) -> None:
        """Count queued messages: per distinct kind and region, not per message."""
        self.count_kinds(Counter(kinds), Counter(regions))

    def count_kinds(self, kinds: Counter[Kind], regions: Counter[str]) -> None:
        """Count queued messages already counted per kind and per raw region cell."""
        for (route, channel, carrier, encoding, parts, language), n in kinds.items():
            self.queued += n
            self.parts += parts * n
            self.by_route[route] += n
            self.parts_by_route[route] += parts * n
            self.by_channel[channel] += n
            self.by_language[language] += n
            if carrier:
                self.by_carrier[carrier] += n
            if encoding:
                self.by_encoding[str(encoding)] += n  # an Encoding: its value
                self.sms_parts_by_language[language] += parts * n
        for raw, n in regions.items():
            self.by_region[region_of(raw) or "?"] += n

    def count_due(self, buckets: Iterable[Bucket], start_ms: int, day_end_ms: int = 0) -> None:
        """Count queued messages with a send time of their own: later than the start, or not;
        and when they go: past due, the start's day, the next 7 days, later."""
        week_ms = start_ms + 7 * 86_400_000
        for _, due_ms in buckets:
            if due_ms > start_ms:
                self.scheduled += 1
                when = "today" if due_ms < day_end_ms else "later"
                if when == "later" and due_ms <= week_ms:
                    when = "next_7_days"
                self.send_times[when] += 1
            else:
                self.past_due += 1
                self.send_times["past_due"] += 1

    def to_json(self) -> dict[str, Any]:
        """Plain data for --json and for the checkpoint."""
        data = {name: getattr(self, name) for name in (*PLANNING_COUNTERS, "parts")}
        data["errors"] = [{"line": line, "reason": reason} for line, reason in self.errors]
        for name in BREAKDOWNS:
            data[name] = dict(getattr(self, name))
        data["by_language"] = {
            language: {"recipients": n, "sms_parts": self.sms_parts_by_language[language]}
            for language, n in self.by_language.most_common()
        }
        data["problems"] = list(self.problems)
        data["warnings"] = list(self.warnings)
        if self.send_times:
            data["send_times"] = {**dict(self.send_times), "after_expiry": self.after_expiry}
        for name in ("samples", "eta_s"):
            if getattr(self, name):
                data[name] = dict(getattr(self, name))
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """The inverse of to_json (a checkpoint's counters)."""
        report = cls()
        for name, value in data.items():
            if isinstance(value, int):
                setattr(report, name, value)
        report.errors = [(e["line"], e["reason"]) for e in data.get("errors", [])]
        for name in BREAKDOWNS:
            setattr(report, name, Counter(data.get(name, {})))
        for language, counts in data.get("by_language", {}).items():
            report.by_language[language] = counts["recipients"]
            report.sms_parts_by_language[language] = counts["sms_parts"]
        report.problems = list(data.get("problems", []))
        report.warnings = list(data.get("warnings", []))
        report.samples = dict(data.get("samples", {}))
        report.eta_s = dict(data.get("eta_s", {}))
        times = dict(data.get("send_times", {}))
        times.pop("after_expiry", None)  # a counter of its own, shown beside them
        report.send_times = Counter(times)
        return report


@dataclass(slots=True)
class Group:
    """Rows after the checks that need no Redis: their own counts, and one entry per candidate
    in each list (columns rather than an object per candidate: cheaper to build and to filter).
    """

    counts: Report = field(default_factory=Report)
    rows: int = 0
    checkpoint: tuple[int, int] | None = None  # resume point after the group's last row
    # whom each candidate is deduplicated (and frequency-capped) by: the address of the
    # channel it goes out on, its phone number for SMS and Zalo (see recipient_key)
    phones: list[str] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    buckets: list[Bucket] = field(default_factory=list)
    kinds: list[Kind] = field(default_factory=list)
    regions: list[str] = field(default_factory=list)  # the raw `region` cell


def fallback_policy(plan: Plan) -> dict[str, dict[str, Any]]:
    """What each channel's messages carry in `extra` for the engine's fallback, when another
    channel follows: how long to wait for a delivered receipt, and no fallback on failure."""
    policy: dict[str, dict[str, Any]] = {}
    for channel in plan.channels:
        keys: dict[str, Any] = {}
        wait = plan.fallback_after.get(channel)
        if wait is not None:
            keys[AFTER] = int(wait.total_seconds() * 1000)
        if not plan.fallback_on_failure:
            keys[ON_FAILURE] = False
        if keys:
            policy[channel] = keys
    return policy


@dataclass(frozen=True, slots=True)
class _Channel:
    """One channel of a plan, prepared once: its address column, its route, its fixed message."""

    name: str
    column: str
    route: str  # "" for SMS: the route is the carrier's
    static: Content | None  # the message, when the templates read no field
    templates: CompiledTemplates  # of one language
    language: str


class Planner:
    """Plans one campaign's audience onto the queues (or, in a dry run, only counts)."""

    def __init__(
        self, settings: Settings, plan: Plan, campaign: str, audience: Path, launched: datetime
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.campaign = campaign
        self.audience = audience
        self.languages = LanguageTemplates(plan)
        self.templates = self.languages.by_language[plan.language]
        self.max_parts = settings.planning.max_sms_parts
        self.sms_routing = _sms_routing(settings)
        self.start_ms = int(plan.schedule.starts_at(launched).timestamp() * 1000)
        expires = plan.schedule.expires_at(launched)
        self.expires_ms = int(expires.timestamp() * 1000) if expires else 0
        self.tz = plan.schedule.tz
        self.day_end_ms = _day_end_ms(plan.schedule.starts_at(launched), self.tz)
        self._policy = fallback_policy(plan)
        rules = plan.audience
        self._filtering = bool(rules.regions is not None or rules.tags is not None or rules.where)
        self._by_language = {
            language: [self._prepare(channel, language) for channel in plan.channels]
            for language in self.languages.by_language
        }
        self._channels = self._by_language[plan.language]
        # SMS routes per number prefix: one table look-up per prefix, not per recipient
        self._sms_targets: dict[str, tuple[Bucket, str, Kind]] = {}
        lengths = self.sms_routing.table.lengths if self.sms_routing else ()
        self._prefix = lengths[0] if len(lengths) == 1 else 0  # 0: several, no cache
        only = self._channels[0]
        sms_only = len(self._channels) == 1 and only.name == "sms"
        sms_only = sms_only and not self.languages.multilingual
        self._reach = self._reach_any
        if sms_only and plan.schedule.send_at is None:
            self._sms_body = self.templates.sms_body
            self._reach = self._reach_sms if only.static is None else self._reach_static_sms
        self._fixed: Content = only.static or ("", 1, None, "")

    def check(self, columns: Sequence[str]) -> list[str]:
        """Problems with the plan against this audience and these settings (empty: none)."""
        problems = self.languages.missing_columns(columns)
        send_at = self.plan.schedule.send_at
        if send_at is not None and send_at.column not in columns:
            problems.append(f"schedule.send_at uses {send_at.column!r}, not a column")
        for channel in self.plan.channels:
            if channel != "sms" and not self._channel_route(channel):
                problems.append(f"channel {channel!r} has no route: set channels.{channel}.default")
        if "sms" in self.plan.channels and self.sms_routing is None:
            problems.append("channel 'sms' has no route: set channels.sms.default or carriers")
        return problems

    def items(self, resume: tuple[int, int] | None = None) -> Iterator[Item]:
        """The audience's rows (and bad rows), from `resume` on."""
        return iter(open_audience(self.audience, resume=resume))

    def take(self, items: Sequence[Item], group: Group) -> None:
        """Add rows to `group`: counted out (invalid, filtered, unroutable) or candidates.

        The loop every row goes through: the common case runs without a call it can skip.
        """
        if not items:
            return
        counts = group.counts
        phones, messages = group.phones.append, group.messages.append
        buckets, kinds, regions = group.buckets.append, group.kinds.append, group.regions.append
        filtering, matches, reach = self._filtering, self.plan.audience.matches, self._reach
        asks = self.plan.followup is not None  # answers are counted per region: carry it
        for item in items:
            if isinstance(item, BadRow):
                counts.invalid_row(item.line, item.reason)
                continue
            fields = item.fields
            try:
                phone = normalize(fields.get("phone", ""))
            except InvalidPhone as exc:
                counts.invalid_row(item.line, f"phone: {exc}")
                continue
            if filtering and not matches(fields):
                counts.filtered += 1
                continue
            try:
                planned = reach(item.line, fields, phone)
            except TemplateRefused as exc:
                raise TemplateRefused(
                    exc.key, f"{exc.reason} (audience line {item.line})"
                ) from None
            except (TemplateError, SendAtError) as exc:
                counts.invalid_row(item.line, str(exc))
                continue
            except AfterExpiry:
                counts.after_expiry += 1
                continue
            if planned is None:
                counts.unroutable += 1
                continue
            message, bucket, kind = planned
            if asks and fields.get("region"):
                message.extra = {**(message.extra or {}), REGION: fields["region"].strip()}
            to = message.to
            phones(phone if to is phone else recipient_key(to))
            messages(message)
            buckets(bucket)
            kinds(kind)
            regions(fields.get("region") or "")
        counts.total += len(items)
        group.rows += len(items)
        group.checkpoint = items[-1].checkpoint

    def _reach_static_sms(self, line: int, fields: Mapping[str, str], phone: str) -> Planned:
        """One SMS channel, the same text for everyone, no send times: the common campaign."""
        prefix = self._prefix
        target = self._sms_targets.get(phone[:prefix]) if prefix else None
        bucket, _, kind = target or self._sms_target(phone)
        body, parts, _, _ = self._fixed
        if parts > self.max_parts:
            raise self._too_long(parts)
        return Message(str(line), phone, body, parts), bucket, kind

    def _reach_sms(self, line: int, fields: Mapping[str, str], phone: str) -> Planned:
        """One SMS channel whose text has the recipient's fields, no send times."""
        body = self._sms_body(fields)
        info = analyse(body)
        if info.parts > self.max_parts:
            raise self._too_long(info.parts)
        prefix = self._prefix
        target = self._sms_targets.get(phone[:prefix]) if prefix else None
        bucket, carrier, _ = target or self._sms_target(phone)
        kind = (bucket[0], "sms", carrier, info.encoding, info.parts, self.plan.language)
        return Message(str(line), phone, body, info.parts), bucket, kind

    def _sms_target(self, phone: str) -> tuple[Bucket, str, Kind]:
        """A number's (route, due) bucket, its carrier's name, and the kind its message counts
        under when the text is the same for everyone (cached by prefix)."""
        assert self.sms_routing is not None
        carrier, route = self.sms_routing.lookup(phone)
        name = carrier or "other"
        _, parts, _, encoding = self._fixed
        target = ((route, 0), name, (route, "sms", name, encoding, parts, self.plan.language))
        if self._prefix:
            self._sms_targets[phone[: self._prefix]] = target
        return target

    def _reach_any(self, line: int, fields: Mapping[str, str], phone: str) -> Planned | None:
        """The first channel the recipient has an address for, with the rest to fall back to."""
        first: tuple[_Channel, str, Content, str, str] | None = None
        rest: list[list[Any]] = []
        channels = self._channels
        if self.languages.multilingual:
            channels = self._by_language[self.languages.language_of(fields.get("lang"))]
        for channel in channels:
            to = self._address(channel, fields, phone)
            if not to:
                continue  # no id for this channel: the next channel in the plan's order
            content, carrier, route = self._content(channel, fields, phone)
            if first is None:
                first = (channel, to, content, carrier, route)
                if len(channels) == 1:
                    break
            else:
                body, parts, extra, _ = content
                if to != phone:
                    extra = {**(extra or {}), PERSON: phone}
                rest.append([channel.name, route, to, body, parts, extra])
        if first is None:
            return None
        channel, to, (body, parts, extra, encoding), carrier, route = first
        if to != phone:  # the frequency memory knows people by phone
            extra = {**(extra or {}), PERSON: phone}
        if rest:
            extra = {**(extra or {}), **self._policy.get(channel.name, {}), "next": rest}
            for entry in rest[:-1]:  # a channel with another after it may fall back too
                policy = self._policy.get(entry[0])
                if policy:
                    entry[5] = {**(entry[5] or {}), **policy}
        due_ms = 0
        if self.plan.schedule.send_at is not None:
            due = self.plan.schedule.send_at.resolve(fields, self.tz)
            due_ms = max(0, int(due.timestamp() * 1000))
            if 0 < self.expires_ms <= due_ms:
                raise AfterExpiry  # stale on the day it would go: never queued
        message = Message(str(line), to, body, parts, extra)
        kind = (route, channel.name, carrier, encoding, parts, channel.language)
        return message, (route, due_ms), kind

    @staticmethod
    def _address(channel: _Channel, fields: Mapping[str, str], phone: str) -> str:
        """Where this channel reaches the recipient ("" when it cannot).

        Zalo ZNS addresses people by phone: its column only says who has a Zalo account.
        """
        if channel.name == "sms":
            return phone
        if not (fields.get(channel.column) or "").strip():
            return ""
        return phone if channel.name == "zalo" else fields[channel.column].strip()

    def _content(
        self, channel: _Channel, fields: Mapping[str, str], phone: str
    ) -> tuple[Content, str, str]:
        """The channel's message for this recipient, its carrier ("" unless SMS) and route."""
        content = channel.static if channel.static is not None else self._render(channel, fields)
        if channel.name != "sms":
            return content, "", channel.route
        if content[1] > self.max_parts:
            raise self._too_long(content[1])
        assert self.sms_routing is not None
        carrier, route = self.sms_routing.lookup(phone)
        return content, carrier or "other", route

    def _too_long(self, parts: int) -> TemplateError:
        return TemplateError(
            f"templates.sms: the message is {parts} SMS parts, more than the {self.max_parts} "
            "allowed (planning.max_sms_parts)"
        )

    def _render(self, channel: _Channel, fields: Mapping[str, str]) -> Content:
        return _rendered(channel.templates.render(channel.name, fields))

    def _prepare(self, channel: str, language: str) -> _Channel:
        templates = self.languages.by_language[language]
        static = templates.static(channel)
        return _Channel(
            channel,
            ADDRESS_COLUMN[channel],
            "" if channel == "sms" else self._channel_route(channel) or "",
            _rendered(static) if static is not None else None,
            templates,
            language,
        )

    def _channel_route(self, channel: str) -> str | None:
        spec = self.settings.channels.get(channel)  # type: ignore[call-overload]
        return spec.default if spec else None


def _day_end_ms(start: datetime, tz: Any) -> int:
    """Midnight after `start` in the plan's time zone, in epoch milliseconds."""
    local = start.astimezone(tz)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    return int(midnight.timestamp() * 1000)


def mask(address: str) -> str:
    """A number or address with its middle hidden, for samples shown to operators."""
    if len(address) <= 6:
        return "*" * len(address)
    return address[:5] + "*" * (len(address) - 7) + address[-2:]


def recipient_key(address: str) -> str:
    """Whom a message to `address` reaches, for deduplication: an e-mail address in any case is
    one mailbox (a push token is case-sensitive); no comma (the seen script splits on them)."""
    if "@" in address:
        address = address.casefold()
    return address.replace(",", "%2C") if "," in address else address


def _sms_routing(settings: Settings) -> SmsRouting | None:
    spec = settings.channels.get("sms")
    if spec is None or not (spec.default or spec.carriers):
        return None
    table = CarrierTable.default(spec.prefixes or None)
    default = spec.default or next(iter(spec.carriers.values()))
    return SmsRouting(table, spec.carriers, default=default)


def _rendered(rendered: RenderedMessage) -> Content:
    """A rendered message as body, parts, the channel's other fields and the SMS encoding."""
    if rendered.channel == "sms":
        info = analyse(rendered.body)
        return rendered.body, info.parts, None, str(info.encoding)
    if rendered.channel == "email":
        return rendered.body, 1, email_extra(EmailContent(rendered.subject)), ""
    if rendered.channel == "fcm":
        return rendered.body, 1, push_extra(PushContent(rendered.title)), ""
    return "", 1, zalo_extra(ZaloContent(rendered.template_id, rendered.data)), ""


class AfterExpiry(Exception):
    """A recipient's send time comes after the campaign expires: they would never get it."""


class RedisChecks:
    """The checks that need Redis: for a group, one round trip each, sent together."""

    def __init__(
        self,
        redis: RedisClient,
        namespace: str,
        seen_key: str,
        campaign: str,
        frequency_window: int | None,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.seen_key = seen_key
        self.campaign = campaign
        self.reached = (  # whom other campaigns reached; None: this campaign has no cap
            None
            if frequency_window is None
            else ReachedByOthers(redis, namespace, campaign, frequency_window)
        )
        self.opt_outs = False  # the opt-out set had members at the last look
        self._seen = scripts(redis, "loa.campaigns")["seen"]

    async def filter(self, group: Group) -> bytearray:
        """One flag per candidate of `group` (1: plan it); duplicates, opted-out and
        frequency-capped recipients are counted in the group's counts, in that order."""
        if not group.phones:
            return bytearray()
        seen, opted, blocked = await asyncio.gather(
            self._fresh(group),
            self.opted([m.to for m in group.messages]),
            self.blocked(group.phones),
        )
        counts = group.counts
        counts.duplicate += seen.count(0)
        for flags, counter in ((opted, "suppressed"), (blocked, "capped")):
            if flags is None:
                continue
            dropped = 0
            for index, flag in enumerate(flags):
                if flag and seen[index]:
                    seen[index] = 0
                    dropped += 1
            setattr(counts, counter, getattr(counts, counter) + dropped)
        return seen

    async def _fresh(self, group: Group) -> bytearray:
        """Deduplication: one script call with the group's recipients and lines joined."""
        ids = ",".join(message.id for message in group.messages)
        answer = await self._seen(keys=[self.seen_key], args=[",".join(group.phones), ids])
        flags = bytearray(answer.translate(_FLAGS))
        if len(flags) != len(group.phones):
            raise RuntimeError(f"seen.lua answered {len(flags)} flags for {len(group.phones)}")
        return flags

    async def any_opt_outs(self) -> bool:
        """Whether anyone opted out (asked until someone has, then known)."""
        if not self.opt_outs:
            self.opt_outs = bool(await self.redis.exists(suppression_key(self.namespace)))
        return self.opt_outs

    async def opted(self, addresses: list[str]) -> list[int] | None:
        """Who opted out (None: nobody); the set is only asked about once it has members."""
        if not await self.any_opt_outs():
            return None
        found = await opted_out(self.redis, self.namespace, addresses)
        return [int(flag) for flag in found]

    async def blocked(self, phones: list[str]) -> list[bool] | None:
        """Whom another campaign reached within the window (None: no cap).

        Workers remember each person a provider accepted a campaign's message for: a campaign
        planned, cancelled or expired before it sent blocks nobody.
        """
        if self.reached is None:
            return None
        return await self.reached.blocked_people(phones)


@dataclass
class Checkpoint:
    """Where planning stood after a flush: file position, counters, batch numbers per route."""

    resume: tuple[int, int] | None
    report: Report
    sequence: dict[str, int]
    finished: bool = False
    columnar: bool = False  # planned by the columnar path, which must then go on with it
    seen_blobs: int = 0  # deltas of the columnar path's seen numbers this checkpoint counts
    # the regions batched apart so far: the same rows planned again batch the same way
    regions: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        """Encode for the campaign hash."""
        return orjson.dumps(
            {
                "resume": self.resume,
                "report": self.report.to_json(),
                "sequence": self.sequence,
                "finished": self.finished,
                "columnar": self.columnar,
                "seen_blobs": self.seen_blobs,
                "regions": self.regions,
            }
        )

    @classmethod
    def from_json(cls, raw: str | bytes) -> Checkpoint:
        """Decode what to_json wrote."""
        data = orjson.loads(raw)
        resume = (int(data["resume"][0]), int(data["resume"][1])) if data["resume"] else None
        return cls(
            resume,
            Report.from_json(data["report"]),
            dict(data["sequence"]),
            bool(data["finished"]),
            bool(data.get("columnar", False)),
            int(data.get("seen_blobs", 0)),
            [str(region) for region in data.get("regions", ())],
        )


def region_of(cell: str) -> str:
    """A `region` cell as it is counted: trimmed, in capitals ("" when empty)."""
    return cell.strip().upper()


class Batcher:
    """Packs planned messages into batches per (route, due time, region) and numbers them per
    route; the engine's Enqueuer names, places and queues them.

    Each region of the audience is batched apart, so that a worker counts what it sends per
    region with the batch (see Campaigns.by_region), never per message; past REGION_BATCHES
    regions (a `region` column that is not provinces) the rest share batches without one.
    """

    def __init__(self, planner: Planner, enqueuer: Enqueuer | None, state: Checkpoint):
        self.planner = planner
        self.enqueuer = enqueuer
        self.sequence = state.sequence
        self.pending: dict[Pending, list[Message]] = {}
        self.size = planner.settings.queue.batch_size
        self.regions: set[str] = set(state.regions)

    def checkpoint(
        self, resume: tuple[int, int] | None, report: Report, *, finished: bool = False
    ) -> Checkpoint:
        """Where planning stands once `flush` sent every partial batch."""
        regions = sorted(self.regions)
        return Checkpoint(resume, report, self.sequence, finished, regions=regions)

    def region(self, cell: str) -> str:
        """The region a batch is kept for: the cell's, while there are few enough."""
        regions, cell = self.regions, region_of(cell)
        if cell in regions or not cell:
            return cell
        if len(regions) >= REGION_BATCHES:
            return ""
        regions.add(cell)
        return cell

    def add(
        self, messages: Iterable[Message], buckets: Iterable[Bucket], regions: Iterable[str]
    ) -> list[tuple[Pending, list[Message]]]:
        """Take planned messages; returns the batches they filled, for `put`."""
        pending, size, region = self.pending, self.size, self.region
        full: list[tuple[Pending, list[Message]]] = []
        for message, bucket, cell in zip(messages, buckets, regions, strict=True):
            key = (bucket, region(cell))
            batch = pending.get(key)
            if batch is None:
                batch = pending[key] = []
            batch.append(message)
            if len(batch) >= size:
                full.append((key, pending.pop(key)))
        return full

    def add_route(
        self, bucket: Bucket, messages: list[Message], region: str = ""
    ) -> list[tuple[Pending, list[Message]]]:
        """Take planned messages of one bucket and region, in order; returns the batches they
        filled."""
        key = (bucket, self.region(region))
        batch = self.pending.setdefault(key, [])
        full: list[tuple[Pending, list[Message]]] = []
        start = 0
        while start < len(messages):
            room = self.size - len(batch)
            batch.extend(messages[start : start + room])
            start += room
            if len(batch) >= self.size:
                full.append((key, self.pending.pop(key)))
                batch = self.pending.setdefault(key, [])
        if not batch:
            del self.pending[key]
        return full

    async def flush(self, *, in_line_order: bool = False) -> None:
        """Send every partial batch (before a checkpoint, and at the end): in the order their
        first messages came, which is how `add` keeps them; a planner that fills them by
        `add_route`, a group at a time, asks for them by their first message's line."""
        items, self.pending = list(self.pending.items()), {}
        if in_line_order:
            items.sort(key=lambda item: int(item[1][0].id))
        await self.put(items)

    async def put(self, items: list[tuple[Pending, list[Message]]]) -> None:
        """Number the batches per route and hand them to the engine."""
        if not items:
            return
        start_ms = self.planner.start_ms
        numbered = []
        for ((route, due_ms), region), messages in items:
            number = self.sequence.get(route, 0)
            self.sequence[route] = number + 1
            due = max(due_ms, start_ms)
            numbered.append(Numbered(route, number, messages, due, region))
        if self.enqueuer is not None:
            await self.enqueuer.put(numbered)


async def plan_audience(
    planner: Planner,
    redis: RedisClient,
    *,
    queue: bool,
    checkpoint: Checkpoint | None = None,
    save: Any = None,
) -> Report:
    """Stream the audience; count it (dry run) or queue it, checkpointing through `save`.

    Group k's Redis work runs as a task while group k+1's rows are read and rendered; the
    counts of a group join the report only once its Redis work is done, so a checkpoint holds
    exactly the rows before its resume point.
    """
    namespace = planner.settings.namespace
    state = checkpoint or Checkpoint(None, Report(), {})
    report = state.report
    window = planner.plan.limits.frequency_cap
    checks = RedisChecks(
        redis,
        namespace,
        campaign_seen_key(namespace, planner.campaign),
        planner.campaign,
        int(window.total_seconds()) if window else None,
    )
    enqueuer = None
    if queue:
        origin = Origin(planner.campaign, planner.campaign, planner.plan.lane, planner.expires_ms)
        enqueuer = Enqueuer(Queues(redis, namespace), planner.settings, origin)
        await enqueuer.prepare()
    batcher = Batcher(planner, enqueuer, state)
    items = planner.items(state.resume)
    since_checkpoint = 0
    settling: tuple[asyncio.Task[None], Group] | None = None
    try:
        while True:
            group = await _next_group(planner, items)
            if settling is not None:
                task, done = settling
                settling = None
                await task
                report.add(done.counts)
                since_checkpoint += done.rows
                if since_checkpoint >= CHECKPOINT_ROWS and save is not None:
                    await batcher.flush()
                    await save(batcher.checkpoint(done.checkpoint, report))
                    since_checkpoint = 0
            if not group.rows:
                break
            settling = asyncio.create_task(_settle(group, checks, batcher, queue)), group
    finally:
        if settling is not None:
            await _abandon(settling[0])
    await batcher.flush()
    if save is not None:
        await save(batcher.checkpoint(None, report, finished=True))
    return report


async def _next_group(planner: Planner, items: Iterator[Item]) -> Group:
    """The next GROUP_ROWS rows worked on: in a worker thread when the templates run code
    (whatever a row costs, the event loop never waits on it), else a slice at a time on the
    loop, letting the previous group's replies in between."""
    if planner.languages.runs_code:
        return await asyncio.to_thread(_take_group, planner, items)
    group = Group()
    more = _take_slice(planner, items, group)
    while more:
        await asyncio.sleep(0)  # the previous group's replies are read, its next request sent
        more = _take_slice(planner, items, group)
    return group


def _take_group(planner: Planner, items: Iterator[Item]) -> Group:
    group = Group()
    while _take_slice(planner, items, group):
        pass
    return group


def _take_slice(planner: Planner, items: Iterator[Item], group: Group) -> bool:
    """Work on the next slice of rows; False once the group is full or the file has ended."""
    if group.rows >= GROUP_ROWS:
        return False
    rows = list(itertools.islice(items, min(SLICE_ROWS, GROUP_ROWS - group.rows)))
    if not rows:
        return False
    planner.take(rows, group)
    return True


async def _settle(group: Group, checks: RedisChecks, batcher: Batcher, queue: bool) -> None:
    """A group's Redis work: the checks, then its messages into batches and the full ones out."""
    flags = await checks.filter(group)
    compress = itertools.compress
    group.counts.count_queued(compress(group.kinds, flags), compress(group.regions, flags))
    planner = batcher.planner
    if planner.plan.schedule.send_at is not None:
        due = compress(group.buckets, flags)
        group.counts.count_due(due, planner.start_ms, planner.day_end_ms)
    _sample(group, flags)
    if not queue:
        return
    messages, buckets = compress(group.messages, flags), compress(group.buckets, flags)
    full = batcher.add(messages, buckets, compress(group.regions, flags))
    await batcher.put(full)


def _sample(group: Group, flags: bytearray) -> None:
    """One message per channel and language for the report (the first few queued only)."""
    pairs = zip(group.messages, group.kinds, strict=True)
    picked = itertools.islice(itertools.compress(pairs, flags), 50)
    for message, kind in picked:
        group.counts.sample(kind[1], kind[5], message.to, message.body)


async def _abandon(task: asyncio.Task[None]) -> None:
    """Stop a group's Redis work that planning no longer waits for (it failed elsewhere)."""
    if not task.done():
        task.cancel()
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()  # retrieved: it is the other failure that is raised


__all__ = ["Checkpoint", "Group", "PlanError", "Planner", "Report", "plan_audience"]
