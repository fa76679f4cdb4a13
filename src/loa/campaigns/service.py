"""What operators do with campaigns: validate, create, approve, launch, steer, watch, report."""

from __future__ import annotations

import csv
import secrets
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack

from loa.campaigns.audience import open_audience
from loa.campaigns.plan import Plan, load_plan
from loa.campaigns.planner import (
    PLANNING_COUNTERS,
    Checkpoint,
    Planner,
    Report,
    plan_audience,
)
from loa.campaigns.store import ACTIVE, ENDED, Campaign, CampaignStore, State
from loa.engine.connection import RedisClient, text
from loa.engine.events import receipts_key
from loa.engine.keys import ShardKeys, shard_keys
from loa.engine.queue import Queues
from loa.engine.quiet import QuietHours
from loa.errors import CampaignError, PlanError
from loa.message import Outcome
from loa.settings import Settings

# what `loa campaign status --json` always has
STATUS_KEYS = (
    "state",
    "total",
    "queued",
    "sent",
    "delivered",
    "undelivered",
    "fallback",
    "failed",
    "expired",
    "suppressed",
    "invalid",
    "duplicate",
    "scheduled",
    "past_due",
    "after_expiry",
    "hold",
    "held_until",
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# a message counted under one of these has its final outcome for this campaign
FINAL_OUTCOMES = (
    Outcome.ACCEPTED,
    Outcome.FAILED,
    Outcome.DEAD,
    Outcome.EXPIRED,
    Outcome.SUPPRESSED,
)


class Campaigns:
    """Campaign operations on one Redis, for the CLI and the API."""

    def __init__(self, settings: Settings, redis: RedisClient) -> None:
        self.settings = settings
        self.redis = redis
        self.store = CampaignStore(redis, settings.namespace)
        self.queues = Queues(redis, settings.namespace)

    async def validate(self, plan_path: Path, audience: Path) -> Report:
        """The dry run: everything planning would do, counted; nothing queued."""
        plan = load_plan(plan_path)
        planner = Planner(self.settings, plan, f"dry-{secrets.token_hex(4)}", audience, _now())
        report = Report(problems=planner.check(open_audience(audience).columns))
        if report.problems:
            return report
        try:
            return await plan_audience(
                planner, self.redis, queue=False, checkpoint=Checkpoint(None, report, {})
            )
        finally:
            await self.redis.delete(f"{self.settings.namespace}:{{camp:{planner.campaign}}}:seen")

    async def create(
        self, plan_path: Path, audience: Path, extra: Mapping[str, str] | None = None
    ) -> Campaign:
        """A draft campaign from a plan and an audience that pass their checks.

        `extra` fields are stored with it in the same write (the API's creator and approval rule).
        """
        plan = load_plan(plan_path)
        audience = audience.resolve()
        planner = Planner(self.settings, plan, "check", audience, _now())
        problems = planner.check(open_audience(audience).columns)
        if problems:
            raise PlanError(f"{plan_path}: " + "; ".join(problems))
        return await self.store.create(
            {
                "name": plan.name,
                "lane": plan.lane.label,
                "plan": plan_path.read_text(encoding="utf-8"),
                "plan_path": str(plan_path.resolve()),
                "audience": str(audience),
                "timezone": plan.schedule.timezone,
                "quiet_hours": str(plan.schedule.quiet_hours)
                if plan.holds_for_quiet_hours and plan.schedule.quiet_hours
                else "",
                "rate": f"{plan.limits.rate:g}" if plan.limits.rate else "",
                **(extra or {}),
            }
        )

    async def act(self, campaign_id: str, action: str) -> State:
        """approve, pause, resume or cancel (which drops what it still had queued)."""
        state = await self.store.apply(campaign_id, action)
        if state is State.CANCELLED:
            await self.drop_queued(campaign_id, Outcome.CANCELLED)
        return state

    async def drop_queued(self, campaign_id: str, outcome: Outcome) -> int:
        """Remove the campaign's batches from the queues, counted under `outcome`, at once:
        its counters are whole and the backlog is free now, not when each batch comes due.
        Batches a worker holds end there within a second (it reads the state before a chunk).
        """
        return await self.queues.drop_campaign(self._all_shards(), campaign_id, outcome)

    async def launch(self, campaign_id: str) -> Report:
        """Start sending: plan the audience onto the queues (again, after a crash: it resumes)."""
        campaign = await self.store.get(campaign_id)
        plan = _stored_plan(campaign)
        if campaign.state is State.APPROVED:
            launched = _now()
            start = plan.schedule.starts_at(launched)
            expires = plan.schedule.expires_at(launched)
            await self.store.update(
                campaign_id,
                {
                    "start_ms": int(start.timestamp() * 1000),
                    "launched_ms": _ms(launched),
                    "expires_ms": _ms(expires) if expires else 0,
                },
            )
            await self.store.apply(campaign_id, "schedule" if start > launched else "start")
        elif campaign.state in (State.DRAFT,):
            raise CampaignError(
                f"cannot launch campaign {campaign_id}: it is draft (it must be approved first)"
            )
        elif campaign.fields.get("planned") == "1":
            raise CampaignError(f"campaign {campaign_id} is already launched and planned")
        elif campaign.state in ENDED:
            raise CampaignError(f"cannot launch campaign {campaign_id}: it is {campaign.state}")
        campaign = await self.store.get(campaign_id)
        launched = datetime.fromtimestamp(int(campaign.fields["launched_ms"]) / 1000, UTC)
        planner = Planner(
            self.settings, plan, campaign_id, Path(campaign.fields["audience"]), launched
        )
        raw = campaign.fields.get("checkpoint")
        checkpoint = Checkpoint.from_json(raw) if raw else None

        async def save(point: Checkpoint) -> None:
            fields: dict[str, str | int] = {"checkpoint": point.to_json().decode()}
            if point.finished:
                fields["planned"] = "1"
            for name in PLANNING_COUNTERS:
                fields[name] = getattr(point.report, name)
            await self.store.update(campaign_id, fields)

        return await plan_audience(
            planner, self.redis, queue=True, checkpoint=checkpoint, save=save
        )

    async def status(self, campaign_id: str) -> dict[str, Any]:
        """State and counters, as they are: a read, which changes nothing (the clock does)."""
        campaign = await self.store.get(campaign_id)
        sending = await self._sending_counts(campaign_id)
        status: dict[str, Any] = {
            "id": campaign_id,
            "name": campaign.name,
            "state": str(campaign.state),
        }
        status["total"] = campaign.counter("total")
        status["queued"] = campaign.counter("queued")
        status["sent"] = sending[Outcome.ACCEPTED]
        receipts = await self._receipt_counts(campaign_id)
        status["delivered"] = sum(receipts.get(r, {}).get("delivered", 0) for r in receipts)
        status["undelivered"] = sum(receipts.get(r, {}).get("undelivered", 0) for r in receipts)
        status["fallback"] = sending[Outcome.FALLBACK]
        status["failed"] = sending[Outcome.FAILED] + sending[Outcome.DEAD]
        status["expired"] = sending[Outcome.EXPIRED]
        status["cancelled"] = sending[Outcome.CANCELLED]
        status["suppressed"] = campaign.counter("suppressed") + sending[Outcome.SUPPRESSED]
        status["invalid"] = campaign.counter("invalid")
        status["duplicate"] = campaign.counter("duplicate")
        status["filtered"] = campaign.counter("filtered")
        status["capped"] = campaign.counter("capped")
        for name in ("scheduled", "past_due", "after_expiry"):
            status[name] = campaign.counter(name)
        status["hold"], status["held_until"] = hold_of(campaign, _now())
        status["retried"] = sending[Outcome.RETRIED]
        status["finished"] = sum(sending[o] for o in FINAL_OUTCOMES)
        by_route = await self._route_counts(campaign_id)
        for route, counts in receipts.items():
            by_route.setdefault(route, {}).update(counts)
        status["by_route"] = by_route
        return status

    async def advance_all(self) -> dict[str, State]:
        """Move every watched campaign along (the clock's tick); returns the moves made."""
        moved: dict[str, State] = {}
        ended: list[str] = []
        for campaign_id in await self.store.active_ids():
            try:
                campaign = await self.store.get(campaign_id)
            except CampaignError:
                ended.append(campaign_id)  # deleted under us
                continue
            if campaign.state in ENDED:
                ended.append(campaign_id)
                continue
            try:
                state = await self.advance(campaign)
            except CampaignError:
                continue  # an operator acted at the same moment: look again next tick
            if state is not campaign.state:
                moved[campaign_id] = state
        await self.store.forget_active(ended)
        return moved

    async def advance(self, campaign: Campaign) -> State:
        """Start, expire or finish the campaign when time or its counters say so."""
        now = _ms(_now())
        state = campaign.state
        if state is State.SCHEDULED and 0 < int(campaign.fields.get("start_ms", 0)) <= now:
            state = await self.store.apply(campaign.id, "start")
        expires = int(campaign.fields.get("expires_ms", 0) or 0)
        if state in ACTIVE and 0 < expires <= now:
            state = await self.store.apply(campaign.id, "expire")
            await self.drop_queued(campaign.id, Outcome.EXPIRED)
            return state
        if state is State.RUNNING and campaign.fields.get("planned") == "1":
            sending = await self._sending_counts(campaign.id)
            if sum(sending[o] for o in FINAL_OUTCOMES) >= campaign.counter("queued"):
                return await self.store.apply(campaign.id, "finish")
        return state

    async def _route_counts(self, campaign_id: str) -> dict[str, dict[str, int]]:
        """Sending counters per route, for routes the campaign used."""
        counts = {}
        for route, limits in self.settings.routes.items():
            shards = shard_keys(self.settings.namespace, route, limits.shards)
            found = await self.queues.campaign_stats(shards, campaign_id)
            if any(found.values()):
                counts[route] = {k: v for k, v in found.items() if v}
        return counts

    async def _receipt_counts(self, campaign_id: str) -> dict[str, dict[str, int]]:
        """Delivered and undelivered receipts per route."""
        raw = await self.redis.hgetall(receipts_key(self.settings.namespace, campaign_id))
        counts: dict[str, dict[str, int]] = {}
        for field, value in raw.items():
            route, _, outcome = text(field).rpartition(":")
            counts.setdefault(route, {})[outcome] = int(value)
        return counts

    async def _sending_counts(self, campaign_id: str) -> dict[str, int]:
        return await self.queues.campaign_stats(self._all_shards(), campaign_id)

    def _all_shards(self) -> list[ShardKeys]:
        """Every shard of every route."""
        return [
            keys
            for route, limits in self.settings.routes.items()
            for keys in shard_keys(self.settings.namespace, route, limits.shards)
        ]

    async def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest campaigns with their state."""
        rows = []
        for campaign_id in await self.store.ids(limit):
            campaign = await self.store.get(campaign_id)
            hold, held_until = hold_of(campaign, _now())
            rows.append(
                {
                    "id": campaign_id,
                    "name": campaign.name,
                    "state": str(campaign.state),
                    "hold": hold,
                    "held_until": held_until,
                    "queued": campaign.counter("queued"),
                }
            )
        return rows

    async def write_failed(self, campaign_id: str, out: Path) -> int:
        """A CSV of who did not get the campaign and why; returns the number of rows."""
        await self.store.get(campaign_id)
        written = 0
        with out.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["recipient", "route", "line", "reason"])
            async for route, letter in self._dead_letters(campaign_id):
                line, to = str(letter["message"][0]), str(letter["message"][1])
                writer.writerow([safe_cell(to), route, line, safe_cell(str(letter["reason"]))])
                written += 1
        return written

    async def _dead_letters(self, campaign_id: str) -> Any:
        for route, limits in self.settings.routes.items():
            for keys in shard_keys(self.settings.namespace, route, limits.shards):
                cursor = "-"
                while True:
                    entries: Any = await self.redis.xrange(keys.dead, min=cursor, count=500)
                    for _, fields in entries:
                        letter = msgpack.unpackb(fields[b"m"])
                        if letter.get("campaign") == campaign_id:
                            yield route, letter
                    if len(entries) < 500:
                        break
                    cursor = "(" + text(entries[-1][0])


def hold_of(campaign: Campaign, now: datetime) -> tuple[str, str | None]:
    """Why the campaign sends nothing now, and until when (ISO 8601, UTC), if it is held.

    "scheduled" until its start, "paused" until someone resumes it, "quiet hours" until they
    end; ("", None) when it is free to send, or has ended.
    """
    state = campaign.state
    if state is State.SCHEDULED:
        start_ms = int(campaign.fields.get("start_ms", 0) or 0)
        return "scheduled", _iso(start_ms) if start_ms else None
    if state is State.PAUSED:
        return "paused", None
    quiet = campaign.fields.get("quiet_hours", "")
    if state is State.RUNNING and quiet:
        hours = QuietHours.parse(quiet, campaign.fields.get("timezone") or "UTC")
        if hours.contains(now):
            return "quiet hours", hours.next_end(now).astimezone(UTC).isoformat()
    return "", None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def _stored_plan(campaign: Campaign) -> Plan:
    """The plan as it was when the campaign was created (the file may have changed since)."""
    return Plan.from_mapping(
        tomllib.loads(campaign.fields["plan"]), source=campaign.fields.get("plan_path", "plan")
    )


def safe_cell(text: str) -> str:
    """A cell a spreadsheet will show as text, never run as a formula."""
    return "'" + text if text.startswith(FORMULA_START) else text


def _now() -> datetime:
    return datetime.now(UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)
