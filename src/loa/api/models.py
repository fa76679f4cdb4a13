"""The API's request and response bodies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from loa.access.tokens import TOKEN_NAME_PATTERN
from loa.log import mask

CAMPAIGN_ID = r"^[A-Za-z0-9._-]{1,64}$"
MAX_ADDRESSES = 10_000

Address = Annotated[str, StringConstraints(min_length=1, max_length=320)]


class Strict(BaseModel):
    """A request body: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class ErrorDetail(BaseModel):
    """What went wrong: a stable code for programs, a message for people."""

    code: str = Field(examples=["illegal_transition"])
    message: str


class ErrorBody(BaseModel):
    """Every error the API answers."""

    error: ErrorDetail


class Health(BaseModel):
    """A health or readiness answer."""

    status: str


class RouteBindCount(BaseModel):
    """A route's receiving binds (SMPP transceivers and receivers) over its live workers."""

    up: int = Field(description="binds up now")
    down: int = Field(description="binds down, being bound again with back-off")
    workers: int = Field(description="worker processes that reported them")


class Readiness(Health):
    """Ready, with the receiving binds of each route that holds them."""

    binds: dict[str, RouteBindCount] = Field(default_factory=dict)


class Whoami(BaseModel):
    """The caller: the person, the token's name and role, and who could have kept a copy."""

    name: str = Field(description="the person")
    token: str
    role: str
    lineage: list[str] = Field(description="who minted the token, and who minted theirs")


class DryRunError(BaseModel):
    """One bad row of the audience."""

    line: int
    reason: str


class LanguageCount(BaseModel):
    """The recipients who read one language, and the SMS parts of those sent an SMS first."""

    recipients: int
    sms_parts: int


class SampleMessage(BaseModel):
    """The first planned message of a channel and language: the recipient and every phone
    number in the text masked."""

    to: str = Field(description="the address with its middle hidden")
    body: str = Field(description="the text, phone numbers in it masked (`***678`)")


class DryRun(BaseModel):
    """The dry run: everything planning would do, counted; the first bad rows with their line."""

    total: int
    queued: int
    invalid: int
    duplicate: int
    suppressed: int
    filtered: int
    capped: int
    unroutable: int
    scheduled: int = Field(0, description="queued with a send time after the campaign's start")
    past_due: int = Field(0, description="queued with a send time at or before the start")
    after_expiry: int = Field(0, description="send time after expiry: never sent, not queued")
    parts: int
    errors: list[DryRunError]
    by_route: dict[str, int]
    by_channel: dict[str, int]
    by_carrier: dict[str, int]
    by_region: dict[str, int]
    by_encoding: dict[str, int]
    by_language: dict[str, LanguageCount] = Field(
        default_factory=dict, description="per language of the recipients' templates"
    )
    problems: list[str]
    warnings: list[str] = Field(
        default_factory=list, description="it would go, but not as one may expect"
    )
    samples: dict[str, SampleMessage] = Field(
        default_factory=dict, description="per `channel/language`: its first planned message"
    )


class Approval(BaseModel):
    """The two-person rule for one campaign."""

    required: bool
    reason: str
    creator: str = Field(description="the person who created it")
    approved_by: str = Field(description="the person who approved it, or `automatic: reason`")
    plan_sha256: str = Field(default="", description="the pinned plan, as stored at create")
    audience_sha256: str = Field(default="", description="the pinned audience file")


class CampaignCreated(BaseModel):
    """A new draft campaign."""

    id: str
    name: str
    state: str
    lane: str
    approval: Approval


class CampaignRow(BaseModel):
    """A campaign in the list."""

    id: str
    name: str
    state: str
    hold: str = Field("", description="why it sends nothing now: scheduled, paused, quiet hours")
    held_until: str | None = Field(None, description="when the hold ends (ISO 8601), if known")
    queued: int


class CampaignStatus(BaseModel):
    """State and counters (`loa campaign status --json`), with the approval."""

    model_config = ConfigDict(extra="allow")

    id: str
    name: str
    state: str
    hold: str = Field("", description="why it sends nothing now: scheduled, paused, quiet hours")
    held_until: str | None = Field(None, description="when the hold ends (ISO 8601), if known")
    approval: Approval
    by_route: dict[str, dict[str, int]] = Field(default_factory=dict)


