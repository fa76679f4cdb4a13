"""Sites, sessions and registrants, read from CSV, JSON lines or Parquet like any audience.

Files are streamed by loa.campaigns.audience, so a bad row is reported with its line and the
reason and the rest of the file goes on; only a file that cannot be used at all (missing, not
text, without a required column) raises AudienceError.

- sites: `site_id`, `name`, `province` (a code of the 34 provinces, or a name), `address`
  (optional). The same file may carry sessions, one row per session, with the site's columns
  repeated: `date`, `start`, `end`, `capacity`. A site row with an empty `date` has no session.
- sessions (a file of their own): `site_id`, `date`, `start`, `end`, `capacity`.
- registrants: `phone`, `priority_group` (1 = first), `registered_at`, and where they want to
  go: `site_id`, else `province` (any site there). Other columns are kept for the messages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

from loa.appointments.provinces import province_code
from loa.campaigns.audience import BadRow, Row, open_audience
from loa.campaigns.schedule import SendAt, SendAtError
from loa.engine.quiet import parse_clock
from loa.errors import AudienceError, InvalidPhone
from loa.phone import normalize

MAX_CAPACITY = 100_000  # places in one session; more is a typo (an extra zero or two)
MAX_GROUP = 999  # priority groups: the order key has three digits for them
MAX_ID = 64  # characters in a site id
SESSION_COLUMNS = ("date", "start", "end", "capacity")
SITE_COLUMNS = ("site_id", "name", "province")
REGISTRANT_COLUMNS = ("phone", "priority_group", "registered_at")
PREFERENCE_COLUMNS = ("site_id", "province")
# columns the schedule writes itself: a registrants file may not bring its own
SCHEDULE_COLUMNS = (
    "phone",
    "priority_group",
    "registered_at",
    "site_id",
    "date",
    "start",
    "end",
    "status",
    "reason",
    "confirmed",
    "new",
    "preferred_site_id",
    "preferred_province",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SITE_ID = re.compile(r"[^\x00-\x1f\x7f|]+")
_ISO_DATE = re.compile(r"(\d{4})-(\d{1,2})-(\d{1,2})")
_DMY_DATE = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})")
_REGISTERED = SendAt("registered_at")


@dataclass(frozen=True, slots=True)
class Refused:
    """A row that cannot be used: which file, where, and why (never the row's phone)."""

    file: str
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class Site:
    """A vaccination site."""

    id: str
    name: str
    province: str
    address: str
    line: int
    file: str = ""


@dataclass(frozen=True, slots=True)
class Session:
    """One session of a site: a day, a start and an end, and how many people it takes."""

    site: str
    day: date
    start: time
    end: time
    capacity: int
    line: int
    file: str = ""

    @property
    def id(self) -> str:
        """`SITE|YYYY-MM-DD|HH:MM`: the ledger's name for it."""
        return session_id(self.site, self.day, self.start)

    @property
    def score(self) -> int:
        """Its start in minutes since day one of the calendar: sessions sort by it."""
        return minutes(self.day, self.start)


@dataclass(frozen=True, slots=True)
class Registrant:
    """One valid registrant: who, in which group, since when, and where they want to go."""

    phone: str
    group: int
    registered_ms: int
    kind: str  # "s": a site, "p": a province
    preference: str
    fields: dict[str, str]  # the other columns, for the messages
    line: int


def session_id(site: str, day: date, start: time) -> str:
    """The ledger's name of a session."""
    return f"{site}|{day.isoformat()}|{start:%H:%M}"


def minutes(day: date, start: time = time(0)) -> int:
    """A wall-clock moment as minutes since day one of the calendar (exact in a float)."""
    return day.toordinal() * 1440 + start.hour * 60 + start.minute


def parse_day(text: str) -> date | None:
    """2026-12-10, or 10/12/2026 as Vietnamese spreadsheets write it; None if neither."""
    value = text.strip()
    match = _ISO_DATE.fullmatch(value)
    numbers = None
    if match is not None:
        numbers = int(match[1]), int(match[2]), int(match[3])
    else:
        match = _DMY_DATE.fullmatch(value)
        if match is not None:
            numbers = int(match[3]), int(match[2]), int(match[1])
    if numbers is None:
        return None
    try:
        return date(*numbers)
    except ValueError:
        return None


@dataclass
class SitesRead:
    """What a sites file (and a sessions file) held."""

    sites: dict[str, Site]
    sessions: list[Session]
    refused: list[Refused]
    rows: int = 0


def read_sites(path: Path, sessions: Path | None = None) -> SitesRead:
    """Sites and sessions from a sites file (with sessions or without) and a sessions file."""
    audience = open_audience(path, required=SITE_COLUMNS)
    combined = "date" in audience.columns
    if combined:
        _require(path, audience.columns, SESSION_COLUMNS, "a sites file with a 'date' column")
    result = SitesRead({}, [], [])
    seen: dict[tuple[str, date, time], int] = {}
    name = str(path)
    for item in audience:
        result.rows += 1
        if isinstance(item, BadRow):
            result.refused.append(Refused(name, item.line, item.reason))
            continue
        site = _site(item, name)
        if isinstance(site, str):
            result.refused.append(Refused(name, item.line, site))
            continue
        known = result.sites.get(site.id)
        if known is not None and _differs(known, site):
            why = f"site {site.id!r} is given differently on line {known.line}"
            result.refused.append(Refused(name, item.line, why))
            continue
        result.sites.setdefault(site.id, site)  # a good site, even if its session is not
        session: Session | str | None = None
        if combined and item.fields.get("date", "").strip():
            session = _session(item, site.id, seen, name)
        elif combined and any(item.fields.get(c, "").strip() for c in SESSION_COLUMNS):
            session = "date is empty but the row has other session columns"
        if isinstance(session, str):
            result.refused.append(Refused(name, item.line, session))
        elif session is not None:
            seen[(session.site, session.day, session.start)] = item.line
            result.sessions.append(session)
    if sessions is not None:
        _read_sessions(sessions, result, seen)
    return result


def _read_sessions(path: Path, result: SitesRead, seen: dict[tuple[str, date, time], int]) -> None:
    name = str(path)
    for item in open_audience(path, required=("site_id", *SESSION_COLUMNS)):
        result.rows += 1
        if isinstance(item, BadRow):
            result.refused.append(Refused(name, item.line, item.reason))
            continue
        site = item.fields["site_id"].strip()
        session = _session(item, site, seen, name) if site else "site_id is empty"
        if isinstance(session, str):
            result.refused.append(Refused(name, item.line, session))
            continue
        seen[(session.site, session.day, session.start)] = item.line
        result.sessions.append(session)


def _require(path: Path, columns: list[str], needed: tuple[str, ...], what: str) -> None:
    missing = [column for column in needed if column not in columns]
    if missing:
        listed = ", ".join(repr(column) for column in missing)
        raise AudienceError(f"{path}: {what} needs the columns {listed} too")


def _differs(one: Site, other: Site) -> bool:
    return (one.name, one.province, one.address) != (other.name, other.province, other.address)


def _site(row: Row, file: str) -> Site | str:
    """The site of a row, or why it is not one."""
    fields = row.fields
    site_id = fields["site_id"].strip()
    problem = check_site_id(site_id)
    if problem:
        return problem
    name = fields["name"].strip()
    if not name:
        return "name is empty"
    raw = fields["province"]
    province = province_code(raw)
    if province is None:
        return f"unknown province {raw.strip()[:40]!r}: expected one of the 34 province codes"
    return Site(site_id, name, province, fields.get("address", "").strip(), row.line, file)


def check_site_id(site_id: str) -> str:
    """Why `site_id` cannot name a site, or "" when it can."""
    if not site_id:
        return "site_id is empty"
    if len(site_id) > MAX_ID:
        return f"site_id is longer than {MAX_ID} characters"
    if not _SITE_ID.fullmatch(site_id):
        return "site_id holds '|' or a control character"
    return ""


def _session(
    row: Row, site: str, seen: dict[tuple[str, date, time], int], file: str
) -> Session | str:
    """The session of a row, or why it is not one."""
    fields = row.fields
    day = parse_day(fields["date"])
    if day is None:
        return (
            f"date {fields['date'].strip()[:40]!r} is not a date (write 2026-12-10 or 10/12/2026)"
        )
    try:
        start = parse_clock(fields["start"])
    except ValueError as exc:
        return f"start: {exc}"
    try:
        end = parse_clock(fields["end"], allow_24=True)
    except ValueError as exc:
        return f"end: {exc}"
    if end != time(0) and end <= start:
        return f"end {end:%H:%M} is not after start {start:%H:%M}"
    capacity = _capacity(fields["capacity"])
    if isinstance(capacity, str):
        return capacity
    first = seen.get((site, day, start))
    if first is not None:
        return f"session {session_id(site, day, start)} is given twice (first on line {first})"
    return Session(site, day, start, end, capacity, row.line, file)


def _capacity(text: str) -> int | str:
    value = text.strip()
    if value.endswith(".0"):  # a number column of a spreadsheet
        value = value[:-2]
    digits = value[1:] if value[:1] in "+-" else value
    if not (digits.isascii() and digits.isdigit()):
        return f"capacity {text.strip()[:20]!r} is not a whole number"
    capacity = int(value)
    if capacity < 0:
        return f"capacity {capacity} is negative"
    if capacity > MAX_CAPACITY:
        return f"capacity {capacity} is more than {MAX_CAPACITY:,} places in one session"
    return capacity


@dataclass
class RegistrantsFile:
    """An opened registrants file: its extra columns, and its items when iterated."""

    path: Path
    columns: list[str]  # the columns kept for the messages

    def __iter__(self) -> Iterator[Registrant | Refused]:
        return read_registrants(self.path, self.columns)


def open_registrants(path: Path) -> RegistrantsFile:
    """Check a registrants file's columns; AudienceError when it cannot be used at all."""
    audience = open_audience(path, required=REGISTRANT_COLUMNS)
    if not any(column in audience.columns for column in PREFERENCE_COLUMNS):
        raise AudienceError(
            f"{path}: no 'site_id' or 'province' column: each registrant must say where to go"
        )
    taken = [
        c
        for c in audience.columns
        if c not in (*REGISTRANT_COLUMNS, *PREFERENCE_COLUMNS)
        and (c in SCHEDULE_COLUMNS or c.startswith("appointment."))
    ]
    if taken:
        listed = ", ".join(repr(column) for column in taken)
        raise AudienceError(f"{path}: the schedule writes the columns {listed}; rename them")
    extra = [c for c in audience.columns if c not in (*REGISTRANT_COLUMNS, *PREFERENCE_COLUMNS)]
    return RegistrantsFile(path, extra)


def read_registrants(path: Path, extra: list[str]) -> Iterator[Registrant | Refused]:
    """Every row of a registrants file: a Registrant, or Refused with the line and reason.

    A phone given again is refused on its later lines (a person has one place).
    """
    name = str(path)
    zone = ZoneInfo("Asia/Ho_Chi_Minh")
    seen: dict[str, int] = {}
    for item in open_audience(path, required=REGISTRANT_COLUMNS):
        if isinstance(item, BadRow):
            yield Refused(name, item.line, item.reason)
            continue
        person = _registrant(item, extra, zone)
        if isinstance(person, str):
            yield Refused(name, item.line, person)
            continue
        first = seen.setdefault(person.phone, item.line)
        if first != item.line:
            yield Refused(name, item.line, f"phone given twice (first on line {first})")
            continue
        yield person


def _registrant(row: Row, extra: list[str], zone: ZoneInfo) -> Registrant | str:
    """The registrant of a row, or why it is not one."""
    fields = row.fields
    try:
        phone = normalize(fields["phone"])
    except InvalidPhone as exc:
        return f"phone: {exc}"
    raw = fields["priority_group"].strip().removesuffix(".0")
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_GROUP:
        return f"priority_group {raw[:20]!r} is not a whole number from 1 to {MAX_GROUP}"
    try:
        registered = _REGISTERED.resolve(fields, zone)
    except SendAtError as exc:
        return str(exc)
    if registered < _EPOCH:
        return "registered_at is before 1970"
    site = fields.get("site_id", "").strip()
    if site:
        problem = check_site_id(site)
        if problem:
            return problem
        kind, preference = "s", site
    else:
        given = fields.get("province", "")
        if not given.strip():
            return "no site_id or province: say where the person wants to go"
        code = province_code(given)
        if code is None:
            return f"unknown province {given.strip()[:40]!r}: expected one of the 34 codes"
        kind, preference = "p", code
    milliseconds = int((registered - _EPOCH).total_seconds() * 1000)
    kept = {column: fields[column] for column in extra if fields.get(column)}
    return Registrant(phone, int(raw), milliseconds, kind, preference, kept, row.line)
