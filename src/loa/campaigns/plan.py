"""The campaign plan: the TOML file an operator writes, validated before anything is queued.

```toml
name = "Zika warning, Ho Chi Minh City"
lane = "high"                       # emergency | high | normal | bulk
channels = ["zalo", "sms"]          # fallback order; each of sms, zalo, fcm, email
sms_ascii = false                   # true: strip diacritics so SMS fit 160-character parts
language = "vi"                     # the templates of whoever has no `lang`, or one not below
fallback_after = { zalo = "10m" }   # no delivered receipt within 10 min: sent by the next channel
                                    # ("10m" alone: every channel with receipts but the last)
fallback_on_failure = true          # a permanent failure (not the template's) or one that gave
                                    # up after its retries goes on to the next channel too

[templates]                         # in the plan's `language`
sms = "Bo Y te: {{ name }} oi, ..."
zalo = { template_id = "123456", data = { name = "{{ name }}" } }
# email = { subject = "...", body = "..." }     fcm = { title = "...", body = "..." }

[templates.en]                      # for recipients whose `lang` column says en (or en-US ...)
sms = "Ministry of Health: {{ name }}, ..."
zalo = { template_id = "123457", data = { name = "{{ name }}" } }

[audience]                          # every key optional; all given must match
regions = ["79"]                    # province codes (text, so "01" keeps its zero)
tags = ["pregnant"]                 # the row's `tags` column (split on ',' or ';') has any
where = { district = ["760", "769"] }   # column = value or list of values

[schedule]
start = 2026-12-01T08:00:00+07:00   # needs an offset; left out: when the campaign is launched
expires = "48h"                     # a date-time, or a duration after start (or launch)
timezone = "Asia/Ho_Chi_Minh"
quiet_hours = "21:00-07:00"         # held, except on the emergency lane
send_at = "due_date - 3d at 08:00"  # per recipient, from a column (see schedule.SendAt)

[limits]
rate = 200                          # messages per second for this campaign
frequency_cap = "7d"                # skip whoever another campaign reached within 7 days

[followup]                          # a question the message asks (see loa.followups)
id = "checkin-day1"
window = "72h"                      # replies count this long after the message was accepted
options = [
  { code = "1", label = "Binh thuong", keywords = ["1", "binh thuong"] },
  { code = "2", label = "Dau nhe", keywords = ["2", "đau nhẹ", "dau nhe"] },
  { code = "3", label = "Sot cao / kho tho", keywords = ["3"], urgent = true },
]
```

Every language is written the same way, `[templates.vi]` too (then `[templates]` has no channel
keys of its own); each language has a template for every channel of the plan.

`load_plan(path)` returns a `Plan` or raises PlanError naming the file, the dotted key and the
reason: "plan.toml: schedule.start: needs a time zone, e.g. 2026-12-01T08:00:00+07:00".
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from types import NoneType, UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from loa.campaigns.schedule import SendAt, format_duration, parse_duration
from loa.campaigns.templates import check_syntax
from loa.engine.quiet import DEFAULT_TIMEZONE, QuietHours, zone
from loa.errors import PlanError
from loa.message import Lane
from loa.settings import ConfigModel, describe_errors, parse_toml, read_bytes, read_toml
from loa.sms import to_ascii

Channel = Literal["sms", "zalo", "fcm", "email"]
CHANNELS: tuple[Channel, ...] = ("sms", "zalo", "fcm", "email")
_TAG_SEPARATORS = re.compile(r"[,;]")
_TIME_EXAMPLE = "2026-12-01T08:00:00+07:00"
_NOT_WORD = re.compile(r"[^A-Z0-9]+")
# a language code: ISO 639 (vi, en, hmn, ede), optionally with a region or script (vi-vn)
RECEIPT_CHANNELS: tuple[Channel, ...] = ("zalo", "sms")  # channels whose providers report delivery
MIN_FALLBACK_AFTER = timedelta(seconds=1)
MAX_FALLBACK_AFTER = timedelta(hours=72)  # a sent message waits this long for its receipt at most
_LANGUAGE = re.compile(r"[a-z]{2,3}(?:-[a-z0-9]{2,8})*", re.IGNORECASE)


def _template(value: str) -> str:
    if not value.strip():
        raise ValueError("is empty")
    return check_syntax(value)


def _channel(value: Any) -> Any:
    if not isinstance(value, str):
        return value  # the Literal says what is expected
    name = value.strip().lower()
    if name not in CHANNELS:
        near = difflib.get_close_matches(name, CHANNELS, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ValueError(f"unknown channel; expected one of {', '.join(CHANNELS)}{hint}")
    return name


def _code(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError('write each code as text in quotes, e.g. "79" or "01"')
    if not value.strip():
        raise ValueError("is empty")
    return value.strip().upper()


def _tag(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty tag in quotes")
    return value.strip().casefold()


def _where_values(value: Any) -> frozenset[str]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("an empty list matches nobody; give at least one value")
    found = set()
    for item in values:
        if isinstance(item, bool) or not isinstance(item, str | int):
            raise ValueError("expected text or a whole number, or a list of them")
        found.add(str(item).strip())
    return frozenset(found)


def _aware(value: Any, *, durations: bool = False) -> Any:
    """A TOML date-time with an offset, or ISO text with one; durations too if allowed."""
    also = " or a duration like '48h'" if durations else ""
    if isinstance(value, str):
        text = value.strip()
        if durations and not (text[:4].isdigit() and text[4:5] == "-"):
            return parse_duration(text)
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"expected a date-time like {_TIME_EXAMPLE}{also}") from None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"needs a time zone, e.g. {_TIME_EXAMPLE}")
        return value
    if isinstance(value, date | time):
        raise ValueError(f"needs a date, a time and a time zone, e.g. {_TIME_EXAMPLE}")
    if durations and isinstance(value, timedelta):
        return value
    raise ValueError(f"expected a date-time like {_TIME_EXAMPLE}{also}")


def _duration(value: Any) -> Any:
    return value if isinstance(value, timedelta) else parse_duration(value)


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)
]
Template = Annotated[str, Field(min_length=1), AfterValidator(_template)]


class EmailTemplate(ConfigModel):
    """A plain-text email: `{ subject = "...", body = "..." }`."""

    subject: Template
    body: Template


class FcmTemplate(ConfigModel):
    """A push notification: `{ title = "...", body = "..." }`."""

    title: Template
    body: Template


class ZaloTemplate(ConfigModel):
    """A Zalo ZNS message: the id of a template approved by Zalo, and its parameters."""

    template_id: str = Field(min_length=1)
    data: dict[str, Template] = Field(default_factory=dict)

    @field_validator("template_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ChannelTemplates(ConfigModel):
    """One language's templates: one per channel of the plan, none for a channel it does not use."""

    sms: Template | None = None
    email: EmailTemplate | None = None
    zalo: ZaloTemplate | None = None
    fcm: FcmTemplate | None = None

    def given(self) -> list[Channel]:
        """The channels that have a template here."""
        return [channel for channel in CHANNELS if getattr(self, channel) is not None]


