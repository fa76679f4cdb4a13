"""What operators do with appointments: allocate, apply replies, change one person, export.

An allocation run reads the sites (and sessions) into the drive's ledger, then places every
registrant in strict order: priority group, then `registered_at`, then the first run and line
that named them. Each gets the earliest session with room at the site they asked for, or at any
site of their province, within the horizon. Runs are idempotent and incremental: whoever holds a
place keeps it, whoever gave theirs back stays out, and whoever waits (from this file or an
earlier one) is tried again, so a second run with more registrants or sessions places only the
new and the waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import time as clock
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from loa.access.audit import AuditLog
from loa.access.identity import Principal
from loa.appointments.export import write_schedule
from loa.appointments.inputs import (
    Refused,
    Registrant,
    SitesRead,
    minutes,
    open_registrants,
    read_sites,
)
from loa.appointments.ledger import Change, Ledger, SessionState, check_drive, drives_key, order_key
from loa.appointments.replies import reply_action
from loa.campaigns.questions import Questions
from loa.campaigns.service import Campaigns
from loa.engine.connection import RedisClient, text
from loa.engine.events import inbound_key, read_inbound
from loa.engine.quiet import DEFAULT_TIMEZONE, zone
from loa.errors import AppointmentError, InvalidPhone
from loa.phone import canonical, normalize
from loa.settings import Settings

READ_CHUNK = 2000  # registrants read (in a thread) and looked up in the ledger at a time
REFUSED_KEPT = 10_000  # refused rows listed in a report; the rest are counted
INBOUND_PAGE = 500


@dataclass
class RunReport:
    """What an allocation run did, and the drive's counts after it."""

    drive: str
    run: int
    rows: Counter[str] = field(default_factory=Counter)  # rows read per input
    refused: list[Refused] = field(default_factory=list)
    refused_count: int = 0
    sites: Counter[str] = field(default_factory=Counter)
    sessions: Counter[str] = field(default_factory=Counter)
    people: Counter[str] = field(default_factory=Counter)  # placed, kept, waiting, cancelled
    waiting: Counter[str] = field(default_factory=Counter)  # by reason
    by_group: dict[int, dict[str, int]] = field(default_factory=dict)
    by_session: list[SessionState] = field(default_factory=list)
    written: int = 0

    def refuse(self, refused: Refused) -> None:
        """Count a refused row (and list it, up to REFUSED_KEPT)."""
        self.refused_count += 1
        if len(self.refused) < REFUSED_KEPT:
            self.refused.append(refused)

    def to_json(self) -> dict[str, Any]:
        """The report as `loa appointments allocate --json` prints it."""
        return {
            "drive": self.drive,
            "run": self.run,
            "rows": dict(self.rows),
            "refused_count": self.refused_count,
            "refused": [{"file": r.file, "line": r.line, "reason": r.reason} for r in self.refused],
            "sites": dict(self.sites),
            "sessions": dict(self.sessions),
            "people": {**dict.fromkeys(("placed", "kept", "waiting", "cancelled"), 0)}
            | dict(self.people),
            "waiting_by_reason": dict(self.waiting),
            **summary_json(self.by_group, self.by_session),
        }


def summary_json(
    by_group: dict[int, dict[str, int]], sessions: list[SessionState]
) -> dict[str, Any]:
    """Counts per priority group, per site and per session, as reports and the API show them."""
    by_site: dict[str, dict[str, int]] = {}
    for session in sessions:
        site = by_site.setdefault(session.site, {"capacity": 0, "booked": 0, "free": 0})
        site["capacity"] += session.capacity
        site["booked"] += session.booked
        site["free"] += session.free
    return {
        "by_group": {str(group): counts for group, counts in by_group.items()},
        "by_site": by_site,
        "by_session": [
            {
                "site_id": s.site,
                "date": s.day,
                "start": s.start,
                "end": s.end,
                "capacity": s.capacity,
                "booked": s.booked,
                "free": s.free,
            }
            for s in sessions
        ],
    }


@dataclass
class RepliesReport:
    """What applying replies did."""

    drive: str
    read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    notified: list[str] = field(default_factory=list)  # whose appointment changed
    changes_file: str = ""
    campaign: str = ""
    campaign_state: str = ""

    def to_json(self) -> dict[str, Any]:
        """Counts only: never a phone number."""
        return {
            "drive": self.drive,
            "read": self.read,
            "outcomes": dict(self.outcomes),
            "changed_appointments": len(self.notified),
            "changes_file": self.changes_file,
            "campaign": self.campaign,
            "campaign_state": self.campaign_state,
        }


def today() -> date:
    """Today in Viet Nam."""
    return datetime.now(zone(DEFAULT_TIMEZONE)).date()


def now_minutes() -> int:
    """Now on Viet Nam's wall clock, as a session score."""
    now = datetime.now(zone(DEFAULT_TIMEZONE))
    return minutes(now.date(), now.time())


