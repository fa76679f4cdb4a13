"""Routes beside campaigns: who am I, delivery routes, replies, opt-outs, the audit log, tokens."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam

from loa.access.audit import STREAM_ID
from loa.access.identity import Role
from loa.access.tokens import TOKEN_NAME_PATTERN, TokenRecord, minting
from loa.api.context import ApiContext, audited, context
from loa.api.models import (
    Addresses,
    AuditPage,
    AuditRow,
    Changed,
    CheckResult,
    InboundMessage,
    InboundPage,
    RouteRow,
    Suppressed,
    TokenCreated,
    TokenInfo,
    TokenRequest,
    Whoami,
)
from loa.api.security import Admin, Operator, Viewer
from loa.engine.events import read_inbound
from loa.settings import Settings
from loa.status import route_status

router = APIRouter(prefix="/api/v1")

Ctx = Annotated[ApiContext, Depends(context)]
After = Annotated[
    str,
    Query(
        pattern=f"^-$|{STREAM_ID}",
        description="only entries after this id ('-': from the oldest)",
    ),
]
Before = Annotated[str | None, Query(pattern=STREAM_ID, description="only entries before this id")]
Limit = Annotated[int, Query(ge=1, le=1000)]


@router.get("/whoami", name="whoami", tags=["tokens"], summary="The caller's token")
async def whoami(who: Viewer) -> Whoami:
    """The person, token name, role and lineage of the token this request carries."""
    return Whoami(name=who.person, token=who.token, role=who.role.label, lineage=list(who.lineage))


@router.get("/routes", name="route.list", tags=["routes"], summary="Delivery routes and backlog")
async def routes(who: Viewer, ctx: Ctx) -> list[RouteRow]:
    """Each configured route: adapter, channels, rate, queue depth and counters (no options)."""
    rows = []
    for name, limits in ctx.settings.routes.items():
        status = await route_status(ctx.services.campaigns.queues, ctx.settings, name)
        row = {
            **asdict(status),
            "adapter": limits.adapter,
            "channels": channels_of(ctx.settings, name),
            "rate": limits.rate,
            "unit": limits.unit,
        }
        rows.append(RouteRow.model_validate(row))
    return rows


def channels_of(settings: Settings, route: str) -> list[str]:
    """The channels whose default or carrier routes name `route`."""
    return [
        channel
        for channel, spec in settings.channels.items()
        if spec.default == route or route in spec.carriers.values()
    ]


@router.get("/inbound", name="inbound.list", tags=["inbound"], summary="Replies, oldest first")
async def inbound(who: Operator, ctx: Ctx, after: After = "-", limit: Limit = 100) -> InboundPage:
    """Replies and other inbound messages, a page at a time."""
    rows = await read_inbound(ctx.services.redis, ctx.settings.namespace, after, limit)
    items = [
        InboundMessage.model_validate({**row, "optout": row.get("optout") == "1"}) for row in rows
    ]
    return InboundPage(items=items, next_after=rows[-1]["id"] if rows else after)


@router.post(
    "/suppression/add", name="suppression.add", tags=["suppression"], summary="Opt addresses out"
)
async def suppression_add(request: Request, body: Addresses, who: Operator, ctx: Ctx) -> Changed:
    """Nobody on the list is messaged again; the audit log counts, never names, them."""
    async with audited(request, who, "suppression.add") as note:
        changed = await ctx.services.suppression.add(body.addresses)
        note.detail = f"{len(body.addresses)} given, {changed} new"
    return Changed(changed=changed)


@router.post(
    "/suppression/remove",
    name="suppression.remove",
    tags=["suppression"],
    summary="Opt addresses back in",
)
async def suppression_remove(request: Request, body: Addresses, who: Operator, ctx: Ctx) -> Changed:
    """Take addresses off the list."""
    async with audited(request, who, "suppression.remove") as note:
        changed = await ctx.services.suppression.remove(body.addresses)
        note.detail = f"{len(body.addresses)} given, {changed} removed"
    return Changed(changed=changed)


@router.post(
    "/suppression/check",
    name="suppression.check",
    tags=["suppression"],
    summary="Which addresses are opted out",
)
async def suppression_check(
    request: Request, body: Addresses, who: Operator, ctx: Ctx
) -> CheckResult:
    """A POST, so numbers stay out of URLs and access logs."""
    async with audited(request, who, "suppression.check") as note:
        flags = await ctx.services.suppression.check(body.addresses)
        note.detail = f"{len(body.addresses)} checked"
    results = [
        Suppressed(address=address, suppressed=flag)
        for address, flag in zip(body.addresses, flags, strict=True)
    ]
    return CheckResult(results=results)


@router.get("/audit", name="audit.list", tags=["audit"], summary="The audit log, newest first")
async def audit(who: Viewer, ctx: Ctx, before: Before = None, limit: Limit = 50) -> AuditPage:
    """Who did what, to which campaign, from where, and how it went."""
    entries = await ctx.services.audit.read(limit, before)
    items = [AuditRow.model_validate(entry, from_attributes=True) for entry in entries]
    more = items[-1].id if len(items) == limit else None
    return AuditPage(items=items, next_before=more)


def _info(record: TokenRecord) -> TokenInfo:
    return TokenInfo.model_validate(record, from_attributes=True)


@router.post(
    "/tokens", name="token.create", tags=["tokens"], status_code=201, summary="Make a token"
)
async def create_token(request: Request, body: TokenRequest, who: Admin, ctx: Ctx) -> TokenCreated:
    """The token is in this answer only: keep it; only its hash is stored."""
    async with audited(request, who, "token.create") as note:
        person = body.person or body.name
        note.detail = minting(body.name, person, body.role)
        token, record = await ctx.services.tokens.create(
            body.name, Role.parse(body.role), who, person, body.days
        )
    return TokenCreated(**_info(record).model_dump(), token=token)


@router.get("/tokens", name="token.list", tags=["tokens"], summary="Every token, revoked too")
async def list_tokens(who: Admin, ctx: Ctx) -> list[TokenInfo]:
    """Names, roles, creators and times; never the tokens."""
    return [_info(record) for record in await ctx.services.tokens.list()]


@router.delete(
    "/tokens/{name}", name="token.revoke", tags=["tokens"], summary="Revoke a token for good"
)
async def revoke_token(
    request: Request,
    name: Annotated[str, PathParam(pattern=TOKEN_NAME_PATTERN)],
    who: Admin,
    ctx: Ctx,
) -> TokenInfo:
    """Its holder gets 401 from now on; the name is not given out again."""
    async with audited(request, who, "token.revoke") as note:
        note.detail = name
        record = await ctx.services.tokens.revoke(name)
    return _info(record)
