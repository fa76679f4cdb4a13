"""CAP routes: submit a CAP 1.2 alert (Alert, Update, Cancel), or check one."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from loa.api.context import ApiContext, audited, client_ip, context
from loa.api.security import Operator
from loa.cap.parse import MAX_BYTES
from loa.cap.service import CapIntake, check_alert
from loa.errors import ApiError, CapError

router = APIRouter(prefix="/api/v1/cap", tags=["cap"])

Ctx = Annotated[ApiContext, Depends(context)]
MEDIA_TYPES = ("application/cap+xml", "application/xml", "text/xml")
CAP_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": f"A CAP 1.2 alert, at most {MAX_BYTES:,} bytes; no DTD or entities.",
        "content": {media: {"schema": {"type": "string"}} for media in MEDIA_TYPES},
    }
}


class CapAlert(BaseModel):
    """An alert as loa reads it, and how it would send it."""

    identifier: str
    sender: str
    sent: str
    msgType: str
    status: str
    scope: str
    lane: str | None = Field(description="emergency, high or normal; null: nothing to send")
    languages: list[str]
    default_language: str | None
    provinces: list[str] = Field(description="province codes (the audience's `region`)")
    province_names: list[str]
    expires: str | None
    start: str | None
    references: list[str]
    events: list[str]
    signed: bool = Field(description="an XML signature is present (it is not verified)")
    sends: bool = Field(description="whether it becomes a campaign")


class CapResult(BaseModel):
    """What submitting a CAP message did."""

    action: str = Field(description="created (a draft campaign), cancelled, or recorded")
    campaign: str | None
    state: str | None
    approval_required: bool
    approval_reason: str | None
    supersedes: list[str] = Field(description="campaigns cancelled when this one is launched")
    cancelled: list[str] = Field(description="campaigns cancelled now")
    alert: CapAlert


async def _alert_body(request: Request) -> bytes:
    """The body, refused unless it is XML of at most MAX_BYTES (read no further than that)."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media not in MEDIA_TYPES:
        raise ApiError(
            f"send the alert as application/cap+xml (got {media[:60] or 'no content type'!r})",
            code="unsupported_media_type",
            status=415,
        )
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BYTES:
            raise CapError(
                [f"alert: larger than {MAX_BYTES:,} bytes, the most an alert may have"],
                code="too_large",
                status=413,
            )
    return bytes(body)


@router.post(
    "",
    name="cap.submit",
    openapi_extra=CAP_BODY,
    status_code=201,
    summary="Submit a CAP 1.2 alert: Alert or Update (a draft campaign), Cancel",
    responses={200: {"model": CapResult, "description": "a Cancel, or a message only recorded"}},
)
async def submit_cap(request: Request, response: Response, who: Operator, ctx: Ctx) -> CapResult:
    """An Alert or Update becomes a draft campaign that a second person approves (201); an
    Update supersedes the campaigns of the alerts it references (cancelled when it is
    launched, or now if they have not started); a Cancel stops them now (200). Test and
    Exercise alerts go only to the test numbers. Refusals name each problem's element path."""
    async with audited(request, who, "cap.submit") as note:
        data = await _alert_body(request)
        intake = CapIntake(ctx.settings, ctx.services.redis, ctx.services.audit)
        result = await intake.submit(data, who, ip=client_ip(request))
        note.campaign = result.campaign or " ".join(result.cancelled)
        note.detail = result.line()
    if result.action != "created":
        response.status_code = 200
    return CapResult.model_validate(result.to_json())


@router.post(
    "/validate",
    name="cap.validate",
    openapi_extra=CAP_BODY,
    summary="Check a CAP 1.2 alert, nothing stored",
)
async def validate_cap(request: Request, who: Operator, ctx: Ctx) -> CapAlert:
    """How loa reads the alert and would send it: lane, languages, provinces, expiry; 422 with
    every problem (element path and reason) when it is not valid."""
    data = await _alert_body(request)
    mapped = await asyncio.to_thread(check_alert, data, ctx.settings)
    return CapAlert.model_validate(mapped.summary())
