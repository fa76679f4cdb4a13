"""A campaign per province: queued, sent, delivered and answers, as the dashboard's bars show."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from loa.api.campaigns import _campaign
from loa.api.context import ApiContext, context
from loa.api.models import CAMPAIGN_ID
from loa.api.security import Viewer
from loa.appointments.provinces import province_code
from loa.cap.provinces import province
from loa.followups.service import Followups

router = APIRouter(prefix="/api/v1/campaigns", tags=["campaigns"])

Ctx = Annotated[ApiContext, Depends(context)]
CampaignId = Annotated[str, PathParam(pattern=CAMPAIGN_ID, description="a campaign id")]
NO_REGION = "?"  # the planner's name for rows without a region


class ProvinceRow(BaseModel):
    """One province (or a region of the audience that names none) and its counts."""

    code: str = Field(description="the province's code since 2025, or the region as written")
    name: str = Field(description="the province's name; empty when the region names none")
    province: bool = Field(description="whether the region is one of the 34 provinces")
    regions: list[str] = Field(description="the audience's regions counted here")
    queued: int
    sent: int | None = Field(description="null when the campaign does not count it per region")
    delivered: int | None
    undelivered: int | None
    answers: int = Field(description="answers to the campaign's question (one of its options)")


class CampaignProvinces(BaseModel):
    """Per province, by code; then regions that are no province, and rows without a region."""

    campaign: str
    counted: bool = Field(
        description="whether sent and delivered are counted per region: the planner batches "
        "each region apart, up to 128 regions (more, and the column is no province list)"
    )
    provinces: list[ProvinceRow]


@router.get(
    "/{campaign_id}/provinces",
    name="campaign.provinces",
    summary="Queued, sent, delivered and answers per province",
)
async def provinces(campaign_id: CampaignId, who: Viewer, ctx: Ctx) -> CampaignProvinces:
    """The audience's `region` column read as provinces: a pre-2025 code or a province's name
    counts under the province it is part of now. Counts only, never a number."""
    await _campaign(ctx, campaign_id)
    counts, counted = await ctx.services.campaigns.by_region(campaign_id)
    summary = await Followups(ctx.settings, ctx.services.redis).summary(campaign_id)
    answers = {region: sum(codes.values()) for region, codes in summary["by_region"].items()}
    rows: dict[str, ProvinceRow] = {}
    for region in sorted({*counts, *answers}):
        row = rows.get(_code(region)) or rows.setdefault(_code(region), _row(region, counted))
        row.regions.append(region)
        for name, value in counts.get(region, {}).items():
            if name == "queued" or counted:
                setattr(row, name, (getattr(row, name) or 0) + value)
        row.answers += answers.get(region, 0)
    ordered = sorted(rows.values(), key=lambda r: (not r.province, r.code == NO_REGION, r.code))
    return CampaignProvinces(campaign=campaign_id, counted=counted, provinces=ordered)


def _code(region: str) -> str:
    """The province a region names (its code since 2025), else the region itself."""
    found = province(region) or province(province_code(region) or "")
    return found.code if found else region


def _row(region: str, counted: bool) -> ProvinceRow:
    found = province(_code(region))
    zero = 0 if counted else None
    return ProvinceRow(
        code=found.code if found else region,
        name=found.name if found else "",
        province=found is not None,
        regions=[],
        queued=0,
        sent=zero,
        delivered=zero,
        undelivered=zero,
        answers=0,
    )
