"""`loa demo`'s second act: a vaccination drive, its replies, check-ins and hotline, reconciled.

On the workers and simulators the first act left running: registrants are allocated to the
sessions of a few sites by priority group (loa.appointments), each placed person gets their
appointment through a normal campaign (Zalo first, SMS fallback), the simulators' scripted
citizens answer (confirm, cancel, ask the hotline: by SMS through their carrier's SMSC, or by
Zalo through the webhook loa.demo.webhook serves), the cancelled places go to the next waiting,
who get their new appointment through a campaign of their own; then a check-in with a question
goes to everyone holding a place, the citizens answer it (some urgently, some with free text),
loa stores the answers (loa.followups) and opens hotline cases (loa.inbox). The end compares,
count by count, the slots, answers and cases loa has with what the simulated citizens did.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import RenderableType
from rich.table import Table

from loa.appointments.service import Appointments, RepliesReport, RunReport, today
from loa.campaigns.service import Campaigns
from loa.demo.drive import (
    DRIVE,
    URGENT_CODE,
    DriveFacts,
    appointment_plan,
    checkin_plan,
    new_appointment_plan,
    write_drive,
)
from loa.demo.scenario import DEMO_APPROVER, DEMO_OPERATOR
from loa.demo.simulators import Simulators
from loa.demo.summary import Check
from loa.engine.connection import RedisClient, connect, text
from loa.engine.events import inbound_key, read_inbound
from loa.followups.service import Followups
from loa.inbox.service import Inbox
from loa.settings import Settings

POLL = 0.2  # seconds between looks at a campaign or the citizens
CASE_KINDS = ("hotline", "free", f"answer:{URGENT_CODE}")  # replies that make a hotline case


@dataclass
class DriveRun:
    """What the second act did and saw, for its summary."""

    facts: DriveFacts
    sims_before: dict[str, Any] = field(default_factory=dict)  # the simulators after act one
    allocation: RunReport | None = None
    campaigns: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> status
    replies: RepliesReport | None = None
    sessions: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)
    cases: list[dict[str, Any]] = field(default_factory=list)
    citizens: dict[str, Any] = field(default_factory=dict)
    zalo_sent: int = 0  # of the citizens' replies, those sent by Zalo
    inbound: int = 0  # replies the inbound stream took during the act
    changed_after_checkin: int = -1  # appointment changes the check-in's answers made (none)
    by_channel: dict[str, int] = field(default_factory=dict)  # those replies, per channel
    events: list[tuple[float, str]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    gave_up: str = ""

    def say(self, text: str) -> None:
        """A line of the act's log (counts and names only, never a number)."""
        self.events.append((round(time.monotonic() - self.started, 2), text))


