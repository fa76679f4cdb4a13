"""Appointment routes: allocate from uploaded files, counts, the schedule, replies, changes.

Phone numbers never appear in a URL (URLs end up in access logs): a person's change names
them in the JSON body, and the schedule and history, which hold numbers, need the operator
role and are audited when downloaded.
"""

from __future__ import annotations

import os
import tempfile
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask

from loa.access.audit import STREAM_ID
from loa.api import uploads
from loa.api.context import ApiContext, audited, context
from loa.api.security import Operator, Viewer
from loa.appointments import Appointments
from loa.appointments.inputs import parse_day
from loa.errors import ApiError, AppointmentError

router = APIRouter(prefix="/api/v1/appointments", tags=["appointments"])

Ctx = Annotated[ApiContext, Depends(context)]
DRIVE_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
Drive = Annotated[
    str, PathParam(pattern=DRIVE_PATTERN, description="a drive: its own ledger of places")
]
Day = Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}-\d{2}$", description="YYYY-MM-DD")]
PARTS = ("sites", "people", "sessions")
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["sites", "people"],
                    "properties": {
                        "sites": {
                            "type": "string",
                            "format": "binary",
                            "description": "site_id, name, province, address; with date, start,"
                            " end, capacity when it carries the sessions",
                        },
                        "people": {
                            "type": "string",
                            "format": "binary",
                            "description": "phone, priority_group, registered_at, site_id or "
                            "province, and any other columns for the messages",
                        },
                        "sessions": {
                            "type": "string",
                            "format": "binary",
                            "description": "site_id, date, start, end, capacity (optional)",
                        },
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


class GroupCounts(BaseModel):
    """One priority group: people holding a place (confirmed among them), waiting, cancelled."""

    placed: int
    confirmed: int
    waiting: int
    cancelled: int


class Places(BaseModel):
    """Places of a site: capacity, booked and free."""

    capacity: int
    booked: int
    free: int


class SessionPlaces(Places):
    """One session's places."""

    site_id: str
    date: str
    start: str
    end: str


class Summary(BaseModel):
    """A drive's counts."""

    drive: str
    runs: int
    by_group: dict[str, GroupCounts]
    by_site: dict[str, Places]
    by_session: list[SessionPlaces]


class RefusedRow(BaseModel):
    """A row that was not used: the part (sites, people, sessions), its line, why."""

    file: str
    line: int
    reason: str


class Allocation(BaseModel):
    """What one allocation run did, and the drive's counts after it."""

    drive: str
    run: int
    rows: dict[str, int]
    refused_count: int
    refused: list[RefusedRow]
    sites: dict[str, int]
    sessions: dict[str, int]
    people: dict[str, int]
    waiting_by_reason: dict[str, int]
    by_group: dict[str, GroupCounts]
    by_site: dict[str, Places]
    by_session: list[SessionPlaces]


class RepliesRequest(BaseModel):
    """Optional: a plan (TOML text) whose campaign tells people their changed appointments."""

    plan: str | None = Field(default=None, max_length=uploads.PLAN_LIMIT)


class RepliesResult(BaseModel):
    """What applying replies did (counts; the changed people are in the schedule)."""

    drive: str
    read: int
    outcomes: dict[str, int]
    changed_appointments: int
    campaign: str
    campaign_state: str


class ChangeRequest(BaseModel):
    """One person's change, as an operator makes it."""

    phone: str = Field(min_length=1, max_length=64)
    action: Literal["confirm", "release", "move"]


class ChangeResult(BaseModel):
    """What the change did: the outcome, the session before and after, and whether the place
    it freed went to someone waiting."""

    outcome: str
    before: str
    after: str
    reallocated: bool


class HistoryEntry(BaseModel):
    """One change of the schedule."""

    id: str
    event: str
    phone: str
    session: str
    previous: str  # the session before, for moves and releases
    reference: str  # the allocation run, or the inbound reply's id
    by: str


def _service(ctx: ApiContext) -> Appointments:
    return Appointments(ctx.settings, ctx.services.redis)


def _day(value: str | None, name: str) -> date | None:
    if value is None:
        return None
    day = parse_day(value)
    if day is None:
        raise ApiError(f"{name}: {value!r} is not a date", code="invalid_date", status=422)
    return day


async def _known(ctx: ApiContext, drive: str) -> None:
    if not await _service(ctx).ledger(drive).exists():
        raise ApiError(f"no appointments drive {drive!r}", code="drive_not_found", status=404)


@router.get("", name="appointments.list", summary="The drives")
async def list_drives(who: Viewer, ctx: Ctx) -> list[str]:
    """Every drive's name."""
    return await _service(ctx).drives()


@router.post(
    "/{drive}/allocate",
    name="appointments.allocate",
    openapi_extra=UPLOAD_BODY,
    summary="Place registrants in sessions, from uploaded sites and people",
)
async def allocate(
    request: Request,
    drive: Drive,
    who: Operator,
    ctx: Ctx,
    first: Annotated[Day, Query(alias="from")] = None,
    until: Day = None,
) -> Allocation:
    """One allocation run: priority group, then registered_at, then line; places already
    given are kept, and only the new and the waiting are placed."""
    async with audited(request, who, "appointments.allocate") as note:
        start, end = _day(first, "from"), _day(until, "until")
        files = await uploads.receive_files(request, ctx.storage, PARTS, ("sites", "people"))
        try:
            report = await _service(ctx).allocate(
                drive,
                files.paths["sites"],
                files.paths["people"],
                sessions=files.paths.get("sessions"),
                first=start,
                last=end,
            )
        finally:
            files.remove()
        counts = report.people
        note.detail = (
            f"drive {drive} run {report.run}: {counts['placed']} placed, {counts['kept']} kept, "
            f"{counts['waiting']} waiting, {report.refused_count} rows refused"
        )
    result = report.to_json()
    for refused in result["refused"]:
        refused["file"] = Path(refused["file"]).stem  # the part's name, not a server path
    return Allocation.model_validate(result)


@router.get("/{drive}", name="appointments.summary", summary="A drive's counts")
async def summary(
    drive: Drive,
    who: Viewer,
    ctx: Ctx,
    sessions: Annotated[
        bool, Query(description="false: leave out the per-session list (a large drive's)")
    ] = True,
) -> Summary:
    """Per priority group (placed, confirmed, waiting, cancelled), per site and per session
    (capacity, booked, free)."""
    await _known(ctx, drive)
    counts = await _service(ctx).summary(drive)
    if not sessions:
        counts["by_session"] = []
    return Summary.model_validate(counts)


@router.get(
    "/{drive}/schedule",
    name="appointments.schedule",
    summary="The schedule (CSV)",
    response_class=FileResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "one row per registrant"}},
)
async def schedule(request: Request, drive: Drive, who: Operator, ctx: Ctx) -> FileResponse:
    """Every registrant with their place or why they wait; audited (it holds phone numbers)."""
    async with audited(request, who, "appointments.schedule") as note:
        await _known(ctx, drive)
        ctx.uploads.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix="schedule-", suffix=".csv", dir=ctx.uploads)
        os.close(handle)
        try:
            rows = await _service(ctx).write_schedule(drive, Path(name))
        except BaseException:
            os.unlink(name)
            raise
        note.detail = f"drive {drive}: {rows} rows"
    return FileResponse(
        name,
        media_type="text/csv",
        filename=f"schedule-{drive}.csv",
        background=BackgroundTask(os.unlink, name),
    )