class Appointments:
    """Appointment drives on one Redis, for the CLI and the API."""

    def __init__(self, settings: Settings, redis: RedisClient) -> None:
        self.settings = settings
        self.redis = redis
        self.namespace = settings.namespace

    def ledger(self, drive: str) -> Ledger:
        """The ledger of one drive."""
        return Ledger(self.redis, self.namespace, check_drive(drive))

    async def drives(self) -> list[str]:
        """Every drive's name."""
        return sorted(text(name) for name in await self.redis.smembers(drives_key(self.namespace)))

    async def allocate(
        self,
        drive: str,
        sites: Path,
        people: Path,
        *,
        sessions: Path | None = None,
        first: date | None = None,
        last: date | None = None,
        output: Path | None = None,
    ) -> RunReport:
        """One allocation run (see the module's docstring); writes the schedule to `output`."""
        first = first or today()
        if last is not None and last < first:
            raise AppointmentError(f"the horizon ends ({last}) before it starts ({first})")
        ledger = self.ledger(drive)
        read = await asyncio.to_thread(read_sites, sites, sessions)
        registrants = open_registrants(people)  # a file that cannot be read changes nothing
        fresh = not await ledger.exists()
        run = await ledger.next_run()
        if fresh:
            await self._start_cursor(ledger)
        report = RunReport(drive, run)
        await self._record_sites(ledger, read, report)
        await ledger.add_columns(registrants.columns)
        candidates = await self._candidates(ledger, iter(registrants), run, report)
        last_minute = None if last is None else minutes(last, time(23, 59))
        outcomes = await ledger.allocate(candidates, minutes(first), last_minute, run)
        del candidates  # the schedule is written from the ledger: its memory is free now
        for outcome, count in outcomes.items():
            kind, _, reason = outcome.partition(":")
            report.people[kind] += count
            if reason:
                report.waiting[reason] += count
        report.by_group = await ledger.counts()
        report.by_session = await ledger.sessions()
        if output is not None:
            report.written = await write_schedule(ledger, output, run)
        return report

    async def _start_cursor(self, ledger: Ledger) -> None:
        """A new drive answers replies from now on, not those that came before it."""
        newest: Any = await self.redis.xrevrange(inbound_key(self.namespace), count=1)
        start = text(newest[0][0]) if newest else "0-0"
        await self.redis.set(ledger.key("cursor"), start, nx=True)

    async def _record_sites(self, ledger: Ledger, read: SitesRead, report: RunReport) -> None:
        report.rows["sites"] = read.rows
        for refused in read.refused:
            report.refuse(refused)
        sites = list(read.sites.values())
        site_words, session_words = await ledger.record_sites(sites, read.sessions)
        gone: set[str] = set()  # sites refused here: their sessions go with them
        for site, word in zip(sites, site_words, strict=True):
            if word.startswith("province:"):
                known = word.partition(":")[2]
                why = f"site {site.id!r} is in province {known} since an earlier run"
                report.refuse(Refused(site.file, site.line, why))
                report.sites["refused"] += 1
                gone.add(site.id)
            else:
                report.sites[word] += 1
        for session, word in zip(read.sessions, session_words, strict=True):
            if session.site in gone:
                report.sessions["refused"] += 1
                continue
            if word == "unknown_site":
                why = f"unknown site {session.site!r}"
            elif word.startswith("below:"):
                taken = word.partition(":")[2]
                why = f"capacity {session.capacity} is below the {taken} places already booked"
            else:
                report.sessions[word] += 1
                continue
            report.sessions["refused"] += 1
            report.refuse(Refused(session.file, session.line, why))

    async def _candidates(
        self, ledger: Ledger, items: Iterator[Registrant | Refused], run: int, report: RunReport
    ) -> list[str]:
        """Who this run tries to place, as `order<TAB>phone<TAB>kind<TAB>preference`, in order.

        Whoever waits, from earlier runs, with the order they were first registered with; and
        the file's registrants, new ones with this run's order (allocate.lua keeps the places
        of those it knows: they cost it one look-up each).
        """
        waiting = await ledger.waiting()
        records = await ledger.people([entry.partition("|")[2] for entry in waiting])
        candidates = [
            f"{record.order}\t{record.phone}\t{record.kind}\t{record.preference}"
            for record in records
            if record is not None and record.state == "waiting"
        ]
        tried = {record.phone for record in records if record is not None}
        rows = 0
        while True:
            chunk = await asyncio.to_thread(list, itertools.islice(items, READ_CHUNK))
            if not chunk:
                break
            rows += len(chunk)
            kept: dict[str, dict[str, str]] = {}
            for item in chunk:
                if isinstance(item, Refused):
                    report.refuse(item)
                    continue
                if item.fields:
                    kept[item.phone] = item.fields
                if item.phone not in tried:
                    order = order_key(item.group, item.registered_ms, run, item.line)
                    candidates.append(f"{order}\t{item.phone}\t{item.kind}\t{item.preference}")
            await ledger.store_fields(kept)
        report.rows["registrants"] = rows
        candidates.sort()
        return candidates

    async def summary(self, drive: str) -> dict[str, Any]:
        """The drive's counts: per priority group, per site and per session."""
        ledger = self.ledger(drive)
        await ledger.require()
        return {
            "drive": drive,
            "runs": int(await self.redis.get(ledger.key("runs")) or 0),
            **summary_json(await ledger.counts(), await ledger.sessions()),
        }

    async def write_schedule(self, drive: str, path: Path) -> int:
        """Write the drive's whole schedule to `path`; the rows written."""
        ledger = self.ledger(drive)
        await ledger.require()
        return await write_schedule(ledger, path)

    async def change(self, drive: str, action: str, phone: str, by: Principal) -> Change:
        """An operator's change for one person: confirm, release or move."""
        ledger = self.ledger(drive)
        await ledger.require()
        try:
            number = normalize(phone)
        except InvalidPhone as exc:
            raise AppointmentError(f"not a phone number: {exc}") from None
        return await ledger.change(action, number, "", now_minutes(), by.person)

    async def history(
        self, drive: str, after: str = "-", count: int = 1000
    ) -> list[dict[str, str]]:
        """The drive's changes, oldest first."""
        ledger = self.ledger(drive)
        await ledger.require()
        return await ledger.history(after, count)

    async def apply_replies(
        self, drive: str, by: Principal, *, plan: Path | None = None, limit: int = 100_000
    ) -> RepliesReport:
        """Apply the replies that came in since the last time, each once, in order.

        A reply that is one of the options of a follow-up question the person had open then
        (a check-in's "2" after the appointment's) answers that question and changes nothing
        here. Whoever a reply gave a new appointment (moved, or placed from the wait in a place
        given back) is written to a changes file in the data directory; with `plan`, a campaign
        sends it to them (launched at once when it needs no second person's approval).
        """
        ledger = self.ledger(drive)
        await ledger.require()
        report = RepliesReport(drive)
        after = await ledger.cursor() or "0-0"
        changed: dict[str, None] = {}
        questions = Questions(self.redis, self.namespace)
        while report.read < limit:
            page = await read_inbound(self.redis, self.namespace, after, INBOUND_PAGE)
            if not page:
                break
            for entry in page:
                report.read += 1
                applied = await self._apply(ledger, entry, questions)
                if applied is None:
                    continue
                report.outcomes[applied.change.outcome] += 1
                if applied.change.outcome == "moved":
                    changed[applied.phone] = None
                if applied.change.waiter:
                    changed[applied.change.waiter] = None
            after = page[-1]["id"]
            await ledger.change("none", "", after, now_minutes(), "reply")
        report.notified = list(changed)
        if changed:
            await self._notify(ledger, report, by, plan)
        return report

    async def _apply(
        self, ledger: Ledger, entry: dict[str, str], questions: Questions
    ) -> _Applied | None:
        action = reply_action(entry.get("text", ""))
        if action is None:
            return None
        try:
            phone = canonical(entry.get("sender", ""))
        except InvalidPhone:
            return None
        at_ms = int(entry.get("at", 0) or 0)
        if at_ms and await questions.answers(phone, entry.get("text", ""), at_ms):
            # "2" to a later check-in ("2 = sore arm") answers that question: it must not
            # give the person's place back (loa.followups stores it)
            return None
        change = await ledger.change(action, phone, entry["id"], now_minutes(), "reply")
        if change.outcome in ("unknown", "seen"):
            return None
        return _Applied(phone, change)

    async def _notify(
        self, ledger: Ledger, report: RepliesReport, by: Principal, plan: Path | None
    ) -> None:
        """Write the changed appointments out, and send them through a campaign from `plan`."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + f"-{clock.monotonic_ns() % 10**6}"
        path = self.settings.data_dir / "appointments" / ledger.drive / f"changes-{stamp}.csv"
        await write_schedule(ledger, path, phones=report.notified)
        report.changes_file = str(path)
        if plan is None:
            return
        campaigns = Campaigns(self.settings, self.redis)
        log = AuditLog(self.redis, self.namespace)
        campaign = await campaigns.create(plan, path, by)
        detail = f"appointments {ledger.drive}: {len(report.notified)} changed appointments"
        await log.record(by, "campaign.create", campaign.id, detail=detail)
        report.campaign = campaign.id
        report.campaign_state = str(campaign.state)
        if campaign.fields.get("approval") == "required":
            return  # a second person approves it, as any campaign that needs it
        reason = await campaigns.approve_automatically(campaign.id)
        await log.record(by, "campaign.approve", campaign.id, detail=f"automatic: {reason}")
        launched = await campaigns.launch(campaign.id)
        await log.record(by, "campaign.launch", campaign.id, detail=f"{launched.queued} queued")
        report.campaign_state = str((await campaigns.store.get(campaign.id)).state)


@dataclass(frozen=True, slots=True)
class _Applied:
    phone: str
    change: Change