class SecondAct:
    """Runs the drive through loa's own services against the running workers and simulators."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        sims: Simulators,
        work: Path,
        *,
        people: int,
        seed: int,
        avoid: set[str],
        patience: float = 120.0,
    ) -> None:
        self.settings = settings
        self.redis_url = redis_url
        self.sims = sims
        self.work = work / "drive"
        self.people = people
        self.seed = seed
        self.avoid = avoid
        self.patience = patience

    async def run(self) -> DriveRun:
        """The whole act; `gave_up` says why when something did not finish in time."""
        drive = DriveRun(write_drive(self.work, self.people, self.seed, self.avoid))
        drive.sims_before = await self.sims.stats()
        redis = connect(self.redis_url)
        try:
            await self._act(redis, drive)
        except TimeoutError as exc:
            drive.gave_up = str(exc)
            drive.say(f"gave up: {exc}")
        finally:
            stats = await self.sims.stats()
            drive.citizens = _citizens(stats)
            drive.zalo_sent = _sent_by_zalo(stats)
            await redis.aclose()
        return drive

    async def _act(self, redis: RedisClient, drive: DriveRun) -> None:
        facts, settings = drive.facts, self.settings
        appointments = Appointments(settings, redis)
        campaigns = Campaigns(settings, redis)
        inbound_before = int(await redis.xlen(inbound_key(settings.namespace)))
        newest: Any = await redis.xrevrange(inbound_key(settings.namespace), count=1)
        last_before = text(newest[0][0]) if newest else "-"
        replies_before = _citizens(drive.sims_before)["sent"]
        schedule = self.work / "schedule.csv"
        drive.allocation = await appointments.allocate(
            DRIVE, facts.sites, facts.people, first=today(), output=schedule
        )
        people = drive.allocation.people
        drive.say(
            f"second act: {facts.registrants} registrants in 3 priority groups, "
            f"{facts.capacity} places: {people['placed']} placed, {people['waiting']} waiting"
        )
        await self._send(campaigns, drive, "appointments", appointment_plan(), schedule)
        await self._citizens_answered(redis, drive, inbound_before, replies_before)
        plan = self.work / "new-appointment.plan.toml"
        plan.write_text(new_appointment_plan(), encoding="utf-8")
        drive.replies = await appointments.apply_replies(DRIVE, DEMO_OPERATOR, plan=plan)
        outcomes = drive.replies.outcomes
        drive.say(
            f"replies applied: {outcomes['confirmed']} confirmed, {outcomes['released']} "
            f"cancelled, {len(drive.replies.notified)} places given to the next waiting"
        )
        if drive.replies.campaign:
            await self._finish(campaigns, drive, "new appointments", drive.replies.campaign)
        vaccinated = self.work / "vaccinated.csv"
        await appointments.write_schedule(DRIVE, vaccinated)
        await self._send(campaigns, drive, "check-in", checkin_plan(), vaccinated)
        await self._citizens_answered(redis, drive, inbound_before, replies_before)
        synced = await Followups(settings, redis).sync()
        taken = await Inbox(settings, redis).sync()
        drive.say(
            f"check-in answers stored: {synced.answers}, {synced.unparsed} unparsed, "
            f"{synced.urgent} urgent; hotline messages taken in: {taken.messages}"
        )
        # the check-in's "1" and "2" are its answers: applying replies again changes no place
        again = await appointments.apply_replies(DRIVE, DEMO_OPERATOR)
        drive.changed_after_checkin = sum(again.outcomes.values())
        await self._look(redis, drive)
        drive.inbound = int(await redis.xlen(inbound_key(settings.namespace))) - inbound_before
        after = last_before
        while page := await read_inbound(redis, settings.namespace, after, 1000):
            for entry in page:
                channel = entry.get("channel", "sms")
                drive.by_channel[channel] = drive.by_channel.get(channel, 0) + 1
            after = page[-1]["id"]

    async def _send(
        self, campaigns: Campaigns, drive: DriveRun, key: str, plan_text: str, audience: Path
    ) -> None:
        """Create, approve (a second person) and launch a campaign, then wait until it is done."""
        plan = self.work / f"{key}.plan.toml"
        plan.write_text(plan_text, encoding="utf-8")
        campaign = await campaigns.create(plan, audience, DEMO_OPERATOR)
        await campaigns.approve(campaign.id, DEMO_APPROVER)
        await campaigns.launch(campaign.id)
        await self._wait_done(campaigns, drive, key, campaign.id)

    async def _finish(
        self, campaigns: Campaigns, drive: DriveRun, key: str, campaign_id: str
    ) -> None:
        """A campaign made by applying the replies: approved by a second person if it needs
        one (launched at once if it did not), then sent."""
        campaign = await campaigns.store.get(campaign_id)
        if str(campaign.state) in ("draft", "approved"):
            if str(campaign.state) == "draft":
                await campaigns.approve(campaign_id, DEMO_APPROVER)
            await campaigns.launch(campaign_id)
        await self._wait_done(campaigns, drive, key, campaign_id)

    async def _wait_done(
        self, campaigns: Campaigns, drive: DriveRun, key: str, campaign_id: str
    ) -> None:
        deadline = time.monotonic() + self.patience
        while True:
            status = await campaigns.status(campaign_id)
            drive.campaigns[key] = {"id": campaign_id, **status}
            if status.get("state") == "done":
                drive.say(f"{key} {campaign_id}: {status.get('sent', 0)} sent, done")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the {key} campaign did not finish in {self.patience:g}s")
            await asyncio.sleep(POLL)

    async def _citizens_answered(
        self, redis: RedisClient, drive: DriveRun, inbound_before: int, replies_before: int
    ) -> None:
        """Wait until every scripted reply is sent, and loa's inbound stream holds them all."""
        deadline = time.monotonic() + self.patience
        while True:
            citizens = _citizens(await self.sims.stats())
            if not citizens["waiting"]:
                sent = citizens["sent"] - replies_before
                stored = int(await redis.xlen(inbound_key(self.settings.namespace)))
                if stored - inbound_before >= sent:
                    drive.say(f"the citizens sent {sent} replies so far; every one is stored")
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replies were not all in after {self.patience:g}s")
            await asyncio.sleep(POLL)

    async def _look(self, redis: RedisClient, drive: DriveRun) -> None:
        """What loa holds at the end: sessions, answers, cases."""
        settings = self.settings
        ledger = Appointments(settings, redis).ledger(DRIVE)
        drive.sessions = [
            {"site": s.site, "date": s.day, "start": s.start, "capacity": s.capacity,
             "booked": s.booked}
            for s in await ledger.sessions()
        ]  # fmt: skip
        checkin = drive.campaigns.get("check-in", {}).get("id", "")
        if checkin:
            drive.answers = await Followups(settings, redis).summary(checkin)
        cases = await Inbox(settings, redis).cases(closed=True, limit=100_000)
        drive.cases = [{"id": c.id, "urgent": c.urgent, "state": c.state} for c in cases]