class Templates(ChannelTemplates):
    """The plan's `[templates]`: channel templates in the plan's `language`, and a table of
    channel templates per other language (`[templates.en]`), keyed by language code."""

    model_config = ConfigDict(extra="allow", frozen=True, allow_inf_nan=False)
    __pydantic_extra__: dict[str, ChannelTemplates] = Field(init=False)

    @model_validator(mode="before")
    @classmethod
    def _language_keys(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        for key in data:
            if key in CHANNELS:
                continue
            if not isinstance(key, str) or not _LANGUAGE.fullmatch(key):
                near = difflib.get_close_matches(str(key), CHANNELS, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ValueError(
                    f"{key!r} is neither a channel ({', '.join(CHANNELS)}) nor a language code "
                    f'like "vi" or "en"{hint}'
                )
            if key != key.lower():
                raise ValueError(f'language {key!r}: write the code in lower case, "{key.lower()}"')
        return data

    def languages(self, default: str) -> dict[str, ChannelTemplates]:
        """Each language's channel templates: the top-level ones are the `default` language's."""
        tables = dict(self.__pydantic_extra__ or {})
        if self.given() or not tables:
            own = {channel: getattr(self, channel) for channel in self.given()}
            tables = {default: ChannelTemplates.model_construct(**own), **tables}
        return tables


class Audience(ConfigModel):
    """Who is in the campaign, out of the audience file: every condition given must hold.

    Region codes are compared upper-cased, tags case-insensitively, `where` values exactly
    (white space around a cell is ignored). A row's region is its `region` column.
    """

    regions: frozenset[Annotated[str, BeforeValidator(_code)]] | None = None
    tags: frozenset[Annotated[str, BeforeValidator(_tag)]] | None = None
    where: dict[str, Annotated[frozenset[str], BeforeValidator(_where_values)]] = Field(
        default_factory=dict
    )

    @field_validator("regions", "tags", mode="before")
    @classmethod
    def _a_list(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, list | tuple | set | frozenset):
            raise ValueError('expected a list, e.g. ["79"]')
        if not value:
            raise ValueError("an empty list matches nobody; leave the key out to match everyone")
        return value

    @field_validator("where")
    @classmethod
    def _columns(cls, where: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
        for column in where:
            if not column.strip():
                raise ValueError("a column name is empty")
        return where

    @property
    def columns(self) -> frozenset[str]:
        """The audience columns these conditions read."""
        used = set(self.where)
        if self.regions is not None:
            used.add("region")
        if self.tags is not None:
            used.add("tags")
        return frozenset(used)

    def matches(self, row: Mapping[str, str]) -> bool:
        """Whether one audience row (column -> cell text) is in the campaign."""
        if self.regions is not None and (row.get("region") or "").strip().upper() not in (
            self.regions
        ):
            return False
        if self.tags is not None:
            cell = row.get("tags") or ""
            if self.tags.isdisjoint(tag.strip().casefold() for tag in _TAG_SEPARATORS.split(cell)):
                return False
        return all(
            (row.get(column) or "").strip() in allowed for column, allowed in self.where.items()
        )


class Schedule(ConfigModel):
    """When the campaign sends, in which time zone, and when its advice goes stale."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    timezone: str = DEFAULT_TIMEZONE
    start: datetime | None = Field(default=None, description="None: when launched")
    expires: datetime | Duration | None = Field(
        default=None, description="an instant, or a duration after the start"
    )
    quiet_hours: Annotated[QuietHours, PlainSerializer(str, return_type=str)] | None = None
    send_at: Annotated[SendAt, PlainSerializer(str, return_type=str)] | None = None

    @field_validator("timezone", mode="before")
    @classmethod
    def _zone(cls, value: Any) -> Any:
        return zone(value).key

    @field_validator("start", mode="before")
    @classmethod
    def _start(cls, value: Any) -> Any:
        return None if value is None else _aware(value)

    @field_validator("expires", mode="before")
    @classmethod
    def _expires(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None:
            return None
        expires = _aware(value, durations=True)
        start = info.data.get("start")
        if isinstance(expires, datetime) and start is not None and expires <= start:
            raise ValueError(f"must be after schedule.start ({start.isoformat()})")
        # (a duration is at most ten years: only a start near the year 9999 overflows)
        latest = datetime.max.replace(tzinfo=UTC)
        if isinstance(expires, timedelta) and start is not None and start > latest - expires:
            raise ValueError("falls after the year 9999 (schedule.start + expires)")
        return expires

    @field_validator("quiet_hours", mode="before")
    @classmethod
    def _quiet_hours(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or isinstance(value, QuietHours):
            return value
        return QuietHours.parse(value, info.data.get("timezone", DEFAULT_TIMEZONE))

    @field_validator("send_at", mode="before")
    @classmethod
    def _send_at(cls, value: Any) -> Any:
        if value is None or isinstance(value, SendAt):
            return value
        return SendAt.parse(value)

    @property
    def tz(self) -> ZoneInfo:
        """The plan's time zone."""
        return ZoneInfo(self.timezone)

    def starts_at(self, launched: datetime) -> datetime:
        """When sending begins for a campaign launched at `launched`."""
        return self.start if self.start is not None else launched

    def expires_at(self, launched: datetime) -> datetime | None:
        """When the advice goes stale for a campaign launched at `launched` (None: never)."""
        if isinstance(self.expires, timedelta):
            return self.starts_at(launched) + self.expires
        return self.expires


class Limits(ConfigModel):
    """The campaign's own limits, on top of each route's."""

    rate: float | None = Field(default=None, gt=0, description="messages per second")
    frequency_cap: Duration | None = Field(
        default=None, description="skip anyone another campaign messaged within this window"
    )


MAX_FOLLOWUP_WINDOW = timedelta(days=30)  # how far back a reply is matched to its question
# never an answer: a bare opt-out keyword ends every message to the person (settings.events)
OPTOUT_WORDS = frozenset({"STOP", "TU CHOI", "HUY"})


def keyword(value: str) -> str:
    """A reply or an answer keyword as they are compared: upper case ASCII words."""
    return _NOT_WORD.sub(" ", to_ascii(value).upper()).strip()


def _keyword(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not keyword(value):
        raise ValueError('expected a keyword in quotes, e.g. "1" or "khoe"')
    if keyword(value) in OPTOUT_WORDS:
        raise ValueError(f"{value!r} is an opt-out keyword: a reply of it opts the person out")
    return keyword(value)


class FollowupOption(ConfigModel):
    """One answer to a follow-up question: its code, label, keywords, and whether it is urgent."""

    code: Annotated[str, BeforeValidator(_keyword)]
    label: str = Field(min_length=1, max_length=200)
    keywords: list[Annotated[str, BeforeValidator(_keyword)]] = Field(default_factory=list)
    urgent: bool = Field(default=False, strict=True)

    @property
    def words(self) -> frozenset[str]:
        """What a reply must be (as `keyword` compares it) to be this answer."""
        return frozenset({self.code, *self.keywords})


class Followup(ConfigModel):
    """A question the campaign's message asks: replies within `window` are answers to it."""

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.-]+$")
    window: Duration
    options: list[FollowupOption] = Field(min_length=1, max_length=20)
    remind_after: Duration | None = Field(
        default=None, description="remind whoever has not answered this long after the question"
    )
    reminder: str | None = Field(
        default=None, min_length=1, max_length=1000, description="the reminder's text (SMS)"
    )

    @model_validator(mode="after")
    def _reminder(self) -> Followup:
        if (self.remind_after is None) != (self.reminder is None or not self.reminder.strip()):
            raise ValueError("remind_after and reminder (its text) go together, or neither")
        if self.reminder is not None and ("{{" in self.reminder or "{%" in self.reminder):
            raise ValueError("reminder is sent as it is written: it cannot use {{ }} fields")
        if self.remind_after is not None and self.remind_after >= self.window:
            raise ValueError(
                f"remind_after ({format_duration(self.remind_after)}) must end before the "
                f"window ({format_duration(self.window)}): a reminder after it asks in vain"
            )
        return self

    @field_validator("window")
    @classmethod
    def _window(cls, window: timedelta) -> timedelta:
        if window > MAX_FOLLOWUP_WINDOW:
            raise ValueError(f"is longer than {format_duration(MAX_FOLLOWUP_WINDOW)}")
        return window

    @field_validator("options")
    @classmethod
    def _distinct(cls, options: list[FollowupOption]) -> list[FollowupOption]:
        owner: dict[str, str] = {}
        for option in options:
            for word in sorted(option.words):
                if owner.setdefault(word, option.code) != option.code:
                    raise ValueError(
                        f"{word!r} is a keyword of both option {owner[word]!r} and {option.code!r}"
                    )
            if sum(other.code == option.code for other in options) > 1:
                raise ValueError(f"option code {option.code!r} is given twice")
        return options

    def match(self, reply: str) -> FollowupOption | None:
        """The option a reply is (any case, with or without diacritics); None: no answer."""
        words = keyword(reply)
        return next((option for option in self.options if words in option.words), None)


class Plan(ConfigModel):
    """A campaign plan: audience, channels, templates, schedule and limits."""

    name: str = Field(min_length=1, max_length=200)
    lane: Annotated[Lane, PlainSerializer(lambda lane: lane.label, return_type=str)]
    channels: list[Annotated[Channel, BeforeValidator(_channel)]]
    sms_ascii: bool = Field(default=False, strict=True)
    language: str = Field(default="vi", description="for a recipient with no or another `lang`")
    templates: Templates = Field(default_factory=Templates)
    audience: Audience = Field(default_factory=Audience)
    schedule: Schedule = Field(default_factory=Schedule)
    limits: Limits = Field(default_factory=Limits)
    followup: Followup | None = None
    fallback_after: dict[Channel, Duration] = Field(
        default_factory=dict,
        description="per channel: no delivered receipt within this long, the next channel",
    )
    fallback_on_failure: bool = Field(
        default=True,
        strict=True,
        description="a permanent failure (not the template's), or giving up, falls back too",
    )

    @field_validator("fallback_after", mode="before")
    @classmethod
    def _fallback_after(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str):  # one wait for every channel that has receipts but the last
            channels = info.data.get("channels") or []
            waits = {c: value for c in channels[:-1] if c in RECEIPT_CHANNELS}
            if channels and not waits:
                raise ValueError(
                    "no channel can wait: only zalo and sms report delivery, and the last "
                    "channel has none to fall back to"
                )
            return waits
        if not isinstance(value, dict):
            raise ValueError('expected a duration like "10m", or a table like { zalo = "10m" }')
        return value

    @field_validator("fallback_after")
    @classmethod
    def _fallback_waits(cls, value: dict[Channel, timedelta]) -> dict[Channel, timedelta]:
        for channel, wait in value.items():
            if channel not in RECEIPT_CHANNELS:
                raise ValueError(
                    f"{channel}: no delivery receipts come from {channel}, so nothing says a "
                    f"message was delivered; only {' and '.join(RECEIPT_CHANNELS)} can wait"
                )
            if not MIN_FALLBACK_AFTER <= wait <= MAX_FALLBACK_AFTER:
                low, high = format_duration(MIN_FALLBACK_AFTER), format_duration(MAX_FALLBACK_AFTER)
                raise ValueError(
                    f"{channel}: {format_duration(wait)} is out of range; give {low} to {high}"
                )
        return value

    @field_validator("name")
    @classmethod
    def _named(cls, name: str) -> str:
        if not name.strip():
            raise ValueError("is blank")
        return name.strip()

    @field_validator("lane", mode="before")
    @classmethod
    def _lane(cls, value: Any) -> Any:
        if isinstance(value, Lane):
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected one of {', '.join(lane.label for lane in Lane)}")
        return Lane.parse(value)

    @field_validator("channels", mode="before")
    @classmethod
    def _channel_list(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            raise ValueError('expected a list in fallback order, e.g. ["zalo", "sms"]')
        if not value:
            raise ValueError("needs at least one channel")
        return value

    @field_validator("channels")
    @classmethod
    def _once_each(cls, channels: list[Channel]) -> list[Channel]:
        for channel in channels:
            if channels.count(channel) > 1:
                raise ValueError(f"{channel!r} is listed more than once")
        return channels

    @field_validator("language", mode="before")
    @classmethod
    def _language(cls, value: Any) -> Any:
        if not isinstance(value, str) or not _LANGUAGE.fullmatch(value.strip()):
            raise ValueError('expected a language code like "vi" or "en"')
        return value.strip().lower()

    @model_validator(mode="after")
    def _a_template_per_channel(self) -> Plan:
        tables = self.templates.languages(self.language)
        extra = self.templates.__pydantic_extra__ or {}
        flat = bool(self.templates.given()) or not extra  # the plan language's are [templates]
        problems = []
        if flat and self.language in extra:
            problems.append(
                f"templates.{self.language}: the plan's language has its templates twice "
                f"(in [templates] and in [templates.{self.language}])"
            )
        if self.language not in tables:
            problems.append(
                f"templates.{self.language}: missing; language = {self.language!r} needs "
                f"templates (given for {', '.join(tables)})"
            )
        for language, table in tables.items():
            own = flat and language == self.language
            prefix = "templates." if own else f"templates.{language}."
            given = table.given()
            problems += [
                f"{prefix}{channel}: missing; channels lists {channel!r} but it has no template"
                for channel in self.channels
                if channel not in given
            ] + [
                f"{prefix}{channel}: given but {channel!r} is not in channels"
                for channel in given
                if channel not in self.channels
            ]
        problems += [
            f"fallback_after.{channel}: "
            + (
                f"{channel!r} is not in channels"
                if channel not in self.channels
                else f"{channel!r} is the last channel: there is none to fall back to"
            )
            for channel in self.fallback_after
            if channel not in self.channels[:-1]
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def languages(self) -> dict[str, ChannelTemplates]:
        """The channel templates of each language, the plan's `language` first."""
        tables = self.templates.languages(self.language)
        return {self.language: tables[self.language], **tables}

    def language_of(self, lang: str | None) -> str:
        """The language a recipient with this `lang` cell is sent: theirs when the plan has
        templates in it ('vi-VN' and 'VI' are 'vi'), else the plan's `language`."""
        if not lang:
            return self.language
        code = lang.strip().lower().replace("_", "-")
        tables = self.templates.languages(self.language)
        if code in tables:
            return code
        primary = code.split("-")[0]
        return primary if primary in tables else self.language

    @property
    def holds_for_quiet_hours(self) -> bool:
        """Whether quiet hours hold this campaign's messages (never on the emergency lane)."""
        return self.lane is not Lane.EMERGENCY and self.schedule.quiet_hours is not None

    def hold_until(self, moment: datetime) -> datetime | None:
        """When a message held at `moment` (aware) may go, or None if it may go now."""
        quiet = self.schedule.quiet_hours
        if quiet is None or not self.holds_for_quiet_hours or not quiet.contains(moment):
            return None
        return quiet.next_end(moment)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "plan") -> Plan:
        """Validate a plain mapping (a parsed TOML file), turning every problem into PlanError."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PlanError(f"{source}: {describe_plan_errors(exc)}") from None


def load_plan(path: Path | str) -> Plan:
    """Read and validate a plan file; PlanError names the file, the dotted key and the reason."""
    path = Path(path)
    data = read_toml(path, what="plan file", error=PlanError)
    return Plan.from_mapping(data, source=str(path))


def read_plan(path: Path) -> tuple[Plan, str]:
    """Read a plan file once: the plan and the exact text it was validated from."""
    data = read_bytes(path, "plan file", PlanError)
    mapping = parse_toml(data, f"plan file {path}", PlanError)
    return Plan.from_mapping(mapping, source=str(path)), data.decode("utf-8")


def describe_plan_errors(exc: ValidationError) -> str:
    """settings.describe_errors, with 'did you mean' inside optional tables and readable values."""
    clauses = []
    for error in exc.errors():
        loc = error["loc"]
        given = _shown(error["input"])
        if isinstance(given, str) and repr(given) in error["msg"]:
            given = {}  # the message shows it already (describe_errors leaves tables out)
        detail: InitErrorDetails = {"type": error["type"], "loc": loc, "input": given}
        if "ctx" in error:
            detail["ctx"] = error["ctx"]
        if error["type"] == "extra_forbidden" and len(loc) > 1:
            table = ".".join(str(part) for part in loc[:-1])
            detail["loc"] = loc[-1:]
            single = ValidationError.from_exception_data(exc.title, [detail])
            clauses.append(describe_errors(single, prefix=table, model=_table(loc[:-1])))
        else:
            single = ValidationError.from_exception_data(exc.title, [detail])
            clauses.append(describe_errors(single, model=Plan))
    return "; ".join(clauses)


def _shown(value: Any) -> Any:
    """A value as an error message shows it: date-times in ISO form, long text shortened."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, str) and len(value) > 60:
        return value[:57] + "..."
    return value


def _table(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model of the table at `loc` in a plan, looking through optional tables."""
    current: type[BaseModel] = Plan
    for part in loc:
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        if get_origin(annotation) in (Union, UnionType):
            annotation = next((a for a in get_args(annotation) if a is not NoneType), None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        current = annotation
    return current
