"""Inbox routes: the hotline's cases, read by viewers (numbers masked), answered by operators."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from loa.access.identity import Principal, Role
from loa.api.context import ApiContext, audited, context
from loa.api.security import Operator, Viewer
from loa.inbox import Inbox
from loa.inbox.service import MAX_REPLY

router = APIRouter(prefix="/api/v1/inbox", tags=["inbox"])

Ctx = Annotated[ApiContext, Depends(context)]
CaseId = Annotated[str, PathParam(pattern=r"^[0-9]{1,18}$", description="a case number")]


class CaseRow(BaseModel):
    """A case: the number (masked below the operator role), its state, its last message."""

    id: str
    phone: str
    channel: str
    route: str
    state: Literal["open", "assigned", "answered", "closed"]
    assignee: str
    urgent: bool
    opened_ms: int
    updated_ms: int
    messages: int
    last: str


class ConversationMessage(BaseModel):
    """One message of a conversation: in from the citizen, or out from an operator."""

    at: int
    dir: Literal["in", "out"]
    text: str
    id: str
    by: str = ""
    route: str = ""


class Conversation(BaseModel):
    """A case and its messages, oldest first."""

    case: CaseRow
    messages: list[ConversationMessage]


class SyncResult(BaseModel):
    """What one sync took in (counts only)."""

    read: int
    cases: int
    messages: int
    optouts: int
    optins: int
    answers: int
    confirmations: int
    skipped: int


class AssignRequest(BaseModel):
    """Who takes the case (default: the caller)."""

    to: str = Field(default="", max_length=100)


class ReplyRequest(BaseModel):
    """The answer to the citizen, sent by SMS."""

    text: str = Field(min_length=1, max_length=MAX_REPLY)


class ReplyResult(BaseModel):
    """The answer, queued."""

    case: str
    message: str
    route: str
    parts: int
    lane: str
    notes: list[str]


class CaseChange(BaseModel):
    """A case's state after a change, and before it."""

    id: str
    state: str
    before: str


def _inbox(ctx: ApiContext) -> Inbox:
    return Inbox(ctx.settings, ctx.services.redis)


def _numbers(who: Principal) -> bool:
    """Operators answer people: they see the numbers; viewers see them masked."""
    return who.role >= Role.OPERATOR


@router.get("", name="inbox.list", summary="Cases: open first, urgent on top")
async def list_cases(
    who: Viewer,
    ctx: Ctx,
    closed: Annotated[bool, Query(description="closed cases too")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[CaseRow]:
    """Numbers are masked for viewers. New messages come in with POST /inbox/sync."""
    cases = await _inbox(ctx).cases(closed=closed, limit=limit)
    return [CaseRow.model_validate(case.to_json(_numbers(who))) for case in cases]


@router.post("/sync", name="inbox.sync", summary="Take in new inbound messages")
async def sync(request: Request, who: Operator, ctx: Ctx) -> SyncResult:
    """New messages join their conversations; opt-outs and opt-ins are confirmed."""
    async with audited(request, who, "inbox.sync") as note:
        report = await _inbox(ctx).sync()
        note.detail = ", ".join(f"{k} {v}" for k, v in report.to_json().items() if v)
    return SyncResult.model_validate(report.to_json())


@router.get("/{case_id}", name="inbox.show", summary="A case and its conversation")
async def show(case_id: CaseId, who: Viewer, ctx: Ctx) -> Conversation:
    """Oldest message first; the number is masked for viewers."""
    case, messages = await _inbox(ctx).case(case_id)
    return Conversation(
        case=CaseRow.model_validate(case.to_json(_numbers(who))),
        messages=[ConversationMessage.model_validate(m) for m in messages],
    )


@router.post("/{case_id}/assign", name="inbox.assign", summary="Assign a case")
async def assign(
    request: Request, case_id: CaseId, who: Operator, ctx: Ctx, body: AssignRequest | None = None
) -> CaseChange:
    """To an operator (default: the caller)."""
    to = body.to if body is not None else ""
    async with audited(request, who, "inbox.assign") as note:
        note.detail = f"case {case_id} to {to or who.person}"
        before = await _inbox(ctx).assign(case_id, to, who.person)
    state = "assigned" if before == "open" else before
    return CaseChange(id=case_id, state=state, before=before)


@router.post("/{case_id}/reply", name="inbox.reply", summary="Answer a case by SMS")
async def reply(
    request: Request, case_id: CaseId, body: ReplyRequest, who: Operator, ctx: Ctx
) -> ReplyResult:
    """A one-to-one message on the route the citizen wrote in through, in the high lane."""
    async with audited(request, who, "inbox.reply") as note:
        sent = await _inbox(ctx).reply(case_id, body.text, who.person)
        note.detail = f"case {case_id}: {sent.parts} SMS parts on {sent.route}"
    return ReplyResult(
        case=sent.case,
        message=sent.message,
        route=sent.route,
        parts=sent.parts,
        lane=sent.lane,
        notes=sent.notes,
    )


@router.post("/{case_id}/close", name="inbox.close", summary="Close a case")
async def close(request: Request, case_id: CaseId, who: Operator, ctx: Ctx) -> CaseChange:
    """The number's next message opens a new case."""
    async with audited(request, who, "inbox.close") as note:
        note.detail = f"case {case_id}"
        before = await _inbox(ctx).close(case_id, who.person)
    return CaseChange(id=case_id, state="closed", before=before)