def _sent_by_zalo(stats: dict[str, Any]) -> int:
    """Replies the Zalo simulator's citizens sent (webhooks loa answered 200)."""
    return int((stats.get("zalo_citizens") or {}).get("sent", 0))


def _citizens(stats: dict[str, Any]) -> dict[str, Any]:
    """The scripted citizens of every SMSC and of Zalo together: counts, kinds, replies."""
    total: dict[str, Any] = {"scheduled": 0, "sent": 0, "failed": 0, "waiting": 0}
    kinds: dict[str, int] = {}
    replies: list[dict[str, str]] = []
    sims = [smsc.get("citizens") for smsc in stats.get("smsc", {}).values()]
    for citizens in [*sims, stats.get("zalo_citizens")]:
        citizens = citizens or {}
        for name in ("scheduled", "sent", "failed", "waiting"):
            total[name] += int(citizens.get(name, 0))
        for kind, count in (citizens.get("by_kind") or {}).items():
            kinds[kind] = kinds.get(kind, 0) + int(count)
        replies += citizens.get("replies") or []
    return {**total, "by_kind": kinds, "replies": replies}


def checks(drive: DriveRun) -> list[Check]:
    """Every reconciliation check of the second act: loa's counts against the citizens'."""
    if drive.allocation is None or drive.replies is None:
        return [Check("second act finished", 0, 1, "drive")]
    kinds = _kinds_since(drive)
    placed = drive.allocation.people["placed"]
    waiting = drive.allocation.people["waiting"]
    cancels = kinds.get("cancel", 0)
    given = min(cancels, waiting)
    booked = sum(s["booked"] for s in drive.sessions)
    outcomes = drive.replies.outcomes
    facts = drive.facts
    over = sum(1 for s in drive.sessions if s["booked"] > s["capacity"])
    options = {o["code"]: o["count"] for o in drive.answers.get("options", [])}
    urgent = sum(1 for case in drive.cases if case["urgent"])
    people = {r["who"] for r in _replies_since(drive) if r["kind"] in CASE_KINDS}
    sent = drive.citizens["sent"] - _citizens(drive.sims_before)["sent"]
    by_zalo = drive.zalo_sent - _sent_by_zalo(drive.sims_before)
    rows: list[tuple[str, int, int, str]] = [
        ("drive: sessions over capacity", over, 0, "drive"),
        ("drive: placed at allocation", placed, min(facts.capacity, facts.registrants), "drive"),
        ("appointments: messages with an outcome", _done(drive, "appointments"), placed, "drive"),
        ("appointments: confirmed by reply", outcomes["confirmed"], kinds.get("confirm", 0), ""),
        ("appointments: cancelled by reply", outcomes["released"], cancels, ""),
        ("appointments: places given to the next waiting", len(drive.replies.notified), given, ""),
        ("appointments: new appointments with an outcome", _done(drive, "new appointments"),
         given, ""),
        ("drive: places booked at the end", booked, placed - cancels + given, ""),
        ("check-in: messages with an outcome", _done(drive, "check-in"), booked, "drive"),
        ("check-in: answers taken as appointment replies", drive.changed_after_checkin, 0, ""),
        *[(f"check-in: answer {code}", count, kinds.get(f"answer:{code}", 0), "")
          for code, count in sorted(options.items())],
        ("check-in: unparsed replies", int(drive.answers.get("unparsed_count", 0)),
         kinds.get("free", 0), ""),
        ("hotline: urgent cases", urgent, kinds.get(f"answer:{URGENT_CODE}", 0), ""),
        ("hotline: cases opened", len(drive.cases), len(people), ""),
        ("citizens' replies stored by loa", drive.inbound, sent, ""),
        ("of those, by Zalo (signed webhooks)", drive.by_channel.get("zalo", 0), by_zalo, "zalo"),
        ("of those, by SMS (deliver_sm)", drive.by_channel.get("sms", 0), sent - by_zalo, "smsc"),
        ("citizens' replies the SMSCs could not deliver", drive.citizens["failed"], 0, ""),
    ]  # fmt: skip
    return [Check(what, loa, other, source or "citizens") for what, loa, other, source in rows]


