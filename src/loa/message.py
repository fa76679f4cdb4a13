"""The message model that the engine and every adapter share: messages, lanes and send results."""

from __future__ import annotations

import enum
from collections.abc import Mapping
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
    FALLBACK = "fallback"  # this channel cannot reach the person: handed to the next channel
    UNKNOWN = "unknown"  # sent, but no answer came: the provider may have taken it
    POSSIBLE_DUPLICATE = "possible_duplicate"  # taken (or sent unanswered) again after that
    # why a message went on to its next channel (each also counted under its final outcome):
    # accepted here but no delivered receipt came within the plan's `fallback_after`
    FALLBACK_TIMEOUT = "fallback_timeout"
    # refused for good here (not for its template), or gave up after its attempts
    FALLBACK_FAILED = "fallback_failed"


FINAL = (
    Outcome.ACCEPTED,
    Outcome.FAILED,
    Outcome.DEAD,
    Outcome.EXPIRED,
    Outcome.CANCELLED,
    Outcome.SUPPRESSED,
    Outcome.FALLBACK,
)


def finished(counts: Mapping[str, int]) -> int:
    """How many messages have their final outcome, over every route of a campaign: each FINAL
    outcome but FALLBACK, whose message is counted again where it ends, on its next channel."""
    return sum(counts.get(outcome, 0) for outcome in FINAL if outcome is not Outcome.FALLBACK)


RESUME = "resume"  # the key of Message.extra holding what an adapter needs to finish a message
UNANSWERED = "unanswered"  # the key of Message.extra marking a send that got no answer


@dataclass(frozen=True, slots=True)
class Accepted:
    """The provider took the message; its `provider_ids` correlate its receipts later.

    A message has one provider id, or one per part when a long SMS went as several submits
    (the first part's receipt speaks for it), or none when the provider gave none.
    `resent` says parts of it that the provider had already taken went out again (the
    adapter could not finish it where it stopped): counted as redelivered.
    """

    provider_ids: tuple[str, ...] = ()
    resent: bool = False

    @property
    def provider_id(self) -> str:
        """The id its receipt comes back under: the first part's ("" when none was given)."""
        return self.provider_ids[0] if self.provider_ids else ""

    @classmethod
    def one(cls, provider_id: str, resent: bool = False) -> Accepted:
        """Accepted under one provider id; "" when the provider gave none."""
        return cls((provider_id,) if provider_id else (), resent)


@dataclass(frozen=True, slots=True)
class RetryLater:
    """A temporary failure: send again after a back-off (or `retry_after` seconds).

    `resume` is what the adapter needs to finish the message without repeating what the
    provider already took (the parts of a long SMS it accepted): the engine keeps it with the
    message, in `extra["resume"]`, and hands it back on the next send.

    `unknown` says the request went out but no answer came (a timeout, a connection lost with
    it in flight): the provider may have taken it. The engine counts it, sends nothing more on
    the route until the adapter's `ping` succeeds, and counts the next copy taken as a
    possible duplicate.
    """

    reason: str = "temporary failure"
    retry_after: float | None = None
    resume: dict[str, Any] | None = None
    unknown: bool = False


@dataclass(frozen=True, slots=True)
class Throttled:
    """The provider asked us to slow down; the route's rate drops and the message waits.

    `resume` as for RetryLater.
    """

    retry_after: float | None = None
    resume: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Failed:
    """A permanent failure for this message: it is not retried on this route.

    `fallback` says the failure belongs to this person on this channel (no Zalo account, a
    push token that was unregistered): the message goes on to its campaign's next channel.
    `template` says it belongs to the message's template or content (an unknown template id,
    data the template refuses): the same for everyone, so it is never handed to the next
    channel, where it would turn a mistake of the operator's into a campaign of SMS.
    Any other permanent failure goes on to the next channel too, unless the plan says
    `fallback_on_failure = false`.
    """

    reason: str
    fallback: bool = False
    template: bool = False


