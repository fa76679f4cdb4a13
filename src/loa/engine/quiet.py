"""Quiet hours: a daily wall-clock window, in a time zone, when non-emergency traffic is held.

The engine holds batches in it; plans declare it. Wall-clock times are read in the window's
time zone and the instants computed here are aware datetimes in UTC, exact across daylight
saving time changes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_TIMEZONE = "Asia/Ho_Chi_Minh"

_CLOCK = re.compile(r"(\d{1,2}):(\d{2})")
_QUIET = re.compile(r"\s*(\S+?)\s*[-\u2013]\s*(\S+)\s*")


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` ('Asia/Ho_Chi_Minh'), or a ValueError saying it is unknown."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError("expected an IANA time zone name like 'Asia/Ho_Chi_Minh'")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name like 'Asia/Ho_Chi_Minh'"
        ) from None


def parse_clock(text: str, *, allow_24: bool = False) -> time:
    """'08:00' -> time(8, 0); with `allow_24`, '24:00' is midnight at the end of the day."""
    match = _CLOCK.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a time of day; write HH:MM, e.g. '08:00'")
    hour, minute = int(match[1]), int(match[2])
    if allow_24 and hour == 24 and minute == 0:
        return time(0, 0)
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a time of day; hours go to 23, minutes to 59")
    return time(hour, minute)


def localize(wall: datetime, tz: tzinfo) -> datetime:
    """The instant (in UTC) at which the clocks in `tz` show the naive `wall` time.

    A wall time that happens twice (clocks go back) is its first occurrence. A wall time that
    does not exist (skipped when clocks go forward) becomes the first instant after the gap,
    when the clocks show a time at or after `wall`.
    """
    before = wall.replace(tzinfo=tz).utcoffset()  # fold=0: the offset before a change
    after = wall.replace(tzinfo=tz, fold=1).utcoffset()
    if before is None or after is None:
        raise ValueError(f"time zone {tz} has no UTC offset")
    if after <= before:  # no change at this time, or clocks went back: the first occurrence
        return (wall - before).replace(tzinfo=UTC)
    # in a gap: read with the offset after the change it is an instant before the gap, with
    # the offset before it an instant after; the change lies in between
    low = (wall - after).replace(tzinfo=UTC)
    high = (wall - before).replace(tzinfo=UTC)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(tz).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high.replace(microsecond=0)


def require_aware(moment: datetime) -> None:
    """Refuse a naive datetime: every instant here must know its time zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{moment.isoformat()} has no time zone; pass an aware datetime")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """A daily wall-clock window in `tz` during which non-emergency messages are held.

    `start` is inside the window and `end` is not; a window like 21:00-07:00 wraps midnight.
    """

    start: time
    end: time
    tz: tzinfo

    @classmethod
    def parse(cls, text: str, tz: str | tzinfo = DEFAULT_TIMEZONE) -> QuietHours:
        """'21:00-07:00' (an en dash works too; '24:00' may end a window)."""
        if not isinstance(text, str):
            raise ValueError("expected a window like '21:00-07:00' (in quotes)")
        match = _QUIET.fullmatch(text)
        if match is None:
            raise ValueError(f"{text!r} is not a window; write HH:MM-HH:MM, e.g. '21:00-07:00'")
        start = parse_clock(match[1])
        end = parse_clock(match[2], allow_24=True)
        if start == end:
            raise ValueError(
                f"{text!r} starts and ends at the same time; leave quiet_hours out for none"
            )
        return cls(start, end, zone(tz) if isinstance(tz, str) else tz)

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    @property
    def wraps_midnight(self) -> bool:
        """True for windows like 21:00-07:00 that run into the next day."""
        return self.end < self.start

    def _inside(self, clock: time) -> bool:
        if self.wraps_midnight:
            return clock >= self.start or clock < self.end
        return self.start <= clock < self.end

    def contains(self, moment: datetime) -> bool:
        """Whether the clocks in the plan's time zone show a quiet time at `moment` (aware)."""
        require_aware(moment)
        return self._inside(moment.astimezone(self.tz).time().replace(tzinfo=None))

    def next_end(self, moment: datetime) -> datetime:
        """When sending may resume (in UTC): `moment` outside quiet hours, else the window's end.

        DST-safe: an end time skipped when clocks go forward resumes as soon as the clocks pass
        it; one that happens twice ends the window the first time (or the second, for a moment
        in the repeated hour after it).
        """
        require_aware(moment)
        local = moment.astimezone(self.tz)
        clock = local.time().replace(tzinfo=None)
        if not self._inside(clock):
            return moment.astimezone(UTC)
        day = local.date()
        if self.wraps_midnight and clock >= self.start:
            day += timedelta(days=1)
        end = localize(datetime.combine(day, self.end), self.tz)
        if end <= moment:  # the end time happens twice (clocks went back): the second one
            end = datetime.combine(day, self.end, self.tz).replace(fold=1).astimezone(UTC)
        return end
