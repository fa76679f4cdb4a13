"""Follow-up routes: answers to a campaign's question summarised, and replies taken in."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from pydantic import BaseModel

from loa.access.identity import Role
from loa.api.campaigns import _campaign
from loa.api.context import ApiContext, audited, context
from loa.api.models import CAMPAIGN_ID
from loa.api.security import Operator, Viewer
from loa.followups.service import Followups

router = APIRouter(prefix="/api/v1", tags=["followups"])

Ctx = Annotated[ApiContext, Depends(context)]
CampaignId = Annotated[str, PathParam(pattern=CAMPAIGN_ID, description="a campaign id")]


class OptionCount(BaseModel):
    """One answer option and how many people gave it."""

    code: str
    label: str
    urgent: bool
    count: int


class Unparsed(BaseModel):
    """A reply to the question that matched no option (the number masked below operator)."""

    at: int
    text: str
    region: str
    phone: str


class Reminders(BaseModel):
    """The question's reminder: after how long, how many were sent and skipped (answered)."""

    after: str
    sent: int
    skipped: int


class Answers(BaseModel):
    """Answers per option, per region and per day; the response rate; the unparsed replies."""

    campaign: str
    question: str | None
    sent: int
    answered: int
    response_rate: float
    options: list[OptionCount]
    by_region: dict[str, dict[str, int]]
    by_day: dict[str, dict[str, int]]
    unparsed_count: int
    unparsed: list[Unparsed]
    reminder: Reminders | None = None


class SyncResult(BaseModel):
    """What one sync stored (counts only)."""

    read: int
    answers: int
    changed: int
    unparsed: int
    urgent: int
    other: int


@router.get(
    "/campaigns/{campaign_id}/answers", name="followups.answers", summary="Answers to its question"
)
async def answers(campaign_id: CampaignId, who: Viewer, ctx: Ctx) -> Answers:
    """Counts per answer option, region and day; numbers of unparsed replies masked for viewers."""
    await _campaign(ctx, campaign_id)
    followups = Followups(ctx.settings, ctx.services.redis)
    summary = await followups.summary(campaign_id, numbers=who.role >= Role.OPERATOR)
    return Answers.model_validate(summary)


@router.post("/followups/sync", name="followups.sync", summary="Store new replies as answers")
async def sync(request: Request, who: Operator, ctx: Ctx) -> SyncResult:
    """Replies to open questions are stored once each; urgent answers open hotline cases."""
    async with audited(request, who, "followups.sync") as note:
        report = await Followups(ctx.settings, ctx.services.redis).sync()
        note.detail = ", ".join(f"{k} {v}" for k, v in report.to_json().items() if v)
    return SyncResult.model_validate(report.to_json())