def _done(drive: DriveRun, key: str) -> int:
    return int(drive.campaigns.get(key, {}).get("finished", 0))


def _kinds_since(drive: DriveRun) -> dict[str, int]:
    before = _citizens(drive.sims_before)["by_kind"]
    return {k: v - before.get(k, 0) for k, v in drive.citizens["by_kind"].items()}


def _replies_since(drive: DriveRun) -> list[dict[str, str]]:
    replies: list[dict[str, str]] = drive.citizens["replies"]
    return replies[len(_citizens(drive.sims_before)["replies"]) :]


def drive_summary(drive: DriveRun, config: Path | None = None) -> dict[str, Any]:
    """The second act as JSON-ready data; `reconciled` is its verdict; `next` the commands that
    show it again afterwards with the demo's settings file `config`."""
    found = checks(drive)
    allocation = drive.allocation.to_json() if drive.allocation else {}
    return {
        "reconciled": all(c.ok for c in found) and not drive.gave_up,
        "gave_up": drive.gave_up,
        "registrants": drive.facts.registrants,
        "by_group": {str(g): n for g, n in sorted(drive.facts.by_group.items())},
        "capacity": drive.facts.capacity,
        "allocation": {k: allocation.get(k) for k in ("people", "by_group", "by_site")},
        "sessions": drive.sessions,
        "replies": drive.replies.to_json() if drive.replies else {},
        "campaigns": {
            key: {n: status.get(n) for n in ("id", "state", "queued", "sent", "finished", "failed")}
            for key, status in drive.campaigns.items()
        },
        "answers": {k: v for k, v in drive.answers.items() if k != "unparsed"},
        "cases": {"opened": len(drive.cases), "urgent": sum(c["urgent"] for c in drive.cases)},
        "replies_by_channel": dict(drive.by_channel),
        "citizens": {k: v for k, v in drive.citizens.items() if k != "replies"}
        | {"by_kind": _kinds_since(drive)},
        "checks": [c.as_json() for c in found],
        "events": [{"at_s": at, "event": text} for at, text in drive.events],
        "next": _next_steps(drive, config) if config else {},
    }


def _next_steps(drive: DriveRun, config: Path) -> dict[str, str]:
    checkin = drive.campaigns.get("check-in", {}).get("id", "ID")
    return {
        "the drive's sessions and groups": f"loa appointments status -d {DRIVE} -c {config}",
        "every change to it": f"loa appointments history -d {DRIVE} -c {config}",
        "the check-in's answers": f"loa campaign answers {checkin} -c {config}",
        "the hotline's cases, urgent on top": f"loa inbox list -c {config}",
    }


def drive_tables(summary: dict[str, Any]) -> list[RenderableType]:
    """The second act's checks as a table."""
    table = Table(
        title=f"second act: a vaccination drive of {summary['registrants']} registrants, "
        f"{summary['capacity']} places; loa's counts beside what the citizens did",
        box=box.SIMPLE_HEAD,
        title_justify="left",
    )
    for name, justify in (("check", "left"), ("loa", "right"), ("citizens", "right"), ("", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for check in summary["checks"]:
        mark = "[green]ok[/green]" if check["ok"] else "[red]DIFFERS[/red]"
        table.add_row(check["what"], f"{check['loa']:,}", f"{check['other']:,}", mark)
    verdict = (
        "[bold green]the second act reconciles: every count matches[/bold green]"
        if summary["reconciled"]
        else f"[bold red]the second act does not reconcile[/bold red] {summary['gave_up']}"
    )
    steps = Table(title="where to look next", box=None, title_justify="left", show_header=False)
    for what, command in summary.get("next", {}).items():
        steps.add_row(f"  {what}", command)
    return [table, verdict, steps]
