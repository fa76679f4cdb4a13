"""The planner: from an audience file to batches on the engine's queues, once, resumably.

Rows stream through: parse, normalise the phone number, filter, choose the first channel the
recipient can be reached on, render, count SMS parts. Groups of rows then meet Redis once each
for deduplication, opt-outs and the frequency cap, and their messages are packed into batches
per (route, due time). Batch ids are deterministic, the queues refuse an id twice, and a
checkpoint after each flush records where the file and the counters stood: a planner killed
mid-file and started again continues from there, and nobody is queued twice.
"""

from __future__ import annotations

import itertools
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from loa.campaigns.audience import BadRow, Row, open_audience
from loa.campaigns.carriers import CarrierTable, SmsRouting
from loa.campaigns.phone import normalize
from loa.campaigns.plan import Plan
from loa.campaigns.schedule import SendAtError
from loa.campaigns.sms import analyse
from loa.campaigns.templates import CompiledTemplates, RenderedMessage
from loa.engine.connection import RedisClient, text
from loa.engine.control import suppression_key
from loa.engine.envelope import Batch
from loa.engine.keys import ShardKeys, shard_keys
from loa.engine.producer import Producer
from loa.engine.queue import Queues
from loa.errors import InvalidPhone, PlanError, TemplateError
from loa.message import Message
from loa.settings import Settings

GROUP_ROWS = 1000  # rows that meet Redis together
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
)

# the field of an audience row that holds a recipient's address on each channel
ADDRESS_COLUMN = {"sms": "phone", "zalo": "zalo_id", "fcm": "fcm_token", "email": "email"}


@dataclass(slots=True)
class Candidate:
    """A row that passed every check that needs no Redis."""

    line: int
    phone: str
    channel: str
    route: str
    message: Message
    due_ms: int  # 0: at the campaign's start
    region: str
    carrier: str
    encoding: str = ""


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
    parts: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    by_route: Counter[str] = field(default_factory=Counter)
    by_channel: Counter[str] = field(default_factory=Counter)
    by_carrier: Counter[str] = field(default_factory=Counter)
    by_region: Counter[str] = field(default_factory=Counter)
    by_encoding: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)  # plan-level: missing columns, routes

    def invalid_row(self, line: int, reason: str) -> None:
        """Count a bad row and keep the first ones with their line."""
        self.invalid += 1
        if len(self.errors) < FIRST_ERRORS:
            self.errors.append((line, reason))

    def to_json(self) -> dict[str, Any]:
        """Plain data for --json and for the checkpoint."""
        data = {name: getattr(self, name) for name in (*PLANNING_COUNTERS, "parts")}
        data["errors"] = [{"line": line, "reason": reason} for line, reason in self.errors]
        for name in ("by_route", "by_channel", "by_carrier", "by_region", "by_encoding"):
            data[name] = dict(getattr(self, name))
        data["problems"] = list(self.problems)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Report:
        """The inverse of to_json (a checkpoint's counters)."""
        report = cls()
        for name, value in data.items():
            if isinstance(value, int):
                setattr(report, name, value)
        report.errors = [(e["line"], e["reason"]) for e in data.get("errors", [])]
        for name in ("by_route", "by_channel", "by_carrier", "by_region", "by_encoding"):
            setattr(report, name, Counter(data.get(name, {})))
        report.problems = list(data.get("problems", []))
        return report


