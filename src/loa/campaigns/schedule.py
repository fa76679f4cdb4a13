"""Time in a campaign plan: durations, quiet hours and per-recipient send times.

Everything here is plain Python over `datetime` and `zoneinfo`, so it is exact across daylight
saving time changes: wall-clock times ("08:00", "21:00-07:00") are read in the plan's time zone,
and the instants computed here are aware datetimes in UTC. (Python subtracts and compares two
datetimes that share a ZoneInfo by their wall clocks, which is wrong across a DST change; in UTC
it is always right. Show them with `.astimezone(plan.schedule.tz)`.)

- `parse_duration("1d12h")` -> `timedelta(days=1, hours=12)`
- quiet hours live with the engine, which holds traffic in them: `loa.engine.quiet`
- `SendAt.parse("due_date - 3d at 08:00")` (or a dotted column: "appointment.date - 1d at 08:00"):
  `resolve(row_fields, tz)` -> aware datetime, or a
  `SendAtError` (a ValueError) whose message is the reason to report for that row.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta, tzinfo

from loa.engine.quiet import localize, parse_clock

_UNITS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_UNIT_NAMES = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
_DURATION = re.compile(r"\s*(?:\d+\s*[a-zA-Z]+\s*)+")
_DURATION_PART = re.compile(r"(\d+)\s*([a-zA-Z]+)")
_MAX_DURATION = timedelta(days=3660)  # ten years: anything longer is a typo
_SEND_AT = re.compile(
    r"\s*(?P<column>[^\W\d]\w*(?:\.[^\W\d]\w*)?)"
    r"\s*(?:(?P<sign>[+-])\s*(?P<offset>.*?))?"
    r"\s*(?:(?<![^\s\d])at\s+(?P<clock>\S*))?\s*",
    re.IGNORECASE,
)
_DMY = re.compile(r"(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})(?:[ T](\d{1,2}):(\d{2})(?::(\d{2}))?)?")
_SEND_AT_FORM = "'<column> [+|- <duration>] [at HH:MM]', e.g. 'due_date - 3d at 08:00'"


class SendAtError(ValueError):
    """One row's send time cannot be worked out; the message is the reason, naming the column."""


def parse_duration(text: str) -> timedelta:
    """'90s', '15m', '48h', '3d', '1w' or combinations, largest unit first ('1d12h', '1h 30m').

    Raises ValueError with the reason: an unknown unit, a unit given twice or out of order,
    zero, or more than ten years.
    """
    if not isinstance(text, str):
        raise ValueError("expected a duration like '48h' or '3d' (in quotes)")
    if not _DURATION.fullmatch(text):
        raise ValueError(f"{text!r} is not a duration; write a number and a unit, e.g. '48h'")
    seconds = 0
    order = list(_UNITS)
    last = -1
    for number, unit in _DURATION_PART.findall(text):
        if unit not in _UNITS:
            known = ", ".join(f"{u} ({name})" for u, name in _UNIT_NAMES.items())
            raise ValueError(f"unknown unit {unit!r} in {text!r}; use {known}")
        position = order.index(unit)
        if position <= last:
            raise ValueError(f"{text!r}: give each unit once, largest first (e.g. '1d12h')")
        last = position
        seconds += int(number) * _UNITS[unit]
    if seconds == 0:
        raise ValueError(f"{text!r} is zero; a duration must be longer than that")
    if seconds > _MAX_DURATION.total_seconds():
        raise ValueError(f"{text!r} is longer than ten years")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest text that `parse_duration` reads back as `value` ('1d12h'; '0s' for zero)."""
    seconds = int(value.total_seconds())
    parts = []
    for unit, size in _UNITS.items():
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


@dataclass(frozen=True, slots=True)
class SendAt:
    """A per-recipient send time: `<column> [(+|-) <duration>] [at HH:MM]`.

    The column holds a date (2026-12-24, or 24/12/2026 as Vietnamese spreadsheets write it,
    also with '-' or '.') or a date-time (ISO 8601, or '24/12/2026 14:30'); a date-time without
    an offset is read in the plan's time zone. The offset is added on the wall clock, so
    'due_date - 3d' is the same time of day three calendar days earlier; `at` then sets the time
    of day. A bare date with no `at` means the start of that day (quiet hours will hold it).
    """

    column: str
    offset: timedelta = timedelta(0)
    clock: time | None = None
    text: str = ""

    @classmethod
    def parse(cls, text: str) -> SendAt:
        """Read the expression, or raise ValueError saying what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"expected an expression {_SEND_AT_FORM}")
        match = _SEND_AT.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a send time; expected {_SEND_AT_FORM}")
        offset = timedelta(0)
        if match["sign"]:
            if not match["offset"]:
                raise ValueError(f"{text!r}: a duration must follow {match['sign']!r}")
            try:
                offset = parse_duration(match["offset"])
            except ValueError as exc:
                raise ValueError(f"{text!r}: {exc}") from None
            if match["sign"] == "-":
                offset = -offset
        clock = None
        if match["clock"] is not None:
            try:
                clock = parse_clock(match["clock"])
            except ValueError as exc:
                raise ValueError(f"{text!r}: {exc}") from None
        return cls(match["column"], offset, clock, " ".join(text.split()))

    def __str__(self) -> str:
        return self.text or self.column

    def resolve(self, fields: Mapping[str, str], tz: tzinfo) -> datetime:
        """This recipient's send time (in UTC), the column read in `tz`; else SendAtError."""
        raw = fields.get(self.column)
        if raw is None:
            raise SendAtError(f"no {self.column!r} column")
        value = raw.strip()
        if not value:
            raise SendAtError(f"{self.column} is empty")
        wall = _read_when(value, tz)
        if wall is None:
            raise SendAtError(
                f"{self.column} {raw!r} is not a date (write 2026-12-24, 24/12/2026 "
                "or a date-time like 2026-12-24T14:30)"
            )
        clock = self.clock
        try:
            if self.offset:
                wall += self.offset
            if clock is not None:
                wall = wall.replace(hour=clock.hour, minute=clock.minute, second=0, microsecond=0)
            return localize(wall, tz)
        except OverflowError:
            raise SendAtError(f"{self.column} {raw!r} is out of range") from None


def _read_when(value: str, tz: tzinfo) -> datetime | None:
    """A naive wall-clock datetime in `tz` from a date or date-time cell, or None."""
    if value[:4].isdigit() and value[4:5] == "-":
        try:
            when = datetime.fromisoformat(value)
        except ValueError:
            return None
        if when.tzinfo is not None:
            when = when.astimezone(tz).replace(tzinfo=None)
        return when
    match = _DMY.fullmatch(value)
    if match is None:
        return None
    day, month, year, hour, minute, second = match.groups()
    try:
        if hour is None:
            return datetime(int(year), int(month), int(day))
        return datetime(int(year), int(month), int(day), int(hour), int(minute), int(second or 0))
    except ValueError:
        return None
