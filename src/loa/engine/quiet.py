"""Quiet hours: a daily window, in a time zone, when non-emergency traffic is held."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_WINDOW = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]):([0-5]\d)\s*$")


@dataclass(frozen=True, slots=True)
class QuietHours:
    """From `start` to `end` local time every day; the window may wrap midnight."""

    start: time
    end: time
    timezone: ZoneInfo

    @classmethod
    def parse(cls, spec: str, zone: str) -> QuietHours:
        """`"21:00-07:00"` in `zone`; a malformed or empty window raises ValueError."""
        match = _WINDOW.match(spec)
        if not match:
            raise ValueError(f"quiet hours {spec!r} must look like 21:00-07:00")
        start = time(int(match[1]), int(match[2]))
        end = time(int(match[3]), int(match[4]))
        if start == end:
            raise ValueError(f"quiet hours {spec!r} start and end at the same time")
        try:
            tz = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {zone!r}") from None
        return cls(start, end, tz)

    def contains(self, moment: datetime) -> bool:
        """True when `moment` (aware) falls inside the window, in the window's time zone."""
        local = moment.astimezone(self.timezone).time()
        if self.start < self.end:
            return self.start <= local < self.end
        return local >= self.start or local < self.end

    def next_end(self, moment: datetime) -> datetime:
        """The first end of the window after `moment`: when held traffic may leave."""
        local = moment.astimezone(self.timezone)
        end = datetime.combine(local.date(), self.end, tzinfo=self.timezone)
        if end <= local:
            end = datetime.combine(local.date() + timedelta(days=1), self.end, tzinfo=self.timezone)
        return end
