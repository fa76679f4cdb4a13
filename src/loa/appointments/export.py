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
from datetime import UTC, datetime, tzinfo
from pathlib import Path

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
    slots = {s.id: _slot_cells(s, sites.get(s.site)) for s in await ledger.sessions()}
    extra = await ledger.columns()
    if phones is None:
        phones = [entry.partition("|")[2] for entry in await ledger.orders()]
    written = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    empty = ("",) * len(APPOINTMENT_COLUMNS_WITH_SLOT)
    tz = zone(DEFAULT_TIMEZONE)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow([*SCHEDULE_COLUMNS, *APPOINTMENT_COLUMNS, *extra])
        for first in range(0, len(phones), CHUNK):
            chunk = phones[first : first + CHUNK]
            people = await ledger.people(chunk)
            fields = await ledger.fields(chunk)
            for person, kept in zip(people, fields, strict=True):
                if person is None:
                    continue
                slot = slots.get(person.session, empty) if person.holds else empty
                writer.writerow(_cells(person, slot, tz, run) + [kept.get(c, "") for c in extra])
                written += 1
    return written


# the cells a session fills: site_id, date, start, end, then the appointment.* columns
APPOINTMENT_COLUMNS_WITH_SLOT = ("site_id", "date", "start", "end", *APPOINTMENT_COLUMNS)


def _slot_cells(session: SessionState, site: SiteInfo | None) -> tuple[str, ...]:
    name, address = (site.name, site.address) if site else ("", "")
    day, start, end = session.day, session.start, session.end
    return (
        session.site, day, start, end,
        session.site, name, address, session.province, day, start, end,
    )  # fmt: skip


def _cells(person: Person, slot: tuple[str, ...], tz: tzinfo, run: int) -> list[str]:
    """One person's cells, in the order of SCHEDULE_COLUMNS and APPOINTMENT_COLUMNS."""
    registered = datetime.fromtimestamp(person.registered_ms / 1000, UTC).astimezone(tz)
    holds = person.holds
    if person.state == "waiting":
        reason = REASONS.get(person.reason, person.reason)
    else:
        reason = "cancelled" if person.state == "cancelled" else ""
    site_id, day, start, end, *appointment = slot
    return [
        person.phone,
        str(person.group),
        registered.isoformat(timespec="seconds"),
        site_id,
        day,
        start,
        end,
        "placed" if holds else person.state,
        reason,
        "yes" if person.state == "confirmed" else "",
        "yes" if holds and run and person.run == str(run) else "",
        person.preference if person.kind == "s" else "",
        person.preference if person.kind == "p" else "",
        *appointment,
    ]
