"""Campaign routes: create, dry run, approve, launch, steer, watch, report."""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from loa.access.identity import Principal
from loa.api import uploads
from loa.api.context import (
    ApiContext,
    audited,
    context,
    forget_when_done,
    record,
    refuse_if_planning,
)
from loa.api.models import (
    CAMPAIGN_ID,
    Approval,
    CampaignCreated,
    CampaignRow,
    CampaignStatus,
    DryRun,
    LaunchResult,
    StateChange,
    dry_run,
)
from loa.api.security import Approver, Operator, Viewer
from loa.campaigns.record import Campaign, State
from loa.campaigns.service import needs_two
from loa.engine.embedded import private_dir
from loa.errors import ApiError, CampaignError

router = APIRouter(prefix="/api/v1/campaigns", tags=["campaigns"])

Ctx = Annotated[ApiContext, Depends(context)]
CampaignId = Annotated[str, PathParam(pattern=CAMPAIGN_ID, description="a campaign id")]


async def _campaign(ctx: ApiContext, campaign_id: str) -> Campaign:
    """The campaign, or a 404."""
    try:
        return await ctx.services.campaigns.store.get(campaign_id)
    except CampaignError:
        raise ApiError(
            f"no campaign {campaign_id!r}", code="campaign_not_found", status=404
        ) from None


def approval_of(fields: dict[str, str]) -> Approval:
    """The two-person rule as stored with a campaign (one made outside the API needs approval)."""
    return Approval(
        required=needs_two(fields),
        reason=fields.get("approval_reason", "created outside the API"),
        creator=fields.get("creator", ""),
        approved_by=fields.get("approved_by", ""),
        plan_sha256=fields.get("plan_sha256", ""),
        audience_sha256=fields.get("audience_sha256", ""),
    )


@router.post(
    "",
    name="campaign.create",
    status_code=201,
    openapi_extra=uploads.UPLOAD_BODY,
    summary="Create a draft campaign from a plan and an audience",
)
async def create_campaign(request: Request, who: Operator, ctx: Ctx) -> CampaignCreated:
    """Upload the plan (TOML) and the audience; both are checked, then pinned with the campaign.

    The plan is stored whole and the audience kept in the campaign's own directory: approval
    covers exactly this content, and launch refuses anything else.
    """
    async with audited(request, who, "campaign.create") as note:
        upload = await uploads.receive(request, ctx.storage)
        try:
            campaign = await ctx.services.campaigns.create(
                upload.plan, upload.audience, who, upload=True
            )
        finally:
            upload.remove()
        approval = approval_of(campaign.fields)
        note.campaign = campaign.id
        required = "required" if approval.required else "not required"
        note.detail = f"approval {required}: {approval.reason}"
    return CampaignCreated(
        id=campaign.id,
        name=campaign.name,
        state=str(campaign.state),
        lane=campaign.fields.get("lane", ""),
        approval=approval_of(campaign.fields),
    )


@router.post(
    "/validate",
    name="campaign.validate_upload",
    openapi_extra=uploads.UPLOAD_BODY,
    summary="Dry run of a plan and an audience, nothing stored",
)
async def validate_upload(request: Request, who: Operator, ctx: Ctx) -> DryRun:
    """Everything planning would do, counted; the files are deleted afterwards."""
    async with audited(request, who, "campaign.validate_upload") as note:
        upload = await uploads.receive(request, ctx.storage)
        try:
            report = await ctx.services.campaigns.validate(upload.plan, upload.audience)
        finally:
            upload.remove()
        note.detail = f"{report.total} rows, {report.queued} would be queued"
    return dry_run(report.to_json())


