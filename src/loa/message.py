"""The message model that the engine and every adapter share: messages, lanes and send results."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Lane(enum.IntEnum):
    """Priority lanes, highest first: an emergency batch overtakes any bulk batch."""

    EMERGENCY = 0
    HIGH = 1
    NORMAL = 2
    BULK = 3

    @property
    def label(self) -> str:
        """The lane's lower-case name, as used in keys, settings and metric labels."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | Lane) -> Lane:
        """Accept a lane as its name (any case) or number."""
        if isinstance(value, Lane):
            return value
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[value.strip().upper()]
        except KeyError:
            names = ", ".join(lane.label for lane in cls)
            raise ValueError(f"unknown lane {value!r}; expected one of {names}") from None


@dataclass(slots=True)
class Message:
    """One recipient on one channel: `id` is unique within its campaign and channel."""

    id: str
    to: str
    body: str = ""
    parts: int = 1
    extra: dict[str, Any] | None = field(default=None)


class Outcome(enum.StrEnum):
    """The counters kept per route and lane (and the `outcome` label of loa_messages_total).

    Every message ends in exactly one final outcome (FINAL); the others count events on the way.
    """

    ACCEPTED = "accepted"  # the provider took it
    FAILED = "failed"  # the provider refused it for good
    DEAD = "dead"  # it gave up after its attempts, or its batch killed every worker
    EXPIRED = "expired"  # past its expiry: stale advice is never sent
    RETRIED = "retried"  # scheduled for another attempt
    THROTTLED = "throttled"  # put back because the provider asked us to slow down
    REDELIVERED = "redelivered"  # sent again after a crash: at most this many duplicates
    UNREADABLE = "unreadable"  # a queue entry that could not be decoded
    CANCELLED = "cancelled"  # its campaign was cancelled before it left
    SUPPRESSED = "suppressed"  # the recipient opted out before it left


FINAL = (
    Outcome.ACCEPTED,
    Outcome.FAILED,
    Outcome.DEAD,
    Outcome.EXPIRED,
    Outcome.CANCELLED,
    Outcome.SUPPRESSED,
)


@dataclass(frozen=True, slots=True)
class Accepted:
    """The provider took the message; `provider_id` correlates its receipt later."""

    provider_id: str = ""


@dataclass(frozen=True, slots=True)
class RetryLater:
    """A temporary failure: send again after a back-off (or `retry_after` seconds)."""

    reason: str = "temporary failure"
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Throttled:
    """The provider asked us to slow down; the route's rate drops and the message waits."""

    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """A permanent failure for this message: it is not retried."""

    reason: str


SendResult = Accepted | RetryLater | Throttled | Failed

ACCEPTED = Accepted()