@router.post("/{drive}/replies", name="appointments.replies", summary="Apply replies")
async def replies(
    request: Request, drive: Drive, who: Operator, ctx: Ctx, body: RepliesRequest | None = None
) -> RepliesResult:
    """1/CO/XAC NHAN confirms, 2/KHONG/HUY LICH gives the place back (to whoever waits first),
    DOI moves to the next session with room; each reply once. With a plan, a campaign tells
    the people whose appointment changed (launched unless it needs a second approval)."""
    async with audited(request, who, "appointments.replies") as note:
        await _known(ctx, drive)
        plan: Path | None = None
        if body is not None and body.plan is not None:
            ctx.uploads.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(prefix="notice-", suffix=".toml", dir=ctx.uploads)
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(body.plan)
            plan = Path(name)
        try:
            report = await _service(ctx).apply_replies(drive, who, plan=plan)
        finally:
            if plan is not None:
                plan.unlink(missing_ok=True)
        outcomes = ", ".join(f"{k} {v}" for k, v in sorted(report.outcomes.items()))
        note.detail = f"drive {drive}: {report.read} read; {outcomes or 'no changes'}"
        note.campaign = report.campaign
    data = report.to_json()
    del data["changes_file"]  # a path on the server
    return RepliesResult.model_validate(data)


@router.post("/{drive}/changes", name="appointments.change", summary="Change one person's place")
async def change(
    request: Request, drive: Drive, body: ChangeRequest, who: Operator, ctx: Ctx
) -> ChangeResult:
    """Confirm, release (the place goes to whoever waits first) or move to the next session
    with room at the same site; in the schedule's history and the audit log."""
    async with audited(request, who, f"appointments.{body.action}") as note:
        await _known(ctx, drive)
        try:
            done = await _service(ctx).change(drive, body.action, body.phone, who)
        except AppointmentError as exc:
            raise ApiError(str(exc), code="invalid_address", status=422) from None
        note.detail = f"drive {drive}: {done.outcome}"
    return ChangeResult(
        outcome=done.outcome, before=done.before, after=done.after, reallocated=bool(done.waiter)
    )


@router.get("/{drive}/history", name="appointments.history", summary="The schedule's changes")
async def history(
    drive: Drive,
    who: Operator,
    ctx: Ctx,
    after: Annotated[
        str, Query(pattern=f"^-$|{STREAM_ID}", description="only changes after this id")
    ] = "-",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[HistoryEntry]:
    """Oldest first (operators see the numbers: they answer the people)."""
    await _known(ctx, drive)
    rows = await _service(ctx).history(drive, after, limit)
    return [
        HistoryEntry(
            id=row["id"],
            event=row.get("e", ""),
            phone=row.get("p", ""),
            session=row.get("s", ""),
            previous=row.get("f", ""),
            reference=row.get("r", ""),
            by=row.get("by", ""),
        )
        for row in rows
    ]
