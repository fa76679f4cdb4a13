"""The schedule as a file: one row per registrant, ready to be a campaign's audience.

Columns: `phone` (E.164), `priority_group`, `registered_at`, `site_id`, `date` (YYYY-MM-DD),
`start`, `end` (HH:MM), `status` (placed, waiting or cancelled), `reason` (why someone waits),
`confirmed` (yes once they confirmed), `new` (yes for whoever the run writing the file placed),
`preferred_site_id`, `preferred_province`; then `appointment.site_id`, `appointment.site_name`,
`appointment.address`, `appointment.province`, `appointment.date`, `appointment.start` and
`appointment.end`, which a plan's templates read as `{{ appointment.site_name }}` and its
`send_at` as `appointment.date - 1d at 08:00`; then the registrants' other columns.

Cells are written as they are, as in any audience loa reads: a spreadsheet that opens the file
must not run a cell as a formula (see loa.campaigns.audience).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

from loa.appointments.inputs import SCHEDULE_COLUMNS
from loa.appointments.ledger import REASONS, Ledger, Person, SessionState, SiteInfo
from loa.engine.quiet import DEFAULT_TIMEZONE, zone

APPOINTMENT_COLUMNS = (
    "appointment.site_id",
    "appointment.site_name",
    "appointment.address",
    "appointment.province",
    "appointment.date",
    "appointment.start",
    "appointment.end",
)
CHUNK = 5000  # people read from Redis at a time


async def write_schedule(
    ledger: Ledger, path: Path, run: int = 0, phones: Sequence[str] | None = None
) -> int:
    """Write the drive's schedule (or only `phones`') to `path` in priority order; the rows.

    `new` is yes for the people run `run` placed (0: nobody).
    """
    sites = await ledger.sites()
    sessions = {session.id: session for session in await ledger.sessions()}
    extra = await ledger.columns()
    if phones is None:
        phones = [entry.partition("|")[2] for entry in await ledger.orders()]
    written = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = _writer(handle, extra)
        for first in range(0, len(phones), CHUNK):
            chunk = phones[first : first + CHUNK]
            people = await ledger.people(chunk)
            fields = await ledger.fields(chunk)
            for person, kept in zip(people, fields, strict=True):
                if person is not None:
                    writer.writerow(row(person, kept, sites, sessions, run))
                    written += 1
    return written


def _writer(handle: IO[str], extra: list[str]) -> csv.DictWriter[str]:
    writer = csv.DictWriter(
        handle, fieldnames=[*SCHEDULE_COLUMNS, *APPOINTMENT_COLUMNS, *extra], extrasaction="ignore"
    )
    writer.writeheader()
    return writer


def row(
    person: Person,
    kept: dict[str, str],
    sites: dict[str, SiteInfo],
    sessions: dict[str, SessionState],
    run: int = 0,
) -> dict[str, str]:
    """One person's schedule row."""
    registered = datetime.fromtimestamp(person.registered_ms / 1000, UTC)
    local = registered.astimezone(zone(DEFAULT_TIMEZONE)).isoformat(timespec="seconds")
    values = {
        **kept,
        "phone": person.phone,
        "priority_group": str(person.group),
        "registered_at": local,
        "status": "placed" if person.holds else person.state,
        "reason": REASONS.get(person.reason, "") if person.state == "waiting" else "",
        "confirmed": "yes" if person.state == "confirmed" else "",
        "new": "yes" if person.holds and run and person.run == str(run) else "",
        "preferred_site_id": person.preference if person.kind == "s" else "",
        "preferred_province": person.preference if person.kind == "p" else "",
    }
    if person.state == "cancelled":
        values["reason"] = "cancelled"
    session = sessions.get(person.session) if person.holds else None
    if session is not None:
        site = sites.get(session.site)
        values.update(
            {
                "site_id": session.site,
                "date": session.day,
                "start": session.start,
                "end": session.end,
                "appointment.site_id": session.site,
                "appointment.site_name": site.name if site else "",
                "appointment.address": site.address if site else "",
                "appointment.province": session.province,
                "appointment.date": session.day,
                "appointment.start": session.start,
                "appointment.end": session.end,
            }
        )
    return values