SendResult = Accepted | RetryLater | Throttled | Failed

ACCEPTED = Accepted()


@dataclass(frozen=True, slots=True)
class Receipt:
    """A provider's word on a message it accepted: delivered to the handset, or not.

    `provider_id` is the id the provider gave in its `Accepted`; `state` is the provider's own
    final state (for SMPP: DELIVRD, UNDELIV, EXPIRED, REJECTD, DELETED, UNKNOWN, ACCEPTD).
    """

    route: str
    provider_id: str
    delivered: bool
    state: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message from a person to us: an SMS to our short code, or an OTT reply."""

    route: str
    sender: str  # E.164 for SMS, the channel's user id otherwise
    text: str
    channel: str = "sms"
    recipient: str = ""  # the short code or official account it was sent to
    provider_id: str = ""  # the provider's id of the message, when it gives one: kept once


# What a message of each channel carries besides its body, under these keys of Message.extra.
# Planners write it and adapters read it only through the functions below, so the key names
# (which are the wire format of queued batches) are spelled here alone.
CHANNEL = "channel"
SUBJECT = "subject"
HTML = "html"
TITLE = "title"
DATA = "data"
TEMPLATE_ID = "template_id"


@dataclass(frozen=True, slots=True)
class EmailContent:
    """An e-mail's subject and, optionally, its HTML alternative (the body is the plain text)."""

    subject: str = ""
    html: str | None = None


@dataclass(frozen=True, slots=True)
class PushContent:
    """A push notification's title and the data values it carries (as strings)."""

    title: str = ""
    data: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ZaloContent:
    """A Zalo ZNS message: its template (empty: the route's) and the template's parameters."""

    template_id: str = ""
    data: Mapping[str, Any] = field(default_factory=dict)


def email_extra(content: EmailContent) -> dict[str, Any]:
    """The `extra` of an e-mail message with `content`."""
    extra: dict[str, Any] = {CHANNEL: "email", SUBJECT: content.subject}
    if content.html is not None:
        extra[HTML] = content.html
    return extra


def email_content(message: Message) -> EmailContent:
    """An e-mail message's content; ValueError names a field that is not text."""
    extra = message.extra or {}
    subject, html = extra.get(SUBJECT, ""), extra.get(HTML)
    if not isinstance(subject, str):
        raise ValueError(f"extra.{SUBJECT} must be text")
    if html is not None and not isinstance(html, str):
        raise ValueError(f"extra.{HTML} must be text")
    return EmailContent(subject, html)


def push_extra(content: PushContent) -> dict[str, Any]:
    """The `extra` of a push message with `content`."""
    extra: dict[str, Any] = {CHANNEL: "fcm", TITLE: content.title}
    if content.data:
        extra[DATA] = dict(content.data)
    return extra


def push_content(message: Message) -> PushContent:
    """A push message's content: a missing or empty title is none, data that is no table none."""
    extra = message.extra or {}
    title = extra.get(TITLE)
    data = extra.get(DATA)
    values = {str(k): str(v) for k, v in data.items()} if isinstance(data, Mapping) else {}
    return PushContent(str(title) if title else "", values)


def zalo_extra(content: ZaloContent) -> dict[str, Any]:
    """The `extra` of a Zalo message with `content`."""
    return {CHANNEL: "zalo", TEMPLATE_ID: content.template_id, DATA: dict(content.data)}


def zalo_content(message: Message, template_id: str = "") -> ZaloContent:
    """A Zalo message's content, its template `template_id` unless it names one; ValueError when
    it has no template at all, or data that is not a table."""
    extra = message.extra or {}
    template = extra.get(TEMPLATE_ID) or template_id
    if not template:
        raise ValueError(f"message has no {TEMPLATE_ID} (extra.{TEMPLATE_ID} or route option)")
    data = extra.get(DATA, {})
    if not isinstance(data, Mapping):
        raise ValueError(f"extra.{DATA} must be a table of template fields")
    return ZaloContent(str(template), data)
