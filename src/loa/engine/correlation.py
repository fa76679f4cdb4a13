"""The records correlate.lua keeps under a receipt key, written and read in one place.

A receipt key (`{ns}:{rcpt:ROUTE:ID}`) holds one of: `s:` and a `Sent` (the provider took the
message, no receipt yet), `r:` and a `Heard` (a receipt came first), `m:` and a `Sent` (they
met, the count is under way), or `d` (counted: a repeat is a duplicate).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

SEP = "|"
REGION = "|@"  # before the region of the audience the message's batch is of, when it has one


class Kind(enum.StrEnum):
    """What a receipt key holds now: the first character of its value."""

    SENT = "s"
    RECEIPT = "r"
    MET = "m"
    COUNTED = "d"


@dataclass(frozen=True, slots=True)
class Sent:
    """One part of a message the provider took: whose it is, which part, and the region of
    the campaign's audience its batch is of (empty: none, or written before regions)."""

    campaign: str
    message: str
    part: int = 0
    region: str = ""

    def encode(self) -> str:
        """As correlate.lua stores it after `s:` or `m:`."""
        value = f"{self.campaign}{SEP}{self.message}{SEP}{self.part}"
        return f"{value}{REGION}{self.region}" if self.region else value

    @classmethod
    def decode(cls, value: str) -> Sent:
        """What `encode` wrote (a campaign id never holds the separator; a message id may)."""
        campaign, _, rest = value.partition(SEP)
        rest, marked, region = rest.rpartition(REGION)
        if not marked:
            rest, region = region, ""
        message, _, part = rest.rpartition(SEP)
        return cls(campaign, message, int(part) if part.isdigit() else 0, region)

    @property
    def member(self) -> str:
        """`campaign|message`: the name of its message's fallback timer (loa.engine.silence)."""
        return f"{self.campaign}{SEP}{self.message}"

    @property
    def speaks(self) -> bool:
        """True for the part whose receipt counts for the whole message: the first."""
        return self.part == 0


@dataclass(frozen=True, slots=True)
class Heard:
    """A receipt: delivered or not, in the provider's own words."""

    delivered: bool
    state: str = ""

    def encode(self) -> str:
        """As correlate.lua stores it after `r:`."""
        return f"{1 if self.delivered else 0}{SEP}{self.state}"

    @classmethod
    def decode(cls, value: str) -> Heard:
        """What `encode` wrote."""
        delivered, _, state = value.partition(SEP)
        return cls(delivered == "1", state)


def stored_sent(value: str) -> Sent | None:
    """The message a receipt key's whole value names (sent, or met), else None."""
    if value[:2] in (f"{Kind.SENT}:", f"{Kind.MET}:"):
        return Sent.decode(value[2:])
    return None
