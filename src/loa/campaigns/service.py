"""What operators do with campaigns: validate, create, approve, launch, steer, watch, report."""

from __future__ import annotations

import asyncio
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
from loa.campaigns.store import ENDED, Campaign, CampaignStore, State
from loa.engine.connection import RedisClient, text
from loa.engine.events import receipts_key
from loa.engine.keys import shard_keys
from loa.engine.queue import Queues
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
)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


class Campaigns:
    """Campaign operations on one Redis, for the CLI and the API."""

    def __init__(self, settings: Settings, redis: RedisClient) -> None:
        self.settings = settings
        self.redis = redis
        self.store = CampaignStore(redis, settings.namespace)
        self.queues = Queues(redis, settings.namespace)

    async def validate(self, plan_path: Path, audience: Path) -> Report:
        """The dry run: everything planning would do, counted; nothing queued."""
        # reading the plan, compiling its templates and reading the header are off the loop
        planner, problems = await asyncio.to_thread(
            self._planner, plan_path, audience, f"dry-{secrets.token_hex(4)}"
        )
        report = Report(problems=problems)
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
        audience = audience.resolve()
        planner, problems = await asyncio.to_thread(self._planner, plan_path, audience, "check")
        plan = planner.plan
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

    def _planner(self, plan_path: Path, audience: Path, campaign: str) -> tuple[Planner, list[str]]:
        """A planner for the plan file, and its problems with the audience's columns."""
        planner = Planner(self.settings, load_plan(plan_path), campaign, audience, _now())
        return planner, planner.check(open_audience(audience).columns)

    async def act(self, campaign_id: str, action: str) -> State:
        """approve, pause, resume or cancel."""
        return await self.store.apply(campaign_id, action)

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
        planner = await asyncio.to_thread(
            Planner, self.settings, plan, campaign_id, Path(campaign.fields["audience"]), launched
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
        """State and counters; a campaign whose every message has an outcome becomes done."""
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
        status["retried"] = sending[Outcome.RETRIED]
        finished = sum(
            sending[o]
            for o in (
                Outcome.ACCEPTED,
                Outcome.FAILED,
                Outcome.DEAD,
                Outcome.EXPIRED,
                Outcome.SUPPRESSED,
            )
        )
        status["finished"] = finished
        by_route = await self._route_counts(campaign_id)
        for route, counts in receipts.items():
            by_route.setdefault(route, {}).update(counts)
        status["by_route"] = by_route
        status["state"] = await self._settle_state(campaign, finished)
        return status

    async def _settle_state(self, campaign: Campaign, finished: int) -> str:
        """Move the campaign along when time or its counters say so (status reads are cheap)."""
        now = _ms(_now())
        state = campaign.state
        if state is State.SCHEDULED and 0 < int(campaign.fields.get("start_ms", 0)) <= now:
            state = await self.store.apply(campaign.id, "start")
        expires = int(campaign.fields.get("expires_ms", 0) or 0)
        planned = campaign.fields.get("planned") == "1"
        if state in (State.SCHEDULED, State.RUNNING, State.PAUSED) and 0 < expires <= now:
            state = await self.store.apply(campaign.id, "expire")
        elif state is State.RUNNING and planned and finished >= campaign.counter("queued"):
            state = await self.store.apply(campaign.id, "finish")
        return str(state)

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
        shards = [
            keys
            for route, limits in self.settings.routes.items()
            for keys in shard_keys(self.settings.namespace, route, limits.shards)
        ]
        return await self.queues.campaign_stats(shards, campaign_id)

    async def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """The newest campaigns with their state."""
        rows = []
        for campaign_id in await self.store.ids(limit):
            campaign = await self.store.get(campaign_id)
            rows.append(
                {
                    "id": campaign_id,
                    "name": campaign.name,
                    "state": str(campaign.state),
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
