"""The campaign record: its fields, its states and their transitions, and its key.

One hash per campaign, `{namespace}:{camp:ID}` (`engine.keys.campaign_key`), written by the
campaign layer only. Workers read it through `loa.campaigns.controls`, the campaign layer's
side of the engine's `CampaignControls`: the engine itself knows no state and no field.
"""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson

from loa.engine.keys import campaign_key

__all__ = [
    "ACTIVE",
    "ENDED",
    "TRANSITIONS",
    "Campaign",
    "Field",
    "State",
    "campaign_key",
    "new_campaign_id",
]


class Field(enum.StrEnum):
    """The fields of the record that workers read before each chunk."""

    STATE = "state"
    START_MS = "start_ms"  # a scheduled campaign starts sending then (epoch ms)
    QUIET_HOURS = "quiet_hours"  # "21:00-07:00", empty for none
    TIMEZONE = "timezone"  # IANA name the quiet hours are in
    RATE = "rate"  # the campaign's own cap, messages per second over every route; empty: none
    FOLLOWUP_WINDOW = "followup_window"  # seconds a reply answers its question; absent: asks none
    FOLLOWUP_REMIND = "followup_remind"  # seconds after asking a reminder is due; absent: none


class State(enum.StrEnum):
    """draft -> approved -> scheduled -> running <-> paused -> done | cancelled | expired."""

    DRAFT = "draft"
    APPROVED = "approved"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    DONE = "done"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


ENDED = frozenset({State.DONE, State.CANCELLED, State.EXPIRED})
# the states the campaign clock watches: time or counters may move them on
ACTIVE = frozenset({State.SCHEDULED, State.RUNNING, State.PAUSED})

# action -> (states it may start from, state it leads to)
TRANSITIONS: dict[str, tuple[frozenset[State], State]] = {
    "approve": (frozenset({State.DRAFT}), State.APPROVED),
    "schedule": (frozenset({State.APPROVED}), State.SCHEDULED),
    "start": (frozenset({State.APPROVED, State.SCHEDULED}), State.RUNNING),
    "pause": (frozenset({State.SCHEDULED, State.RUNNING}), State.PAUSED),
    "resume": (frozenset({State.PAUSED}), State.RUNNING),
    "cancel": (
        frozenset({State.DRAFT, State.APPROVED, State.SCHEDULED, State.RUNNING, State.PAUSED}),
        State.CANCELLED,
    ),
    "finish": (frozenset({State.RUNNING}), State.DONE),
    "expire": (frozenset({State.SCHEDULED, State.RUNNING, State.PAUSED}), State.EXPIRED),
}


def new_campaign_id() -> str:
    """Short, sortable and unguessable: `20261122-3f9a1c`."""
    return f"{time.strftime('%Y%m%d', time.gmtime())}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class Campaign:
    """A campaign as stored: everything is text in Redis, typed here."""

    id: str
    fields: dict[str, str]

    @property
    def state(self) -> State:
        """Its current state."""
        return State(self.fields["state"])

    @property
    def name(self) -> str:
        """The plan's name."""
        return self.fields.get("name", "")

    def counter(self, name: str) -> int:
        """A planning counter (0 when not set)."""
        return int(self.fields.get(name, 0) or 0)

    def json(self, key: str) -> Any:
        """A field stored as JSON."""
        raw = self.fields.get(key)
        return orjson.loads(raw) if raw else None