class RouteRow(BaseModel):
    """One route: what carries it and its limit, its backlog (batches), its counters (messages)."""

    route: str
    adapter: str
    channels: list[str] = Field(description="the campaign channels this route carries")
    rate: float = Field(description="per second, in `unit`; 0 means unlimited")
    unit: str
    waiting: int = Field(description="batches queued, all lanes (retries included)")
    in_flight: int = Field(description="batches a worker is sending now")
    delayed: int = Field(description="batches waiting for a retry")
    accepted: int
    failed: int
    dead: int
    expired: int
    cancelled: int
    suppressed: int
    fallback: int
    retried: int
    throttled: int
    redelivered: int
    unknown: int = Field(default=0, description="sent, but no answer came")
    possible_duplicate: int = Field(default=0, description="taken again after no answer")
    fallback_timeout: int = Field(
        default=0, description="accepted, no delivered receipt within fallback_after: sent on"
    )
    fallback_failed: int = Field(
        default=0, description="failed for good (not the template) or gave up: sent on"
    )
    binds_up: int = Field(default=0, description="receiving binds (SMPP) up over live workers")
    binds_down: int = Field(default=0, description="receiving binds down, being bound again")


class StateChange(BaseModel):
    """The state a campaign is in after an action."""

    id: str
    state: str


class LaunchResult(BaseModel):
    """A launch: planning is `done` (with its report) or still `running` in the background."""

    id: str
    state: str
    planning: Literal["done", "running"]
    report: DryRun | None = None


class InboundMessage(BaseModel):
    """A reply or other inbound message."""

    model_config = ConfigDict(extra="allow")

    id: str
    at: int
    route: str = ""
    channel: str = ""
    sender: str = ""
    recipient: str = ""
    text: str = ""
    optout: bool = False
    provider_id: str = Field(default="", description="the provider's id of it, when it gives one")


class InboundPage(BaseModel):
    """Inbound messages, oldest first; pass `next_after` as `after` for the next page."""

    items: list[InboundMessage]
    next_after: str


class Addresses(Strict):
    """Phone numbers (any usual form), e-mail addresses or OTT ids."""

    addresses: list[Address] = Field(min_length=1, max_length=MAX_ADDRESSES)


class Changed(BaseModel):
    """How many addresses an add or remove changed."""

    changed: int


class Suppressed(BaseModel):
    """Whether one address is opted out."""

    address: str
    suppressed: bool


class CheckResult(BaseModel):
    """Whether each address is opted out, in the order asked."""

    results: list[Suppressed]


class AuditRow(BaseModel):
    """One audit entry: who (the person, with the token's name and role) did what, where from,
    and how it went (`ip` is `local` for the command line, `token` is `cli` without a token)."""

    id: str
    at: int
    who: str
    role: str
    action: str
    campaign: str
    ip: str
    outcome: str
    detail: str
    token: str


class AuditPage(BaseModel):
    """Audit entries, newest first; pass `next_before` as `before` for older ones."""

    items: list[AuditRow]
    next_before: str | None


class TokenRequest(Strict):
    """A token to make."""

    name: str = Field(pattern=TOKEN_NAME_PATTERN, description="the token's name, unique")
    role: Literal["viewer", "operator", "approver", "admin"]
    person: str | None = Field(
        default=None,
        pattern=TOKEN_NAME_PATTERN,
        description="whose token it is (default: the name); a person may hold several",
    )
    days: float | None = Field(
        default=None,
        gt=0,
        le=36_500,
        description="it expires after this many days (at most api.token_max_days, if set)",
    )


class TokenInfo(BaseModel):
    """A token as listed (the token itself is never shown again)."""

    name: str
    role: str
    creator: str = Field(description="the person who minted it")
    created_ms: int
    revoked_ms: int
    person: str
    lineage: list[str]
    expires_ms: int = Field(description="0: valid until revoked")


class TokenCreated(TokenInfo):
    """A new token: `token` is shown this once; only its hash is kept."""

    token: str


def dry_run(data: dict[str, Any]) -> DryRun:
    """A planner report (`Report.to_json()`) as a response body: a sample's text may quote its
    recipient's number (a template's field), which is masked here like any phone number."""
    samples = {
        key: {**sample, "body": mask(str(sample.get("body", "")))}
        for key, sample in (data.get("samples") or {}).items()
    }
    return DryRun.model_validate({**data, "samples": samples})