@router.get("", name="campaign.list", summary="The newest campaigns")
async def list_campaigns(
    who: Viewer, ctx: Ctx, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> list[CampaignRow]:
    """Newest first, with their state."""
    rows = await ctx.services.campaigns.list(limit)
    return [CampaignRow.model_validate(row) for row in rows]


@router.get("/{campaign_id}", name="campaign.status", summary="State and counters")
async def campaign_status(campaign_id: CampaignId, who: Viewer, ctx: Ctx) -> CampaignStatus:
    """What `loa campaign status --json` shows, and the approval."""
    campaign = await _campaign(ctx, campaign_id)
    status: dict[str, Any] = await ctx.services.campaigns.status(campaign_id)
    return CampaignStatus.model_validate({**status, "approval": approval_of(campaign.fields)})


@router.post("/{campaign_id}/validate", name="campaign.validate", summary="Dry run of a campaign")
async def validate_campaign(
    request: Request, campaign_id: CampaignId, who: Operator, ctx: Ctx
) -> DryRun:
    """The dry run of a stored campaign: its stored plan on its pinned audience (what approval
    covers); refused when either differs from what was pinned at create."""
    async with audited(request, who, "campaign.validate", campaign_id):
        await _campaign(ctx, campaign_id)
        report = await ctx.services.campaigns.review(campaign_id)
    return dry_run(report.to_json())


@router.post("/{campaign_id}/approve", name="campaign.approve", summary="Approve a draft")
async def approve_campaign(
    request: Request, campaign_id: CampaignId, who: Approver, ctx: Ctx
) -> StateChange:
    """A second person approves: never the creator, nor anyone in their token's lineage."""
    async with audited(request, who, "campaign.approve", campaign_id):
        await _campaign(ctx, campaign_id)
        state = await ctx.services.campaigns.approve(campaign_id, who)
    return StateChange(id=campaign_id, state=str(state))


@router.post(
    "/{campaign_id}/launch",
    name="campaign.launch",
    summary="Launch: plan the audience onto the queues",
    responses={202: {"model": LaunchResult, "description": "planning goes on in the background"}},
)
async def launch_campaign(
    request: Request, response: Response, campaign_id: CampaignId, who: Operator, ctx: Ctx
) -> LaunchResult:
    """Answers 200 with the report once planned, or 202 while a large audience is planned."""
    async with audited(request, who, "campaign.launch", campaign_id) as note:
        refuse_if_planning(ctx, campaign_id)
        campaign = await _campaign(ctx, campaign_id)
        if campaign.state is State.DRAFT:
            await _approve_automatically(request, who, ctx, campaign)
        campaigns = ctx.services.campaigns
        count = await campaigns.partitions_for(campaign_id)
        task = asyncio.create_task(campaigns.launch_in_processes(campaign_id, count))
        ctx.planning[campaign_id] = task
        forget_when_done(ctx, campaign_id, task)
        done, _ = await asyncio.wait({task}, timeout=ctx.settings.api.launch_wait)
        report = dry_run(task.result().to_json()) if task in done else None
        note.detail = "planned" if report else "planning in the background"
    state = (await _campaign(ctx, campaign_id)).state
    if report is None:
        response.status_code = 202
    planning: Literal["done", "running"] = "done" if report else "running"
    return LaunchResult(id=campaign_id, state=str(state), planning=planning, report=report)


async def _approve_automatically(
    request: Request, who: Principal, ctx: ApiContext, campaign: Campaign
) -> None:
    """A draft the two-person rule does not cover is approved by its launch, and audited."""
    reason = await ctx.services.campaigns.approve_automatically(campaign.id)
    await record(request, who, "campaign.approve", campaign.id, detail=f"automatic: {reason}")


async def _act(
    request: Request, who: Principal, ctx: ApiContext, campaign_id: str, action: str
) -> StateChange:
    async with audited(request, who, f"campaign.{action}", campaign_id):
        await _campaign(ctx, campaign_id)
        state = await ctx.services.campaigns.act(campaign_id, action)
    return StateChange(id=campaign_id, state=str(state))


@router.post("/{campaign_id}/pause", name="campaign.pause", summary="Pause within a second")
async def pause_campaign(
    request: Request, campaign_id: CampaignId, who: Operator, ctx: Ctx
) -> StateChange:
    """Hold every message not yet sent, on every worker."""
    return await _act(request, who, ctx, campaign_id, "pause")


@router.post("/{campaign_id}/resume", name="campaign.resume", summary="Resume a paused campaign")
async def resume_campaign(
    request: Request, campaign_id: CampaignId, who: Operator, ctx: Ctx
) -> StateChange:
    """Let a paused campaign send again."""
    return await _act(request, who, ctx, campaign_id, "resume")


@router.post("/{campaign_id}/cancel", name="campaign.cancel", summary="Cancel for good")
async def cancel_campaign(
    request: Request, campaign_id: CampaignId, who: Operator, ctx: Ctx
) -> StateChange:
    """What was not sent is dropped and counted."""
    return await _act(request, who, ctx, campaign_id, "cancel")


@router.get(
    "/{campaign_id}/failed",
    name="campaign.failed_report",
    summary="Who did not get it, and why (CSV)",
    response_class=FileResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "recipient,route,line,reason"}},
)
async def failed_report(
    request: Request, campaign_id: CampaignId, who: Operator, ctx: Ctx
) -> FileResponse:
    """Phone numbers leave the system only this way: the download is audited."""
    async with audited(request, who, "campaign.failed_report", campaign_id) as note:
        await _campaign(ctx, campaign_id)
        private_dir(ctx.uploads)
        handle, name = tempfile.mkstemp(prefix="failed-", suffix=".csv", dir=ctx.uploads)
        os.close(handle)
        try:
            rows = await ctx.services.campaigns.write_failed(campaign_id, Path(name))
        except BaseException:
            os.unlink(name)
            raise
        note.detail = f"{rows} rows"
    return FileResponse(
        name,
        media_type="text/csv",
        filename=f"failed-{campaign_id}.csv",
        background=BackgroundTask(os.unlink, name),
    )