class Planner:
    """Plans one campaign's audience onto the queues (or, in a dry run, only counts)."""

    def __init__(
        self, settings: Settings, plan: Plan, campaign: str, audience: Path, launched: datetime
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.campaign = campaign
        self.audience = audience
        self.templates = CompiledTemplates.compile(plan)
        self.sms_routing = _sms_routing(settings)
        self.start_ms = int(plan.schedule.starts_at(launched).timestamp() * 1000)
        expires = plan.schedule.expires_at(launched)
        self.expires_ms = int(expires.timestamp() * 1000) if expires else 0
        self.tz = plan.schedule.tz

    def check(self, columns: Sequence[str]) -> list[str]:
        """Problems with the plan against this audience and these settings (empty: none)."""
        problems = list(self.templates.missing_columns(columns))
        send_at = self.plan.schedule.send_at
        if send_at is not None and send_at.column not in columns:
            problems.append(f"schedule.send_at uses {send_at.column!r}, not a column")
        for channel in self.plan.channels:
            if channel != "sms" and not self._channel_route(channel):
                problems.append(f"channel {channel!r} has no route: set channels.{channel}.default")
        if "sms" in self.plan.channels and self.sms_routing is None:
            problems.append("channel 'sms' has no route: set channels.sms.default or carriers")
        return problems

    def candidates(
        self, report: Report, resume: tuple[int, int] | None = None
    ) -> Iterator[tuple[Candidate | None, tuple[int, int]]]:
        """Every row as a candidate (None when it was counted out), with its checkpoint."""
        audience = open_audience(self.audience, resume=resume)
        for item in audience:
            if isinstance(item, BadRow):
                report.total += 1
                report.invalid_row(item.line, item.reason)
                yield None, item.checkpoint
                continue
            report.total += 1
            yield self._candidate(item, report), item.checkpoint

    def _candidate(self, row: Row, report: Report) -> Candidate | None:
        fields = row.fields
        try:
            phone = normalize(fields.get("phone", ""))
        except InvalidPhone as exc:
            report.invalid_row(row.line, f"phone: {exc}")
            return None
        if not self.plan.audience.matches(fields):
            report.filtered += 1
            return None
        for channel in self.plan.channels:
            address = phone if channel == "sms" else (fields.get(ADDRESS_COLUMN[channel]) or "")
            address = address.strip()
            if not address:
                continue  # no id for this channel: the next channel in the plan's order
            try:
                return self._message(row, phone, channel, address)
            except (TemplateError, SendAtError) as exc:
                report.invalid_row(row.line, str(exc))
                return None
        report.unroutable += 1
        return None

    def _message(self, row: Row, phone: str, channel: str, address: str) -> Candidate:
        rendered = self.templates.render(channel, row.fields)
        carrier = ""
        if channel == "sms":
            assert self.sms_routing is not None
            carrier = self.sms_routing.table.carrier_of(phone) or "other"
            route = self.sms_routing.route_for(phone)
        else:
            route = self._channel_route(channel) or ""
        body, extra = _content(rendered)
        info = analyse(body) if channel == "sms" else None
        due_ms = 0
        if self.plan.schedule.send_at is not None:
            due = self.plan.schedule.send_at.resolve(row.fields, self.tz)
            due_ms = max(0, int(due.timestamp() * 1000))
        message = Message(f"{row.line}", address, body, info.parts if info else 1, extra)
        region = (row.fields.get("region") or "").strip().upper() or "?"
        encoding = str(info.encoding) if info else ""
        return Candidate(
            row.line, phone, channel, route, message, due_ms, region, carrier, encoding
        )

    def _channel_route(self, channel: str) -> str | None:
        spec = self.settings.channels.get(channel)  # type: ignore[call-overload]
        return spec.default if spec else None


def _sms_routing(settings: Settings) -> SmsRouting | None:
    spec = settings.channels.get("sms")
    if spec is None or not (spec.default or spec.carriers):
        return None
    table = CarrierTable.default(spec.prefixes or None)
    default = spec.default or next(iter(spec.carriers.values()))
    return SmsRouting(table, spec.carriers, default=default)


def _content(rendered: RenderedMessage) -> tuple[str, dict[str, Any] | None]:
    """The message body and the channel's other fields."""
    if rendered.channel == "sms":
        return rendered.body, None
    if rendered.channel == "email":
        return rendered.body, {"channel": "email", "subject": rendered.subject}
    if rendered.channel == "fcm":
        return rendered.body, {"channel": "fcm", "title": rendered.title}
    return "", {"channel": "zalo", "template_id": rendered.template_id, "data": dict(rendered.data)}


class RedisChecks:
    """The checks that need Redis, one round trip per group of rows each."""

    def __init__(
        self,
        redis: RedisClient,
        namespace: str,
        seen_key: str,
        campaign: str,
        frequency_window: int | None,
        memory: int,
        write: bool,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.seen_key = seen_key
        self.campaign = campaign
        self.window = frequency_window  # seconds; None: this campaign has no cap
        self.memory = memory  # seconds every planned recipient is remembered (0: not at all)
        self.write = write  # a dry run reads the frequency cap but remembers nobody
        source = resources.files("loa.campaigns").joinpath("lua", "seen.lua").read_text()
        self._seen = redis.register_script(source)

    async def filter(self, group: list[Candidate], report: Report) -> list[Candidate]:
        """Drop duplicates, opted-out and frequency-capped recipients; count each."""
        if not group:
            return group
        args: list[str | int] = []
        for c in group:
            args += [c.phone, c.line]
        fresh = await self._seen(keys=[self.seen_key], args=args)
        kept = [c for c, flag in zip(group, fresh, strict=True) if int(flag)]
        report.duplicate += len(group) - len(kept)
        if kept:
            opted = await self.redis.smismember(
                suppression_key(self.namespace), [c.message.to for c in kept]
            )
            report.suppressed += sum(1 for flag in opted if flag)
            kept = [c for c, flag in zip(kept, opted, strict=True) if not flag]
        if kept and self.window:
            kept = await self._frequency_cap(kept, report)
        if kept and self.write and self.memory:
            await self._remember(kept)
        return kept

    def _day_key(self, epoch: float) -> str:
        """Whom planners reached on one UTC day: a hash, recipient -> `campaign@epoch`.

        One hash a day, not one key a recipient: a group of rows is one HSET and one HMGET per
        day of the window, instead of a command per person.
        """
        return f"{self.namespace}:freq:{time.strftime('%Y%m%d', time.gmtime(epoch))}"

    async def _frequency_cap(self, group: list[Candidate], report: Report) -> list[Candidate]:
        """Skip whoever another campaign messaged within the window."""
        assert self.window is not None
        now = time.time()
        since = now - self.window
        days = sorted({self._day_key(t) for t in range(int(since), int(now) + 86_400, 86_400)})
        pipe = self.redis.pipeline(transaction=False)
        phones = [c.phone for c in group]
        for key in days:
            pipe.hmget(key, phones)
        blocked = [False] * len(group)
        for answers in await pipe.execute():
            for index, last in enumerate(answers):
                if last is None:
                    continue
                campaign, _, at = text(last).partition("@")
                if campaign != self.campaign and float(at or 0) >= since:
                    blocked[index] = True
        kept = [c for c, no in zip(group, blocked, strict=True) if not no]
        report.capped += len(group) - len(kept)
        return kept

    async def _remember(self, group: list[Candidate]) -> None:
        now = time.time()
        key = self._day_key(now)
        value = f"{self.campaign}@{int(now)}"
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(key, mapping={c.phone: value for c in group})
        pipe.expire(key, self.memory + 86_400)  # the day's last entry is kept its full memory
        await pipe.execute()


@dataclass
class Checkpoint:
    """Where planning stood after a flush: file position, counters, batch numbers per route."""

    resume: tuple[int, int] | None
    report: Report
    sequence: dict[str, int]
    finished: bool = False

    def to_json(self) -> bytes:
        """Encode for the campaign hash."""
        return orjson.dumps(
            {
                "resume": self.resume,
                "report": self.report.to_json(),
                "sequence": self.sequence,
                "finished": self.finished,
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
        )


class Batcher:
    """Packs planned messages into batches per (route, due time) with deterministic ids."""

    def __init__(self, planner: Planner, queues: Queues | None, sequence: dict[str, int]):
        self.planner = planner
        self.queues = queues
        self.sequence = sequence
        self.pending: dict[tuple[str, int], list[Message]] = {}
        self.size = planner.settings.queue.batch_size
        self._shards: dict[str, list[ShardKeys]] = {}

    async def add(self, candidates: list[Candidate]) -> None:
        """Take planned messages; full batches go out at once."""
        for c in candidates:
            key = (c.route, c.due_ms)
            bucket = self.pending.setdefault(key, [])
            bucket.append(c.message)
            if len(bucket) >= self.size:
                await self._put([(key, self.pending.pop(key))])

    async def flush(self) -> None:
        """Send every partial batch (before a checkpoint, and at the end)."""
        items, self.pending = list(self.pending.items()), {}
        await self._put(items)

    async def _put(self, items: list[tuple[tuple[str, int], list[Message]]]) -> None:
        planner = self.planner
        queued: list[tuple[ShardKeys, Batch, int]] = []
        for (route, due_ms), messages in items:
            number = self.sequence.get(route, 0)
            self.sequence[route] = number + 1
            shards = self._route_shards(route)
            batch = Batch(
                route=route,
                lane=planner.plan.lane,
                messages=messages,
                campaign=planner.campaign,
                id=f"{planner.campaign}.{route}.{number}",
                expires_ms=planner.expires_ms,
            )
            due = due_ms if due_ms > planner.start_ms else planner.start_ms
            queued.append((shards[number % len(shards)], batch, due if due > _now_ms() else 0))
        if self.queues is not None and queued:
            producer = Producer(self.queues, planner.settings)
            await producer.wait_for_room([(keys, batch) for keys, batch, _ in queued])
            await self.queues.put_once(queued)

    def _route_shards(self, route: str) -> list[ShardKeys]:
        if route not in self._shards:
            limits = self.planner.settings.route(route)
            self._shards[route] = shard_keys(self.planner.settings.namespace, route, limits.shards)
        return self._shards[route]


async def plan_audience(
    planner: Planner,
    redis: RedisClient,
    *,
    queue: bool,
    checkpoint: Checkpoint | None = None,
    save: Any = None,
) -> Report:
    """Stream the audience; count it (dry run) or queue it, checkpointing through `save`."""
    namespace = planner.settings.namespace
    state = checkpoint or Checkpoint(None, Report(), {})
    report = state.report
    window = planner.plan.limits.frequency_cap
    seen_key = f"{namespace}:{{camp:{planner.campaign}}}:seen"
    checks = RedisChecks(
        redis,
        namespace,
        seen_key,
        planner.campaign,
        int(window.total_seconds()) if window else None,
        int(planner.settings.planning.frequency_memory),
        write=queue,
    )
    queues = Queues(redis, namespace) if queue else None
    if queues is not None:
        for route, limits in planner.settings.routes.items():
            await queues.prepare(shard_keys(namespace, route, limits.shards))
    batcher = Batcher(planner, queues, state.sequence)
    rows = planner.candidates(report, state.resume)
    since_checkpoint = 0
    while True:
        group = list(itertools.islice(rows, GROUP_ROWS))
        if not group:
            break
        found = [c for c, _ in group if c is not None]
        kept = await checks.filter(found, report)
        for c in kept:
            _count(report, c)
        if queue:
            await batcher.add(kept)
        since_checkpoint += len(group)
        if since_checkpoint >= CHECKPOINT_ROWS and save is not None:
            await batcher.flush()
            await save(Checkpoint(group[-1][1], report, batcher.sequence))
            since_checkpoint = 0
    await batcher.flush()
    if save is not None:
        await save(Checkpoint(None, report, batcher.sequence, finished=True))
    return report


def _count(report: Report, c: Candidate) -> None:
    report.queued += 1
    report.parts += c.message.parts
    report.by_route[c.route] += 1
    report.by_channel[c.channel] += 1
    report.by_region[c.region] += 1
    if c.carrier:
        report.by_carrier[c.carrier] += 1
    if c.encoding:
        report.by_encoding[c.encoding] += 1


def _now_ms() -> int:
    return int(datetime.now(UTC).timestamp() * 1000)


__all__ = ["Checkpoint", "PlanError", "Planner", "Report", "plan_audience"]
